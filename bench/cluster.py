"""jaxsel k-means vs scikit-learn KMeans on synthetic d=384 data.

    python bench/cluster.py [--quick] [--k 256] [--iters 10]

Same k, same number of Lloyd iterations (tol=0 so both run all of them), one k-means++ init
each (greedy k-means++ in both). Times are warm (jaxsel's compile is timed separately). faiss
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
    a = ap.parse_args()
    sizes = a.sizes if a.sizes else ([10_000, 100_000] if a.quick else [10_000, 100_000, 1_000_000])
    skipped = peers.available("faiss")
    if skipped:
        print(f"peer skipped: {skipped}", file=sys.stderr)
    rows = []
    for n in sizes:
        x = blobs(n, 384, 2 * a.k)
        t = time.perf_counter()
        cluster.kmeans(x, a.k, max_iter=a.iters, tol=0.0)
        first = time.perf_counter() - t
        t = time.perf_counter()
        ours = cluster.kmeans(x, a.k, max_iter=a.iters, tol=0.0, seed=1)
        jt = time.perf_counter() - t
        row = {"N": n, "k": a.k, "iters": a.iters, "jaxsel_s": jt, "jaxsel_compile_s": first - jt, "jaxsel_inertia": ours.inertia}
        if n <= a.skip_sklearn_above:
            t = time.perf_counter()
            sk = KMeans(a.k, n_init=1, max_iter=a.iters, tol=0.0, algorithm="lloyd", random_state=1).fit(x)
            row.update(sklearn_s=time.perf_counter() - t, sklearn_inertia=float(sk.inertia_))
            row.update(speedup=row["sklearn_s"] / jt, inertia_ratio=ours.inertia / sk.inertia_)
        if not skipped:
            fs, inertia = peers.faiss_kmeans(x, a.k, a.iters)
            row.update(faiss_s=fs, vs_faiss=fs / jt, faiss_inertia_ratio=ours.inertia / inertia)
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
