"""How well each label-issue detector finds the flipped rows, against known truth (issue 11).

For a run config with a noisy variant, on fresh pools (its ``[data] seed`` = each of ``--pools``),
builds each pool's noisy variant twice: its flipped and copied groups the run's own clusters
(``[noise] groups = "clusters"``, the paper's setting) and a second k-means' groups, which the
run's clusters cut across (``"independent"``); then flags label issues three ways:

- ``rows``: cleanlab on the ridge proxy's leave-one-cluster-out probabilities (``filter = "cleanlab"``);
- ``clusters``: the cluster vote (``filter = "cleanlab+clusters"``, :func:`jaxsel.label_issues.find`):
  the clusters most of whose rows cleanlab flags, refit without them until they repeat, plus the
  rows cleanlab flags in the last refit;
- ``peer``: what a user would run without jaxsel, cleanlab's documented recipe: out-of-sample
  probabilities from 5-fold ``cross_val_predict`` of scikit-learn's ``LogisticRegression`` on the same
  embeddings, then ``find_label_issues``.

It also counts what each flags on the clean pool (every flag there is a clean row lost). Prints
precision, recall and rows flagged, means over pools with their 95% intervals, and writes
``bench/results/label-issues-NAME.json``. Selection-side only: no finetune, no test row read.

    python bench/label_issues.py configs/rotten_tomatoes-cpu-pool-filter-steps100 --pools 1,2,3,4,5,6,7,8
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(Path(__file__).parent)]

from common import RESULTS, entry, table  # noqa: E402
from pools import ints  # noqa: E402
from jaxsel.experiment import report  # noqa: E402
from jaxsel.io import write_json  # noqa: E402

DETECTORS = ("rows", "clusters", "peer")


def peer_flags(x: np.ndarray, y: np.ndarray, seed: int) -> np.ndarray:
    """cleanlab's recipe: 5-fold out-of-sample LogisticRegression probabilities, then find_label_issues."""
    from jaxsel.label_issues import cleanlab_flags
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    folds = StratifiedKFold(5, shuffle=True, random_state=seed)
    probs = cross_val_predict(LogisticRegression(max_iter=1000), x, y, cv=folds, method="predict_proba")
    return cleanlab_flags(y, probs)


def pool_rows(config: str, pool: int, stages: Path) -> list[dict]:
    """One row per (noise groups, detector) of one pool: flagged, true positives, flipped rows."""
    from jaxsel import label_issues, proxy
    from jaxsel.config import load_config
    from jaxsel.data import column
    from jaxsel.experiment import Run
    cfg = load_config(config, seed=pool)
    cfg = dataclasses.replace(cfg, stages=str(stages))
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        run = Run(cfg, Path(tmp), progress=False)
        dd = run.dataset()  # the pool, its embeddings and clustering: the same for every noise
        emb = run.embeddings(dd)
        clean = run.clustering(dd, emb)
        for groups in ("clean", "clusters", "independent"):
            noise = cfg.noise if groups == "clean" else dataclasses.replace(cfg.noise, groups=groups)
            run = Run(dataclasses.replace(cfg, noise=noise), Path(tmp), progress=False)
            vdd, x, c, flags = run.variant("clean" if groups == "clean" else "noisy", dd, emb, clean)
            y = np.asarray(column(vdd["train"], "label"))
            p = proxy.make(x, y, c, emb["validation"], np.asarray(column(dd["validation"], "label")),
                           dataclasses.replace(cfg.proxy, score_on="validation"))
            for det in DETECTORS:
                f = peer_flags(x, y, pool) if det == "peer" else label_issues.find(p, y, c.assignment, by=det)
                out.append({"pool": pool, "noise": groups, "detector": det, "rows": len(y), "flipped": int(flags[0].sum()),
                            "flagged": int(f.sum()), "true_flags": int((f & flags[0]).sum())})
    return out


def summarize(rows: list[dict]) -> list[dict]:
    """Per (noise, detector): precision and recall (means over pools, 95% intervals) and rows flagged."""
    out = []
    for noise in ("clusters", "independent", "clean"):
        for det in DETECTORS:
            rs = [r for r in rows if r["noise"] == noise and r["detector"] == det]
            if not rs:
                continue
            s = {"noise": noise, "detector": det, "pools": len(rs),
                 "flagged_share": float(np.mean([r["flagged"] / r["rows"] for r in rs]))}
            if noise != "clean":
                for name, vals in (("precision", [r["true_flags"] / max(r["flagged"], 1) for r in rs]),
                                   ("recall", [r["true_flags"] / r["flipped"] for r in rs])):
                    s[name], s[f"{name}_ci95"] = report.mean_ci(vals)
                s["flip_rate"] = float(np.mean([r["flipped"] / r["rows"] for r in rs]))
            out.append(s)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("config", help="a run config with a [noise] section (configs/NAME or its .toml)")
    ap.add_argument("--pools", type=ints, default=(1, 2, 3, 4, 5, 6, 7, 8), help="[data] seeds, comma-separated")
    a = ap.parse_args(argv)
    from jaxsel.config import load_config
    name = load_config(a.config).name
    stages = ROOT / "runs" / f"pools-{name}" / "stages"  # bench/pools.py's: embeddings and clusterings are shared
    rows = []
    for pool in a.pools:
        rows += pool_rows(a.config, pool, stages)
        print(f"pool {pool} done", flush=True)
    summary = summarize(rows)
    def fmt(s: dict, k: str) -> str:  # one pool: no interval
        return "-" if k not in s else f"{s[k]:.2f}" + (f" ± {s[f'{k}_ci95']:.2f}" if s["pools"] > 1 else "")
    print(table([{"noise": s["noise"], "detector": s["detector"], "pools": s["pools"], "precision": fmt(s, "precision"),
                  "recall": fmt(s, "recall"), "flagged %": f"{100 * s['flagged_share']:.1f}",
                  "flip rate %": f"{100 * s['flip_rate']:.1f}" if "flip_rate" in s else "0"} for s in summary],
                ["noise", "detector", "pools", "precision", "recall", "flagged %", "flip rate %"]))
    write_json(RESULTS / f"label-issues-{name}.json",
               {"config": name, "pools": list(a.pools), "environment": report.environment(), "rows": rows,
                "summary": summary})
    return 0


if __name__ == "__main__":
    entry(main)
