"""A run config on fresh data pools: does a method's gain hold beyond the one pool it was tuned on?

A CPU config caps each split with a seeded stratified sample (``[data] max_train``, ``seed``), so all
its seeds finetune on one 2,000-example pool, and a deterministic search (greedy) exports one subset
for all of them. This script runs the config once per pool, ``[data] seed`` = each of ``--pools``
(the config's own pool is seed 0), and pairs every method with ``stratified`` (and ``cleanlab`` and
full data, where run) by (pool, seed): the unit of the interval is a pool, the thing a user's own
data would be. Selection never reads a test split (each pool's test rows are sampled with it, and
only scored).

    python bench/pools.py configs/rotten_tomatoes-cpu-pool10-filter --pools 1,2,3,4,5,6,7,8
    python bench/pools.py configs/rotten_tomatoes-cpu-pool10-filter --pools 1,2,3 --summarize

    python bench/pools.py configs/rotten_tomatoes-cpu-pool-filter --methods greedy,stratified,cleanlab --variants noisy
    python bench/pools.py configs/rotten_tomatoes-cpu-pool-clusterfilter-steps100 --summarize \
        --references bench/results/pools-rotten_tomatoes-cpu-pool-filter-noisy.json   # its full data

Runs go to runs/pools-NAME/poolP (NAME: the config's, plus the variants when ``--variants`` replaces
them), sharing one stage folder, runs/pools-CONFIG/stages (a rerun resumes from it). Prints the
paired table last and writes bench/results/pools-NAME.json and a plot of every pool's difference
to stratified.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(Path(__file__).parent)]

from common import RESULTS, entry  # noqa: E402
from jaxsel.errors import JaxselError  # noqa: E402
from jaxsel.experiment import report  # noqa: E402
from jaxsel.io import write_json  # noqa: E402

REFERENCES = ("stratified", "cleanlab", "full")


def ints(s: str) -> tuple[int, ...]:
    return tuple(int(v) for v in s.split(","))


def run_pools(config: str, pools: tuple[int, ...], folder: Path, stages: Path, **overrides) -> None:
    """Run (or resume) ``config`` once per pool into ``folder/poolP``, sharing the stage folder
    ``stages``; ``overrides`` replace the config's seeds, methods or variants where not None."""
    from jaxsel import assets, experiment
    from jaxsel.config import BASELINES, SEARCH_METHODS, VARIANTS, load_config
    for key, known in (("methods", SEARCH_METHODS + BASELINES), ("variants", VARIANTS)):
        if unknown := sorted(set(overrides.get(key) or ()) - set(known)):
            raise JaxselError(f"unknown {key} {', '.join(unknown)} (choose from {', '.join(known)})")
    assets.enable_compilation_cache()
    for p in pools:
        cfg = load_config(config, seed=p)
        cfg = dataclasses.replace(cfg, name=f"{cfg.name}-pool{p}", stages=str(stages),
                                  **{k: v for k, v in overrides.items() if v is not None})
        print(f"pool {p}: {cfg.name}", flush=True)
        experiment.run(cfg, folder / f"pool{p}")


def units(folder: Path, pools: tuple[int, ...]) -> list[dict]:
    """Every finetuned row of every pool (plus the report's derived ``validated`` rows), tagged ``pool``."""
    out = []
    for p in pools:
        path = folder / f"pool{p}" / "results.json"
        if not path.exists():
            raise JaxselError(f"pool {p} has no results yet: {path}")
        rows = json.loads(path.read_text())["rows"]
        out += [dict(r, pool=p) for r in rows + report.validated(rows)]
    return out


def borrowed(rows: list[dict], path: Path) -> list[dict]:
    """The reference rows of another pools results file (``path``) for (variant, method, pool, seed)
    cells ``rows`` lacks, tagged ``borrowed`` with the file's name (e.g. full data's finetunes, which
    a run that changes only the selection shares)."""
    if not path.exists():
        raise JaxselError(f"no such results file: {path}")
    have = {(r["variant"], r["method"], r["pool"], r["seed"]) for r in rows}
    want = {(r["variant"], r["pool"], r["seed"]) for r in rows}
    return [dict(r, borrowed=path.name) for r in json.loads(path.read_text())["rows"]
            if r["method"] in REFERENCES and (r["variant"], r["pool"], r["seed"]) in want
            and (r["variant"], r["method"], r["pool"], r["seed"]) not in have]


def summarize(rows: list[dict]) -> list[dict]:
    """Per (variant, method): units, test accuracy mean and 95% interval, and the difference to each
    reference paired by (pool, seed), with wins and losses (a tie is neither)."""
    acc = {(r["variant"], r["method"], r["pool"], r["seed"]): r["test_accuracy"] for r in rows}
    out = []
    for v, m in sorted({(r["variant"], r["method"]) for r in rows}, key=lambda k: (k[0], report.ORDER.index(k[1]))):
        rs = [r for r in rows if r["variant"] == v and r["method"] == m]
        mean, ci = report.mean_ci([r["test_accuracy"] for r in rs])
        s = {"variant": v, "method": m, "units": len(rs), "test_accuracy": mean, "test_accuracy_ci95": ci}
        if m == "validated":
            s["picked"] = {k: sum(r["picked"] == k for r in rs) for k in sorted({r["picked"] for r in rs})}
        for ref in REFERENCES:
            d = {f"{r['pool']}/{r['seed']}": r["test_accuracy"] - acc[(v, ref, r["pool"], r["seed"])] for r in rs
                 if m not in (ref, "full") and (v, ref, r["pool"], r["seed"]) in acc}
            if d:
                x = np.array(list(d.values()))
                s[f"vs_{ref}"], s[f"vs_{ref}_ci95"] = report.mean_ci(x)
                s[f"vs_{ref}_wins"], s[f"vs_{ref}_losses"] = int((x > 0).sum()), int((x < 0).sum())
                s[f"vs_{ref}_by_pool"] = d
        out.append(s)
    return out


