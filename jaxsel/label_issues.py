"""Label-noise scores for free from the ridge proxy: leave-one-cluster-out predictions.

The ridge proxy keeps each cluster's sufficient statistics (X^T X, X^T Y), so the fit without
cluster j is a fit on (total - cluster j): every training example gets an out-of-sample predicted
class distribution (softmax of the proxy's temperature-scaled ridge scores) for K small solves.
A cluster whose given labels disagree with what the rest of the data predicts is likely
mislabelled. :func:`find` hands those probabilities to ``cleanlab.filter.find_label_issues``
(confident learning: Northcutt, Jiang and Chuang, "Confident Learning: Estimating Uncertainty in
Dataset Labels", JAIR 2021) to flag individual examples; with ``by="clusters"`` it also flags every
cluster most of whose rows cleanlab flags, and refits without those clusters until the set repeats.

Noise that follows the clusters (a bad source, a mislabelled topic) is what the cluster vote finds:
left out together, a cluster's rows cannot vouch for each other's labels. Noise spread across many
clusters escapes it (each cluster's neighbours in other clusters carry the same wrong labels), and
it then flags about what the row filter flags (bench/README.md, "A cluster vote on label issues").
"""

from __future__ import annotations

import contextlib
import contextvars
import importlib
import sys
import warnings

import jax
import jax.numpy as jnp
import numpy as np

from jaxsel.errors import JaxselError, check_labels, warn
from jaxsel.programs import make_room
from jaxsel.proxy import HIGHEST, Proxy, Ridge, ridge_weights


BY = ("rows", "clusters")  # what find flags
FILTER_BY = {"cleanlab": "rows", "cleanlab+clusters": "clusters"}  # [select] filter -> find's ``by``
_CLASS_NAMES: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar("class_names", default=None)


@contextlib.contextmanager
def class_names(names: list[str]):
    """Inside the block, :func:`find`'s warnings name classes by ``names`` (indexed by class id)
    where the caller gives none: the command line and ``jaxsel run`` set it once for the dataset,
    and every call under them (the proxy's scored rows, the cleanlab baseline, the filters) then
    words its warning alike, so it prints once."""
    token = _CLASS_NAMES.set(list(names))
    try:
        yield
    finally:
        _CLASS_NAMES.reset(token)


def out_of_cluster_probs(proxy: Ridge, assignment: np.ndarray, keep: np.ndarray | None = None) -> np.ndarray:
    """(N, C) float32: each train row's predicted class distribution from the ridge fit on every
    other cluster (with ``keep`` (K,) bool: every other kept cluster). ``assignment`` (N,): the
    clustering the proxy was made with. Raises :class:`JaxselError` for a proxy that is not ridge
    (a knn proxy lends its ``ridge``), a misshapen ``assignment``/``keep``, or an assignment whose
    clusters hold other rows than the proxy's."""
    p = _per_cluster(proxy)
    assignment = np.asarray(assignment)
    if assignment.shape != (p.xf.shape[0],):
        raise JaxselError(f"assignment must have shape ({p.xf.shape[0]},), got {assignment.shape}")
    k = p.xtx.shape[0]
    if assignment.min(initial=0) < 0 or assignment.max(initial=0) >= k:
        raise JaxselError(f"assignment holds cluster ids outside 0..{k - 1} (the proxy's clusters)")
    if not np.array_equal(assignment[np.asarray(p.rows)], np.repeat(np.arange(k), np.asarray(p.sizes))):
        raise JaxselError("assignment is not the clustering the proxy was made with (its clusters hold other rows): "
                          "pass the clustering given to proxy.make")
    keep = np.ones(k, bool) if keep is None else np.asarray(keep, bool)
    if keep.shape != (k,):
        raise JaxselError(f"keep must have shape ({k},), got {keep.shape}")
    return np.asarray(_probs(p, jnp.asarray(assignment, jnp.int32), jnp.asarray(keep, jnp.float32)))


def _per_cluster(proxy: Proxy) -> Ridge:
    """The ridge proxy (a knn proxy lends its ``ridge``) with one chunk per cluster."""
    if proxy.kind == "knn":
        proxy = proxy.ridge
    if proxy.kind != "ridge":
        raise JaxselError(f"label-issue scores need the ridge proxy, not {proxy.kind!r}")
    return proxy.with_quota(0)  # one chunk per cluster: its statistics are the cluster's


ROWS = 1024  # rows whose out-of-cluster logits are computed together (their weights gathered at once)


