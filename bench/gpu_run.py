"""Run a whole-dataset config (configs/*-gpu.toml, or a CPU one such as tweets-whole for its GPU
wall-clock) into a given folder, or a tiny version of it to try the same path on CPU first.

    python bench/gpu_run.py tweets-gpu --out $OUT/runs           # on the lent GPU (bench/gpu.sh configs)
    python bench/gpu_run.py tweets-gpu --out /tmp/runs --tiny    # on CPU: same code path, minutes
    python bench/gpu_run.py tweets-whole --seeds 0 --out $OUT/runs  # any config, some of its seeds

``--tiny`` keeps the config's methods, noise, proxy and target model but caps the splits (200 train,
60 validation, 60 test rows), k to 10, the RL steps to 2,000, every finetune to 2 optimizer steps
of 8 examples at 32 tokens, and runs seed 0 only. The run folder's results.json and report are
rewritten after every seed, so a call cut short by its time limit still returns the finished seeds.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from jaxsel import assets  # noqa: E402
from jaxsel.config import load_config  # noqa: E402
from jaxsel.experiment import run  # noqa: E402


def tiny(cfg):
    """The same config at a size that runs in minutes on CPU (see the module docstring)."""
    r = dataclasses.replace
    return r(cfg, seeds=(cfg.seeds[0],), checkpoint_min_examples=10 ** 9,
             data=r(cfg.data, max_train=200, max_validation=60, max_test=60),
             cluster=r(cfg.cluster, k=min(cfg.cluster.k, 10)),
             select=r(cfg.select, rl_steps=2_000, horizon=min(cfg.select.horizon, 5)),
             finetune=r(cfg.finetune, max_steps=2, min_steps=0, batch_size=8, max_length=32))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("config", help="configs/NAME.toml or NAME")
    ap.add_argument("--out", required=True, help="folder for the run folder (OUT/NAME)")
    ap.add_argument("--tiny", action="store_true", help="the CPU trial size")
    ap.add_argument("--seeds", default=None, help="comma-separated seeds to run instead of the config's")
    args = ap.parse_args(argv)
    name = args.config
    cfg = load_config(name if "/" in name or name.endswith(".toml") else f"configs/{name}")
    if args.seeds is not None:
        cfg = dataclasses.replace(cfg, seeds=tuple(int(s) for s in args.seeds.split(",")))
    if args.tiny:
        cfg = tiny(cfg)
    assets.enable_compilation_cache()  # as jaxsel run does
    t = time.perf_counter()
    doc = run(cfg, Path(args.out) / cfg.name)
    print(f"{cfg.name}: {len(doc['rows'])} rows in {time.perf_counter() - t:.0f} s"
          f"{' (tiny)' if args.tiny else ''}, complete={doc['complete']}")


if __name__ == "__main__":
    main()
