"""RL throughput: PPO fully on device vs the same PPO driven by a host Python loop; DQN on device.

    python bench/rl.py [--quick] [--project 64]
    python bench/rl.py --scaling [--quick] [--network early]   # env steps/s against K and the number of environments
    python bench/rl.py --scores 10 [--updates 20]   # best proxy score found for equal env steps, 10 seeds
    python bench/rl.py --seeds 3   # a run's seeds: agents.select with compiled programs reused vs rebuilt
                                   # (PPO, DQN, CLIMB-Disc, PPO on reward-model rollouts)

Synthetic tweets-shaped data (N=30k, d=384, 3 classes), K=256 clusters, 5% budget, ridge proxy
(PCA-64 by default, as the CLI). The device version is ``ppo.make_chunks(...).update`` (one
``lax.scan`` over updates); the host loop calls the same jitted ``env_step`` once per step from
Python, stacks the trajectory and calls the same jitted learner. Both do identical work.

The peer users would pick (the stack the paper's authors would have used): sb3-contrib's
MaskablePPO on a gymnasium environment computing the same reward with numpy from the same
per-cluster statistics (``bench/peers.py``; the ``bench`` extra), 64 environments in a
DummyVecEnv, with jaxsel's PPO settings (rollout length, epochs, minibatches, learning rate); timed
for the same number of environment steps as jaxsel's 64-environment run, with the best proxy accuracy each reached.
jaxsel's PPO with its default network (late fusion, ``network = "late"``) is timed against
MaskablePPO's default MLP policy on the taken shares (what a user would write; ``vs_maskable_ppo``),
and jaxsel's PPO with the early-fusion Deep Sets network (~30x late fusion's matmul FLOPs per
sample) against the MLP (``early_vs_maskable_ppo``) and against MaskablePPO with that network and
observation ported to PyTorch (``peers.deep_sets_policy``: equal outputs for equal weights;
``vs_maskable_ppo_same_network``: the stacks doing the same work). Then the best proxy accuracy each
finds in the same env steps (4 updates of 64 x 16 with --quick, 20 without; ``--scores SEEDS``
alone) over 3 (5) seeds: jaxsel's PPO with both networks, and late fusion with a learned preference
per cluster (``preference_rate = 64``), against MaskablePPO's MLP, paired by seed, means with 95% t
intervals (``best_score_*_minus_maskable_ppo``, in accuracy points).
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import peers  # noqa: E402
from common import count, counts, entry, peer_blas, report  # noqa: E402
from proxy import synthetic  # noqa: E402

from jaxsel import cluster  # noqa: E402
from jaxsel.agents import dqn, networks, ppo  # noqa: E402
from jaxsel import proxy as proxy_mod  # noqa: E402
from jaxsel.agents.env import make_env  # noqa: E402
from jaxsel.experiment.report import mean_ci  # noqa: E402
from jaxsel.selection import AGENTS  # noqa: E402


def timed(fn):
    t = time.perf_counter()
    jax.block_until_ready(fn())
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true",
                    help="64 envs, few updates, 3 seeds of best scores (about 2 minutes on 2 idle CPU cores, 2-4.5 on a busy host)")
    ap.add_argument("--project", type=count(0), default=64, help="proxy PCA dimensions (0: full 384)")
    ap.add_argument("--envs", type=counts(1), default=None, help="comma-separated env counts (default 64,256,1024)")
    ap.add_argument("--updates", type=count(1), default=None, help="PPO updates timed per setting")
    ap.add_argument("--scaling", action="store_true", help="only PPO's env steps/s against the number of clusters "
                    "(K = 100 .. 4,096) and environments, saved as rl-scaling[-late]")
    ap.add_argument("--network", default=ppo.PPOConfig().network, choices=networks.NETWORKS,
                    help="with --scaling: PPO's network (default: PPO's default)")
    ap.add_argument("--scores", type=count(1), default=None, metavar="SEEDS",
                    help="only the best-score comparison over SEEDS seeds (--updates: default 20), saved as rl-scores")
    ap.add_argument("--seeds", type=count(2), default=None, metavar="SEEDS",
                    help="only agents.select's seconds per seed (PPO, DQN at their defaults, climb, PPO with 4 reward-model "
                         "rounds) with the compiled programs "
                         "reused across seeds against rebuilt for each, saved as rl-seeds")
    a = ap.parse_args()
    if a.seeds is not None:
        return seeds_only(a.seeds, a.project)
    if a.scaling:
        return scaling(a.quick, a.project, a.network)
    if a.scores is not None:
        return scores_only(a.scores, a.updates or 20, a.project)
    envs = a.envs if a.envs else ([64] if a.quick else [64, 256, 1024])
    n_updates = a.updates or (3 if a.quick else 10)
    env, params = setting(a.project)
    rows = []
    for n_envs in envs:
        cfg = ppo.PPOConfig(num_envs=n_envs, num_steps=16, total_timesteps=n_envs * 16 * n_updates)
        fns = ppo.make_chunks(cfg, env)
        runner0 = jax.jit(fns.init)(jax.random.PRNGKey(0), params)
        update = jax.jit(fns.update)
        step, learn = jax.jit(fns.env_step), jax.jit(fns.learn)

        def host(runner):
            for _ in range(n_updates):
                carry, trs = fns.rollout_start(runner), []
                for _ in range(cfg.num_steps):
                    carry, tr = step(params, carry, None)
                    trs.append(tr)
                runner = learn(params, runner, carry, jax.tree.map(lambda *t: jnp.stack(t), *trs))
            return runner

        jax.block_until_ready(update(runner0, n_updates, params))  # compile
        jax.block_until_ready(host(runner0))
        dev = min(timed(lambda: update(runner0, n_updates, params)) for _ in range(2))
        hst = min(timed(lambda: host(runner0)) for _ in range(2))
        steps = n_updates * n_envs * cfg.num_steps
        rows.append({"agent": "ppo", "envs": n_envs, "env_steps": steps, "device_s": dev, "host_loop_s": hst,
                     "device_steps_per_s": steps / dev, "host_steps_per_s": steps / hst, "device_vs_host": hst / dev})
        print(rows[-1], file=sys.stderr)
    skipped = peers.available("sb3_contrib", "gymnasium", "torch")
    if skipped:
        print(f"peer skipped: {skipped}", file=sys.stderr)
    else:
        ours = jaxsel_ppo(params, env, n_updates)  # the default network
        early = jaxsel_ppo(params, env, n_updates, network="early")
        for deep_sets, mine in ((False, ours), (True, early)):
            rows.append(maskable_ppo(params, n_updates, mine, deep_sets=deep_sets))
            print(rows[-1], file=sys.stderr)
        mlp = next(r for r in rows if r["agent"].startswith("MaskablePPO") and "MLP" in r["agent"])
        steps = early["config"].num_envs * early["config"].num_steps * n_updates
        rows.append({"agent": "ppo, early-fusion network", "envs": early["config"].num_envs, "env_steps": steps,
                     "device_s": early["seconds"], "device_steps_per_s": steps / early["seconds"],
                     "best_score": early["best"], "jaxsel_vs_peer": mlp["device_s"] / early["seconds"]})
        print(rows[-1], file=sys.stderr)
    n_envs = 64
    cfg = dqn.DQNConfig(num_envs=n_envs, total_timesteps=n_envs * 50, learning_starts=256)
    fns = dqn.make_chunks(cfg, env)
    runner0 = jax.jit(fns.init)(jax.random.PRNGKey(0), params)
    update = jax.jit(fns.update)
    jax.block_until_ready(update(runner0, 50, params))
    dev = min(timed(lambda: update(runner0, 50, params)) for _ in range(2))
    rows.append({"agent": "dqn", "envs": n_envs, "env_steps": 50 * n_envs, "device_s": dev,
                 "device_steps_per_s": 50 * n_envs / dev})
    best = max((r for r in rows if r["agent"] == "ppo"), key=lambda r: r["device_steps_per_s"])
    summary = {"ppo_env_steps_per_s": best["device_steps_per_s"], "ppo_device_vs_host_loop": best["device_vs_host"],
               "ppo_envs": best["envs"], "dqn_env_steps_per_s": rows[-1]["device_steps_per_s"],
               "proxy": f"ridge-d{a.project or 384}"}
    sb3 = [r for r in rows if r["agent"].startswith("MaskablePPO")]
    if sb3:
        early_row = next(r for r in rows if r["agent"].startswith("ppo, early"))
        summary.update(network=ours["config"].network, maskable_ppo_env_steps_per_s=sb3[0]["device_steps_per_s"],
                       vs_maskable_ppo=sb3[0]["jaxsel_vs_peer"],  # the ratio of these two rates:
                       jaxsel_env_steps_per_s=sb3[0]["env_steps"] / ours["seconds"], best_score_jaxsel=sb3[0]["jaxsel_best_score"],
                       best_score_maskable_ppo=sb3[0]["best_score"],
                       vs_maskable_ppo_same_network=sb3[1]["jaxsel_vs_peer"],
                       best_score_maskable_ppo_same_network=sb3[1]["best_score"],
                       early_env_steps_per_s=early_row["device_steps_per_s"],
                       early_vs_maskable_ppo=early_row["jaxsel_vs_peer"], best_score_early=early_row["best_score"])
        seeded, scores = best_scores(params, env, 3 if a.quick else 5, 4 if a.quick else 20)
        rows += seeded
        summary.update(scores)
    report("rl", rows, ["agent", "seed", "envs", "env_steps", "device_s", "host_loop_s", "device_steps_per_s",
                        "host_steps_per_s", "device_vs_host", "best_score", "jaxsel_best_score", "jaxsel_vs_peer"],
           summary, a.quick)


def problem(project: int, k: int = 256):
    """The benchmark's problem: 30k synthetic tweets-shaped rows, ``k`` clusters, the ridge proxy
    (``project`` PCA dimensions, 0: all 384): (proxy, clustering, train labels)."""
    x, y = synthetic(34_000, 384, 3, 0)
    x, y, xv, yv = x[:30_000], y[:30_000], x[30_000:], y[30_000:]
    cl = cluster.kmeans(x, k, max_iter=20)
    return proxy_mod.make(x, y, cl, xv, yv, proxy_mod.ProxyConfig(project=project or None)), cl, y


def setting(project: int, k: int = 256):
    """The benchmark's environment: :func:`problem` at a 5% budget."""
    return make_env(*problem(project, k), 0.05)


