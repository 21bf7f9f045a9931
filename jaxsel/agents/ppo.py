"""PPO in the PureJaxRL style: ``make_train(config, env) -> train(key, env_params)``.

Everything after ``make_train`` is one pure function of the key and the environment's params:
vmapped environments, a masked categorical actor-critic (``jaxsel.agents.networks``), GAE and the
clipped surrogate from rlax, an unclipped squared-error value loss (``clip_value``: PureJaxRL's
clipped one), minibatch epochs, an entropy bonus and a linearly annealed learning rate, all inside
``lax.scan``, so ``jax.jit(jax.vmap(train, in_axes=(0, None)))(keys, params)``
trains several seeds at once. The params (proxy arrays included) are arguments, not constants
baked into the program, so one compilation serves every set of params of the same shapes (each
reward-model round, each budget's proxy). ``make_chunks`` exposes the same run as ``init`` +
``update(runner, n, env_params)`` for checkpointed host loops (``jaxsel.agents``).

Logged per run (fixed-size, never grows with the run): the best finished episode (score, take,
pick order) and a history of ``episodes.HISTORY`` mean episode scores sampled evenly over the updates.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax
import rlax

from jaxsel.agents import networks
from jaxsel.agents.env import EnvParams, SelectionEnv, shard_envs
from jaxsel.agents.episodes import Best, Chunks, empty_best, empty_history, record_mean, track_best
from jaxsel.config import MAX_PREFERENCE_RATE, NETWORK, NETWORKS, later
from jaxsel.errors import JaxselError, check_at_least, check_choice, check_range, check_types


@dataclass(frozen=True)
class PPOConfig:
    num_envs: int = 64
    num_steps: int = 16
    total_timesteps: int = 20_000  # the CLI's and run configs' default too ([select] rl_steps)
    update_epochs: int = 4
    num_minibatches: int = 4
    lr: float = 3e-3  # 3e-4 (PureJaxRL's) barely moves the policy in 100k steps here: bench/README.md, "Does PPO learn"
    anneal_lr: bool = True
    gamma: float = 1.0
    gae_lambda: float = 0.95
    clip_eps: float = 0.2
    # the value's change per update clipped to +-clip_eps too, as PureJaxRL's loss does (True until 2026-12-06:
    # on returns of tens, rewards x reward_scale 100, it held the critic far behind them; bench/README.md,
    # "PPO's critic without value clipping")
    clip_value: bool = later(False, before=True)
    ent_coef: float = 0.01
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5
    hidden: int = 64
    network: str = later(NETWORK, before="early")  # NETWORKS: how the clusters' state joins their features
    # ("early" until 2026-12-05; bench/README.md, "Late fusion as the agents' default")
    preference_rate: float = later(0.0)  # > 0: a learned preference per cluster at this x lr (networks.preference_rate)

    def __post_init__(self):
        check_types("ppo", self)
        check_choice("ppo", self, "network", NETWORKS)
        check_range("ppo", self, 0, MAX_PREFERENCE_RATE, "preference_rate")
        check_at_least("ppo", self, 1, "num_envs", "num_steps", "total_timesteps", "update_epochs",
                       "num_minibatches", "hidden")
        check_range("ppo", self, 0, float("inf"), "lr", "max_grad_norm", low_open=True)
        check_range("ppo", self, 0, 1, "gamma", "gae_lambda")
        check_range("ppo", self, 0, float("inf"), "ent_coef", "vf_coef")
        check_range("ppo", self, 0, float("inf"), "clip_eps", low_open=True)
        if (self.num_envs * self.num_steps) % self.num_minibatches:
            raise JaxselError(f"ppo num_minibatches ({self.num_minibatches}) must divide num_envs x num_steps "
                              f"({self.num_envs * self.num_steps})")

    @property
    def num_updates(self) -> int:
        return max(1, self.total_timesteps // (self.num_envs * self.num_steps))

    @property
    def minibatch_size(self) -> int:
        return self.num_envs * self.num_steps // self.num_minibatches


class Transition(NamedTuple):
    obs: jax.Array
    valid: jax.Array
    action: jax.Array
    log_prob: jax.Array
    value: jax.Array
    reward: jax.Array
    done: jax.Array


class Runner(NamedTuple):
    params: dict
    opt_state: optax.OptState
    env_state: object
    obs: jax.Array
    key: jax.Array
    update: jax.Array
    best: Best
    history: jax.Array


def make_chunks(config: PPOConfig, env: SelectionEnv) -> Chunks:
    """The training run in resumable pieces: ``init(key, env_params)``, ``update(runner, n,
    env_params)``, and for host-driven loops (the benchmark's baseline) ``rollout_start``,
    ``env_step(env_params, carry, _)`` and ``learn(env_params, runner, carry, trajectory)``. The
    environment's params are arguments, not constants of the program: one compiled ``update``
    serves any params of the same shapes."""
    c = config
    schedule = (optax.linear_schedule(c.lr, 0.0, c.num_updates * c.update_epochs * c.num_minibatches)
                if c.anneal_lr else c.lr)
    tx = optax.chain(optax.clip_by_global_norm(c.max_grad_norm), optax.adam(schedule, eps=1e-5),
                     *networks.optimizer_extras(c.preference_rate))

    def init(key: jax.Array, env_params: EnvParams) -> Runner:
        key, k_net, k_env = jax.random.split(key, 3)
        params = networks.init(k_net, env.observation_shape(env_params)[-1], env_params.features.shape[1], c.hidden,
                               c.network, env.num_actions(env_params) if c.preference_rate else 0)
        obs, env_state = jax.vmap(env.reset, in_axes=(0, None))(jax.random.split(k_env, c.num_envs), env_params)
        return Runner(params, tx.init(params), env_state, obs, key, jnp.int32(0), empty_best(env_params),
                      empty_history())

    def _env_step(env_params, carry, _):
        params, env_state, obs, key, best, score_sum, episodes = carry
        env_state, obs = shard_envs((env_state, obs), c.num_envs)
        key, k_act, k_env = jax.random.split(key, 3)
        valid = jax.vmap(env.action_mask, in_axes=(0, None))(env_state, env_params)
        logits, value = networks.apply(params, obs, env_params.features)  # (N, K), (N,)
        logits = networks.masked(logits, valid)
        action = jax.random.categorical(k_act, logits)
        log_prob = jnp.take_along_axis(jax.nn.log_softmax(logits), action[:, None], 1)[:, 0]
        obs2, env_state, reward, done, info = jax.vmap(env.step, in_axes=(0, 0, 0, None))(
            jax.random.split(k_env, c.num_envs), env_state, action, env_params)
        best = track_best(best, done, info)
        score_sum += jnp.where(done, info["final_score"], 0.0).sum()
        episodes += done.sum()
        return (params, env_state, obs2, key, best, score_sum, episodes), Transition(
            obs, valid, action, log_prob, value, reward, done)

    def _loss(params, encoded, batch: Transition, adv, target, features):
        logits, value = networks.apply(params, batch.obs, features, encoded)
        logits = networks.masked(logits, batch.valid)
        logp_all = jax.nn.log_softmax(logits)
        logp = jnp.take_along_axis(logp_all, batch.action[:, None], 1)[:, 0]
        ratio = jnp.exp(logp - batch.log_prob)
        pg = rlax.clipped_surrogate_pg_loss(ratio, adv, c.clip_eps)
        v_loss = (value - target) ** 2
        if c.clip_value:
            v_clipped = batch.value + jnp.clip(value - batch.value, -c.clip_eps, c.clip_eps)
            v_loss = jnp.maximum(v_loss, (v_clipped - target) ** 2)
        v_loss = 0.5 * v_loss.mean()
        probs = jnp.exp(logp_all)
        entropy = -jnp.sum(jnp.where(batch.valid, probs * logp_all, 0.0), -1).mean()
        return pg + c.vf_coef * v_loss - c.ent_coef * entropy

    def _update_minibatch(features, carry, mb):
        params, opt_state = carry
        batch, adv, target = mb
        adv = (adv - adv.mean()) / (adv.std() + 1e-8)  # over the minibatch, before it is cut into chunks
        chunk = networks.grad_chunk(*batch.obs.shape[:2], c.network)  # static shapes: (minibatch, K)
        grads = networks.chunked_grad(partial(_loss, features=features), params, (batch, adv, target), chunk,
                                      shared=partial(networks.encode, features=features))
        updates, opt_state = tx.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), None

    def _update_epoch(features, carry, key):
        params, opt_state, traj, adv, target = carry
        n = c.num_envs * c.num_steps
        perm = jax.random.permutation(key, n)
        flat = jax.tree.map(lambda x: x.reshape(n, *x.shape[2:])[perm].reshape(
            c.num_minibatches, c.minibatch_size, *x.shape[2:]), (traj, adv, target))
        (params, opt_state), _ = jax.lax.scan(partial(_update_minibatch, features), (params, opt_state), flat)
        return (params, opt_state, traj, adv, target), None

    def _learn(env_params, runner: Runner, carry, traj: Transition) -> Runner:
        """GAE, minibatch epochs and bookkeeping after a rollout that ended in ``carry``."""
        params, env_state, obs, key, best, score_sum, episodes = carry
        _, last_value = networks.apply(params, obs, env_params.features)
        values = jnp.concatenate([traj.value, last_value[None]], 0)
        discount = c.gamma * (1.0 - traj.done.astype(jnp.float32))
        gae = jax.vmap(rlax.truncated_generalized_advantage_estimation, in_axes=(1, 1, None, 1), out_axes=1)
        adv = gae(traj.reward, discount, c.gae_lambda, values)
        target = adv + traj.value
        key, k_epochs = jax.random.split(key)
        (params, opt_state, *_), _ = jax.lax.scan(
            partial(_update_epoch, env_params.features), (params, runner.opt_state, traj, adv, target),
            jax.random.split(k_epochs, c.update_epochs))
        history = record_mean(runner.history, runner.update, c.num_updates, score_sum, episodes)
        return Runner(params, opt_state, env_state, obs, key, runner.update + 1, best, history)

    def rollout_start(runner: Runner):
        return (runner.params, runner.env_state, runner.obs, runner.key, runner.best, 0.0, 0)

    def update(runner: Runner, n: int | jax.Array, env_params: EnvParams) -> Runner:
        def _update(_, runner: Runner) -> Runner:
            carry, traj = jax.lax.scan(partial(_env_step, env_params), rollout_start(runner), None, c.num_steps)
            return _learn(env_params, runner, carry, traj)

        return jax.lax.fori_loop(0, n, _update, runner)  # a traced n: one program for chunks of any length

    return Chunks(init, update, rollout_start, _env_step, _learn)


def make_train(config: PPOConfig, env: SelectionEnv) -> Callable[[jax.Array, EnvParams], Runner]:
    """train(key, env_params) -> Runner after ``config.num_updates`` updates; pure, so jit and
    vmap it (over keys, or over params of the same shapes)."""
    if not isinstance(config, PPOConfig):  # a dict's missing attributes were an AttributeError deep inside
        raise JaxselError(f"make_train takes a PPOConfig as config, got {type(config).__name__}")
    fns = make_chunks(config, env)
    return lambda key, env_params: fns.update(fns.init(key, env_params), config.num_updates, env_params)
