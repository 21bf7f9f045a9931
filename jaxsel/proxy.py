"""Proxy models: a cluster mask -> a validation score, as pure jit/vmap-able functions.

A proxy is prepared once from train embeddings + labels + a clustering + validation embeddings
+ labels (``make``), and is then a pytree: ``proxy.score(subset)`` maps a subset to
:class:`Scores` (tie-aware accuracy and mean log-likelihood on the validation set),
``proxy.score_batch(subsets)`` does a (B, K) batch (jit + vmap, the batch axis sharded over all
devices), and ``init`` / ``add`` / ``score_state`` are the incremental form an MDP step uses.

A subset is a (K,) bool mask of whole clusters, or a (K,) int "take": the number of rows taken
from each cluster, counted in the clustering's within-cluster order
(:func:`jaxsel.cluster.member_order`). A cluster is cut into chunks of ``quota`` rows in that
order (``quota`` 0: one chunk, the whole cluster); a take holds whole chunks of every cluster
but at most one, which also holds the first rows of its next chunk. That is the shape of every
exported selection (whole clusters or quota chunks, then the rows of the last pick that fit the
budget; :func:`jaxsel.selection.take_for`), so the score of a selection is the score of what it
exports.
``score_rows(indices)`` scores any set of train rows directly (the reference the take form is
tested against).

Kinds:
- ``ridge``: closed-form ridge classifier from per-chunk sufficient statistics
  (X^T X, X^T Y of each chunk); adding a chunk adds its statistics, so a step costs O(r^2) + one
  (r+1)-dimensional Cholesky solve whatever the number of examples. A partly taken chunk adds
  the statistics of its first rows, gathered from the train features (at most ``partial_cap``
  rows: O(partial_cap r^2)).
- ``linear`` / ``mlp``: a softmax head trained with Adam inside ``lax.scan`` on a fixed-size
  sample of each chosen cluster (the clustering's index table, which is the head of the
  within-cluster order, so a partly taken cluster contributes its first table rows), with a
  masked loss so shapes never change.
- ``transformer``: a small BERT (the first layers of MiniLM or a tiny random one) finetuned on
  the token ids of the same sample: the paper's "smaller model of the same family".

The empty subset scores as chance: accuracy 1/C and log-likelihood -log C (a uniform
prediction), for every kind. Reward = score(mask + cluster) - score(mask).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from jaxsel.cluster import member_order
from jaxsel.errors import JaxselError

KINDS = ("ridge", "linear", "mlp", "transformer")
HIGHEST = jax.lax.Precision.HIGHEST


class Scores(NamedTuple):
    """Validation accuracy (ties share credit) and mean log-likelihood of the true label."""

    accuracy: jax.Array
    loglik: jax.Array


@dataclass(frozen=True)
class ProxyConfig:
    """How a proxy is prepared. ``project``: reduce embeddings to this many dimensions first
    (``projection`` = "pca" or "random"); ``val_size``: score on a stratified validation subsample
    of this size (None: all of it); ``max_clusters``: most clusters a mask may hold for the
    trained kinds (None: all K); ``batch_mode``: how each device walks its slice of a batch
    ("auto": sequential for trained kinds on CPU, where XLA runs vmapped training loops slowly)."""

    kind: str = "ridge"
    lam: float = 1.0
    project: int | None = None
    projection: str = "pca"
    temperature: float = 5.0
    val_size: int | None = None
    seed: int = 0
    steps: int = 50
    lr: float = 0.05
    weight_decay: float = 1e-4
    hidden: int = 64
    max_clusters: int | None = None
    layers: int = 2  # transformer
    tiny: bool = False  # transformer: a small random BERT instead of MiniLM's first layers
    batch_mode: str = "auto"  # score_batch per device: "vmap", "map" (one mask after another), "auto"
    objective: str = "accuracy"  # what selection maximises: "accuracy" or "loglik" (mean log-likelihood)


# ---------------------------------------------------------------------------------------------
# Shared pieces


def scores_from_logits(logits: jax.Array, y: jax.Array) -> Scores:
    """Tie-aware accuracy and mean log-likelihood of labels y (M,) under logits (M, C)."""
    top = logits >= logits.max(-1, keepdims=True)
    credit = jnp.take_along_axis(top, y[:, None], 1)[:, 0] / top.sum(-1)
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), -1)
    # float32 whatever jax_enable_x64 says: scores flow into scan carries of fixed dtype
    return Scores(credit.mean().astype(jnp.float32), jnp.take_along_axis(logp, y[:, None], 1).mean().astype(jnp.float32))


def chance(num_classes: int) -> Scores:
    """The score of the empty subset: a uniform prediction."""
    return Scores(jnp.float32(1.0 / num_classes), jnp.float32(-np.log(num_classes)))


def _projector(x: np.ndarray, cfg: ProxyConfig):
    """Mean and (d, r) matrix of the projection, fitted on train embeddings only."""
    d = x.shape[1]
    mean = x.mean(0)
    if cfg.project is None or cfg.project >= d:
        return mean * 0, np.eye(d, dtype=np.float32)
    if cfg.projection == "random":
        rng = np.random.default_rng(cfg.seed)
        return mean * 0, (rng.standard_normal((d, cfg.project)) / np.sqrt(cfg.project)).astype(np.float32)
    if cfg.projection != "pca":
        raise JaxselError(f"unknown projection {cfg.projection!r} (pca or random)")
    xc = (x - mean).astype(np.float64)
    _, vecs = np.linalg.eigh(xc.T @ xc)
    return mean, vecs[:, ::-1][:, : cfg.project].astype(np.float32)


def features(x: np.ndarray, mean: np.ndarray, proj: np.ndarray) -> np.ndarray:
    """Projected features with a trailing bias column: (n, r + 1)."""
    z = (x - mean) @ proj
    return np.concatenate([z, np.ones((len(z), 1), np.float32)], 1).astype(np.float32)


def stratified_subsample(y: np.ndarray, size: int | None, seed: int) -> np.ndarray:
    """Sorted indices of a seeded, label-stratified sample of ``size`` rows (all rows if None)."""
    if size is None or size >= len(y):
        return np.arange(len(y))
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(y, return_counts=True)
    take = np.maximum(np.round(counts / counts.sum() * size).astype(int), 1)
    return np.sort(np.concatenate([rng.choice(np.flatnonzero(y == c), min(t, n), replace=False)
                                   for c, t, n in zip(classes, take, counts)]))


def max_picks(sizes: np.ndarray, budget: int, quota: int = 0) -> int:
    """The most picks an episode can make before reaching ``budget`` examples when a pick adds a
    whole cluster (``quota`` 0) or a chunk of ``quota`` rows: it ends at the first pick whose
    total reaches the budget, so at most the count of smallest chunks whose running sum first
    reaches it."""
    ch = chunks(sizes, quota)
    run = np.cumsum(np.sort(ch["chunk_end"] - ch["chunk_begin"]))
    return int(min(np.searchsorted(run, budget) + 1, len(run)))


# ---------------------------------------------------------------------------------------------
# The proxy pytree


@struct.dataclass
class Proxy:
    """A prepared proxy: arrays are pytree leaves, ``kind`` and ``cfg`` are static."""

    kind: str = struct.field(pytree_node=False)
    cfg: ProxyConfig = struct.field(pytree_node=False)
    num_classes: int = struct.field(pytree_node=False)
    xv: jax.Array  # (M, r+1) validation features (ridge, linear, mlp) or (M, T) token ids
    yv: jax.Array  # (M,)
    stats: dict = field(default_factory=dict)  # kind-specific arrays
    partial_cap: int = struct.field(pytree_node=False, default=1)  # most rows of a partly taken chunk
    quota: int = struct.field(pytree_node=False, default=0)  # rows per chunk; 0: whole clusters

    @property
    def k(self) -> int:
        return int(self.stats["sizes"].shape[0])

    def with_partial_cap(self, rows: int) -> "Proxy":
        """The same proxy computing partial chunks of at most ``rows`` rows (cheaper steps when
        the budget is smaller than the largest chunk)."""
        return self.replace(partial_cap=max(1, min(self.partial_cap, int(rows))))

    def with_quota(self, quota: int) -> "Proxy":
        """The same proxy over chunks of ``quota`` rows of each cluster (0: whole clusters); ridge
        recomputes its per-chunk statistics (O(N r^2), on the host). Partial chunks may then hold
        up to ``quota`` rows (the largest cluster for 0): apply :meth:`with_partial_cap` after."""
        quota = int(quota)
        if quota < 0:
            raise JaxselError(f"quota must be >= 0 rows, got {quota}")
        if quota == self.quota:
            return self
        sizes = np.asarray(self.stats["sizes"])
        stats = dict(self.stats)
        if self.kind == "ridge":
            stats.update(_chunk_stats(np.asarray(self.stats["xf"]), np.asarray(self.stats["yf"]), self.num_classes,
                                      np.asarray(self.stats["rows"]), np.asarray(self.stats["start"]), sizes, quota))
        return self.replace(stats=stats, quota=quota, partial_cap=int(sizes.max()) if quota == 0 else
                            max(1, min(quota, int(sizes.max()))))

    def boundary(self, take: jax.Array) -> jax.Array:
        """(K,) rows of each cluster's take held in whole chunks (the rest is a partial chunk)."""
        sizes = self.stats["sizes"]
        whole = take >= sizes
        return jnp.where(whole, sizes, 0 if self.quota == 0 else (take // self.quota) * self.quota)

    # incremental form ------------------------------------------------------------------------
    def init(self):
        """State of the empty subset."""
        if self.kind == "ridge":
            r1, c = self.stats["xty"].shape[1:]
            return RidgeState(jnp.zeros((r1, r1), jnp.float32), jnp.zeros((r1, c), jnp.float32), jnp.zeros((), jnp.int32))
        return jnp.zeros(self.k, jnp.int32)

    def add(self, state, cluster: jax.Array, count: jax.Array | None = None, start: jax.Array | int = 0):
        """State after taking rows ``start .. start + count`` of ``cluster`` in the within-cluster
        order (default: all of it). ``start`` is a chunk boundary (the rows already taken).

        ridge: O(r^2) update of the running sums when the rows are one whole chunk, else
        O(partial_cap r^2) to gather them; trained kinds: the state is the take (K,) int32."""
        size = self.stats["sizes"][cluster]
        count = size - start if count is None else jnp.minimum(count, size - start)
        if self.kind == "ridge":
            part = _ridge_partial(self, cluster, start, count)
            chunk = self.stats["chunk_first"][cluster] + (0 if self.quota == 0 else start // self.quota)
            end = start + count
            whole = (end >= size) | ((self.quota > 0) & (count >= self.quota))
            return RidgeState(state.xtx + jnp.where(whole, self.stats["xtx"][chunk], part.xtx),
                              state.xty + jnp.where(whole, self.stats["xty"][chunk], part.xty),
                              state.n + count)
        return state.at[cluster].add(count.astype(jnp.int32))

    def score_state(self, state) -> Scores:
        if self.kind == "ridge":
            return _ridge_score(self, state)
        return _trained_score(self, _take_weights(self, state))

    # whole-subset form -----------------------------------------------------------------------
    def take(self, subset: jax.Array) -> jax.Array:
        """(K,) int32 rows taken per cluster: a bool mask means whole clusters."""
        if subset.dtype == jnp.bool_:
            return subset * self.stats["sizes"]
        return jnp.minimum(subset.astype(jnp.int32), self.stats["sizes"])

    def score(self, subset: jax.Array) -> Scores:
        """Scores of ``subset``: (K,) bool mask or (K,) int take (whole chunks, and at most one
        cluster with a partial chunk). Pure; jit and vmap freely."""
        take = self.take(subset)
        if self.kind == "ridge":
            return _ridge_score(self, _take_stats(self, take))
        return _trained_score(self, _take_weights(self, take))

    def score_batch(self, subsets) -> Scores:
        """Scores of a (B, K) batch of masks or takes; jit + vmap, batch axis sharded over all devices."""
        subsets = check_masks(subsets, self.k, sizes=self.stats["sizes"], partial_cap=self.partial_cap,
                              quota=self.quota)
        return _sharded_score_batch(self, subsets)

    def score_rows(self, rows) -> Scores:
        """Scores of the subset holding exactly the train rows ``rows`` (int indices), whatever
        their shape. ridge: fitted on those rows' features; trained kinds: on the rows of each
        cluster's index table that are in ``rows`` (what they see of any subset)."""
        rows = np.unique(np.asarray(rows, np.int64))
        if self.kind == "ridge":
            n = int(self.stats["xf"].shape[0])
            if len(rows) and (rows.min() < 0 or rows.max() >= n):
                raise JaxselError(f"row indices must lie in [0, {n}), got {rows.min()}..{rows.max()}")
            return _ridge_rows(self, jnp.asarray(rows))
        table = np.asarray(self.stats["table"])
        return jax.jit(_trained_score)(self, jnp.asarray(np.isin(table, rows) & (table >= 0)))

    def value(self, scores: Scores) -> jax.Array:
        """The objective selection maximises (``cfg.objective``) out of ``scores``."""
        return scores.loglik if self.cfg.objective == "loglik" else scores.accuracy

    def reward(self, mask: jax.Array, cluster: jax.Array) -> jax.Array:
        """Change in the objective from adding ``cluster`` to ``mask``."""
        return self.value(self.score(mask.at[cluster].set(True))) - self.value(self.score(mask))


class RidgeState(NamedTuple):
    xtx: jax.Array  # (r+1, r+1) running sum of X^T X
    xty: jax.Array  # (r+1, C) running sum of X^T Y
    n: jax.Array  # examples in the subset


def ridge_weights(xtx: jax.Array, xty: jax.Array, lam: float) -> jax.Array:
    """W = (X^T X + lam I)^-1 X^T Y by Cholesky."""
    a = xtx + lam * jnp.eye(xtx.shape[0], dtype=xtx.dtype)
    return jax.scipy.linalg.cho_solve(jax.scipy.linalg.cho_factor(a, lower=True), xty)


def _ridge_partial(p: Proxy, cluster: jax.Array, offset: jax.Array, count: jax.Array) -> RidgeState:
    """Statistics of rows ``offset .. offset + count`` (count <= ``p.partial_cap``) of ``cluster``
    in the within-cluster order."""
    i = jnp.arange(p.partial_cap)
    n = p.stats["xf"].shape[0]
    rows = p.stats["rows"][jnp.minimum(p.stats["start"][cluster] + offset + i, n - 1)]
    return _row_stats(p, rows, i < count)


def _take_stats(p: Proxy, take: jax.Array) -> RidgeState:
    """Sufficient statistics of a take (K,): its whole chunks (one weighted sum over the chunk
    statistics) plus the gathered rows of its one partial chunk."""
    bound = p.boundary(take)
    rest = take - bound
    j = jnp.argmax(rest > 0)
    extra = _ridge_partial(p, j, bound[j], rest[j])
    w = (p.stats["chunk_end"] <= bound[p.stats["chunk_cluster"]]).astype(jnp.float32)
    return RidgeState(jnp.einsum("k,kij->ij", w, p.stats["xtx"], precision=HIGHEST) + extra.xtx,
                      jnp.einsum("k,kij->ij", w, p.stats["xty"], precision=HIGHEST) + extra.xty, take.sum())


def chunks(sizes: np.ndarray, quota: int) -> dict[str, np.ndarray]:
    """The chunks of ``quota`` rows (0: one per cluster) in cluster-major order: ``chunk_cluster``
    (P,), ``chunk_begin`` / ``chunk_end`` (P,) row offsets within the cluster, ``chunk_first`` (K,)
    index of each cluster's first chunk."""
    sizes = np.asarray(sizes, np.int64)
    per = np.ones_like(sizes) if quota == 0 else -(-sizes // quota)
    cluster = np.repeat(np.arange(len(sizes)), per)
    first = np.concatenate([[0], np.cumsum(per)[:-1]])
    i = np.arange(len(cluster)) - first[cluster]
    begin = np.zeros_like(i) if quota == 0 else i * quota
    end = sizes[cluster] if quota == 0 else np.minimum(begin + quota, sizes[cluster])
    return {"chunk_cluster": cluster, "chunk_begin": begin, "chunk_end": end, "chunk_first": first}


def _chunk_stats(xf: np.ndarray, yf: np.ndarray, num_classes: int, rows: np.ndarray, start: np.ndarray,
                 sizes: np.ndarray, quota: int) -> dict:
    """Per-chunk ridge statistics (P, r+1, r+1) and (P, r+1, C), summed in float64, with the chunk
    layout of :func:`chunks`; ``rows``/``start``: the within-cluster order."""
    ch = chunks(sizes, quota)
    onehot = np.eye(num_classes, dtype=np.float64)[yf]
    r1, p = xf.shape[1], len(ch["chunk_cluster"])
    xtx, xty = np.zeros((p, r1, r1)), np.zeros((p, r1, num_classes))
    for i, (j, b, e) in enumerate(zip(ch["chunk_cluster"], ch["chunk_begin"], ch["chunk_end"])):
        idx = rows[start[j] + b:start[j] + e]
        x = xf[idx].astype(np.float64)
        xtx[i], xty[i] = x.T @ x, x.T @ onehot[idx]
    out = {k: jnp.asarray(v, jnp.int32) for k, v in ch.items() if k != "chunk_begin"}
    return dict(out, xtx=jnp.asarray(xtx, jnp.float32), xty=jnp.asarray(xty, jnp.float32))


def _row_stats(p: Proxy, rows: jax.Array, keep: jax.Array) -> RidgeState:
    """Sufficient statistics of the train rows ``rows`` where ``keep`` (both (n,))."""
    x = p.stats["xf"][rows] * keep[:, None]
    y = jax.nn.one_hot(p.stats["yf"][rows], p.num_classes, dtype=jnp.float32)
    return RidgeState(jnp.dot(x.T, x, precision=HIGHEST), jnp.dot(x.T, y, precision=HIGHEST),
                      keep.sum(dtype=jnp.int32))


@jax.jit
def _ridge_rows(p: Proxy, rows: jax.Array) -> Scores:
    return _ridge_score(p, _row_stats(p, rows, jnp.ones(rows.shape, bool)))


def _ridge_score(p: Proxy, s: RidgeState) -> Scores:
    w = ridge_weights(s.xtx, s.xty, p.cfg.lam)
    logits = p.cfg.temperature * jnp.dot(p.xv, w, precision=HIGHEST)
    return jax.tree.map(lambda a, b: jnp.where(s.n > 0, a, b), scores_from_logits(logits, p.yv), chance(p.num_classes))


# ---------------------------------------------------------------------------------------------
# Trained proxies: linear / mlp / transformer


def _init_head(kind: str, r1: int, c: int, hidden: int, seed: int):
    if kind == "linear":
        return {"w": jnp.zeros((r1, c), jnp.float32)}
    k1, k2 = jax.random.split(jax.random.key(seed))
    f32 = jnp.float32
    return {"w1": jax.random.normal(k1, (r1, hidden), f32) * np.float32(np.sqrt(2.0 / r1)), "b1": jnp.zeros(hidden, f32),
            "w2": jax.random.normal(k2, (hidden, c), f32) * np.float32(np.sqrt(1.0 / hidden)), "b2": jnp.zeros(c, f32)}


class Fixed(NamedTuple):
    """Training inputs x (n, r) with their transpose (r, n) laid out once, outside the loop."""

    x: jax.Array
    xt: jax.Array


@jax.custom_vjp
def _data_dot(x: Fixed, w: jax.Array) -> jax.Array:
    return jnp.dot(x.x, w, precision=HIGHEST)


def _data_dot_fwd(x, w):
    return _data_dot(x, w), x


def _data_dot_bwd(x, g):
    # dW = x^T g from the stored transpose: XLA:CPU otherwise re-transposes x every step (2x slower)
    return jax.tree.map(jnp.zeros_like, x), jnp.dot(x.xt, g, precision=HIGHEST)


_data_dot.defvjp(_data_dot_fwd, _data_dot_bwd)


def head_logits(params: dict, x: jax.Array | Fixed) -> jax.Array:
    """Logits of the linear or one-hidden-layer head on features x (n, r+1) (or :class:`Fixed`)."""
    dot = _data_dot if isinstance(x, Fixed) else partial(jnp.dot, precision=HIGHEST)
    if "w" in params:
        return dot(x, params["w"])
    h = jax.nn.relu(dot(x, params["w1"]) + params["b1"])
    return jnp.dot(h, params["w2"], precision=HIGHEST) + params["b2"]


def train_head(params, x: jax.Array, y: jax.Array, w: jax.Array, cfg: ProxyConfig, apply=head_logits):
    """``cfg.steps`` full-batch AdamW steps on the weighted mean cross-entropy; returns params.

    x: (n, ...) inputs, y: (n,) labels, w: (n,) row weights (0 for padding). Pure; vmap freely.
    """
    opt = optax.adamw(cfg.lr, weight_decay=cfg.weight_decay)
    denom = jnp.maximum(w.sum(), 1.0)

    def loss(p):
        ce = optax.softmax_cross_entropy_with_integer_labels(apply(p, x), y)
        return (ce * w).sum() / denom

    def step(carry, _):
        p, o = carry
        g = jax.grad(loss)(p)
        upd, o = opt.update(g, o, p)
        return (optax.apply_updates(p, upd), o), None

    return jax.lax.scan(step, (params, opt.init(params)), None, length=cfg.steps)[0][0]


def _take_weights(p: Proxy, take: jax.Array) -> jax.Array:
    """(K, s) bool: the index-table rows a take (K,) int covers (the table is the head of the
    within-cluster order, so a cluster taken in part covers its first rows)."""
    s = p.stats["valid"].shape[1]
    return p.stats["valid"] & (jnp.arange(s)[None] < take[:, None])


def _gather(p: Proxy, weights: jax.Array):
    """Rows of the chosen clusters' samples: (m*s, ...) inputs, labels and weights (0 = padding)."""
    m = p.cfg.max_clusters
    ids = jnp.nonzero(weights.any(1), size=m, fill_value=-1)[0]
    valid = (ids >= 0)[:, None] & weights[jnp.maximum(ids, 0)]
    x = p.stats["xs"][jnp.maximum(ids, 0)]
    y = p.stats["ys"][jnp.maximum(ids, 0)]
    return x.reshape(-1, *x.shape[2:]), y.reshape(-1), valid.reshape(-1).astype(jnp.float32)


def _trained_score(p: Proxy, weights: jax.Array) -> Scores:
    """Train on the index-table rows ``weights`` (K, s) bool marks; score on validation."""
    mask = weights.any(1)
    x, y, w = _gather(p, weights)
    if p.kind == "transformer":
        from jaxsel import transformer_proxy
        logits = transformer_proxy.train_and_predict(p, x, y, w)
    else:
        params = train_head(p.stats["init"], Fixed(*jax.lax.optimization_barrier((x, x.T))), y, w, p.cfg)
        logits = head_logits(params, p.xv)
    return jax.tree.map(lambda a, b: jnp.where(mask.any(), a, b), scores_from_logits(logits, p.yv), chance(p.num_classes))


# ---------------------------------------------------------------------------------------------
# Preparation and batch scoring


def make(train_x: np.ndarray, train_y: np.ndarray, clustering, val_x: np.ndarray, val_y: np.ndarray,
         cfg: ProxyConfig = ProxyConfig(), *, train_tokens: np.ndarray | None = None,
         val_tokens: np.ndarray | None = None) -> Proxy:
    """Prepare a proxy of kind ``cfg.kind`` (checks inputs here, outside jit).

    train_x (N, d), train_y (N,), val_x (M, d), val_y (M,); the transformer kind also needs
    token ids ``train_tokens`` (N, T) and ``val_tokens`` (M, T) (0 = padding).
    """
    if cfg.kind not in KINDS:
        raise JaxselError(f"unknown proxy {cfg.kind!r}; choose one of {', '.join(KINDS)}")
    if cfg.objective not in ("accuracy", "loglik"):
        raise JaxselError(f"unknown proxy objective {cfg.objective!r} (accuracy or loglik)")
    train_x, val_x = np.asarray(train_x, np.float32), np.asarray(val_x, np.float32)
    train_y, val_y = np.asarray(train_y), np.asarray(val_y)
    for name, a in (("train", train_x), ("validation", val_x)):
        if a.ndim != 2 or not len(a):
            raise JaxselError(f"{name} embeddings must be a non-empty (n, d) array, got {a.shape}")
        if not np.isfinite(a).all():
            raise JaxselError(f"{name} embeddings contain NaN or inf")
    if len(train_y) != len(train_x) or len(val_y) != len(val_x):
        raise JaxselError("embeddings and labels have different lengths")
    if train_x.shape[1] != val_x.shape[1]:
        raise JaxselError(f"train and validation embeddings differ in width: {train_x.shape[1]} vs {val_x.shape[1]}")
    if len(clustering.assignment) != len(train_x):
        raise JaxselError(f"clustering covers {len(clustering.assignment)} rows, train has {len(train_x)}")
    c = int(max(train_y.max(), val_y.max())) + 1
    keep = stratified_subsample(val_y, cfg.val_size, cfg.seed)
    val_x, val_y = val_x[keep], val_y[keep]
    sizes = np.asarray(clustering.sizes, np.int32)
    mean, proj = _projector(train_x, cfg)
    xf = features(train_x, mean, proj)
    stats: dict = {"sizes": jnp.asarray(sizes)}
    cap = int(sizes.max())
    if cfg.kind == "ridge":
        rows, start = member_order(clustering)
        stats.update(_chunk_stats(xf, train_y, c, rows, start, sizes, 0), xf=jnp.asarray(xf),
                     yf=jnp.asarray(train_y, jnp.int32), rows=jnp.asarray(rows, jnp.int32),
                     start=jnp.asarray(start, jnp.int32))
        return Proxy("ridge", cfg, c, jnp.asarray(features(val_x, mean, proj)), jnp.asarray(val_y), stats, cap)
    table = np.asarray(clustering.table)
    cfg = replace(cfg, max_clusters=min(cfg.max_clusters or clustering.k, clustering.k))
    stats.update(valid=jnp.asarray(table >= 0), ys=jnp.asarray(train_y[np.maximum(table, 0)]), table=jnp.asarray(table))
    if cfg.kind == "transformer":
        if train_tokens is None or val_tokens is None:
            raise JaxselError("the transformer proxy needs train_tokens and val_tokens")
        from jaxsel import transformer_proxy
        stats.update(xs=jnp.asarray(train_tokens[np.maximum(table, 0)]), init=transformer_proxy.init_params(cfg, c))
        return Proxy("transformer", cfg, c, jnp.asarray(val_tokens[keep]), jnp.asarray(val_y), stats, cap)
    stats.update(xs=jnp.asarray(xf[np.maximum(table, 0)]), init=_init_head(cfg.kind, xf.shape[1], c, cfg.hidden, cfg.seed))
    return Proxy(cfg.kind, cfg, c, jnp.asarray(features(val_x, mean, proj)), jnp.asarray(val_y), stats, cap)


def check_masks(masks, k: int, max_clusters: int | None = None, *, sizes=None,
                partial_cap: int | None = None, quota: int = 0) -> np.ndarray:
    """Validate a (B, K) or (K,) batch of subsets outside jit: bool masks (or 0/1 when ``sizes``
    is not given), or, with ``sizes`` (K,), int takes holding whole chunks of ``quota`` rows
    (0: whole clusters) but for at most one cluster, whose partial chunk holds at most
    ``partial_cap`` rows. Returns (B, K) bool or int32."""
    masks = np.asarray(masks)
    if masks.ndim == 1:
        masks = masks[None]
    if masks.ndim != 2 or masks.shape[1] != k:
        raise JaxselError(f"masks must have shape (B, {k}) for {k} clusters, got {masks.shape}")
    if masks.dtype != bool and sizes is None:
        if not np.isin(masks, (0, 1)).all():
            raise JaxselError("masks must be boolean (or 0/1)")
        masks = masks.astype(bool)
    if masks.dtype != bool:
        if not np.issubdtype(masks.dtype, np.integer):
            raise JaxselError(f"subsets must be bool masks or int takes, got dtype {masks.dtype}")
        sizes = np.asarray(sizes)
        if (masks < 0).any() or (masks > sizes).any():
            raise JaxselError("a take must lie between 0 and its cluster's size")
        rest = np.where(masks >= sizes, 0, masks if quota == 0 else masks % quota)
        part = rest > 0
        if (part.sum(1) > 1).any():
            unit = "cluster" if quota == 0 else f"chunk of {quota} rows"
            raise JaxselError(f"a take may hold at most one {unit} in part")
        if partial_cap is not None and (rest > partial_cap).any():
            raise JaxselError(f"a partly taken chunk holds {rest.max()} rows, more than this proxy's "
                              f"partial_cap={partial_cap}")
        masks = masks.astype(np.int32)
    if max_clusters is not None and ((masks > 0).sum(1) > max_clusters).any():
        raise JaxselError(f"a mask holds {(masks > 0).sum(1).max()} clusters, more than this proxy's "
                          f"max_clusters={max_clusters}")
    return masks


def mesh():
    """A 1-D mesh named ``batch`` over all devices."""
    return jax.sharding.Mesh(np.array(jax.devices()), ("batch",))


@partial(jax.jit, static_argnames="sequential")
def _score_batch(proxy: Proxy, masks: jax.Array, sequential: bool) -> Scores:
    """Each device scores its slice of the batch: vmapped, or one mask after another."""
    from jax.sharding import PartitionSpec as P

    def local(ms):
        return jax.lax.map(proxy.score, ms) if sequential else jax.vmap(proxy.score)(ms)

    return jax.shard_map(local, mesh=mesh(), in_specs=P("batch"), out_specs=P("batch"), check_vma=False)(masks)


def _sharded_score_batch(proxy: Proxy, masks: np.ndarray) -> Scores:
    from jax.sharding import NamedSharding, PartitionSpec as P

    n_dev = jax.device_count()
    if proxy.kind != "ridge":
        check_masks(masks, proxy.k, proxy.cfg.max_clusters, sizes=proxy.stats["sizes"], quota=proxy.quota)
    b = masks.shape[0]
    pad = (-b) % n_dev
    if pad:
        masks = np.concatenate([masks, np.zeros((pad, masks.shape[1]), masks.dtype)])
    masks = jax.device_put(masks, NamedSharding(mesh(), P("batch")))
    mode = proxy.cfg.batch_mode
    if mode == "auto":  # XLA:CPU runs vmapped small training loops slower than one after another
        mode = "map" if proxy.kind != "ridge" and jax.default_backend() == "cpu" else "vmap"
    out = _score_batch(proxy, masks, mode == "map")
    return Scores(out.accuracy[:b], out.loglik[:b])


def fit_ridge(proxy: Proxy, mask) -> np.ndarray:
    """The ridge weights (r+1, C) of one subset; refuses the empty subset."""
    mask = check_masks(mask, proxy.k)[0]
    if not mask.any():
        raise JaxselError("cannot fit a proxy on an empty subset (all-false mask)")
    s = _take_stats(proxy, proxy.take(jnp.asarray(mask)))
    return np.asarray(ridge_weights(s.xtx, s.xty, proxy.cfg.lam))


class RewardCache:
    """Host-side memo of proxy objective values keyed by the subset (mask or take), with hit counts."""

    def __init__(self, proxy: Proxy):
        self.proxy, self.table, self.hits, self.misses = proxy, {}, 0, 0
        self.sizes = np.asarray(proxy.stats["sizes"])

    def scores(self, masks) -> np.ndarray:
        """The objective (``Proxy.value``) of each subset in a (B, K) batch of masks or takes,
        computing only new ones."""
        masks = check_masks(masks, self.proxy.k, sizes=self.sizes, partial_cap=self.proxy.partial_cap,
                            quota=self.proxy.quota)
        if masks.dtype == bool:
            masks = masks * self.sizes.astype(np.int32)
        keys = [m.tobytes() for m in masks]
        todo = {k: i for i, k in enumerate(keys) if k not in self.table}
        self.hits += len(keys) - len(todo)
        self.misses += len(todo)
        if todo:
            acc = np.asarray(self.proxy.value(self.proxy.score_batch(masks[list(todo.values())])))
            self.table.update(zip(todo, acc.tolist()))
        return np.array([self.table[k] for k in keys], np.float32)
