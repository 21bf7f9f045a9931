"""Where does a 5% selection overtake full data as label noise grows? (issue 11's last term)

Reads ``bench/pools.py``'s results on rotten_tomatoes' fresh pools 1-8 at each corruption level (the
share of clusters whose labels are flipped; at every level above 0, 10% of the clusters are also
copied 3x), every finetune at least 100 optimizer steps, and pairs each method with full data by
(pool, seed). Prints the table, writes ``bench/results/noise-sweep.json`` and a plot of each
method's test accuracy and its paired difference to full data against the level.

    python bench/noise_sweep.py
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path[:0] = [str(Path(__file__).resolve().parent.parent), str(Path(__file__).parent)]

from common import RESULTS, entry  # noqa: E402
from pools import percent, summarize  # noqa: E402
from jaxsel.experiment import report  # noqa: E402
from jaxsel.io import write_json  # noqa: E402

METHODS = ("greedy", "cleanlab", "stratified", "full")
LEVELS = {  # flip fraction -> (results file under bench/results, the methods read from it)
    0.0: [("pools-rotten_tomatoes-cpu-pool-filter-steps100-clean.json", ("full",))],
    0.2: [("pools-rotten_tomatoes-cpu-pool-filter-steps100.json", ("greedy", "cleanlab", "stratified")),
          ("pools-rotten_tomatoes-cpu-pool-filter-noisy.json", ("full",))],  # >= 100 steps already: the same finetune
    0.3: [("pools-rotten_tomatoes-cpu-pool-filter-steps100-flip30.json", METHODS)],
    0.4: [("pools-rotten_tomatoes-cpu-pool-filter-steps100-flip40.json", METHODS)],
}


def level_rows(sources: list[tuple[str, tuple[str, ...]]]) -> list[dict] | None:
    """The rows of one level (None when a results file is missing), variant names dropped."""
    rows = []
    for name, methods in sources:
        path = RESULTS / name
        if not path.exists():
            return None
        rows += [dict(r, variant="") for r in json.loads(path.read_text())["rows"] if r["method"] in methods]
    return rows


def sweep() -> list[dict]:
    """Per (level, method): pools, test accuracy and its 95% interval, and the paired difference to full data."""
    out = []
    for level, sources in LEVELS.items():
        rows = level_rows(sources)
        if rows is None:
            print(f"flip {level:.0%}: not run yet ({', '.join(n for n, _ in sources)})", file=sys.stderr)
            continue
        for s in summarize(rows):
            rs = [r for r in rows if r["method"] == s["method"]]
            chosen = {k: float(np.mean([r[k] for r in rs])) for k in ("flipped_chosen", "duplicates_chosen", "examples")
                      if all(r.get(k) is not None for r in rs)}
            out.append({"flip_fraction": level, **{k: v for k, v in s.items() if k != "variant"}, **chosen})
    return out


def markdown(rows: list[dict]) -> str:
    lines = ["| clusters flipped | method | pools | test acc % | vs full data, paired (wins/losses) | vs stratified "
             "| examples: flipped + copies of |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        pair = [f"{report.pm(*percent(r, f'vs_{ref}'), '+.1f')} "
                f"({r[f'vs_{ref}_wins']}/{r[f'vs_{ref}_losses']})" if f"vs_{ref}" in r else "-" for ref in ("full", "stratified")]
        lines.append(f"| {r['flip_fraction']:.0%} | {r['method']} | {r['units']} | "
                     f"{report.pm(*percent(r, 'test_accuracy'), '.1f')} | {pair[0]} | {pair[1]} | "
                     + (f"{r['flipped_chosen']:.0f} + {r['duplicates_chosen']:.0f} of {r['examples']:.0f} |"
                        if "flipped_chosen" in r else "- |"))
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> None:
    """Left: test accuracy against the share of flipped clusters; right: the paired difference to full data."""
    fig, (acc, diff) = report._panels(2, 4.6, 3.6)
    for i, m in enumerate(METHODS):
        rs = [r for r in rows if r["method"] == m]
        x = np.array([100 * r["flip_fraction"] for r in rs]) + (i - 1.5) * 0.6  # dodged
        acc.errorbar(x, *zip(*(percent(r, "test_accuracy", np.nan) for r in rs)), fmt="o-", capsize=3, label=m,
                     color=f"C{i}")
        rs = [r for r in rs if "vs_full" in r]
        if rs:
            diff.errorbar(np.array([100 * r["flip_fraction"] for r in rs]) + (i - 1.5) * 0.6,
                          *zip(*(percent(r, "vs_full", np.nan) for r in rs)), fmt="o-", capsize=3, label=m,
                          color=f"C{i}")
    diff.axhline(0, color="k", lw=0.8)
    acc.set_ylabel("test accuracy % (95% CI over pools)")
    diff.set_ylabel("5% minus full data, paired by pool (points)")
    for ax in (acc, diff):
        ax.set_xlabel("clusters with flipped labels, %")
        ax.legend(fontsize=8)
    acc.set_title("rotten_tomatoes, 8 fresh pools, 5% vs full data", fontsize=9)
    report._save(fig, path)


def main() -> int:
    argparse.ArgumentParser(description=__doc__.split("\n\n")[0]).parse_args()  # --help; no options
    rows = sweep()
    print(markdown(rows))
    write_json(RESULTS / "noise-sweep.json", {"levels": {str(k): v for k, v in LEVELS.items()}, "rows": rows})
    plot(rows, RESULTS / "noise-sweep.png")
    print(json.dumps({f"{r['flip_fraction']:.0%}/{r['method']}": round(100 * r["vs_full"], 2)
                      for r in rows if "vs_full" in r}))
    return 0


if __name__ == "__main__":
    entry(main)
