"""Join the parts of one run config split by seed (``bench/runbg.sh NAME SEEDS``, other machines,
or a run whose stage cache was lost after some seeds were committed) into one results document,
report and plots (:func:`jaxsel.experiment.report.merge`).

    python bench/merge.py bench/results/e2e-NAME bench/results/e2e-NAME/results.json runs/NAME-s4/results.json

OUT may be one of the parts' folders (a committed result joined by a new part: the merged document lists
its ``parts``, and git keeps the one it replaces). The mask map (the first seed's picks) is the part's
that ran the first seed, copied where OUT is another folder. Writes OUT/report.md and the plots, then
OUT/results.json (last, as a run does), and prints the table.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(Path(__file__).parent)]

from common import entry  # noqa: E402
from jaxsel.experiment import report  # noqa: E402
from jaxsel.io import atomic_path, write_json  # noqa: E402


def read_part(path: Path) -> dict:
    """The results document in ``path``; an error naming the file where it is no JSON (report.merge
    says which part is not a results document)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: not JSON ({e})") from None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path, help="folder for the merged results.json, report.md and plots")
    ap.add_argument("parts", nargs="+", type=Path, help="results.json of each part")
    a = ap.parse_args(argv)
    if a.out.exists() and not a.out.is_dir():
        sys.exit(f"error: {a.out} is a file: the first argument is the folder the merged results go to")
    try:
        parts = [read_part(p) for p in a.parts]
        doc = report.merge(parts)
    except (OSError, ValueError) as e:
        sys.exit(f"error: {e}")
    a.out.mkdir(parents=True, exist_ok=True)
    first = doc["config"]["seeds"][0]  # the mask map shows the first seed's picks: the part that ran it drew it
    drawn = next((p.parent / "mask_map.png" for p, part in zip(a.parts, parts) if part["config"]["seeds"][0] == first
                  and any(r["seed"] == first for r in part["rows"]) and (p.parent / "mask_map.png").exists()), None)
    kept = a.out / "mask_map.png"
    if drawn is None:
        kept.unlink(missing_ok=True)  # another run's map: the report then shows none
    elif drawn.resolve() != kept.resolve():
        with atomic_path(kept, suffix=".png") as tmp:
            shutil.copyfile(drawn, tmp)
    report.write(a.out, doc, maps={})
    write_json(a.out / "results.json", doc)  # last, as a run writes it: complete means the report is there
    print(report.markdown(doc["summary"], doc["dataset"].get("labels")))
    n = len(doc["parts"])
    print(f"seeds {doc['config']['seeds']} from {n} part{'s' if n != 1 else ''}, complete: {doc['complete']}; "
          f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    entry(main)