def seeds_only(seeds: int, project: int) -> None:
    """``agents.select`` for seeds 0 .. ``seeds`` - 1 in one process, as a run's seeds are: PPO and DQN
    at their defaults (20,000 env steps), CLIMB-Disc (4 rounds) and PPO on reward-model rollouts (4
    rounds), the persistent compilation cache on as in the CLI. Each seed is timed twice, with the
    programs compiled for an earlier seed reused and rebuilt, the order swapped from seed to seed:
    rebuilt clears ``agents.programs`` (the code of the morning of 2026-12-06, which traced, lowered
    and loaded the agents from the disk cache again) and compiles the reward model at every fit (the
    code until that evening, whose fit baked the log into a fresh program at each round: the disk
    cache never held it). Both must select the same rows."""
    from jaxsel import agents, assets
    from jaxsel.agents import reward_model
    assets.enable_compilation_cache()
    p, cl, y = problem(project)
    fit, body, rows = reward_model.fit, reward_model._fit.__wrapped__, []
    fresh = itertools.count()

    def fit_compiled_afresh(*args, **kwargs):
        """``fit`` until the evening of 2026-12-06: a program of its own at every call, which the disk
        cache never held (the log was baked into it); here a constant of the call's own (``n + tag - tag``, the same
        number) stands for the log."""
        tag = next(fresh)
        reward_model._fit = jax.jit(lambda keys, x, y, n, cfg: body(keys, x, y, n + tag - tag, cfg),
                                    static_argnames="cfg")
        try:
            return fit(*args, **kwargs)
        finally:
            reward_model._fit = jitted
    jitted = reward_model._fit

    cases = {m: agents.SelectConfig(method=m, budget=0.05) for m in (*AGENTS, "climb")}
    cases["ppo-surrogate"] = agents.SelectConfig(method="ppo", budget=0.05, surrogate_rounds=4)
    for method, cfg in cases.items():
        def select(seed: int, rebuild: bool):
            if rebuild:
                agents.programs.cache_clear()
            reward_model.fit = fit_compiled_afresh if rebuild else fit
            t = time.perf_counter()
            try:
                sel = agents.select(p, cl, y, dataclasses.replace(cfg, seed=seed), progress=False)
            finally:
                reward_model.fit = fit
            return time.perf_counter() - t, sel.indices.tolist()
        first, _ = select(seeds, rebuild=True)  # compiles (or loads) once, outside the timings
        for seed in range(seeds):
            if seed % 2:  # reused first: needs the programs of the previous seed's rebuild
                (reused, b), (rebuilt, a) = select(seed, False), select(seed, True)
            else:
                (rebuilt, a), (reused, b) = select(seed, True), select(seed, False)
            if a != b:
                raise AssertionError(f"{method} seed {seed}: reused programs selected other rows")
            rows.append({"method": method, "seed": seed, "rebuilt_s": rebuilt, "reused_s": reused,
                         "rebuilt_vs_reused": rebuilt / reused, "first_in_process_s": first})
            print(rows[-1], file=sys.stderr)
    summary = {f"{m.replace('-', '_')}_{k}": float(np.median([r[k] for r in rows if r["method"] == m]))
               for m in cases for k in ("rebuilt_s", "reused_s", "rebuilt_vs_reused")}
    report("rl-seeds", rows, ["method", "seed", "first_in_process_s", "rebuilt_s", "reused_s", "rebuilt_vs_reused"],
           dict(summary, seeds=seeds, proxy=f"ridge-d{project or 384}"), False)


