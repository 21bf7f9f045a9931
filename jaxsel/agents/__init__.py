"""One entry point for every selection method: ``select(proxy, clustering, labels, config)``.

Methods: ``ppo`` and ``dqn`` (trained on device in chunks of ``checkpoint_every`` updates, with an
orbax checkpoint after each chunk so ``resume=True`` continues where a run stopped and ends with
the same selection), the cluster searches ``random-search`` (best of ``random_samples`` random
budget-sized cluster picks), ``greedy`` and ``climb``, the example-level baselines of
:mod:`jaxsel.baselines` (``random``, ``stratified``, ``typical``, ``cleanlab``) and ``full``.
"""

from __future__ import annotations

import functools
import json
import numbers
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from types import MappingProxyType, ModuleType

import jax
import numpy as np

from jaxsel import baselines, code_version, label_issues, metrics, progress as progress_
from jaxsel.agents import dqn, ppo, reward_model, search
from jaxsel.checkpoint import MARKER, Checkpoints
from jaxsel.config import BASELINES, build, keyless, later, settings
from jaxsel.agents.env import EnvParams, SelectionEnv, checked_parts, make_env
from jaxsel.agents.episodes import empty_best, greedy_rollout
from jaxsel.errors import (JaxselError, check_at_least, check_choice, check_mask, check_range, check_seed, check_types,
                           counted, is_int, warn)
from jaxsel.io import writes_files
from jaxsel.precision import in_32_bits
from jaxsel.programs import make_room
from jaxsel.proxy import RewardCache
from jaxsel.selection import AGENTS, BALANCES, FINALS, GRANULARITIES, METHODS, Selection, balance_caps, read_budget, budget_examples, checked_examples, digest, missing_classes, no_example_of, quota_for, rows_for, take_for


CONFIGS = MappingProxyType({"ppo": ppo.PPOConfig, "dqn": dqn.DQNConfig})
"""Each RL agent's config class, by method (:data:`jaxsel.selection.AGENTS`)."""


@dataclass(frozen=True)
class SelectConfig:
    """``budget``: a fraction in (0, 1), or its text ("1/16", as configs spell it).
    ``final``: for RL, "best" (best finished episode seen in training) or "greedy" (a greedy
    rollout of the trained network). ``surrogate_rounds`` > 0 trains the agent on the reward
    model's predicted rewards instead of the proxy's (WarmStart, then rounds of: train, score the
    policy's rollouts with the true proxy, refit); the result is the best truly scored subset.
    ``granularity``: "cluster" (a pick adds a whole cluster: the paper's MDP) or "quota" (a pick
    adds a cluster's next ``quota`` rows in the within-cluster order, default budget / ``horizon``;
    a cluster can be picked until exhausted), for the RL agents and every cluster search.
    ``balance``: "none", or per-class example caps "proportional" to the pool or "equal"
    (:func:`jaxsel.selection.class_caps`), enforced by action masking for the RL agents and every
    cluster search; needs label-pure (stratified) clusters. Example-level baselines ignore it."""

    method: str = "ppo"
    budget: float = 0.05
    seed: int = 0
    granularity: str = "cluster"
    quota: int | None = None
    horizon: int = 32
    final: str = "best"
    checkpoint_every: int = 20
    surrogate_rounds: int = 0  # >0: WarmStart + reward-model rollouts in this many rounds
    warm_start: int = 256  # proxy-scored random masks the reward model is first fitted on
    surrogate_eval: int = 64  # policy rollouts scored by the true proxy after each round
    random_samples: int = 1024
    climb_rounds: int = 4
    reward_scale: float = 100.0
    agreement: bool = later(False)  # RL observation: each cluster's label agreement (jaxsel.label_issues)
    similarity: bool = later(False)  # RL observation: each cluster's share of the scored rows (env.scored_similarity)
    balance: str = later("none")  # "none", "proportional" or "equal": per-class caps on the examples picked
    ppo: ppo.PPOConfig = field(default_factory=ppo.PPOConfig)
    dqn: dqn.DQNConfig = field(default_factory=dqn.DQNConfig)

    def __post_init__(self):
        for name, cls in CONFIGS.items():  # a dict, as a config file spells it
            value = getattr(self, name)
            if isinstance(value, dict):
                object.__setattr__(self, name, build(cls, value, f"[select.{name}]"))
            elif not isinstance(value, cls):
                raise JaxselError(f"select {name} must be a {cls.__module__}.{cls.__name__} or a dict of its fields, "
                                  f"got {type(value).__name__}")
        for name, choices in (("method", METHODS), ("final", FINALS), ("granularity", GRANULARITIES),
                              ("balance", BALANCES)):
            check_choice("select", self, name, choices)
        object.__setattr__(self, "budget", read_budget(self.budget))  # "1/16", as a config file and --budget spell it
        if not isinstance(self.budget, numbers.Real) or isinstance(self.budget, bool) or not 0 < self.budget < 1:
            raise JaxselError(f"select budget must be a fraction strictly between 0 and 1 (0.05 for 5%), "
                              f"got {self.budget!r}")
        check_types("select", self)  # after the budget's own message: a string is no fraction either
        check_at_least("select", self, 1, "quota", "horizon", "checkpoint_every", "warm_start", "surrogate_eval",
                       "random_samples", "climb_rounds")
        check_at_least("select", self, 0, "surrogate_rounds")
        agent = getattr(self, self.method) if self.method in AGENTS else None
        if agent is not None and self.surrogate_rounds > agent.num_updates:  # past its end the lr schedule is 0
            raise JaxselError(f"select surrogate_rounds ({self.surrogate_rounds}) exceeds the {agent.num_updates} "
                              f"updates of {self.method}'s {agent.total_timesteps} environment steps, and each round "
                              f"trains at least one: raise the steps (--steps / rl_steps) or lower the rounds")
        if self.quota is not None and self.granularity != "quota":  # as SelectSpec (a run config) refuses it
            raise JaxselError('select quota sets the examples per pick of granularity "quota"; '
                              'set granularity="quota" or leave quota out')
        check_seed("select", self, "seed")
        check_range("select", self, 0, float("inf"), "reward_scale", low_open=True)

    def used(self) -> "SelectConfig":
        """This config with every setting its method does not read (:func:`reads`) at its keyless
        default (:func:`jaxsel.config.keyless`, the agents' configs too): what :func:`select` runs
        with and records, keys its stage and signs its checkpoints, so changing PPO's steps, CLIMB's
        rounds or the horizon of whole-cluster picks does not select greedy's or stratified's
        subset again."""
        unread = [f.name for f in fields(self) if f.name not in reads(self)]
        return replace(self, **{name: getattr(_UNREAD, name) for name in unread})


