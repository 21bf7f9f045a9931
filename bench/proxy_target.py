"""Is the proxy's best subset also the finetuned model's? A finished run's 5% subsets, no new finetunes.

    python bench/proxy_target.py --config configs/tweets-whole --run bench/results/e2e-tweets-whole \
        [--stages runs/tweets-whole/stages] [--variants clean,noisy]

For every 5% subset of a finished ``jaxsel run`` (the searches' saved selections, the baselines
drawn again from their seeds), the ridge proxy of the run's config is fitted on the subset
(float64 numpy, the closed form) and read four ways: the score the searches maximised (validation
plus the pool's unflagged rows, the subset's own rows in-sample; checked against the run's recorded
``proxy_accuracy``), the same with the subset's own rows scored leave-one-out (the exact ridge
identity f_-i(x_i) = (f(x_i) - h_i y_i) / (1 - h_i), h_i = x_i^T (X^T X + lam I)^-1 x_i), the
validation rows alone, and the pool rows cleanlab flags (leave-one-out). These are set against the
validation accuracy of the MiniLM finetuned on the same subset (from the run's results.json), as are
judges the searches did not maximise (:func:`other_views`: the ridge without projection, a kNN vote,
coverage, the label mix). No
test label is read. Spearman's rank correlation (scipy) over methods x seeds says whether ranking
subsets by the proxy ranks them as the finetuned target would.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import NamedTuple

sys.path.insert(0, str(Path(__file__).parent))
import numpy as np  # noqa: E402
from common import entry, report  # noqa: E402
from scipy import stats  # noqa: E402

from jaxsel import baselines, data, label_issues, proxy  # noqa: E402
from jaxsel.config import load_config  # noqa: E402
from jaxsel.experiment import Run  # noqa: E402
from jaxsel.experiment.stages import budget_tag  # noqa: E402
from jaxsel.proxy.base import features, projector, stratified_subsample  # noqa: E402
from jaxsel.selection import Selection, budget_examples  # noqa: E402


VIEWS = ("searched", "validation", "flagged_loo", "ridge_full", "knn", "coverage", "neg_label_kl")


def ridge_fit(xf: np.ndarray, onehot: np.ndarray, rows: np.ndarray, lam: float) -> tuple[np.ndarray, np.ndarray]:
    """(A, W) of the ridge on features ``xf`` (N, r+1) and one-hot labels (N, C) of train ``rows``:
    A = X^T X + lam I (r+1, r+1), W = A^-1 X^T Y (r+1, C); float64 numpy, the closed form."""
    a = xf[rows].T @ xf[rows] + lam * np.eye(xf.shape[1])
    return a, np.linalg.solve(a, xf[rows].T @ onehot[rows])


def ridge_views(rows: np.ndarray, xf: np.ndarray, y: np.ndarray, xv: np.ndarray, yv: np.ndarray,
                scored: np.ndarray, flagged: np.ndarray, lam: float) -> dict[str, float]:
    """Accuracies of the ridge fitted on train rows ``rows``: ``searched`` (validation + ``scored``
    pool rows, own rows in-sample), ``searched_loo`` (own rows leave-one-out), ``validation``,
    ``flagged_loo`` (the ``flagged`` pool rows, own rows leave-one-out)."""
    onehot = np.eye(int(max(y.max(), yv.max())) + 1)[y]
    a, w = ridge_fit(xf, onehot, rows, lam)
    own = np.zeros(len(y), bool)
    own[rows] = True

    def pool_hits(mask: np.ndarray, loo: bool) -> np.ndarray:
        r = np.flatnonzero(mask)
        f = xf[r] @ w
        if loo:
            h = np.einsum("ij,ij->i", xf[r], np.linalg.solve(a, xf[r].T).T)[:, None]
            f = np.where(own[r][:, None], (f - h * onehot[r]) / (1 - h), f)
        return f.argmax(1) == y[r]

    val = (xv @ w).argmax(1) == yv
    return {"searched": float(np.concatenate([val, pool_hits(scored, False)]).mean()),
            "searched_loo": float(np.concatenate([val, pool_hits(scored, True)]).mean()),
            "validation": float(val.mean()), "flagged_loo": float(pool_hits(flagged, True).mean())}


def other_views(rows: np.ndarray, xu: np.ndarray, y: np.ndarray, xvu: np.ndarray, vy: np.ndarray,
                lam: float, k: int = 10) -> dict[str, float]:
    """Cheaper or different judges of the subset ``rows``, all on the validation rows, from the
    unprojected features (:func:`jaxsel.proxy.base.features` without projection: the embeddings
    and a bias column) of train ``xu`` (N, d+1) and validation ``xvu`` (V, d+1): ``ridge_full``
    (the ridge on all d dimensions), ``knn`` (accuracy of a cosine ``k``-nearest-neighbour vote
    among the subset's rows), ``coverage`` (label-free: mean over validation rows of the cosine
    similarity to the nearest subset row, the quantity k-center / facility-location coresets
    maximise), ``neg_label_kl`` (minus the KL divergence of the subset's label mix from the train
    split's, nats: higher is closer)."""
    nc = int(max(y.max(), vy.max())) + 1
    _, w = ridge_fit(xu, np.eye(nc)[y], rows, lam)

    def unit(a: np.ndarray) -> np.ndarray:
        return a / np.linalg.norm(a, axis=1, keepdims=True)

    sim = unit(xvu[:, :-1]) @ unit(xu[rows, :-1]).T
    near = np.argpartition(-sim, k, axis=1)[:, :k]
    votes = np.zeros((len(vy), nc))
    np.add.at(votes, (np.arange(len(vy))[:, None], y[rows][near]), np.take_along_axis(sim, near, 1))
    p_train = np.bincount(y, minlength=nc) / len(y)
    p_sub = (np.bincount(y[rows], minlength=nc) + 1e-9) / len(rows)
    return {"ridge_full": float(((xvu @ w).argmax(1) == vy).mean()), "knn": float((votes.argmax(1) == vy).mean()),
            "coverage": float(sim.max(1).mean()),
            "neg_label_kl": float(-(p_train * np.log(p_train / p_sub)).sum())}


def subset_rows(row: dict, stage_dir: Path, dd, labels: np.ndarray, clustering, x: np.ndarray,
                issues: np.ndarray | None = None) -> np.ndarray:
    """The train rows a results row finetuned on: a search's saved selection from ``stage_dir``
    (the one made for the dataset ``dd``: configs sharing a stage folder may hold others of the same
    name), a baseline drawn again from its seed (``issues``: cleanlab's flags, for ``cleanlab``)."""
    m = row["method"]
    if m in baselines.METHODS:
        return baselines.indices(m, budget_examples(row["budget"], len(labels)), row["seed"], labels=labels,
                                 clustering=clustering, x=x, issues=issues)
    tag = f"{row['variant']}-{m}-{budget_tag(row['budget'])}-s{row['seed']}"
    fingerprint = data.dataset_fingerprint(dd)
    for path in sorted(stage_dir.glob(f"{tag}-*/selection.json")):
        sel = Selection.load(path)
        if sel.meta.get("fingerprint") == fingerprint:
            return sel.indices
    raise SystemExit(f"no {tag} selection for this dataset in {stage_dir}")


class Finished(NamedTuple):
    """A finished run read back: its results document and path, config, stage folder, and the shared
    stages (dataset, embeddings, clean clustering) from that folder."""

    results: dict
    path: Path
    cfg: object
    stage_dir: Path
    run: Run
    dd: object
    emb: dict
    clustering: object


def add_run_args(ap: argparse.ArgumentParser) -> None:
    """The arguments naming a finished run: ``--config``, ``--run``, ``--stages``."""
    ap.add_argument("--config", required=True)
    ap.add_argument("--run", required=True, help="the finished run's results.json, or its folder")
    ap.add_argument("--stages", help="its stage folder (default: the config's, else runs/NAME/stages)")


def finished(args: argparse.Namespace) -> Finished:
    """The run named by :func:`add_run_args`' arguments, its shared stages reused from the stage folder."""
    path = Path(args.run) if args.run.endswith(".json") else Path(args.run) / "results.json"
    cfg = load_config(args.config)
    stage_dir = Path(args.stages or cfg.stages or f"runs/{cfg.name}/stages")
    run = Run(dataclasses.replace(cfg, stages=str(stage_dir)), path.parent, progress=False)
    dd = run.dataset()
    emb = run.embeddings(dd)
    return Finished(json.loads(path.read_text()), path, cfg, stage_dir, run, dd, emb, run.clustering(dd, emb))


def pool_rows(x: np.ndarray, y: np.ndarray, clustering, vx: np.ndarray, vy: np.ndarray,
              cfg) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(issues, scored, flagged), each (N,) bool: the rows cleanlab flags (as the run's cleanlab
    baseline), and of the first of every set of identical embeddings, those the pool-scored proxy
    scores (as :func:`jaxsel.proxy.scored_train_rows`) and those it leaves out."""
    issues = label_issues.find(proxy.make(x, y, clustering, vx, vy, dataclasses.replace(cfg, score_on="validation")),
                               y, clustering.assignment)
    first = np.zeros(len(y), bool)
    first[np.unique(x, axis=0, return_index=True)[1]] = True
    return issues, first & ~issues, first & issues


def spearman(table: list[dict], view: str) -> dict[str, float]:
    """Spearman's rho (scipy) of ``view`` against ``finetuned_validation`` over the rows of ``table``."""
    res = stats.spearmanr([t[view] for t in table], [t["finetuned_validation"] for t in table])
    return {"rho": float(res.statistic), "p": float(res.pvalue), "n": len(table)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_run_args(ap)
    ap.add_argument("--variants", default="clean")
    ap.add_argument("--budget", type=float, default=0.05)
    args = ap.parse_args()
    f = finished(args)
    pc = f.cfg.proxy
    table = []
    for v in args.variants.split(","):
        vdd, x, c, _ = f.run.variant(v, f.dd, f.emb, f.clustering)
        y = np.asarray(vdd["train"]["label"])
        vy = np.asarray(f.dd["validation"]["label"])
        keep = stratified_subsample(vy, pc.val_size, pc.seed)
        vx, vy = f.emb["validation"][keep], vy[keep]
        issues, scored, flagged = pool_rows(x, y, c, vx, vy, pc)
        mean, proj = projector(x, pc)
        xf, xvf = (features(a, mean, proj).astype(np.float64) for a in (x, vx))
        mean, proj = projector(x, dataclasses.replace(pc, project=None))
        xu, xvu = (features(a, mean, proj).astype(np.float64) for a in (x, vx))
        for r in f.results["rows"]:
            if r["variant"] != v or r["budget"] != args.budget:
                continue
            m, seed = r["method"], r["seed"]
            rows = subset_rows(r, f.stage_dir, vdd, y, c, x, issues)
            views = ridge_views(rows, xf, y, xvf, vy, scored, flagged, pc.lam)
            if abs(views["searched"] - r["proxy_accuracy"]) > 2e-3:
                raise SystemExit(f"{v} {m} seed {seed}: recomputed proxy score {views['searched']:.4f} is not the "
                                 f"run's {r['proxy_accuracy']:.4f}: not the subset the run finetuned")
            table.append({"variant": v, "method": m, "seed": seed, **views,
                          **other_views(rows, xu, y, xvu, vy, pc.lam),
                          "finetuned_validation": r["validation_accuracy"]})
    headers = ["variant", "method", "seed", "searched", "searched_loo", "validation", "flagged_loo",
               *VIEWS[3:], "finetuned_validation"]
    rho = {f"{v}/{view}": spearman([t for t in table if t["variant"] == v], view)
           for v in {t["variant"] for t in table} for view in VIEWS}
    for key, r in sorted(rho.items()):
        print(f"Spearman {key} vs finetuned validation accuracy: rho {r['rho']:+.2f} (p {r['p']:.2f}, n {r['n']})")
    report(f"proxy-target-{f.cfg.name}", table, headers,
           {"spearman_vs_finetuned_validation": rho, "run": str(f.path), "config": args.config}, quick=False)


if __name__ == "__main__":
    entry(main)