def scores_only(seeds: int, n_updates: int, project: int) -> None:
    """:func:`best_scores` alone, for enough seeds to resolve a difference, with late fusion and
    preferences at fewer PPO epochs too (:data:`FEWER_EPOCHS`: faster learning, how much worse?) and with
    the value clipped as before 2026-12-06 (:data:`CLIPPED_VALUE`)."""
    env, params = setting(project)
    rows, summary = best_scores(params, env, seeds, n_updates, {**SETTINGS, **CLIPPED_VALUE, **FEWER_EPOCHS})
    report("rl-scores", rows, ["agent", "seed", "best_score"], dict(summary, proxy=f"ridge-d{project or 384}"), False)


def scaling(quick: bool, project: int, network: str) -> None:
    """PPO env steps/s (compilation excluded) for K = 100, 256, 1,024, 4,096 clusters of the same 30k
    synthetic rows and 16, 64, 256 environments (``quick``: 16 and 64), each timed over 2 updates of
    16 steps per environment, with the per-sample FLOPs of the ``network``'s forward pass (late
    fusion: without its feature encoder, which runs once per call)."""
    x, y = synthetic(34_000, 384, 3, 0)
    x, y, xv, yv = x[:30_000], y[:30_000], x[30_000:], y[30_000:]
    rows = []
    for k in (100, 256, 1024, 4096):
        cl = cluster.kmeans(x, k, method="lloyd" if k <= 256 else "minibatch", max_iter=10)
        p = proxy_mod.make(x, y, cl, xv, yv, proxy_mod.ProxyConfig(project=project or None))
        env, params = make_env(p, cl, y, 0.05)
        state, hidden = env.observation_shape(params)[-1], ppo.PPOConfig().hidden
        feats = state + params.features.shape[1]
        flops = (2 * k * (feats * hidden + 2 * hidden * hidden + hidden) if network == "early"  # per-cluster layers
                 else 2 * k * hidden * (state + 3))  # late: the head's state term, context, output layer
        for n_envs in ([16, 64] if quick else [16, 64, 256]):
            n_updates = 2
            cfg = ppo.PPOConfig(num_envs=n_envs, num_steps=16, total_timesteps=n_envs * 16 * n_updates, network=network)
            fns = ppo.make_chunks(cfg, env)
            runner0 = jax.jit(fns.init)(jax.random.PRNGKey(0), params)
            update = jax.jit(fns.update)
            compile_s = timed(lambda: update(runner0, n_updates, params))
            run_s = timed(lambda: update(runner0, n_updates, params))
            steps = n_updates * n_envs * cfg.num_steps
            rows.append({"K": k, "envs": n_envs, "env_steps": steps, "seconds": run_s, "env_steps_per_s": steps / run_s,
                         "first_call_s": compile_s, "policy_mflop_per_sample": flops / 1e6})
            print(rows[-1], file=sys.stderr)
    best = {k: max(r["env_steps_per_s"] for r in rows if r["K"] == k) for k in (100, 256, 1024, 4096)}
    report(f"rl-scaling{'-late' if network == 'late' else ''}", rows,
           ["K", "envs", "env_steps", "seconds", "env_steps_per_s", "first_call_s", "policy_mflop_per_sample"],
           {"best_env_steps_per_s_by_K": best, "proxy": f"ridge-d{project or 384}", "network": network}, quick)