@jax.jit
def _probs(p: Ridge, assignment: jax.Array, keep: jax.Array) -> jax.Array:
    xtx, xty = p.xtx, p.xty  # (K, L) packed, (K, r+1, C)
    total = jnp.dot(keep, xtx, precision=HIGHEST)
    total_y = jnp.einsum("k,kic->ic", keep, xty, precision=HIGHEST)
    w = jax.vmap(lambda a, b, s: ridge_weights(total - s * a, total_y - s * b, p.cfg.lam))(xtx, xty, keep)
    # row by row, ROWS at a time: gathering every row's weights at once held (N, r+1, C) floats (3 GB at
    # N = 100k, all 384 dimensions, 20 classes)
    logits = jax.lax.map(lambda row: jnp.dot(row[0], w[row[1]], precision=HIGHEST), (p.xf, assignment),
                         batch_size=ROWS)
    return jax.nn.softmax(p.cfg.temperature * logits, -1)


def cluster_agreement(labels: np.ndarray, probs: np.ndarray, assignment: np.ndarray, k: int) -> np.ndarray:
    """(K, 2) float32 per cluster: the share of its rows whose given label is the out-of-cluster
    prediction, and the mean out-of-cluster probability of the given labels."""
    labels, assignment = check_labels(labels, "labels", len(assignment), probs.shape[1]), np.asarray(assignment)
    agree = (probs.argmax(1) == labels).astype(np.float64)
    given = probs[np.arange(len(labels)), labels]
    n = np.maximum(np.bincount(assignment, minlength=k), 1)
    return np.stack([np.bincount(assignment, agree, k) / n, np.bincount(assignment, given, k) / n], 1).astype(np.float32)


