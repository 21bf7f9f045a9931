"""Proxy models: a subset of the train clusters -> a validation score, as pure jit/vmap-able functions.

A proxy is prepared once from train embeddings + labels + a clustering + validation embeddings
+ labels (:func:`make`), and is then a pytree implementing the protocol of
:class:`~jaxsel.proxy.base.Proxy`: ``proxy.score(subset)`` maps a subset to :class:`Scores`
(tie-aware accuracy and mean log-likelihood on the validation set), ``proxy.score_batch(subsets)``
does a (B, K) batch (jit + vmap, the batch axis sharded over all devices), and ``init`` / ``add``
/ ``score_state`` are the incremental form an MDP step uses.

A subset is a (K,) bool mask of whole clusters, or a (K,) int "take": the number of rows taken
from each cluster, counted in the clustering's within-cluster order
(:func:`jaxsel.cluster.member_order`). A cluster is cut into chunks of ``quota`` rows in that
order (``quota`` 0: one chunk, the whole cluster); a take holds whole chunks of every cluster
but at most one, which also holds the first rows of its next chunk. That is the shape of every
exported selection (:func:`jaxsel.selection.take_for`), so the score of a selection is the score
of what it exports. ``score_rows(indices)`` scores any set of train rows directly (the reference
the take form is tested against).

Kinds, one module each: ``ridge`` (:mod:`~jaxsel.proxy.ridge`, closed form from per-chunk
sufficient statistics), ``knn`` (:mod:`~jaxsel.proxy.knn`, a cosine k-nearest-neighbour vote
among the subset's rows, from a precomputed candidate table), ``linear`` / ``mlp``
(:mod:`~jaxsel.proxy.head`, a softmax head trained with AdamW inside ``lax.scan``), ``transformer``
(:mod:`~jaxsel.proxy.transformer`, the first layers of MiniLM: the paper's "smaller model of the same
family"). Batches:
:mod:`~jaxsel.proxy.batch`; the searches' memo: :mod:`~jaxsel.proxy.cache`.

``score_on = "validation+train"`` scores on the validation rows plus the pool's own distinct rows
that cleanlab does not flag (:func:`scored_train_rows`): a search maximising a score over a few
hundred validation rows overfits them (its subsets score far lower on held-out validation rows
than they did on the rows it searched on; ``bench/overfit.py``), and thousands of scored rows
shrink that gap.

The empty subset scores as chance: accuracy 1/C and log-likelihood -log C (a uniform
prediction), for every kind. Reward = score(subset + pick) - score(subset).
"""

from __future__ import annotations

from dataclasses import replace

import jax.numpy as jnp
import numpy as np

from jaxsel.cluster import Clustering
from jaxsel.config import PROXY_KINDS as KINDS
from jaxsel.config import SCORE_ON
from jaxsel.errors import JaxselError, check_dense_ids, check_labels, warn
from jaxsel.programs import make_room
from jaxsel.proxy import knn, ridge
from jaxsel.proxy.base import (HIGHEST, Proxy, ProxyConfig, Scores, chance, chunks, features,
                               max_picks, projector, scores_from_logits, stratified_subsample)
from jaxsel.proxy.batch import check_masks, mesh
from jaxsel.proxy.cache import RewardCache
from jaxsel.proxy.head import Head, Trained, head_logits, init_head
from jaxsel.proxy.knn import Knn
from jaxsel.proxy.ridge import Ridge, RidgeState, fit_ridge, ridge_weights

__all__ = ["HIGHEST", "KINDS", "SCORE_ON", "Head", "Knn", "Proxy", "ProxyConfig", "RewardCache", "Ridge", "RidgeState",
           "Scores", "Trained", "chance", "check_masks", "chunks", "features", "fit_ridge", "head_logits", "make",
           "max_picks", "mesh", "projector", "ridge_weights", "scored_train_rows", "scores_from_logits",
           "stratified_subsample"]