def jaxsel_ppo(params, env, n_updates: int, n_envs: int = 64, seed: int = 0, timed_runs: int = 3, **settings) -> dict:
    """jaxsel's PPO (with ``settings``: PPOConfig fields) from scratch for ``n_envs * 16 * n_updates``
    environment steps: the config, the median seconds of ``timed_runs`` runs after compilation (None
    for 0), and the best proxy score it found."""
    cfg = ppo.PPOConfig(num_envs=n_envs, num_steps=16, total_timesteps=n_envs * 16 * n_updates, **settings)
    fns = ppo.make_chunks(cfg, env)
    runner0 = jax.jit(fns.init)(jax.random.PRNGKey(seed), params)
    update = jax.jit(fns.update)
    best = float(update(runner0, cfg.num_updates, params).best.score)  # compiles; float() waits for the run
    runs = [timed(lambda: update(runner0, cfg.num_updates, params)) for _ in range(timed_runs)]
    seconds = float(np.median(runs)) if runs else None  # the peer's one warm run is no best-of either
    return {"config": cfg, "seconds": seconds, "best": best}


SETTINGS = {"early": {"network": "early"}, "late": {"network": "late"},  # jaxsel PPO settings whose best scores are compared
            "late_preferences": {"network": "late", "preference_rate": 64.0}}
