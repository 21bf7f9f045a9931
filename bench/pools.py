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
    python bench/pools.py configs/quick-preferences --pools 1,...,16 --summarize \
        --versus bench/results/pools-quick.json   # an A/B of two configs: each method against its twin there

Against stratified the table also gives validation accuracy (what a decision may rest on; the proxy
scores those rows too, so a search that fits them gains there first) and test macro-F1.

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
    """Comma-separated whole numbers, with ranges as the configs' headers spell them: "1,...,16" and
    "1-16" are 1 to 16, "0,3-5" is 0, 3, 4, 5."""
    parts, out = [p.strip() for p in s.split(",")], []
    try:
        for i, p in enumerate(parts):
            if p == "...":
                if not out or i + 1 == len(parts):
                    raise ValueError
                out += range(out[-1] + 1, int(parts[i + 1]))
            elif "-" in p[1:]:
                low, high = p.split("-", 1)
                out += range(int(low), int(high) + 1)
            else:
                out.append(int(p))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected whole numbers like 1,2,3, 1-16 or 1,...,16, got {s!r}") from None
    return tuple(out)


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


def results_rows(path: Path) -> list[dict]:
    """The rows of a pools results JSON (``bench/results/pools-*.json``)."""
    if not path.exists():
        raise JaxselError(f"no such results file: {path}")
    return json.loads(path.read_text())["rows"]


def borrowed(rows: list[dict], path: Path) -> list[dict]:
    """The reference rows of another pools results file (``path``) for (variant, method, pool, seed)
    cells ``rows`` lacks, tagged ``borrowed`` with the file's name (e.g. full data's finetunes, which
    a run that changes only the selection shares)."""
    have = {(r["variant"], r["method"], r["pool"], r["seed"]) for r in rows}
    want = {(r["variant"], r["pool"], r["seed"]) for r in rows}
    return [dict(r, borrowed=path.name) for r in results_rows(path)
            if r["method"] in REFERENCES and (r["variant"], r["pool"], r["seed"]) in want
            and (r["variant"], r["method"], r["pool"], r["seed"]) not in have]


METRICS = {"": "test_accuracy", "_validation": "validation_accuracy", "_macro_f1": "test_macro_f1"}


def paired(rs: list[dict], other: dict, metric: str) -> dict[str, float]:
    """``metric`` of each row of ``rs`` minus that of the row ``other`` holds for its (pool, seed), by
    "pool/seed" (rows ``other`` lacks, or either without the metric, are left out)."""
    return {f"{r['pool']}/{r['seed']}": r[metric] - other[(r["pool"], r["seed"])][metric] for r in rs
            if (r["pool"], r["seed"]) in other and r.get(metric) is not None
            and other[(r["pool"], r["seed"])].get(metric) is not None}


def differences(d: dict[str, float], prefix: str) -> dict:
    """Mean, 95% interval, wins and losses (a tie is neither) and the per-pool values of the paired
    differences ``d``, under keys starting with ``prefix``."""
    x = np.array(list(d.values()))
    mean, ci = report.mean_ci(x)
    return {prefix: mean, f"{prefix}_ci95": ci, f"{prefix}_wins": int((x > 0).sum()),
            f"{prefix}_losses": int((x < 0).sum()), f"{prefix}_by_pool": d}


def cells(rows: list[dict]) -> dict:
    """``rows`` by (variant, method), then by (pool, seed)."""
    out: dict = {}
    for r in rows:
        out.setdefault((r["variant"], r["method"]), {})[(r["pool"], r["seed"])] = r
    return out


