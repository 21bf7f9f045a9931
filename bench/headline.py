"""The README's headline table (issue 12): per dataset and noise kind, at one budget, every jaxsel
search against stratified random, random and full data, from the whole-dataset runs' results.

    python bench/headline.py                       # bench/results/e2e-*-whole{,-16th,-instance}/results.json
    python bench/headline.py runs/NAME/results.json ...

Each row: test accuracy (mean ± 95% Student-t half-width over seeds), the paired difference to
stratified random, to the cleanlab-filtered random subset and to full data (same seeds), a verdict
against stratified (``wins`` / ``loses`` when the paired interval excludes zero, else ``ties``; pairs that all
differ alike: the sign test, :func:`jaxsel.experiment.report.verdict`),
and the total wall-clock (embed + cluster + proxy + select + finetune) as a ratio to the full-data
finetune. A noisy variant that two runs
share with the same noise is listed once. Writes ``bench/results/headline.json`` and prints the
markdown table. ``--figures`` also draws, per dataset, test accuracy against budget for every method with
its 95% interval (one panel per noise kind; all budgets of all the dataset's runs, e.g. 5% from
``*-whole`` and 1/16 from ``*-whole-16th``; full data as a band): ``bench/results/headline-DATASET.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(Path(__file__).parent)]

from common import budget, entry  # noqa: E402
from jaxsel.config import SEARCH_METHODS  # noqa: E402
from jaxsel.experiment import report  # noqa: E402
from jaxsel.experiment.report import ORDER, method_label, plot_accuracy, summarize  # noqa: E402

RESULTS = Path(__file__).parent / "results"
HEADLINE_RUNS = ("-whole", "-whole-16th", "-whole-instance")  # the default sources' name endings
SHOWN = ("validated", "random", "stratified", "cleanlab", "full")  # shown besides every search


def noise_name(cfg: dict, variant: str) -> str:
    """``clean``, or the noise kind with ``+ near-dup`` / ``+ copies`` for its duplicates."""
    if variant == "clean":
        return "clean"
    n = cfg["noise"]
    dup = "" if not n["duplicate_fraction"] else (" + near-dup" if n.get("near_duplicates") else " + copies")
    return f"{n.get('kind', 'clusters')}{dup}"


def rows_of(doc: dict, budget: float) -> list[dict]:
    """The headline rows of one results document at ``budget`` (and its full-data rows)."""
    cfg, out = doc["config"], []
    for s in summarize(doc["rows"], doc["timings"]):  # recomputed: older documents lack vs_full
        if s["method"] not in SEARCH_METHODS + SHOWN or s["budget"] not in (budget, None):
            continue
        n = len(s["seeds"])
        out.append({"dataset": cfg["data"]["name"], "noise": noise_name(cfg, s["variant"]), "method": s["method"],
                    "label": method_label(s),
                    "seeds": n, "examples": s["examples"], "test_accuracy": s["test_accuracy"],
                    "test_accuracy_ci95": s["test_accuracy_ci95"],
                    **{k: s.get(k) for k in ("vs_stratified", "vs_stratified_ci95", "vs_cleanlab", "vs_cleanlab_ci95",
                                             "vs_full", "vs_full_ci95",
                                             "total_vs_full", "total_seconds", "corrupted_chosen")},
                    "verdict": s.get("verdict", "-"), "subsets": s.get("subsets"),
                    "run": cfg["name"], "complete": doc.get("complete", False)})
    return out


def figure_entries(docs: list[dict]) -> dict[str, list[dict]]:
    """Per dataset, the summary entries of all its runs (every budget), the variant renamed to its noise
    kind; an entry two runs share (same noise kind, method and budget) is taken from the first."""
    out: dict[str, dict[tuple, dict]] = {}
    for doc in docs:
        cfg, entries = doc["config"], out.setdefault(doc["config"]["data"]["name"], {})
        for s in summarize(doc["rows"], doc["timings"]):
            s = dict(s, variant=noise_name(cfg, s["variant"]))
            entries.setdefault((s["variant"], s["method"], s["budget"]), s)
    return {dataset: list(entries.values()) for dataset, entries in out.items()}


def markdown(rows: list[dict]) -> str:
    def pm(mean, half, seeds, sign=""):  # points; one seed prints no interval
        return "-" if mean is None else report.pm(100 * mean, 100 * half if seeds > 1 and half is not None else None,
                                                  f"{sign}.1f")
    head = ["dataset", "noise", "method", "seeds", "test acc %", "vs stratified, paired", "vs cleanlab, paired",
            "vs full, paired", "verdict vs stratified", "wall-clock / full finetune"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        n = r["seeds"]
        lines.append("| " + " | ".join([
            r["dataset"], r["noise"], r["label"],
            str(n) + (f" ({r['subsets']} subset{'s' * (r['subsets'] > 1)})" if (r.get("subsets") or n) < n else ""),
            pm(r["test_accuracy"], r["test_accuracy_ci95"], n),
            pm(r["vs_stratified"], r["vs_stratified_ci95"], n, "+"), pm(r["vs_cleanlab"], r["vs_cleanlab_ci95"], n, "+"),
            pm(r["vs_full"], r["vs_full_ci95"], n, "+"),
            r["verdict"], "-" if r["total_vs_full"] is None else f"{r['total_vs_full']:.2f}"]) + " |")
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("results", nargs="*", help="results.json files (default: bench/results/e2e-*-whole{,-16th,-instance}/results.json; "
                    "ablations such as e2e-tweets-whole-fulldims are left out)")
    ap.add_argument("--budget", type=budget, default=0.05, help="the budget of the table (fraction of train)")
    ap.add_argument("--figures", action="store_true", help="also draw bench/results/headline-DATASET.png")
    args = ap.parse_args(argv)
    paths = [Path(p) for p in args.results] or sorted(
        p for p in RESULTS.glob("e2e-*-whole*/results.json") if p.parent.name.endswith(HEADLINE_RUNS))
    if not paths:
        sys.exit(f"error: no results.json given or found under bench/results/e2e-*{{{','.join(HEADLINE_RUNS)}}}/")
    docs = [json.loads(p.read_text()) for p in paths]
    rows, seen = [], set()
    for doc in docs:
        for r in rows_of(doc, args.budget):
            key = (r["dataset"], r["noise"], r["method"])
            if key not in seen:
                seen.add(key)
                rows.append(r)
    rows.sort(key=lambda r: (r["dataset"], r["noise"] != "clean", r["noise"], ORDER.index(r["method"])))
    if all(r["method"] == "full" for r in rows):  # --budget 2 had replaced headline.json with the full rows alone
        sys.exit(f"error: none of the {len(paths)} results files has a budget of {args.budget:g}")
    table = markdown(rows)
    print(table)
    if any(not r["complete"] for r in rows):
        print(f"\nnote: incomplete runs (seeds so far): {sorted({r['run'] for r in rows if not r['complete']})}")
    tmp = RESULTS / ".headline.json.tmp"
    sources = [os.path.relpath(p, ROOT) for p in paths]
    tmp.write_text(json.dumps({"budget": args.budget, "sources": sources, "rows": rows}, indent=2) + "\n")
    os.replace(tmp, RESULTS / "headline.json")
    if args.figures:
        for dataset, entries in figure_entries(docs).items():
            plot_accuracy(entries, RESULTS / f"headline-{dataset}.png")
            print(f"wrote {RESULTS / f'headline-{dataset}.png'}")


if __name__ == "__main__":
    entry(main)
