"""XLA:CPU compile and run times under three flag sets, each in fresh processes (XLA reads
``XLA_FLAGS`` once, when the backend starts):

- ``default``: XLA's defaults (what jaxsel's commands run);
- ``O1, loop emitters``: ``--xla_backend_optimization_level=1 --xla_cpu_use_fusion_emitters=false``
  (what the test suite sets, ``tests/conftest.py``);
- ``O0, loop emitters``: the same at LLVM -O0.

Two workloads: PPO's update on the suite's known-truth problem (``tests/test_agents.known_truth``;
compile seconds, then env steps/s over 20 updates, and the best proxy score it reached: the flags
change float rounding, so the runs part ways), and, without ``--quick``, a finetune of the
README main job's size (MiniLM, 100 rows, 3 epochs, batch 16, at least 100 steps, max_length 64,
300 validation and 800 test rows of tweets; wall seconds from a cold compile cache, compilation
included). Rounds alternate the flag sets so that a drift of the host's speed falls on all.

    python bench/xla_flags.py [--quick] [--rounds 2]    # ~14 minutes on 2 CPU cores; --quick ~1 minute

Writes ``bench/results/xla_flags-cpu[-quick].json``; the last line is the summary JSON: the ratio of
each flag set's time to the default's, per workload (median over rounds).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import count, entry, report  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
FLAGS = {"default": "",
         "O1, loop emitters": "--xla_backend_optimization_level=1 --xla_cpu_use_fusion_emitters=false",
         "O0, loop emitters": "--xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=false"}

PPO = """
import json, sys, time
import jax
sys.path.insert(0, "tests")
from test_agents import known_truth
from jaxsel import proxy
from jaxsel.agents import ppo
from jaxsel.agents.env import make_env
x, y, cl, xv, yv = known_truth()
p = proxy.make(x, y, cl, xv, yv, proxy.ProxyConfig(lam=1.0))
env, params = make_env(p, cl, y, 0.25)
cfg = ppo.PPOConfig(num_envs=16, num_steps=16, total_timesteps=16 * 16 * 40)
fns = ppo.make_chunks(cfg, env)
runner = jax.jit(fns.init)(jax.random.PRNGKey(0), params)
update = jax.jit(fns.update)
t = time.perf_counter(); update.lower(runner, 2, params).compile(); compile_s = time.perf_counter() - t
jax.block_until_ready(update(runner, 2, params))
t = time.perf_counter(); out = jax.block_until_ready(update(runner, 20, params)); run_s = time.perf_counter() - t
print("RESULT " + json.dumps({"compile_s": compile_s, "env_steps_per_s": 20 * 16 * 16 / run_s,
                              "best": float(out.best.score)}))
"""

FINETUNE = """
import json, time
import numpy as np
from jaxsel import data, finetune
dd = data.load("tweets")
rng = np.random.default_rng(0)
for split, n in (("validation", 300), ("test", 800)):
    dd[split] = dd[split].select(np.sort(rng.choice(len(dd[split]), n, replace=False)))
cfg = finetune.FinetuneConfig(model="minilm", epochs=3, batch_size=16, lr=1e-4, min_steps=100, max_length=64)
t = time.perf_counter()
m = finetune.finetune(dd, rng.choice(len(dd["train"]), 100, replace=False), cfg, progress=False)
print("RESULT " + json.dumps({"finetune_s": time.perf_counter() - t, "test_accuracy": m["test_accuracy"]}))
"""


def measure(script: str, flags: str) -> dict:
    """Run ``script`` in a fresh process under ``flags`` (no persistent compilation cache: every
    program compiles); its RESULT line, parsed."""
    env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
    named = {f.split("=")[0] for f in " ".join(FLAGS.values()).split()}  # the environment's own of these go
    own = [f for f in os.environ.get("XLA_FLAGS", "").split() if f.split("=")[0] not in named]
    env["XLA_FLAGS"] = " ".join(own + flags.split())
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=1800)
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")]
    if done.returncode or not lines:
        raise RuntimeError(f"flags {flags!r} failed:\n{done.stderr[-2000:]}")
    return json.loads(lines[0][len("RESULT "):])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="PPO's update only (~1 minute)")
    ap.add_argument("--rounds", type=count(), default=2, help="rounds of every flag set, alternating")
    args = ap.parse_args()
    got: dict[str, list[dict]] = {name: [] for name in FLAGS}
    for r in range(args.rounds):
        for name, flags in FLAGS.items():
            row = measure(PPO, flags)
            if not args.quick:
                row.update(measure(FINETUNE, flags))
            got[name].append(row)
            print(f"round {r}: {name}: {row}", file=sys.stderr, flush=True)
    keys = ["compile_s", "env_steps_per_s"] + ([] if args.quick else ["finetune_s"])
    rows = [{"flags": name, "rounds": len(runs), **{k: statistics.median(run[k] for run in runs) for k in keys},
             "ppo_best": sorted({round(run["best"], 4) for run in runs})} for name, runs in got.items()]
    base = rows[0]
    summary = {}
    for row in rows[1:]:
        tag = row["flags"].split(",")[0]
        summary[f"{tag}_ppo_compile_vs_default"] = round(row["compile_s"] / base["compile_s"], 3)
        summary[f"{tag}_ppo_env_steps_vs_default"] = round(row["env_steps_per_s"] / base["env_steps_per_s"], 3)
        if not args.quick:
            summary[f"{tag}_finetune_time_vs_default"] = round(row["finetune_s"] / base["finetune_s"], 3)
    report("xla_flags", rows, ["flags", "rounds", *keys, "ppo_best"], summary, args.quick)
    return 0


if __name__ == "__main__":
    entry(main)