def cleanlab_flags(labels: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """(N,) bool: ``cleanlab.filter.find_label_issues(labels, probs, n_jobs=1)`` (labels (N,) class
    ids, probs (N, C) out-of-sample probabilities). cleanlab is imported the first time with the
    warning filters kept: cleanlab (2.9) runs ``warnings.filterwarnings("ignore")`` when its
    ``datalab`` loads, which silenced every later warning of the process (jaxsel's too: break-it
    round 41)."""
    if "cleanlab.filter" not in sys.modules:
        with warnings.catch_warnings():
            importlib.import_module("cleanlab.filter")
    from cleanlab.filter import find_label_issues
    return np.asarray(find_label_issues(labels, probs, n_jobs=1), bool)


def find(proxy: Proxy, labels: np.ndarray, assignment: np.ndarray, *, by: str = "rows",
         max_rounds: int = 10, names: list[str] | None = None) -> np.ndarray:
    """(N,) bool: the train rows ``cleanlab.filter.find_label_issues`` flags given the
    out-of-cluster probabilities (its default ``prune_by_noise_rate`` filter).

    ``by="clusters"`` also flags every row of each cluster where cleanlab flags more than half the
    rows, then refits the out-of-cluster ridge without those clusters and flags again, until the
    flagged clusters repeat (at most ``max_rounds`` refits); the result is the last round's rows and
    clusters. Either way no class loses more than ``MAX_FLAGGED_SHARE`` of its rows
    (:func:`spare_classes`; ``names``: the classes' names for its warning, else those of
    :func:`class_names`, else their ids). Raises
    :class:`JaxselError` for one class, an unknown ``by``, ``max_rounds`` < 1, ``labels`` and
    ``assignment`` of different lengths, or either not the proxy's."""
    make_room()  # a long process's compiled programs: jaxsel.programs
    if by not in BY:
        raise JaxselError(f"unknown label-issue detector {by!r} (choose from {', '.join(BY)})")
    labels, assignment = np.asarray(labels), np.asarray(assignment)
    if labels.shape != assignment.shape:
        raise JaxselError(f"labels ({labels.shape}) and assignment ({assignment.shape}) must have one entry per row")
    labels = check_labels(labels, "labels", num_classes=proxy.num_classes)
    proxy.check_made_with(labels, "labels", "label_issues.find")  # flags for other labels: none, or the wrong rows
    if max_rounds < 1:
        raise JaxselError(f"max_rounds must be at least 1, got {max_rounds}")
    if len(np.unique(labels)) < 2:
        raise JaxselError("label issues need at least two classes")

    per_cluster = _per_cluster(proxy)  # once: a quota proxy rebuilds its chunk statistics on the host
    k = per_cluster.xtx.shape[0]
    judged = judgeable(labels, assignment, k)
    if not judged.all():  # once: every seed's and method's pass over the same clustering finds the same rows
        n = int((~judged).sum())
        warn(f"label issues: {n} {'row belongs' if n == 1 else 'rows belong'} to classes with under {MIN_OUTSIDE:.0%} "
             f"of their rows outside the row's cluster; the out-of-cluster fit cannot judge their labels, so "
             f"{'it is' if n == 1 else 'they are'} never flagged", once=True)

    def rows(keep: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        probs = out_of_cluster_probs(per_cluster, assignment, keep).astype(np.float64)
        # n_jobs=1: cleanlab's worker pool forks, and forking a process running JAX threads can deadlock
        return cleanlab_flags(labels, probs) & judged, probs

    flagged, probs = rows(None)
    if by == "clusters":
        sizes = np.maximum(np.bincount(assignment, minlength=k), 1)
        seen = {np.zeros(k, bool).tobytes()}  # no cluster flagged: the refit would be the first fit again
        for _ in range(max_rounds):
            bad = np.bincount(assignment, flagged, k) / sizes > 0.5
            if bad.all() or bad.tobytes() in seen:  # nothing left to fit on, or a repeat: stop
                break
            seen.add(bad.tobytes())
            flagged, probs = rows(~bad)
        bad = np.bincount(assignment, flagged, k) / sizes > 0.5
        flagged = (flagged | bad[assignment]) & judged
    return spare_classes(flagged, labels, probs[np.arange(len(labels)), labels], names)


MAX_FLAGGED_SHARE = 0.5  # of a class's train rows, at most, flagged as label issues


def spare_classes(flagged: np.ndarray, labels: np.ndarray, given: np.ndarray,
                  names: list[str] | None = None) -> np.ndarray:
    """``flagged`` (N,) bool with, in every class of which more than ``MAX_FLAGGED_SHARE`` of the
    rows are flagged, the flags of the rows whose given label is likeliest (``given`` (N,): its
    out-of-cluster probability) lifted until that share is left; a warning names those classes
    (``names``, else those of :func:`class_names`, else their ids). A rare class (a few dozen rows
    among thousands, or in few clusters) is one the fit without a row's cluster predicts poorly,
    and cleanlab flagged every row of such classes in a new user's dataset (Debian package
    sections: 80 of 80 "editors", 40 of 40 "hamradio"), so a filtered selection could hold none of
    them; a class most of whose labels are really wrong is rarer than one the fit cannot learn.
    ``labels``: class ids (N,)."""
    out = np.asarray(flagged, bool).copy()
    names = names if names is not None else _CLASS_NAMES.get()
    spared = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        hit = members[out[members]]
        allowed = int(MAX_FLAGGED_SHARE * len(members))
        if len(hit) > allowed:
            out[hit[np.argsort(-given[hit], kind="stable")[:len(hit) - allowed]]] = False
            spared.append(f"{names[c] if names is not None else c} ({len(hit)} of {len(members)})")
    if spared:
        warn(f"label issues: cleanlab flagged more than {MAX_FLAGGED_SHARE:.0%} of the train rows of class "
             f"{', '.join(spared)}; only the {MAX_FLAGGED_SHARE:.0%} whose labels the out-of-cluster fit finds least "
             f"likely stay flagged (a class mostly flagged is more often too rare for the fit than mostly "
             f"mislabelled)", once=True)
    return out


MIN_OUTSIDE = 0.1  # a row's label is judged when this share of its class lies outside its cluster


def judgeable(labels: np.ndarray, assignment: np.ndarray, k: int) -> np.ndarray:
    """(N,) bool: the rows whose given class has at least ``MIN_OUTSIDE`` of its rows outside the
    row's cluster. The fit without a cluster has seen too few of a class that lives in it (a
    class found in one cluster, a class of a few rows), and predicts the other classes there:
    cleanlab would flag every such row, right labels too (a new user's 26 classes over 30 clusters:
    38% of correct rows flagged)."""
    _, labels = np.unique(check_labels(labels, "labels", len(assignment)), return_inverse=True)  # any ids
    assignment = np.asarray(assignment)
    c = int(labels.max()) + 1
    joint = np.bincount(assignment * c + labels, minlength=k * c).reshape(k, c)  # rows per (cluster, class)
    total = joint.sum(0)
    outside = total[labels] - joint[assignment, labels]
    return outside >= MIN_OUTSIDE * total[labels]