CLIPPED_VALUE = {  # --scores also compares these: PPO's value clipped as before 2026-12-06
    "late_clipped_value": {"network": "late", "clip_value": True},
    "late_preferences_clipped_value": {"network": "late", "preference_rate": 64.0, "clip_value": True}}
FEWER_EPOCHS = {  # --scores also compares these: faster learning, how much worse?
    "late_preferences_2_epochs": {"network": "late", "preference_rate": 64.0, "update_epochs": 2},
    "late_preferences_1_epoch": {"network": "late", "preference_rate": 64.0, "update_epochs": 1}}


def best_scores(params, env, seeds: int, n_updates: int, settings: dict = SETTINGS) -> tuple[list[dict], dict]:
    """The best proxy accuracy each agent finds in the same ``64 x 16 x n_updates`` env steps, over
    ``seeds`` seeds (jaxsel's key and sb3's seed): jaxsel's PPO in each of ``settings`` (default
    :data:`SETTINGS`: both networks; late fusion learning a preference per cluster too; it must
    hold "early", whose config MaskablePPO copies) and MaskablePPO with its MLP. Rows
    per agent and seed, and the paired differences (jaxsel - MaskablePPO, in accuracy points) as
    means with 95% t intervals: a run of a few updates finds its best mostly by luck of
    exploration, so one seed says little."""
    rows = []
    for seed in range(seeds):
        ours = {name: jaxsel_ppo(params, env, n_updates, seed=seed, timed_runs=0, **kw)
                for name, kw in settings.items()}
        peer = maskable_ppo(params, n_updates, {**ours["early"], "seconds": float("nan")}, seed=seed)["best_score"]
        rows += [{"agent": f"best score, ppo {name}", "seed": seed, "best_score": ours[name]["best"]} for name in ours]
        rows.append({"agent": "best score, MaskablePPO MLP", "seed": seed, "best_score": peer})
        print(rows[-len(ours) - 1:], file=sys.stderr)
    by = {r["agent"]: [q["best_score"] for q in rows if q["agent"] == r["agent"]] for r in rows}
    peer = np.asarray(by["best score, MaskablePPO MLP"])
    summary = {"best_score_seeds": seeds, "best_score_env_steps": 64 * 16 * n_updates,
               "best_score_maskable_ppo_mean": float(peer.mean())}
    for name in settings:
        mine = np.asarray(by[f"best score, ppo {name}"])
        diff, half = mean_ci(100 * (mine - peer))
        summary.update({f"best_score_{name}_mean": float(mine.mean()), f"best_score_{name}_minus_maskable_ppo": diff,
                        f"best_score_{name}_minus_maskable_ppo_ci95": half})
    return rows, summary