def markdown(summary: list[dict]) -> str:
    refs = [ref for ref in REFERENCES if any(f"vs_{ref}" in s for s in summary)]
    head = ["variant", "method", "pools x seeds", "test acc %"] + [f"vs {ref}, paired (wins/losses)" for ref in refs]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for s in summary:
        name = s["method"] + ("" if "picked" not in s else
                              " (" + ", ".join(f"{k} {n}" for k, n in s["picked"].items()) + ")")
        cells = [s["variant"], name, str(s["units"]), report.pm(*percent(s, "test_accuracy"), ".1f")]
        for ref in refs:
            cells.append(f"{report.pm(*percent(s, f'vs_{ref}'), '+.1f')} "
                         f"({s[f'vs_{ref}_wins']}/{s[f'vs_{ref}_losses']} of {len(s[f'vs_{ref}_by_pool'])})"
                         if f"vs_{ref}" in s else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def percent(s: dict, key: str, missing=None) -> tuple[float, float | None]:
    """``s[key]`` and its interval ``s[key + "_ci95"]`` in percent (``missing`` where one pool has none)."""
    half = s[f"{key}_ci95"]
    return 100 * s[key], missing if half is None else 100 * half


def plot(summary: list[dict], path: Path, title: str) -> None:
    """Each method's per-pool difference to stratified (points) and its mean with the 95% interval."""
    ss = [s for s in summary if "vs_stratified" in s]
    fig, (ax,) = report._panels(1, max(4.5, 1.6 + 1.3 * len(ss)), 3.6)
    for i, s in enumerate(ss):
        d = 100 * np.array(list(s["vs_stratified_by_pool"].values()))
        ax.scatter(i + np.linspace(-0.15, 0.15, len(d)), d, s=14, color="0.55", zorder=2)
        ax.errorbar(i, *percent(s, "vs_stratified", np.nan), fmt="o", color="C0", capsize=4, zorder=3)
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xticks(range(len(ss)), [f"{s['variant']}\n{s['method']}" for s in ss])
    ax.set_ylabel("test accuracy - stratified (points)")
    ax.set_title(title, fontsize=9)
    report._save(fig, path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("config", help="a run config (configs/NAME or its .toml)")
    ap.add_argument("--pools", type=ints, default=(1, 2, 3, 4, 5, 6, 7, 8), help="[data] seeds, comma-separated")
    ap.add_argument("--seeds", type=ints, default=(0,), help="run seeds per pool (default 0; the config's are ignored)")
    ap.add_argument("--methods", type=lambda s: tuple(s.split(",")), help="replace the config's methods")
    ap.add_argument("--variants", type=lambda s: tuple(s.split(",")), help="replace the config's variants")
    ap.add_argument("--summarize", action="store_true", help="only read the runs' results and write the table")
    ap.add_argument("--references", type=Path, help="a pools results JSON of the same pools and data whose reference "
                    "rows (stratified, cleanlab, full) fill in those this run lacks")
    a = ap.parse_args(argv)
    name = Path(a.config).stem + ("" if a.variants is None else "-" + "-".join(a.variants))
    folder = ROOT / "runs" / f"pools-{name}"
    try:
        if not a.summarize:
            run_pools(a.config, a.pools, folder, ROOT / "runs" / f"pools-{Path(a.config).stem}" / "stages",
                      seeds=a.seeds, methods=a.methods, variants=a.variants)
        rows = units(folder, a.pools)
        if a.references:
            rows += borrowed(rows, a.references)
    except JaxselError as e:
        sys.exit(f"error: {e}")
    summary = summarize(rows)
    out = RESULTS / f"pools-{name}"
    doc = {"config": name, "pools": list(a.pools), "environment": report.environment(), "summary": summary,
           "rows": [{k: r.get(k) for k in ("pool", "seed", "variant", "method", "picked", "test_accuracy",
                                             "validation_accuracy", "examples", "corrupted_chosen", "flipped_chosen",
                                             "duplicates_chosen", "borrowed")} for r in rows]}
    write_json(out.with_suffix(".json"), doc)
    if any("vs_stratified" in s for s in summary):  # else nothing to draw (e.g. full data alone)
        plot(summary, out.with_suffix(".png"), f"{name}\npools {','.join(map(str, a.pools))}, paired by (pool, seed)")
    print(markdown(summary))
    print(json.dumps({s["variant"] + "/" + s["method"]: round(100 * s["vs_stratified"], 2) for s in summary
                      if "vs_stratified" in s}))
    return 0


if __name__ == "__main__":
    entry(main)
