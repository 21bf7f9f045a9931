"""The README's main job, end to end, against an earlier version of jaxsel, side by side.

    python bench/main_job.py [--old 8800a7b] [--work /tmp/main_job]
    python bench/main_job.py --summarize /tmp/main_job      # the table and JSON again from its logs

Issue 13 asks the main job to run 1.5x faster than when it was filed (commit 8800a7b). Both
versions are cloned from this repository into ``--work``, each into its own venv (``pip install
-e .``; the install is not timed), and run in the order A B C B A so that a drift of the
machine's speed falls on both sides: A = the old code on its own ``configs/quick.toml``, B = this
code on that same config (what the code change alone is worth), C = this code on today's
``configs/quick.toml`` (what a user runs now). Every run starts from empty caches (no embeddings,
no compiled programs; the data and weights are copied in, as after a first download), so each
is what a fresh clone pays. Writes ``bench/results/main_job-BACKEND.json``; the last line is the
summary JSON. About 40 minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import entry, report  # noqa: E402

from jaxsel.assets import cache_dir  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
FILED = "8800a7b"  # the repository when issue 13 was filed (2026-11-29)
ORDER = ("A", "B", "C", "B", "A")
WHAT = {"A": "old code, its config", "B": "this code, the old config", "C": "this code, today's config"}


def sh(cmd: list[str], cwd: Path | None = None, **kw) -> None:
    subprocess.run(cmd, cwd=cwd, check=True, **kw)


def prepare(work: Path, old: str) -> dict[str, tuple[Path, str]]:
    """Clone both versions, install each into its own venv; {label: (clone, config)}."""
    work.mkdir(parents=True, exist_ok=True)
    clones = {"old": work / "old", "new": work / "new"}
    for name, path in clones.items():
        shutil.rmtree(path, ignore_errors=True)
        sh(["git", "clone", "-q", str(ROOT), str(path)])
        if name == "old":
            sh(["git", "checkout", "-q", old], cwd=path)
        sh([sys.executable, "-m", "venv", ".venv"], cwd=path)
        with open(work / f"{name}.install.log", "w") as log:
            sh([".venv/bin/pip", "install", "-q", "-e", "."], cwd=path, stdout=log, stderr=log)
    filed = subprocess.run(["git", "show", f"{old}:configs/quick.toml"], cwd=ROOT, check=True,
                           capture_output=True, text=True).stdout
    (clones["new"] / "configs" / "quick-filed.toml").write_text(filed)
    return {"A": (clones["old"], "configs/quick"), "B": (clones["new"], "configs/quick-filed"),
            "C": (clones["new"], "configs/quick")}


def run_once(label: str, clone: Path, config: str, work: Path, assets: Path) -> dict:
    """One main job from empty caches; its wall-clock and the log's path."""
    cache = work / "cache"
    shutil.rmtree(cache, ignore_errors=True)
    shutil.rmtree(clone / "runs", ignore_errors=True)
    shutil.copytree(assets, cache / "assets")
    start = time.time()
    log = work / f"{label}-{int(start)}.log"
    with open(log, "w") as f:
        rc = subprocess.run([".venv/bin/jaxsel", "run", "--config", config], cwd=clone, stdout=f, stderr=f,
                            env={**os.environ, "JAXSEL_CACHE": str(cache)}).returncode
    return {"label": label, "rc": rc, "seconds": time.time() - start, "start": time.strftime("%H:%M:%S", time.gmtime(start)),
            "log": log.name}


def accuracies(log: Path) -> dict[str, float]:
    """{method: test accuracy} from the results table a run prints last."""
    out = {}
    for line in log.read_text(errors="replace").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) > 4 and cells[0] == "clean":
            out[cells[1]] = float(re.match(r"[0-9.]+", cells[4]).group())
    return out


def summarize(work: Path, old: str) -> None:
    runs = [json.loads(x) for x in (work / "runs.jsonl").read_text().splitlines()]
    rows = []
    for r in runs:
        acc = accuracies(work / r["log"])
        rows.append({**r, "what": WHAT[r["label"]], "minutes": r["seconds"] / 60,
                     "test_accuracy": ", ".join(f"{m} {a:.3f}" for m, a in acc.items())})
    med = {k: statistics.median(r["seconds"] for r in runs if r["label"] == k) for k in WHAT
           if any(r["label"] == k for r in runs)}
    summary = {"old_commit": old, "median_seconds": med, "all_ok": all(r["rc"] == 0 for r in runs),
               "speedup_same_config": med["A"] / med["B"] if "B" in med else None,
               "speedup_readme_job": med["A"] / med["C"] if "C" in med else None}
    report("main_job", rows, ["label", "what", "start", "minutes", "rc", "test_accuracy"], summary, False)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--old", default=FILED, help="the earlier commit (default: when issue 13 was filed)")
    ap.add_argument("--work", type=Path, default=Path("/tmp/main_job"), help="clones, caches and logs")
    ap.add_argument("--summarize", type=Path, default=None, help="only rebuild the table from this folder's logs")
    a = ap.parse_args()
    if a.summarize is not None:
        return summarize(a.summarize, a.old)
    assets = cache_dir() / "assets"
    if not assets.is_dir():
        sys.exit(f"no downloaded assets at {assets}: run `jaxsel run --config configs/quick` once first")
    plan = prepare(a.work, a.old)
    with open(a.work / "runs.jsonl", "w") as f:
        for label in ORDER:
            r = run_once(label, *plan[label], a.work, assets)
            print(json.dumps(r), file=sys.stderr)
            f.write(json.dumps(r) + "\n")
            f.flush()
    summarize(a.work, a.old)


if __name__ == "__main__":
    entry(main)
