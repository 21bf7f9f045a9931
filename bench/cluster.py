"""jaxsel k-means vs scikit-learn KMeans on synthetic d=384 data.

    python bench/cluster.py [--quick] [--k 256] [--iters 10]

Same k, same number of Lloyd iterations (tol=0 so both run all of them), one k-means++ init
each (greedy k-means++ in both), the same seed every round. Every side runs once untimed (jaxsel's
compile, scikit-learn's thread pools), then ``--reps`` alternating timed rounds; medians. faiss
(``faiss.Kmeans``: one init by random sampling, not k-means++; the ``bench`` extra) runs the same k
and iterations on the same data when it imports.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import numpy as np  # noqa: E402
import peers  # noqa: E402
from common import count, counts, entry, report  # noqa: E402

from jaxsel import cluster  # noqa: E402


def blobs(n: int, d: int, centers: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    c = rng.standard_normal((centers, d)).astype(np.float32)
    x = c[rng.integers(0, centers, n)] + 0.6 * rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def main() -> None:
    from sklearn.cluster import KMeans

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="N in {10k, 100k} (about 2 minutes on 2 idle CPU cores, 2-4.5 on a busy host)")
    ap.add_argument("--k", type=count(1), default=256)
    ap.add_argument("--iters", type=count(1), default=10)
    ap.add_argument("--sizes", type=counts(1), default=None, help="comma-separated N values")
    ap.add_argument("--skip-sklearn-above", type=count(0), default=10**9)
    ap.add_argument("--reps", type=count(1), default=3, help="alternating timed rounds of every side")
    a = ap.parse_args()
    sizes = a.sizes if a.sizes else ([10_000, 100_000] if a.quick else [10_000, 100_000, 1_000_000])
    skipped = peers.available("faiss")
    if skipped:
        print(f"peer skipped: {skipped}", file=sys.stderr)
    rows = []
    for n in sizes:
        x = blobs(n, 384, 2 * a.k)
        sides = {"jaxsel": lambda: cluster.kmeans(x, a.k, max_iter=a.iters, tol=0.0, seed=1).inertia}
        if n <= a.skip_sklearn_above:
            sides["sklearn"] = lambda: float(KMeans(a.k, n_init=1, max_iter=a.iters, tol=0.0, algorithm="lloyd",
                                                    random_state=1).fit(x).inertia_)
        if not skipped:
            sides["faiss"] = lambda: peers.faiss_kmeans(x, a.k, a.iters)  # (its training's seconds, inertia)
        times, inertia = {s: [] for s in sides}, {}
        for r in range(a.reps + 1):  # round 0 untimed: compiles and thread pools
            for s, fit in sides.items():
                t = time.perf_counter()
                out = fit()
                seconds, inertia[s] = out if isinstance(out, tuple) else (time.perf_counter() - t, out)
                times[s].append(seconds)
        sec = {s: float(np.median(v[1:])) for s, v in times.items()}
        jt = sec["jaxsel"]
        row = {"N": n, "k": a.k, "iters": a.iters, "jaxsel_s": jt, "jaxsel_compile_s": times["jaxsel"][0] - jt,
               "jaxsel_inertia": inertia["jaxsel"]}
        if "sklearn" in sec:
            row.update(sklearn_s=sec["sklearn"], sklearn_inertia=inertia["sklearn"], speedup=sec["sklearn"] / jt,
                       inertia_ratio=inertia["jaxsel"] / inertia["sklearn"])
        if "faiss" in sec:
            row.update(faiss_s=sec["faiss"], vs_faiss=sec["faiss"] / jt, faiss_inertia_ratio=inertia["jaxsel"] / inertia["faiss"])
        rows.append(row)
        print(f"N={n}: jaxsel {jt:.2f}s, sklearn {row.get('sklearn_s', float('nan')):.2f}s", file=sys.stderr)
    last = [r for r in rows if "speedup" in r][-1]
    summary = {"vs_sklearn": last["speedup"], "inertia_ratio": last["inertia_ratio"], "N": last["N"],
               "vs_faiss": last.get("vs_faiss"), "faiss_inertia_ratio": last.get("faiss_inertia_ratio")}
    report("cluster", rows, ["N", "k", "iters", "jaxsel_s", "jaxsel_compile_s", "sklearn_s", "speedup", "faiss_s",
                             "vs_faiss", "jaxsel_inertia", "sklearn_inertia", "inertia_ratio", "faiss_inertia_ratio"],
           summary, a.quick)


if __name__ == "__main__":
    entry(main)