_PICKING = frozenset({"granularity", "quota", "horizon", "balance"})  # how picks take rows: the agents, the searches
_LEARNING = frozenset({"final", "checkpoint_every", "surrogate_rounds", "warm_start", "surrogate_eval", "reward_scale",
                       "agreement", "similarity"})  # the RL agents' environment, training and result
READS = MappingProxyType({"ppo": _PICKING | _LEARNING | {"ppo"}, "dqn": _PICKING | _LEARNING | {"dqn"},
                          "random-search": _PICKING | {"random_samples"}, "greedy": _PICKING,
                          "climb": _PICKING | {"climb_rounds"}, **{m: frozenset() for m in BASELINES}})
"""The :class:`SelectConfig` fields each method may read besides ``method``, ``budget`` and ``seed``
(example-level baselines and ``full`` read none); :func:`reads` says which it reads under a config."""


def reads(c: SelectConfig) -> frozenset[str]:
    """The :class:`SelectConfig` fields ``c.method`` reads under ``c``: ``method``, ``budget``,
    ``seed`` and its :data:`READS`, less ``horizon`` unless it sets the quota (granularity "quota"
    without a ``quota``), ``final`` and ``checkpoint_every`` with ``surrogate_rounds`` (the
    reward-model rounds decide both), ``warm_start`` and ``surrogate_eval`` without."""
    out = {"method", "budget", "seed"} | READS[c.method]
    if c.granularity != "quota" or c.quota is not None:
        out.discard("horizon")
    out -= {"final", "checkpoint_every"} if c.surrogate_rounds else {"warm_start", "surrogate_eval"}
    return frozenset(out)


def revision(c: SelectConfig) -> int:
    """The revision of the algorithm ``c.method`` runs under ``c`` (1: as first released), raised where
    a change selects other rows for the same settings: stage keys and checkpoint signatures carry it
    past 1, so a stage or checkpoint of the earlier algorithm is computed anew, not reused or resumed.
    2 (2026-12-06): CLIMB and the agents' reward-model rounds (the reward model's bootstrap draws; each
    round's model rescores the episodes under way) and DQN with ``eps_fraction`` 0 (it explored at
    random throughout). 3 (2026-12-07): DQN's reward-model rounds (each round's model relabels the
    replay buffer)."""
    if c.method == "dqn" and c.surrogate_rounds > 0:
        return 3
    if c.method == "climb" or (c.method in AGENTS and c.surrogate_rounds > 0) or \
            (c.method == "dqn" and c.dqn.eps_fraction == 0):
        return 2
    return 1


def revised(c: SelectConfig) -> dict:
    """``{"revision": revision(c)}`` past the first revision, else ``{}`` (keys and records of the
    first stay as they were): what stage keys, checkpoint signatures and ``selection.json`` carry."""
    r = revision(c)
    return {"revision": r} if r > 1 else {}


_UNREAD = replace(keyless(SelectConfig), ppo=keyless(ppo.PPOConfig), dqn=keyless(dqn.DQNConfig))  # what used() sets
AgentConfig = ppo.PPOConfig | dqn.DQNConfig