def maskable_ppo(params, n_updates: int, ours: dict, seed: int = 0, deep_sets: bool = False) -> dict:
    """MaskablePPO (sb3-contrib) on the numpy environment with jaxsel's PPO settings (``ours``, from
    :func:`jaxsel_ppo`: environments, rollout length, epochs, minibatches, learning rate, steps),
    against jaxsel's timing and best score. Its default MLP policy on the taken shares, or with
    ``deep_sets`` jaxsel's network and observation in PyTorch (the same work per sample)."""
    import torch
    from sb3_contrib import MaskablePPO
    from stable_baselines3.common.vec_env import DummyVecEnv
    torch.set_num_threads(os.cpu_count() if deep_sets else 1)  # sb3's small MLP: threads only add overhead
    c = ours["config"]
    steps = c.num_envs * c.num_steps * n_updates
    record: list = []
    k = int(params.sizes.shape[0])
    feats = np.asarray(params.features) if deep_sets else None
    policy = peers.deep_sets_policy(k) if deep_sets else "MlpPolicy"

    def model(record: list):
        cls = peers.numpy_selection_env(params.proxy, int(params.budget), record, feats, int(params.max_steps))
        return MaskablePPO(policy, DummyVecEnv([cls] * c.num_envs), n_steps=c.num_steps, batch_size=c.minibatch_size,
                           n_epochs=c.update_epochs, gamma=c.gamma, gae_lambda=c.gae_lambda, ent_coef=c.ent_coef,
                           learning_rate=c.lr, max_grad_norm=c.max_grad_norm, seed=seed, verbose=0,
                           device="cpu")  # sb3's advice for MLP policies, and its faster choice on a GPU machine too
    with peer_blas():
        model([]).learn(total_timesteps=c.num_envs * c.num_steps)  # untimed: torch's first passes, as jaxsel compiles
        timed_model = model(record)
        t = time.perf_counter()
        timed_model.learn(total_timesteps=steps)
        secs = time.perf_counter() - t
    net = "Deep Sets policy" if deep_sets else "MLP policy"
    return {"agent": f"MaskablePPO (sb3-contrib {peers.version('sb3-contrib')}, numpy env, {net})", "envs": c.num_envs,
            "env_steps": steps, "device_s": secs, "device_steps_per_s": steps / secs,
            "best_score": float(np.max(record)) if record else float("nan"), "jaxsel_best_score": ours["best"],
            "jaxsel_vs_peer": secs / ours["seconds"]}

if __name__ == "__main__":
    entry(main)