def _check(train_x, train_y, clustering, val_x, val_y, cfg: ProxyConfig):
    if not isinstance(clustering, Clustering):
        raise JaxselError(f"make(train_x, train_y, clustering, val_x, val_y) takes a Clustering third, got "
                          f"{type(clustering).__name__}")
    if not isinstance(cfg, ProxyConfig):
        raise JaxselError(f"the proxy config must be a ProxyConfig, got {type(cfg).__name__}")
    train_x, val_x = np.asarray(train_x, np.float32), np.asarray(val_x, np.float32)
    for name, a in (("train", train_x), ("validation", val_x)):
        if a.ndim != 2 or not len(a):
            raise JaxselError(f"{name} embeddings must be a non-empty (n, d) array, got {a.shape}")
        if not np.isfinite(a).all():
            raise JaxselError(f"{name} embeddings contain NaN or inf")
        top = float(np.abs(a).max())
        if top**2 * len(train_x) > 1e36:  # float32 sums of squares (ridge's X^T X) reach inf at ~3.4e38
            raise JaxselError(f"{name} embeddings reach {top:.3g}: the proxy's float32 sums of squares over "
                              f"{len(train_x)} rows overflow; scale them (e.g. L2-normalise each row)")
    train_y = check_labels(train_y, "train labels", len(train_x))
    val_y = check_labels(val_y, "validation labels", len(val_x))
    if len(np.unique(np.concatenate([train_y, val_y]))) < 2:
        raise JaxselError("a proxy needs labels of at least 2 classes, got 1")
    if train_x.shape[1] != val_x.shape[1]:
        raise JaxselError(f"train and validation embeddings differ in width: {train_x.shape[1]} vs {val_x.shape[1]}")
    if cfg.val_size is not None and cfg.val_size < len(np.unique(val_y)):
        raise JaxselError(f"val_size must be at least the number of classes ({len(np.unique(val_y))}), got {cfg.val_size}")
    if len(clustering.assignment) != len(train_x):
        raise JaxselError(f"clustering covers {len(clustering.assignment)} rows, train has {len(train_x)}")
    return train_x, train_y, val_x, val_y


def scored_train_rows(train_x: np.ndarray, train_y: np.ndarray, clustering, val_x: np.ndarray, val_y: np.ndarray,
                      cfg: ProxyConfig) -> np.ndarray:
    """(N,) bool: the train rows ``score_on = "validation+train"`` adds to the scored rows: the first of
    every set of identical embeddings, less the rows cleanlab flags as label issues
    (:func:`jaxsel.label_issues.find` on a validation-scored ridge proxy of ``cfg``'s projection)."""
    from jaxsel import label_issues
    ridge_cfg = replace(cfg, kind="ridge", score_on="validation")
    flagged = label_issues.find(make(train_x, train_y, clustering, val_x, val_y, ridge_cfg), train_y,
                                clustering.assignment)
    first = np.zeros(len(train_x), bool)
    first[np.unique(np.asarray(train_x), axis=0, return_index=True)[1]] = True
    return first & ~flagged


def _check_tokens(cfg: ProxyConfig, train_tokens, val_tokens, n: int, m: int) -> tuple:
    """The transformer proxy's token ids as int32 arrays (N, T) and (M, T'), checked: raise
    JaxselError for a missing one, another rank or row count, non-integer ids, ids outside the
    model's vocabulary, or more tokens than its positions (a negative id had scored NaN, one past the
    vocabulary was clamped, and the rest surfaced as IndexErrors). Other kinds read no tokens: a warning."""
    if cfg.kind != "transformer":
        if train_tokens is not None or val_tokens is not None:
            warn(f"train_tokens and val_tokens are read by the transformer proxy only; the {cfg.kind} proxy ignores them")
        return None, None
    if train_tokens is None or val_tokens is None:
        raise JaxselError("the transformer proxy needs train_tokens and val_tokens")
    from jaxsel.proxy.transformer import bert_config
    bcfg = bert_config(cfg)
    out = []
    for name, tokens, rows in (("train_tokens", train_tokens, n), ("val_tokens", val_tokens, m)):
        t = np.asarray(tokens)
        if t.ndim != 2 or len(t) != rows:
            raise JaxselError(f"{name} must be token ids of shape ({rows}, T), got shape {t.shape}")
        if t.size and t.dtype.kind not in "iu":
            raise JaxselError(f"{name} must be integer token ids, got {t.dtype}")
        if t.size and (t.min() < 0 or t.max() >= bcfg.vocab_size):
            raise JaxselError(f"{name} must lie in [0, {bcfg.vocab_size}) (0 = padding), got {t.min()}..{t.max()}")
        if t.shape[1] > bcfg.max_positions:
            raise JaxselError(f"{name} hold {t.shape[1]} tokens a row; the model has {bcfg.max_positions} positions")
        out.append(t.astype(np.int32))
    width = max(t.shape[1] for t in out)  # one width (0 = padding): scored train rows join the validation rows
    return tuple(np.pad(t, ((0, 0), (0, width - t.shape[1]))) for t in out)