def agent_config(method: str, rl_steps: int, overrides: dict) -> AgentConfig:
    """The PPOConfig or DQNConfig (``method`` "ppo" or "dqn") of a run config's ``[select]``: its
    ``rl_steps`` as ``total_timesteps``, then the ``[select.ppo]``/``[select.dqn]`` table's
    ``overrides``. One place, so a run and its report count the same steps."""
    return CONFIGS[method](**{"total_timesteps": rl_steps, **overrides})


def cell_config(spec, method: str, budget: float, seed: int) -> SelectConfig:
    """The SelectConfig of one cell of a run: its ``[select]`` table (``spec``, a
    :class:`jaxsel.config.SelectSpec`) for ``method`` at ``budget`` and ``seed``, as given (before
    :meth:`SelectConfig.used`); ``rl_steps`` and ``[select.ppo]``/``[select.dqn]`` as the agents' configs."""
    return SelectConfig(method=method, budget=budget, seed=seed, final=spec.final, climb_rounds=spec.climb_rounds,
                        granularity=spec.granularity, quota=spec.quota, horizon=spec.horizon, agreement=spec.agreement,
                        similarity=spec.similarity, balance=spec.balance,
                        **{m: agent_config(m, spec.rl_steps, getattr(spec, m)) for m in AGENTS})


def env_steps(cfg: AgentConfig, updates: int) -> int:
    """Environment steps of all environments in ``updates`` updates of an RL config (PPO: a rollout
    of ``num_steps`` per update; DQN: one step)."""
    return updates * cfg.num_envs * getattr(cfg, "num_steps", 1)


