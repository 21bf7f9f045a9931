"""RL throughput: PPO fully on device vs the same PPO driven by a host Python loop; DQN on device.

    python bench/rl.py [--quick] [--project 64]

Synthetic tweets-shaped data (N=30k, d=384, 3 classes), K=256 clusters, 5% budget, ridge proxy
(PCA-64 by default, as the CLI). The device version is ``ppo.make_chunks(...).update`` (one
``lax.scan`` over updates); the host loop calls the same jitted ``env_step`` once per step from
Python, stacks the trajectory and calls the same jitted learner. Both do identical work.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from common import report  # noqa: E402
from proxy import synthetic  # noqa: E402

from jaxsel import cluster  # noqa: E402
from jaxsel.agents import dqn, ppo  # noqa: E402
from jaxsel import proxy as proxy_mod  # noqa: E402
from jaxsel.agents.env import make_env  # noqa: E402


def timed(fn):
    t = time.perf_counter()
    jax.block_until_ready(fn())
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="64 and 256 envs, few updates (under 2 minutes on 2 CPU cores)")
    ap.add_argument("--project", type=int, default=64, help="proxy PCA dimensions (0: full 384)")
    ap.add_argument("--envs", default=None, help="comma-separated env counts (default 64,256,1024)")
    ap.add_argument("--updates", type=int, default=None, help="PPO updates timed per setting")
    a = ap.parse_args()
    envs = [int(e) for e in a.envs.split(",")] if a.envs else ([64, 256] if a.quick else [64, 256, 1024])
    n_updates = a.updates or (3 if a.quick else 10)
    x, y = synthetic(34_000, 384, 3, 0)
    x, y, xv, yv = x[:30_000], y[:30_000], x[30_000:], y[30_000:]
    cl = cluster.kmeans(x, 256, max_iter=20)
    p = proxy_mod.make(x, y, cl, xv, yv, proxy_mod.ProxyConfig(project=a.project or None))
    env, params = make_env(p, cl, y, 0.05)
    rows = []
    for n_envs in envs:
        cfg = ppo.PPOConfig(num_envs=n_envs, num_steps=16, total_timesteps=n_envs * 16 * n_updates)
        fns = ppo.make_chunks(cfg, env)
        runner0 = jax.jit(fns.init)(jax.random.PRNGKey(0), params)
        update = jax.jit(fns.update, static_argnums=1)
        step, learn = jax.jit(fns.env_step), jax.jit(fns.learn)

        def host(runner):
            for _ in range(n_updates):
                carry, trs = fns.rollout_start(runner), []
                for _ in range(cfg.num_steps):
                    carry, tr = step(params, carry, None)
                    trs.append(tr)
                runner = learn(runner, carry, jax.tree.map(lambda *t: jnp.stack(t), *trs))
            return runner

        jax.block_until_ready(update(runner0, n_updates, params))  # compile
        jax.block_until_ready(host(runner0))
        dev = min(timed(lambda: update(runner0, n_updates, params)) for _ in range(2))
        hst = min(timed(lambda: host(runner0)) for _ in range(2))
        steps = n_updates * n_envs * cfg.num_steps
        rows.append({"agent": "ppo", "envs": n_envs, "env_steps": steps, "device_s": dev, "host_loop_s": hst,
                     "device_steps_per_s": steps / dev, "host_steps_per_s": steps / hst, "device_vs_host": hst / dev})
        print(rows[-1], file=sys.stderr)
    n_envs = 64
    cfg = dqn.DQNConfig(num_envs=n_envs, total_timesteps=n_envs * 50, learning_starts=256)
    fns = dqn.make_chunks(cfg, env)
    runner0 = jax.jit(fns.init)(jax.random.PRNGKey(0), params)
    update = jax.jit(fns.update, static_argnums=1)
    jax.block_until_ready(update(runner0, 50, params))
    dev = min(timed(lambda: update(runner0, 50, params)) for _ in range(2))
    rows.append({"agent": "dqn", "envs": n_envs, "env_steps": 50 * n_envs, "device_s": dev,
                 "device_steps_per_s": 50 * n_envs / dev})
    best = max((r for r in rows if r["agent"] == "ppo"), key=lambda r: r["device_steps_per_s"])
    summary = {"ppo_env_steps_per_s": best["device_steps_per_s"], "ppo_device_vs_host_loop": best["device_vs_host"],
               "ppo_envs": best["envs"], "dqn_env_steps_per_s": rows[-1]["device_steps_per_s"],
               "proxy": f"ridge-d{a.project or 384}"}
    report("rl", rows, ["agent", "envs", "env_steps", "device_s", "host_loop_s", "device_steps_per_s",
                        "host_steps_per_s", "device_vs_host"], summary, a.quick)


if __name__ == "__main__":
    main()