def make(train_x: np.ndarray, train_y: np.ndarray, clustering, val_x: np.ndarray, val_y: np.ndarray,
         cfg: ProxyConfig = ProxyConfig(), *, train_tokens: np.ndarray | None = None,
         val_tokens: np.ndarray | None = None) -> Proxy:
    """Prepare a proxy of kind ``cfg.kind`` over whole clusters (checks inputs here, outside jit).

    train_x (N, d), train_y (N,), val_x (M, d), val_y (M,); the transformer kind also needs
    token ids ``train_tokens`` (N, T) and ``val_tokens`` (M, T') (0 = padding; the narrower padded
    to the wider). Raises JaxselError for an unknown kind or objective, non-finite or misshapen
    inputs, validation labels of which none is a train class (a warning when some are not), and
    token ids outside the model's vocabulary or positions.
    """
    make_room()  # a long process's compiled programs: jaxsel.programs
    train_x, train_y, val_x, val_y = _check(train_x, train_y, clustering, val_x, val_y, cfg)
    train_tokens, val_tokens = _check_tokens(cfg, train_tokens, val_tokens, len(train_y), len(val_y))
    c = int(max(train_y.max(), val_y.max())) + 1
    seen = np.unique(np.concatenate([train_y, val_y]))
    rows = len(train_y) + len(val_y)
    check_dense_ids(c - 1, rows, f"({len(seen)} distinct ids in {rows} train and validation rows)")
    unused = np.setdiff1d(np.arange(c), seen).tolist()  # c <= rows now: the ids' range is checked first
    if unused:
        warn(f"class ids {unused[:10]}{' ...' if len(unused) > 10 else ''} appear in no train or validation label, "
             f"yet count as classes ({c}: 0 .. the largest id); renumber the labels 0..C-1 "
             f"(numpy.unique(labels, return_inverse=True))")
    val_classes = np.unique(val_y)
    absent = np.setdiff1d(val_classes, train_y).tolist()  # classes the proxy can never predict
    if len(absent) == len(val_classes):
        raise JaxselError(f"no validation label is a class of the train labels (validation {val_classes.tolist()[:10]}, "
                          f"train {np.unique(train_y).tolist()[:10]}): no subset could predict a validation row; "
                          f"number both splits' classes alike")
    if absent:
        warn(f"validation classes {absent[:10]}{' ...' if len(absent) > 10 else ''} have no train row: no subset can "
             f"predict them ({np.isin(val_y, absent).mean():.1%} of the validation rows)", once=True)
    if cfg.val_size is not None and cfg.val_size > len(val_y):
        warn(f"proxy val_size {cfg.val_size} exceeds the {len(val_y)} validation rows: all are scored", once=True)
    if cfg.project is not None and cfg.project > train_x.shape[1] and cfg.kind != "transformer":  # it reads tokens
        warn(f"proxy project {cfg.project} exceeds the embeddings' {train_x.shape[1]} dimensions: all are kept",
             once=True)
    keep = stratified_subsample(val_y, cfg.val_size, cfg.seed)
    val_x, val_y = val_x[keep], val_y[keep]
    val_tokens = None if val_tokens is None else np.asarray(val_tokens)[keep]
    own = np.full(len(val_y), -1)  # the train row each scored row is (-1: a validation row)
    if cfg.score_on == "validation+train":
        extra = scored_train_rows(train_x, train_y, clustering, val_x, val_y, cfg)
        val_x, val_y = np.concatenate([val_x, train_x[extra]]), np.concatenate([val_y, train_y[extra]])
        own = np.concatenate([own, np.flatnonzero(extra)])
        if val_tokens is not None and train_tokens is not None:
            val_tokens = np.concatenate([val_tokens, train_tokens[extra]])
    mean, proj = projector(train_x, cfg)
    xf, xv = features(train_x, mean, proj), features(val_x, mean, proj)
    if cfg.kind in ("ridge", "knn"):
        rp = ridge.make(replace(cfg, kind="ridge"), c, clustering, xf, train_y, xv, val_y)
        return rp if cfg.kind == "ridge" else knn.make(cfg, c, clustering, train_x, train_y, val_x, val_y, own, rp)
    sizes = np.asarray(clustering.sizes, np.int32)
    table = np.asarray(clustering.table)
    rows = np.maximum(table, 0)
    common = dict(cfg=replace(cfg, max_clusters=min(cfg.max_clusters or clustering.k, clustering.k)), num_classes=c,
                  partial_cap=int(sizes.max()), quota=0, yv=jnp.asarray(val_y, jnp.int32), sizes=jnp.asarray(sizes),
                  valid=jnp.asarray(table >= 0), table=jnp.asarray(table), ys=jnp.asarray(train_y[rows], jnp.int32))
    if cfg.kind == "transformer":
        from jaxsel.proxy import transformer
        return transformer.Transformer(xv=jnp.asarray(val_tokens), xs=jnp.asarray(train_tokens[rows]),
                                       params0=transformer.init_params(cfg, c), **common)
    return Head(xv=jnp.asarray(xv), xs=jnp.asarray(xf[rows]), params0=init_head(cfg.kind, xf.shape[1], c, cfg.hidden,
                                                                                    cfg.seed), **common)