def min_steps(cfg: AgentConfig, max_steps: int) -> int:
    """Environment steps for every environment of an RL config to finish at least one episode of
    ``max_steps`` picks (PPO: whole rollouts of ``num_steps``; DQN: steps of all environments)."""
    per_env = max_steps if not hasattr(cfg, "num_steps") else -(-max_steps // cfg.num_steps) * cfg.num_steps
    return per_env * cfg.num_envs


@functools.lru_cache(maxsize=8)
def programs(module: ModuleType, cfg: AgentConfig, env: SelectionEnv) -> tuple[Callable, Callable]:
    """``module.make_chunks(cfg, env)``'s ``init`` and ``update``, built and jitted once per process
    and config: the key, the environment's params and ``update``'s count of updates are arguments,
    so every seed (and a surrogate's every round) reuses one compiled program where the params have
    the same shapes and static fields (the same budget, quota and proxy kind), and so does a run's
    last, shorter chunk (a static count compiled it again: ~4 s for PPO on 2 cores); other params
    compile anew into the same jit, which keeps each program for the process:
    ``programs.cache_clear()`` frees them."""
    fns = module.make_chunks(cfg, env)
    return jax.jit(fns.init), jax.jit(fns.update)


@functools.lru_cache(maxsize=4)
def _rollouts(env: SelectionEnv, sample: bool) -> Callable:
    """:func:`greedy_rollout` jitted once per process (called eagerly, its operations outside the scan
    compiled one by one): ``(params, env_params, key)``, or with ``sample`` ``surrogate_eval``
    episodes drawn from the policy, vmapped over a batch of keys."""
    one = lambda p_, e, key_: greedy_rollout(p_, env, e, key_, sample=sample)
    return jax.jit(jax.vmap(one, in_axes=(None, None, 0)) if sample else one)


def train_agent(module: ModuleType, cfg: AgentConfig, env: SelectionEnv, env_params: EnvParams, key: jax.Array, *,
                ckpt_dir: Path | None = None, every: int = 20, resume: bool = False, progress: bool = True,
                signature: str = "", stop_after: int | None = None) -> ppo.Runner | dqn.Runner:
    """Run ``module.make_chunks`` (``module``: :mod:`ppo` or :mod:`dqn`, ``cfg`` its config) to
    ``cfg.num_updates`` in chunks of ``every`` updates, checkpointing after each chunk.

    ``stop_after`` ends this call once that many updates are done (a time-sliced job; continue
    it with ``resume=True``)."""
    init, update_n = programs(module, cfg, env)
    runner = init(key, env_params)
    ck = None if ckpt_dir is None else Checkpoints(Path(ckpt_dir) / "agent", signature, resume=resume)
    if ck is not None and ck.step is not None:
        runner, _ = ck.restore(runner)
    total = cfg.num_updates if stop_after is None else min(stop_after, cfg.num_updates)
    with progress_.bar(total=total, initial=int(runner.update), desc=module.__name__.split(".")[-1], unit="update",
                       disable=not progress) as bar:
        while int(runner.update) < total:
            n = min(every, total - int(runner.update))
            runner = update_n(runner, n, env_params)
            if ck is not None:
                ck.save(int(runner.update), runner)
            history = np.asarray(runner.history)
            seen = history[np.isfinite(history)]
            metrics.log(module.__name__.split(".")[-1], int(runner.update), best_score=float(runner.best.score),
                        mean_episode_score=seen[-1] if len(seen) else float("nan"),
                        env_steps=env_steps(cfg, int(runner.update)))
            bar.update(n)
            bar.set_postfix(best=f"{float(runner.best.score):.4f}")
    return runner


def surrogate_train(module, cfg, c: SelectConfig, env, params, cache: RewardCache, progress: bool, *,
                    ckpt_dir: Path | None = None, resume: bool = False, signature: str = "",
                    stop_after: int | None = None, caps=None):
    """WarmStart + reward-model rollouts: returns (best order, its true proxy score, extra info).

    With ``ckpt_dir``, the agent and the search log are saved together after every round (one
    checkpoint step, so they never disagree); ``search.json`` mirrors the log for reports. Each
    round's model rescores the episodes under way (:func:`_rescored`) and relabels DQN's replay buffer
    (:func:`jaxsel.agents.dqn.relabelled`)."""
    sizes, budget, quota = np.asarray(params.sizes), int(params.budget), params.quota
    ck = None if ckpt_dir is None else Checkpoints(Path(ckpt_dir) / "agent", signature, resume=resume)
    log_path = None if ckpt_dir is None else Path(ckpt_dir).absolute() / "search.json"
    restore = ck is not None and ck.step is not None
    if restore:  # the log as it was after the saved round (signed as this run signs it); the agent is restored below
        log, rng = replace(search.SearchLog(**ck.record()["log"]), signature=signature), np.random.default_rng(c.seed)
        rng.bit_generator.state = log.rng_state
    else:
        log, rng = search._start(None, signature, c.seed, cache, sizes, budget, c.warm_start, False, quota, caps)
    key = jax.random.PRNGKey(c.seed)
    per_round = max(1, cfg.num_updates // c.surrogate_rounds)
    rollouts = _rollouts(env, sample=True)
    init, update = programs(module, cfg, env)  # compiled once: each round's reward model is an argument
    runner = None
    last = c.surrogate_rounds if stop_after is None else min(stop_after, c.surrogate_rounds)
    for r in progress_.bar(range(log.round, last), desc=f"{c.method} on reward model", disable=not progress):
        model = reward_model.fit(jax.random.fold_in(key, r),
                                 reward_model.coverage(search.takes(log.orders, sizes, budget, quota, caps), sizes),
                                 np.array(log.scores))
        sur_params = params.replace(proxy=reward_model.Surrogate(model, params.sizes, params.proxy.num_classes))
        if runner is None:
            runner = init(key, sur_params)
            if restore:  # resuming: the agent as it was after the previous round
                runner, _ = ck.restore(runner)
        # episodes under way go on, their scores now the new model's: a step's reward is one model's change
        runner = runner._replace(best=empty_best(sur_params), env_state=_rescored(runner.env_state, sur_params))
        if isinstance(runner, dqn.Runner):  # and the replay buffer's transitions are this model's rewards too
            runner = runner._replace(buffer=_relabelled(runner.buffer, sur_params))
        runner = update(runner, per_round, sur_params)
        outs = rollouts(runner.params, sur_params, jax.random.split(jax.random.fold_in(key, 1000 + r), c.surrogate_eval))
        new = [[int(a) for a in row if a >= 0] for row in np.asarray(outs.order)]
        new.append([int(a) for a in np.asarray(runner.best.order) if a >= 0])
        search._advance(log, new, cache, rng, sizes, budget, log_path, quota, caps)
        metrics.log(f"{c.method} on reward model", r + 1, best_score=max(log.scores), evaluations=len(log.orders))
        if ck is not None:
            ck.save(r, runner, {"log": asdict(log)})
    i = int(np.argmax(log.scores))
    return log.orders[i], float(log.scores[i]), {"evaluations": len(log.orders),
                                                 "warm_start_best": float(max(log.scores[:c.warm_start]))}


@jax.jit
def _rescored(states, params):
    """Environment states (batched) with their scores recomputed by ``params.proxy``: a reward-model
    round's new model, so that the first step of each episode under way is not rewarded by the new
    model's score less the old one's."""
    score = jax.vmap(lambda p: params.proxy.value(params.proxy.score_state(p)))(states.pstate)
    return states._replace(score=score.astype(states.score.dtype))


_relabelled = jax.jit(dqn.relabelled)


@jax.jit
def _score(proxy, subset: jax.Array):
    """``proxy.score(subset)`` as one compiled program: called eagerly, its ~50 operations compiled one
    by one (~2.7 s on 2 CPU cores, once per process and proxy shape, at the end of every selection)."""
    return proxy.score(subset)


def _trained(module, cfg, c: SelectConfig, env, params, progress: bool, *, ckpt_dir, resume: bool,
             signature: str, stop_after) -> tuple[list[int], float, dict]:
    """Train ``c.method``'s agent (``module``, ``cfg``) without reward-model rounds: the chosen cluster order,
    its proxy score and what selection.json records beside (history, env steps, how it was completed)."""
    extra: dict = {}
    if abs(env_steps(cfg, cfg.num_updates) - cfg.total_timesteps) > 0.1 * cfg.total_timesteps:  # > 10% off
        warn(f"{c.method}: {env_steps(cfg, cfg.num_updates)} environment steps instead of the "
             f"{cfg.total_timesteps} asked: training runs whole updates of {env_steps(cfg, 1)} steps", once=True)
    if c.method == "dqn" and cfg.learning_updates == 0:
        chosen = "its untrained greedy choice" if c.final == "greedy" else "the best of its random exploration episodes"
        warn(f"dqn: no update takes a gradient step ({env_steps(cfg, cfg.num_updates)} environment steps, "
             f"learning_starts {cfg.learning_starts}, train_every {cfg.train_every}, buffer_size {cfg.buffer_size}): "
             f"the network never trains and the selection is {chosen}; raise the steps (--steps / rl_steps) "
             f"well above learning_starts", once=True)
    runner = train_agent(module, cfg, env, params, jax.random.PRNGKey(c.seed), ckpt_dir=ckpt_dir,
                         every=c.checkpoint_every, resume=resume, progress=progress, stop_after=stop_after,
                         signature=signature)
    steps = env_steps(cfg, int(runner.update))
    best = runner.best
    if c.final == "greedy" or not np.isfinite(float(best.score)):
        if c.final == "best":
            warn(f"{c.method}: no episode finished in {steps} environment steps ({cfg.num_envs} "
                 f"environments; an episode takes up to {params.max_steps} picks); the selection is a "
                 f"greedy rollout of the trained network. Raise the steps (--steps / rl_steps) to at least "
                 f"{min_steps(cfg, params.max_steps)} for the agent to see whole episodes")
            extra["completed_by"] = "greedy rollout"
        best = _rollouts(env, sample=False)(runner.params, params, jax.random.PRNGKey(c.seed))
    order = [int(a) for a in np.asarray(best.order) if a >= 0]
    score = float(best.score)
    extra["history"] = [None if np.isnan(v) else float(v) for v in np.asarray(runner.history)]
    extra["env_steps"] = steps
    return order, score, extra


@in_32_bits
def select(proxy, clustering, train_labels, config: SelectConfig = SelectConfig(), *, meta: dict | None = None,
           ckpt_dir: str | Path | None = None, resume: bool = False, progress: bool = True,
           stop_after: int | None = None, train_x: np.ndarray | None = None,
           issues: np.ndarray | None = None, warn_missing: bool = True) -> Selection:
    """Choose ``config.budget`` of the train set with ``config.method``; returns a :class:`Selection`.
    Runs with, and records, ``config.used()``: the settings the method does not read (:func:`reads`)
    at their defaults, with one warning naming those given otherwise (:func:`ignored`).

    With ``ckpt_dir`` the run is checkpointed (RL: every ``checkpoint_every`` updates; climb and
    reward-model rounds: every round); ``resume`` continues from there. ``stop_after`` ends the
    call early (after that many updates, or rounds) as a time-sliced job would. ``train_x`` (N, d):
    the train embeddings the clustering was fitted on, needed by the ``typical`` baseline.
    ``issues`` (N,) bool: the rows the ``cleanlab`` baseline leaves out, when already found (None:
    :func:`jaxsel.label_issues.find`). Example-level baselines (:mod:`jaxsel.baselines`) have no
    cluster picks (``cluster_ids`` empty). A selection without any example of a class the train rows
    hold (``meta["missing_classes"]``) is a JaxselWarning unless ``warn_missing`` is False (the
    ``jaxsel`` commands word their own)."""
    make_room()  # a long process's compiled programs: jaxsel.programs
    c = config
    train_labels = checked_parts("select(proxy, clustering, train_labels, config)", proxy, clustering, train_labels,
                                 (c, SelectConfig, "config"))
    if resume and ckpt_dir is None:
        raise JaxselError("resume=True needs the ckpt_dir of the run to resume")
    if stop_after is not None and (not is_int(stop_after) or stop_after < 1 or ckpt_dir is None):
        raise JaxselError(f"stop_after ends a checkpointed run after that many updates or rounds (a whole number from "
                          f"1, with a ckpt_dir to keep them in), got {stop_after!r}"
                          + (" without a ckpt_dir" if ckpt_dir is None else ""))
    examples = budget_examples(c.budget, len(train_labels)) if c.method == "full" else \
        checked_examples(c.budget, len(train_labels))
    if c.quota is not None and c.quota >= examples and c.method not in BASELINES:  # given, not budget / horizon
        warn(f"quota {c.quota} is at least the budget's {examples} examples: each pick takes a whole cluster (or the "
             f"rest of the budget), as granularity 'cluster' does; budget / horizon would be "
             f"{quota_for('quota', None, c.horizon, examples)}", once=True)
    if said := ignored(c):
        warn(f"{c.method} ignores {'; '.join(said)}", once=True)
    c = c.used()  # what the method reads, the rest at defaults: as its stage is keyed and its checkpoints signed
    quota = quota_for(c.granularity, c.quota, c.horizon, examples)
    caps = None if c.method in BASELINES else balance_caps(clustering, train_labels, examples,
                                                                               c.balance)
    env, params = make_env(proxy, clustering, train_labels, c.budget, reward_scale=c.reward_scale, quota=quota,
                           agreement=c.agreement, similarity=c.similarity, caps=caps)
    proxy = params.proxy  # scores takes of quota chunks
    budget = int(params.budget)
    sizes = np.asarray(clustering.sizes)
    cache = RewardCache(params.proxy)
    # with several processes the sharded sums round in another order, so long runs go their own way: a checkpoint
    # resumes under the process count that wrote it (one process keeps the signature of before)
    processes = {"processes": jax.process_count()} if jax.process_count() > 1 else {}
    signature = json.dumps({"config": settings(c), "k": clustering.k, "meta": meta, **processes, **revised(c)},
                           sort_keys=True, default=str)
    if ckpt_dir is not None:
        Path(ckpt_dir).mkdir(parents=True, exist_ok=True)
        _other_selections(Path(ckpt_dir), signature, c, resume)
    if c.method in AGENTS:
        module, cfg = (ppo, c.ppo) if c.method == "ppo" else (dqn, c.dqn)
        run = dict(ckpt_dir=ckpt_dir, resume=resume, signature=signature, stop_after=stop_after)
        order, score, extra = (surrogate_train(module, cfg, c, env, params, cache, progress, caps=caps, **run)
                               if c.surrogate_rounds > 0 else _trained(module, cfg, c, env, params, progress, **run))
    elif c.method in baselines.METHODS:
        order, score, extra = [], None, {}  # no search: null in selection.json (a bare NaN is not JSON)
    else:
        if c.method == "random-search":
            found = search.random_search(cache, sizes, budget, c.random_samples, c.seed, quota, caps)
        elif c.method == "greedy":
            found = search.greedy(cache, sizes, budget, quota, caps=caps, progress_bar=progress)
        elif c.method == "climb":
            found = search.climb(cache, sizes, budget, rounds=c.climb_rounds, seed=c.seed, resume=resume,
                                 signature=signature, stop_after=stop_after, quota=quota, caps=caps,
                                 progress_bar=progress,
                                 log_path=None if ckpt_dir is None else Path(ckpt_dir).absolute() / "search.json")
        else:
            found = search.full(cache, sizes)
        order, score, extra = found.order, found.score, dict(found.extra, evaluations=found.evaluations)
    n_budget = len(train_labels) if c.method == "full" else budget
    if c.method in baselines.METHODS:
        if c.method == "cleanlab" and issues is None:
            issues = label_issues.find(proxy, train_labels, clustering.assignment)
        indices = baselines.indices(c.method, n_budget, c.seed, labels=np.asarray(train_labels), clustering=clustering,
                                    x=train_x, issues=issues)
        final = whole = proxy.score_rows(indices)
    else:
        take = sizes.astype(np.int32) if c.method == "full" else take_for(order, sizes, n_budget, quota, caps)
        indices = rows_for(clustering, take)
        final = _score(proxy, jax.numpy.asarray(take))  # the exported rows, the last pick trimmed
        untrimmed = take_for(order, sizes, int(sizes.sum()), quota, caps)  # the picks uncut by the budget (caps stay)
        whole = _score(proxy, jax.numpy.asarray(untrimmed))
        extra["untrimmed_examples"] = int(untrimmed.sum())
    if len(indices) != min(n_budget, int(sizes.sum())):
        raise JaxselError(f"{c.method} selected {len(indices)} examples, not the budget of {n_budget}")
    if not np.isfinite([final.accuracy, final.loglik]).all():
        raise JaxselError(f"the {proxy.kind} proxy scored the {c.method} selection {float(final.accuracy)} (not a "
                          f"number): check the proxy settings (lam, temperature), that the embeddings vary, and "
                          f"their scale (the proxy solves in float32: large unnormalised values with project = None "
                          f"make its system singular; L2-normalise rows or keep the PCA projection)")
    empty = _score(proxy, jax.numpy.zeros(clustering.k, bool))
    scores = {"proxy_accuracy": float(final.accuracy), "proxy_accuracy_empty": float(empty.accuracy),
              "proxy_loglik": float(final.loglik), "proxy_objective": proxy.cfg.objective,
              "proxy_score": float(proxy.value(final)), "proxy": proxy.kind,
              "proxy_accuracy_whole_clusters": float(whole.accuracy),
              "search_score": score, **extra}
    labels = np.asarray(train_labels)
    counts = np.bincount(labels[indices], minlength=proxy.num_classes)
    train_counts = np.bincount(labels, minlength=proxy.num_classes)
    info = {"method": c.method, "budget": c.budget, "budget_examples": n_budget, "seed": c.seed,
            "granularity": c.granularity, "quota": quota, "balance": c.balance,
            "class_caps": None if caps is None else caps.caps.tolist(),
            "label_counts": counts.tolist(), "train_label_counts": train_counts.tolist(),
            "train_labels_digest": digest(labels),
            "missing_classes": missing_classes(counts, train_counts),
            "jaxsel_version": code_version(),
            "config": {k: v for k, v in asdict(c).items() if k in reads(c)},  # the settings it ran with
            **revised(c), **(meta or {})}
    planned = stop_points(c)
    if stop_after is not None and planned is None:
        warn(f"{c.method} has no updates or rounds to stop after: stop_after={stop_after} is ignored")
    elif stop_after is not None and stop_after < planned[0]:  # a time slice: say so in the file
        info["stopped_after"] = int(stop_after)
        warn(f"{c.method} stopped after {stop_after} of {planned[0]} {planned[1]} (stop_after): a partial selection; "
             f"select again with resume=True to finish")
    if warn_missing:
        warn_missing_classes(info, c, len(order))
    return Selection(order, indices, scores, info, np.asarray(clustering.assignment)[indices])


def warn_missing_classes(meta: dict, c: SelectConfig, picks: int) -> None:
    """Warn when a selection's ``meta`` names classes it holds no example of (``missing_classes``;
    ``picks``: its cluster picks): a model finetuned on it cannot predict them (break-it round 51:
    greedy, PPO and DQN each took one whole cluster of one class, at the empty subset's score,
    without a word from the library)."""
    if gone := meta["missing_classes"]:
        names = [str(i) for i in range(len(meta["label_counts"]))]
        whole = c.method not in BASELINES and c.granularity == "cluster"
        warn(f"the {c.method} selection holds {no_example_of(gone, names)} (meta['missing_classes']): try a larger "
             f"budget" + (f", granularity='quota', or balance='equal' over clusters of one class each "
                          f"(cluster.kmeans(..., labels=train_labels)): its {meta['budget_examples']} examples are "
                          f"{counted(picks, 'cluster')}" if whole else ""))


_WHY = {"balance": "class caps apply to the RL agents and the cluster searches",
        "surrogate_rounds": "the reward model trains the RL agents"}
_UNLESS = {"horizon": "it sets the rows per pick of granularity 'quota' without a quota",
           "final": "the reward-model rounds choose the result", "checkpoint_every": "each reward-model round is saved",
           "warm_start": "read with surrogate_rounds", "surrogate_eval": "read with surrogate_rounds"}  # reads' rules


def ignored(c: SelectConfig) -> list[str]:
    """The settings of ``c`` that its method does not read (:func:`reads`) and that differ from their
    defaults, each as "name=value: why" (an agent's config, which the CLI fills for every method,
    is left out): what :func:`select` warns of before running with :meth:`SelectConfig.used`. Why:
    the methods that would read it under ``c``'s other settings, else the rule that drops it."""
    out, read = [], reads(c)
    for f in fields(c):
        value = getattr(c, f.name)
        if f.name in read or f.name in AGENTS or value == getattr(_UNREAD, f.name):
            continue
        readers = [m for m in READS if f.name in reads(replace(c, method=m))]
        why = _WHY.get(f.name) or (f"read by {', '.join(readers)}" if readers else _UNLESS[f.name])
        out.append(f"{f.name}={value!r}: {why}")
    return out


def _other_selections(folder: Path, signature: str, c: SelectConfig, resume: bool) -> None:
    """What another selection left in the checkpoint folder ``folder`` and ``c.method`` does not keep
    (an agent's checkpoints ``agent/``, a search log ``search.json``): removed on a fresh start (which
    the CLI says replaces them); on a resume, refused when signed otherwise than ``signature``
    (:class:`jaxsel.checkpoint.CheckpointMismatch`) unless the method's own is there (then that is
    what resumes, and is checked). Greedy or climb resumed where a PPO run stopped had started
    afresh and written over its selection without a word (round 34)."""
    agent, log = folder / "agent", folder / "search.json"
    owns_agent = c.method in AGENTS
    owns_log = c.method == "climb" or (owns_agent and c.surrogate_rounds > 0)
    agents_there = (agent / MARKER).exists()  # jaxsel's checkpoints, not a folder of the user's named so
    if not resume:
        if writes_files() and agents_there and not owns_agent:
            shutil.rmtree(agent)
        if writes_files() and log.exists() and not owns_log:
            log.unlink()
    elif not (owns_agent and agents_there or owns_log and log.exists()):
        if agents_there:
            Checkpoints(agent, signature, resume=True)
        search.SearchLog.resume(log, signature)


def stop_points(c: SelectConfig) -> tuple[int, str] | None:
    """(count, "updates" or "rounds"): what ``stop_after`` counts in a selection with ``c``: PPO's or
    DQN's updates, or the rounds of a reward model or of climb; None for methods without any (greedy,
    random search, the baselines)."""
    if c.method in AGENTS and c.surrogate_rounds:
        return c.surrogate_rounds, "rounds"
    if c.method in AGENTS:
        return getattr(c, c.method).num_updates, "updates"
    if c.method == "climb":
        return c.climb_rounds, "rounds"
    return None


def check_kept(kept: int, n: int, examples: int) -> None:
    """JaxselError when a label-issue filter keeps too few (``kept`` of ``n``) train rows for a
    search to choose a budget of ``examples`` among them."""
    if examples >= kept:
        raise JaxselError(f"the label-issue filter leaves {kept} of {n} train rows, too few to choose "
                          f"{examples} from (lower the budget or use a milder filter)")


def select_among(rows: np.ndarray, make_proxy, clustering, train_labels, config: SelectConfig = SelectConfig(),
                 *, score_with=None, warn_missing: bool = True, **kwargs) -> Selection:
    """:func:`select` over the train rows ``rows`` only (e.g. the rows no label-issue filter flags),
    with the budget still a fraction of all N train rows; the selection's indices, picks and label
    counts refer to all rows and the full clustering. ``make_proxy(rows, clustering)`` builds the
    proxy of those rows under their restricted clustering (:func:`jaxsel.cluster.restrict`);
    ``kwargs`` go to :func:`select` (``train_x``: all N rows' embeddings). With ``score_with``, a
    proxy of all N rows, the recorded ``proxy_accuracy``, ``proxy_loglik``, ``proxy_score`` and
    ``proxy_accuracy_whole_clusters`` are its scores of the rows (``score_with.score_rows``), as
    every other method's, and the restricted proxy's, which the search maximised, are kept with the
    suffix ``_among_kept``. ``warn_missing``: :func:`select`'s, of the classes of all N rows. Raises
    JaxselError when fewer rows are left than the budget."""
    from jaxsel.cluster import restrict
    rows, labels = np.asarray(rows, np.int64), np.asarray(train_labels)
    examples = budget_examples(config.budget, len(labels))
    check_kept(len(rows), len(labels), examples)
    sub, clusters = restrict(clustering, rows)
    if kwargs.get("train_x") is not None:
        kwargs["train_x"] = np.asarray(kwargs["train_x"])[rows]
    # the same example count over the kept rows: round(examples / n * n) == examples
    inner = replace(config, budget=examples / len(rows))
    sel = select(make_proxy(rows, sub), sub, labels[rows], inner, warn_missing=False, **kwargs)  # all rows': below
    indices = rows[sel.indices]
    meta = dict(sel.meta, budget=config.budget, config=asdict(config.used()), excluded_rows=int(len(labels) - len(rows)),
                train_label_counts=np.bincount(labels, minlength=len(sel.meta["label_counts"])).tolist(),
                train_labels_digest=digest(labels))
    meta["missing_classes"] = missing_classes(meta["label_counts"], meta["train_label_counts"])
    scores = sel.scores
    if score_with is not None:  # the rows on the proxy every other method is scored with
        caps = None if config.method in BASELINES else balance_caps(sub, labels[rows], examples, config.balance)
        untrimmed = rows[rows_for(sub, take_for(sel.cluster_ids, sub.sizes, int(sub.sizes.sum()), meta["quota"], caps))]
        final, whole = score_with.score_rows(indices), score_with.score_rows(untrimmed)
        mine = ("proxy_accuracy", "proxy_loglik", "proxy_score", "proxy_accuracy_whole_clusters")
        scores = {**scores, **{f"{k}_among_kept": scores[k] for k in mine},
                  **dict(zip(mine, map(float, (final.accuracy, final.loglik, score_with.value(final), whole.accuracy))))}
    if warn_missing:
        warn_missing_classes(meta, config.used(), len(sel.cluster_ids))
    return Selection([int(clusters[j]) for j in sel.cluster_ids], indices, scores, meta,
                     np.asarray(clustering.assignment)[indices])


def select_unflagged(flagged: np.ndarray | None, proxy, clustering, train_labels, config: SelectConfig,
                     *, train_x: np.ndarray, validation: tuple[np.ndarray, np.ndarray], **kwargs) -> Selection:
    """``[select] filter = "cleanlab"`` for RL and the cluster searches: :func:`select_among` the rows
    cleanlab does not flag (``flagged`` (N,) bool; None: :func:`jaxsel.label_issues.find` on
    ``proxy``), each restricted proxy made like ``proxy`` from ``train_x`` (N, d) and ``validation``
    (embeddings, labels). Example-level baselines and ``full`` ignore the filter (:func:`select`). The
    recorded proxy scores are ``proxy``'s, as the other methods' (:func:`select_among`'s ``score_with``)."""
    proxy.check_clustering(clustering)  # the restricted proxies are made from it: refuse another, as select does
    if config.method in BASELINES:
        return select(proxy, clustering, train_labels, config, train_x=train_x, **kwargs)
    from jaxsel.proxy import make
    labels = np.asarray(train_labels)
    if flagged is None:
        flagged = label_issues.find(proxy, labels, clustering.assignment)
    return select_among(np.flatnonzero(~check_mask(flagged, len(labels), "flagged")),
                        lambda r, sub: make(train_x[r], labels[r], sub, *validation, proxy.cfg),
                        clustering, labels, config, score_with=proxy, train_x=train_x, **kwargs)