def summarize(rows: list[dict], versus: list[dict] | None = None) -> list[dict]:
    """Per (variant, method): units, test accuracy mean and 95% interval, and the difference to each
    reference paired by (pool, seed) (``vs_REF``), with wins and losses; against stratified also in
    validation accuracy (``vs_stratified_validation``: the rows a decision may rest on) and test
    macro-F1 (``vs_stratified_macro_f1``). ``versus``: the rows of another pools run of the same
    pools (an A/B of two configs): each method against the same method there (``versus``, ``versus_validation``,
    ``versus_macro_f1``)."""
    by, theirs = cells(rows), cells(versus or [])
    out = []
    for v, m in sorted(by, key=lambda k: (k[0], report.ORDER.index(k[1]))):
        rs = list(by[(v, m)].values())
        mean, ci = report.mean_ci([r["test_accuracy"] for r in rs])
        s = {"variant": v, "method": m, "units": len(rs), "test_accuracy": mean, "test_accuracy_ci95": ci}
        if m == "validated":
            s["picked"] = {k: sum(r["picked"] == k for r in rs) for k in sorted({r["picked"] for r in rs})}
        for ref in REFERENCES:
            if m in (ref, "full") or (v, ref) not in by:
                continue
            for suffix, metric in METRICS.items() if ref == "stratified" else [("", "test_accuracy")]:
                if d := paired(rs, by[(v, ref)], metric):
                    s.update(differences(d, f"vs_{ref}{suffix}"))
        if (v, m) in theirs:  # the references too: stratified against its twin is the A/B's own check
            for suffix, metric in METRICS.items():
                if d := paired(rs, theirs[(v, m)], metric):
                    s.update(differences(d, f"versus{suffix}"))
        out.append(s)
    return out


def markdown(summary: list[dict]) -> str:
    refs = [ref for ref in REFERENCES if any(f"vs_{ref}" in s for s in summary)]
    extra = [(k, label) for k, label in (("vs_stratified_validation", "validation vs stratified"),
                                         ("vs_stratified_macro_f1", "macro-F1 vs stratified"),
                                         ("versus", "test vs the other run"),
                                         ("versus_validation", "validation vs the other run"),
                                         ("versus_macro_f1", "macro-F1 vs the other run"))
             if any(k in s for s in summary)]
    head = (["variant", "method", "pools x seeds", "test acc %"] + [f"vs {ref}, paired (wins/losses)" for ref in refs]
            + [label for _, label in extra])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for s in summary:
        name = s["method"] + ("" if "picked" not in s else
                              " (" + ", ".join(f"{k} {n}" for k, n in s["picked"].items()) + ")")
        cells = [s["variant"], name, str(s["units"]), report.pm(*percent(s, "test_accuracy"), ".1f")]
        for key in [f"vs_{ref}" for ref in refs] + [k for k, _ in extra]:
            cells.append(f"{report.pm(*percent(s, key), '+.1f')} ({s[f'{key}_wins']}/{s[f'{key}_losses']} of "
                         f"{len(s[f'{key}_by_pool'])})" if key in s else "-")
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
    ap.add_argument("--versus", type=Path, help="a pools results JSON of the same pools and data from another config "
                    "(an A/B): each method paired with the same method there, in test and validation accuracy and macro-F1")
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
        versus = None if a.versus is None else results_rows(a.versus)
    except JaxselError as e:
        sys.exit(f"error: {e}")
    summary = summarize(rows, versus)
    out = RESULTS / f"pools-{name}"
    doc = {"config": name, "pools": list(a.pools), "environment": report.environment(), "summary": summary,
           **({} if a.versus is None else {"versus": a.versus.name}),
           "rows": [{k: r.get(k) for k in ("pool", "seed", "variant", "method", "picked", "test_accuracy",
                                             "validation_accuracy", "test_macro_f1", "examples", "corrupted_chosen",
                                             "flipped_chosen", "duplicates_chosen", "borrowed")} for r in rows]}
    write_json(out.with_suffix(".json"), doc)
    if any("vs_stratified" in s for s in summary):  # else nothing to draw (e.g. full data alone)
        plot(summary, out.with_suffix(".png"), f"{name}\npools {','.join(map(str, a.pools))}, paired by (pool, seed)")
    print(markdown(summary))
    print(json.dumps({s["variant"] + "/" + s["method"]: round(100 * s["vs_stratified"], 2) for s in summary
                      if "vs_stratified" in s}))
    return 0


if __name__ == "__main__":
    entry(main)
