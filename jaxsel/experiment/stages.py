"""The stage cache: each stage's result is written atomically under a name carrying a hash of
its inputs, so a rerun reuses finished stages and a changed setting recomputes only what it
changes. Shared by ``jaxsel run`` (``RUN/stages/``) and the CLI subcommands (``runs/DATA/stages/``).
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np

from jaxsel.config import spelling
from jaxsel.io import read_cached


# What a stage's result depends on besides its inputs: jaxsel's code. A stage's number goes up with a
# change that makes it compute something else from the same inputs (another finetune schedule, selection
# rule or clustering), so that results cached by earlier code are recomputed, not reused beside new
# ones. Stages cached before 2026-12-06 carry none: any earlier jaxsel may have written them (one
# changed what `warmup = 0` does, and a run reused its finetunes without a word). "embedding" also
# names the global embedding cache's files past format 1 (jaxsel.embed.cache_file). A stage's key also
# carries the numbers of the stages it is computed from (UPSTREAM), so a new clustering recomputes the
# selections made on the old one. Clustering 2 (2026-12-06): mini-batch k-means draws its sample, its
# seeding and its batches from independent keys (they shared one). Selection 2 (2026-12-06): the knn
# proxy's candidates tied at the edge are the lower rows; trained proxies score a baseline's rows of
# every cluster, past max_clusters.
FORMATS = {"clustering": 2, "embedding": 1, "selection": 2, "finetune": 1}
UPSTREAM = {"clustering": ("embedding",), "selection": ("embedding", "clustering")}  # finetunes: keyed by their rows


def key(stage: str, *parts) -> str:
    """A short, stable hash of a ``stage`` (a key of :data:`FORMATS`, whose number it includes, with
    those of its :data:`UPSTREAM` stages past 1) and JSON-able parts; configs hash through
    :func:`jaxsel.config.spelling`, so a field added later at its default leaves earlier keys
    unchanged. Raises KeyError for another stage."""
    upstream = {u: FORMATS[u] for u in UPSTREAM.get(stage, ()) if FORMATS[u] > 1}  # at 1: the keys of format 1
    parts = (stage, FORMATS[stage], *parts) + ((upstream,) if upstream else ())
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=spelling).encode()).hexdigest()[:10]


def selection_key(fingerprint: str, run, cell, filtered: bool) -> str:
    """The :func:`key` of one cell's selection stage: the dataset's ``fingerprint``, the run config's
    (``run``) embed, cluster and proxy settings, the cell's ``SelectConfig`` as it runs (``cell``,
    after ``used()``), the run's ``[select] filter`` where ``filtered``, and the revision of the
    cell's algorithm past 1 (:func:`jaxsel.agents.revision`: a changed algorithm is another stage)."""
    from jaxsel.agents import revised
    parts = (fingerprint, run.embed, run.cluster, run.proxy, cell) + ((run.select.filter,) if filtered else ())
    revision = revised(cell)  # the first revision adds nothing: keys as before
    return key("selection", *parts, *([revision] if revision else []))


def budget_tag(budget: float) -> str:
    """A budget fraction as a file-name tag: 0.05 -> "5pct"."""
    return f"{budget * 100:g}pct"


def clustering(folder: Path, fingerprint: str, x: np.ndarray, spec, embed, labels: np.ndarray | None = None,
               progress: bool = True):
    """The k-means :class:`~jaxsel.cluster.Clustering` of train embeddings ``x`` (N, d) with
    :class:`~jaxsel.config.ClusterSpec` ``spec`` (label-pure with ``spec.stratified``, which
    needs ``labels`` (N,); typical within-cluster order with ``spec.order == "typical"``),
    computed once per (dataset fingerprint, ``embed`` settings, spec) and kept in ``folder``;
    ``meta["seconds"]`` is the time it took when computed."""
    from jaxsel import cluster
    path = Path(folder) / f"cluster-{key('clustering', fingerprint, embed, spec)}.npz"
    kept = read_cached(path, cluster.Clustering.load)
    if kept is not None:
        return kept
    t = time.perf_counter()
    c = cluster.kmeans(x, spec.k, seed=spec.seed, method=spec.method, labels=labels if spec.stratified else None,
                       progress=progress)
    if spec.order == "typical":
        c = cluster.typical_order(c, x)
    c.meta["seconds"] = time.perf_counter() - t
    c.save(path)
    return c


def texts_embedded(folder: Path, texts: list[str], embed, progress: bool = True) -> np.ndarray:
    """Embeddings (n, d) float32 of ``texts`` with :class:`~jaxsel.config.EmbedSpec` ``embed``,
    computed once per (texts, settings) and kept in ``folder``: the noisy variant's near-duplicate
    copies are new texts, not in the dataset's embedding cache, and every run would embed them again."""
    from jaxsel import embed as embed_
    from jaxsel.io import read_npz, write_npz
    from jaxsel.data import joined
    digest = hashlib.sha256(joined(texts).encode()).hexdigest()[:16]
    path = Path(folder) / f"texts-{key('embedding', digest, len(texts), embed)}.npz"

    def read(path: Path) -> np.ndarray:
        x = read_npz(path, ["x"])["x"]
        if x.shape[0] != len(texts) or not np.isfinite(x).all():  # files written before their sha256 was
            raise ValueError(f"{x.shape[0]} embeddings for {len(texts)} texts, or not finite")
        return x

    kept = read_cached(path, read)
    if kept is not None:
        return kept
    x = embed_.encode(texts, embed.model, max_length=embed.max_length, dtype=embed.dtype, progress=progress)
    write_npz(path, x=x)
    return x
