"""Label-noise scores for free from the ridge proxy: leave-one-cluster-out predictions.

The ridge proxy keeps each cluster's sufficient statistics (X^T X, X^T Y), so the fit without
cluster j is a fit on (total - cluster j): every training example gets an out-of-sample predicted
class distribution (softmax of the proxy's temperature-scaled ridge scores) for K small solves.
A cluster whose given labels disagree with what the rest of the data predicts is likely
mislabelled. :func:`find` hands those probabilities to ``cleanlab.filter.find_label_issues``
(confident learning: Northcutt, Jiang and Chuang, "Confident Learning: Estimating Uncertainty in
Dataset Labels", JAIR 2021) to flag individual examples.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxsel.errors import JaxselError
from jaxsel.proxy import HIGHEST, Proxy, Ridge, ridge_weights


def out_of_cluster_probs(proxy: Ridge, assignment: np.ndarray) -> np.ndarray:
    """(N, C) float32: each train row's predicted class distribution from the ridge fit on every
    other cluster. ``assignment`` (N,): the clustering the proxy was made with. Raises
    :class:`JaxselError` for a proxy that is not ridge (a knn proxy lends its ``ridge``)."""
    if proxy.kind == "knn":
        proxy = proxy.ridge
    if proxy.kind != "ridge":
        raise JaxselError(f"label-issue scores need the ridge proxy, not {proxy.kind!r}")
    p = proxy.with_quota(0)  # one chunk per cluster: its statistics are the cluster's
    assignment = np.asarray(assignment)
    if assignment.shape != (p.xf.shape[0],):
        raise JaxselError(f"assignment must have shape ({p.xf.shape[0]},), got {assignment.shape}")
    return np.asarray(_probs(p, jnp.asarray(assignment, jnp.int32)))


@jax.jit
def _probs(p: Ridge, assignment: jax.Array) -> jax.Array:
    xtx, xty = p.xtx, p.xty
    w = jax.vmap(lambda a, b: ridge_weights(xtx.sum(0) - a, xty.sum(0) - b, p.cfg.lam))(xtx, xty)  # (K, r+1, C)
    logits = p.cfg.temperature * jnp.einsum("nr,nrc->nc", p.xf, w[assignment], precision=HIGHEST)
    return jax.nn.softmax(logits, -1)


def cluster_agreement(labels: np.ndarray, probs: np.ndarray, assignment: np.ndarray, k: int) -> np.ndarray:
    """(K, 2) float32 per cluster: the share of its rows whose given label is the out-of-cluster
    prediction, and the mean out-of-cluster probability of the given labels."""
    labels, assignment = np.asarray(labels), np.asarray(assignment)
    agree = (probs.argmax(1) == labels).astype(np.float64)
    given = probs[np.arange(len(labels)), labels]
    n = np.maximum(np.bincount(assignment, minlength=k), 1)
    return np.stack([np.bincount(assignment, agree, k) / n, np.bincount(assignment, given, k) / n], 1).astype(np.float32)


def find(proxy: Proxy, labels: np.ndarray, assignment: np.ndarray) -> np.ndarray:
    """(N,) bool: the train rows ``cleanlab.filter.find_label_issues`` flags given the
    out-of-cluster probabilities (its default ``prune_by_noise_rate`` filter)."""
    from cleanlab.filter import find_label_issues
    probs = out_of_cluster_probs(proxy, assignment)
    labels = np.asarray(labels)
    if len(np.unique(labels)) < 2:
        raise JaxselError("label issues need at least two classes")
    # n_jobs=1: cleanlab's worker pool forks, and forking a process running JAX threads can deadlock
    return np.asarray(find_label_issues(labels, probs.astype(np.float64), n_jobs=1), bool)
