"""The ``ridge`` proxy: a closed-form ridge classifier from per-chunk sufficient statistics.

Each chunk's X^T X and X^T Y are summed once (in float64, on the host); adding a whole chunk adds
its statistics, so a step costs O(r^2) + one (r+1)-dimensional Cholesky solve whatever the number
of examples. A partly taken chunk adds the statistics of its first rows, gathered from the train
features (at most ``partial_cap`` rows: O(partial_cap r^2)). Scores are those of the logits
``temperature * X_val W`` with W = (X^T X + lam I)^-1 X^T Y. Statistics X^T X are kept packed
(:func:`pack`): above ``SEQUENTIAL_SOLVE`` features, only the blocks on and below the diagonal.
"""

from __future__ import annotations

import os
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.custom_batching import custom_vmap

from jaxsel.cluster import member_order
from jaxsel.errors import JaxselError
from jaxsel.precision import in_32_bits
from jaxsel.proxy.batch import check_masks, padded_batch, unpad
from jaxsel.proxy.base import HIGHEST, Proxy, ProxyConfig, Scores, chunks, or_chance, scores_from_class_logits


class RidgeState(NamedTuple):
    xtx: jax.Array  # (L,) running sum of X^T X, packed (pack)
    xty: jax.Array  # (r+1, C) running sum of X^T Y
    n: jax.Array  # examples in the subset


SEQUENTIAL_SOLVE = 128  # on CPU, a vmapped batch of larger systems is solved one system at a time
BLOCK = 64  # above SEQUENTIAL_SOLVE features, X^T X is stored as its lower blocks of about this size


def blocks(r1: int) -> tuple[int, int]:
    """(blocks per side, rows per block) of the packed X^T X of ``r1`` features: one block up to
    ``SEQUENTIAL_SOLVE``, else blocks of ~``BLOCK`` rows (the last padded with zero features)."""
    n = 1 if r1 <= SEQUENTIAL_SOLVE else -(-r1 // BLOCK)
    return n, -(-r1 // n)


def pack(xtx: jax.Array) -> jax.Array:
    """Symmetric (..., r+1, r+1) -> packed (..., L): the matrix flattened (L = (r+1)^2) up to
    ``SEQUENTIAL_SOLVE`` features, else its blocks on and below the diagonal (:func:`blocks`; L =
    n(n+1)/2 b^2, ~57% of the matrix at r + 1 = 385). Sums of packed statistics are the packed
    sums, and the weighted sum over a batch's chunks, the ridge proxy's largest product, shrinks
    with them: the upper blocks are never read (the Cholesky factor reads the lower triangle)."""
    *lead, r1, _ = xtx.shape
    n, b = blocks(r1)
    if n == 1:
        return xtx.reshape(*lead, r1 * r1)
    x = jnp.pad(xtx, [(0, 0)] * len(lead) + [(0, n * b - r1)] * 2).reshape(*lead, n, b, n, b)
    i, j = np.tril_indices(n)
    return jnp.swapaxes(x, -3, -2)[..., i, j, :, :].reshape(*lead, -1)


def unpack(xtx: jax.Array, r1: int) -> jax.Array:
    """Packed (L,) -> (n b, n b) with the lower blocks of X^T X (:func:`pack`); the upper blocks
    are zero unless there is one block (then the whole symmetric matrix, (r+1, r+1))."""
    n, b = blocks(r1)
    if n == 1:
        return xtx.reshape(r1, r1)
    parts, zero, k = xtx.reshape(-1, b, b), jnp.zeros((b, b), xtx.dtype), 0
    rows = []
    for i in range(n):  # row-block i holds blocks (i, 0..i), laid out as np.tril_indices orders them
        rows.append(jnp.concatenate([parts[k + j] if j <= i else zero for j in range(n)], 1))
        k += i + 1
    return jnp.concatenate(rows, 0)


def ridge_weights(xtx: jax.Array, xty: jax.Array, lam: float) -> jax.Array:
    """W = (X^T X + lam I)^-1 X^T Y by Cholesky: X^T X (r+1, r+1) or packed (L,) (:func:`pack`),
    X^T Y (r+1, C) -> (r+1, C). Vmapped on CPU over systems of more than ``SEQUENTIAL_SOLVE``
    features, the solves run one after another (:func:`_weights_batched`). Not differentiable in
    its arguments (``jax.custom_batching.custom_vmap`` has no derivative rule): the proxy's scores
    can be differentiated in the validation features, not through the solve."""
    return _weights(xtx if xtx.ndim == 1 else pack(xtx), xty, jnp.asarray(lam, xtx.dtype))


def _cholesky_solve(xtx: jax.Array, xty: jax.Array, lam: jax.Array) -> jax.Array:
    r1 = xty.shape[0]
    a = unpack(xtx, r1)
    a = a + lam * jnp.eye(a.shape[0], dtype=a.dtype)  # padded features: lam on the diagonal, weight 0
    factor = jax.lax.linalg.cholesky(a, symmetrize_input=False)  # reads the lower triangle only
    w = jax.scipy.linalg.cho_solve((factor, True), jnp.pad(xty, ((0, a.shape[0] - r1), (0, 0))))
    return w[:r1]


_weights = custom_vmap(_cholesky_solve)


def cpu_cores() -> int:
    """CPU cores this process may run on (its affinity, where the OS reports one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@_weights.def_vmap
def _weights_batched(axis_size: int, in_batched, xtx, xty, lam) -> tuple[jax.Array, bool]:
    """The batching rule of :func:`ridge_weights`. XLA:CPU solves a batch of Cholesky systems as
    one batched LAPACK call per stage (factor, two triangular solves), spreading the batch over its
    threads, each stage streaming the whole batch through memory. Above ``SEQUENTIAL_SOLVE``
    features the batch goes through ``lax.map`` one system per core at a time: each core keeps its
    matrix in cache from its unpacking to its solves. Measured on 2 cores, 64 systems, r + 1 = 385:
    all batched 0.79 ms per system, one at a time 0.41 (2026-12-03); one at a time 0.90-1.35, two
    at a time 0.60-0.67 on a slower hour, and the ridge proxy's 1,024 subsets of ``bench/proxy.py``
    864 against 1,068 evaluations/s (2026-12-04, alternating runs); 129 features, 35 against 33 us
    batched; 65, 7.9 against 9.2 us (batched wins while the batch fits in cache). Same results, the
    same LAPACK calls."""
    xtx, xty, lam = (a if b else jnp.broadcast_to(a, (axis_size, *a.shape))
                     for a, b in zip((xtx, xty, lam), in_batched))
    if jax.default_backend() != "cpu" or xty.shape[-2] <= SEQUENTIAL_SOLVE:
        return jax.vmap(_cholesky_solve)(xtx, xty, lam), True
    return jax.lax.map(lambda a: _cholesky_solve(*a), (xtx, xty, lam), batch_size=cpu_cores()), True


def chunk_stats(xf: np.ndarray, yf: np.ndarray, num_classes: int, rows: np.ndarray, start: np.ndarray,
                sizes: np.ndarray, quota: int) -> dict[str, jax.Array]:
    """Per-chunk ridge statistics ``xtx`` (P, L) (packed: :func:`pack`) and ``xty`` (P, r+1, C), summed in float64,
    with the chunk layout of :func:`jaxsel.proxy.base.chunks`; ``rows``/``start``: the
    within-cluster order."""
    ch = chunks(sizes, quota)
    onehot = np.eye(num_classes, dtype=np.float64)[yf]
    r1, p = xf.shape[1], len(ch["chunk_cluster"])
    xtx, xty = np.zeros((p, r1, r1)), np.zeros((p, r1, num_classes))
    for i, (j, b, e) in enumerate(zip(ch["chunk_cluster"], ch["chunk_begin"], ch["chunk_end"])):
        idx = rows[start[j] + b:start[j] + e]
        x = xf[idx].astype(np.float64)
        xtx[i], xty[i] = x.T @ x, x.T @ onehot[idx]
    out = {k: jnp.asarray(v, jnp.int32) for k, v in ch.items() if k != "chunk_begin"}
    return dict(out, xtx=pack(jnp.asarray(xtx, jnp.float32)), xty=jnp.asarray(xty, jnp.float32))


CPU_CHUNK = 64  # subsets a ridge proxy vmaps together at most on CPU (see Ridge.batch_chunk)


class Ridge(Proxy):
    """The ridge proxy; build it with :func:`make`."""

    xf: jax.Array  # (N, r+1) train features
    yf: jax.Array  # (N,) int32 train labels
    rows: jax.Array  # (N,) int32 train rows in the within-cluster order
    start: jax.Array  # (K,) int32 offset of each cluster in ``rows``
    xtx: jax.Array  # (P, L) per-chunk X^T X, packed (pack)
    xty: jax.Array  # (P, r+1, C) per-chunk X^T Y
    chunk_cluster: jax.Array  # (P,) int32 cluster of each chunk
    chunk_end: jax.Array  # (P,) int32 end of each chunk within its cluster
    chunk_first: jax.Array  # (K,) int32 each cluster's first chunk

    @property
    def batch_chunk(self) -> int:
        """``cfg.batch_chunk``, at most ``CPU_CHUNK`` on CPU: there a vmapped chunk of 64 subsets keeps
        the summed statistics in cache (B = 1,024 subsets of 20k rows, K = 256: 1.45x the evaluations/s
        of chunks of 1,024 at d = 384, 2x at d = 64; chunks of 32 and 128 slower)."""
        return min(self.cfg.batch_chunk, CPU_CHUNK) if jax.default_backend() == "cpu" else self.cfg.batch_chunk

    def _chunked(self, quota: int) -> "Ridge":
        return self.replace(**chunk_stats(np.asarray(self.xf), np.asarray(self.yf), self.num_classes,
                                          np.asarray(self.rows), np.asarray(self.start), np.asarray(self.sizes), quota))

    def init(self) -> RidgeState:
        r1, c = self.xty.shape[1:]
        return RidgeState(jnp.zeros(self.xtx.shape[1], jnp.float32), jnp.zeros((r1, c), jnp.float32),
                          jnp.zeros((), jnp.int32))

    def add(self, state: RidgeState, cluster: jax.Array, count: jax.Array | None = None,
            start: jax.Array | int = 0) -> RidgeState:
        """O(r^2) update of the running sums when the rows are one whole chunk, else
        O(partial_cap r^2) to gather them."""
        count = self.count(cluster, count, start)
        chunk = self.chunk_first[cluster] + (0 if self.quota == 0 else start // self.quota)
        # no rows (a used-up cluster picked again): zero statistics, not its last chunk's once more
        whole = ((start + count >= self.sizes[cluster]) | ((self.quota > 0) & (count >= self.quota))) & (count > 0)
        part = self._partial(cluster, start, jnp.where(whole, 0, count))  # vmapped: only the partial picks gather
        return RidgeState(state.xtx + jnp.where(whole, self.xtx[chunk], part.xtx),
                          state.xty + jnp.where(whole, self.xty[chunk], part.xty), state.n + count)

    def score_state(self, state: RidgeState) -> Scores:
        w = ridge_weights(state.xtx, state.xty, self.cfg.lam)
        logits = self.cfg.temperature * jnp.einsum("rc,mr->cm", w, self.xv, precision=HIGHEST)  # class-major (C, M)
        return or_chance(scores_from_class_logits(logits, self.yv), state.n > 0, self.num_classes)

    def score_take(self, take: jax.Array) -> Scores:
        return self.score_state(self.take_stats(take))

    def made_with(self, train_labels: np.ndarray) -> bool:
        return np.array_equal(np.asarray(self.yf), train_labels)

    def orders_like(self, clustering) -> bool:
        return np.array_equal(np.asarray(self.rows), member_order(clustering)[0])

    @in_32_bits
    def score_rows(self, rows) -> Scores:
        """Scores of a fit on exactly the train rows ``rows`` (any shape of int indices)."""
        return _score_rows(self, jnp.asarray(self.checked_rows(rows)))

    def score(self, subset: jax.Array) -> Scores:
        """As :meth:`Proxy.score`; a bool mask (whole clusters) skips the partial-chunk gather."""
        subset = self.checked(subset)
        if subset.dtype == jnp.bool_:
            return self.score_state(self.whole_stats(self.take(subset)))
        return self.score_take(self.take(subset))

    def score_picks(self, take, clusters, counts) -> Scores:
        """As :meth:`Proxy.score_picks` (the candidates must be valid takes): the take's statistics
        once, then each pick's rows added (:meth:`add`: one chunk's statistics, or a gathered
        partial chunk), instead of a sum over every chunk for every candidate; greedy scores all
        open clusters every step, so at K = 4,096 that sum was ~98% of a candidate's work. A
        pick that does not start at a chunk boundary goes the general way."""
        take, clusters = np.asarray(take, np.int32), np.asarray(clusters, np.int32)
        counts = np.asarray(counts, np.int32)
        starts = take[clusters]
        if not (starts == 0 if self.quota == 0 else starts % self.quota == 0).all():
            return super().score_picks(take, clusters, counts)
        b = len(clusters)
        pad = padded_batch(b, self.batch_chunk, 1) - b  # a few compiled sizes (see padded_batch)
        clusters, counts = np.pad(clusters, (0, pad)), np.pad(counts, (0, pad))
        out = _score_picks(self, jnp.asarray(take), jnp.asarray(clusters), jnp.asarray(counts), self.batch_chunk)
        return unpad(b, out)

    def whole_stats(self, take: jax.Array) -> RidgeState:
        """Sufficient statistics of a take's whole chunks (one weighted sum over the chunk statistics)."""
        bound = self.boundary(take)
        w = (self.chunk_end <= bound[self.chunk_cluster]).astype(jnp.float32)
        return RidgeState(jnp.dot(w, self.xtx, precision=HIGHEST),
                          jnp.einsum("k,kij->ij", w, self.xty, precision=HIGHEST), bound.sum())

    def take_stats(self, take: jax.Array) -> RidgeState:
        """Sufficient statistics of a take (K,): its whole chunks plus the gathered rows of its
        partial chunks (at most ``partials``)."""
        bound = self.boundary(take)
        rest = take - bound
        if self.partials == 1:  # the common case, one gather
            j = jnp.argmax(rest > 0)
            extra = self._partial(j, bound[j], rest[j])
        else:
            _, js = jax.lax.top_k((rest > 0).astype(jnp.int32), self.partials)  # ties: the lowest index first
            extra = jax.tree.map(lambda a: a.sum(0), jax.vmap(lambda j: self._partial(j, bound[j], rest[j]))(js))
        whole = self.whole_stats(take)
        return RidgeState(whole.xtx + extra.xtx, whole.xty + extra.xty, take.sum())

    def row_stats(self, rows: jax.Array, keep: jax.Array) -> RidgeState:
        """Sufficient statistics of the train rows ``rows`` where ``keep`` (both (n,))."""
        x = self.xf[rows] * keep[:, None]
        y = jax.nn.one_hot(self.yf[rows], self.num_classes, dtype=jnp.float32)
        return RidgeState(pack(jnp.dot(x.T, x, precision=HIGHEST)), jnp.dot(x.T, y, precision=HIGHEST),
                          keep.sum(dtype=jnp.int32))

    def _partial(self, cluster: jax.Array, offset: jax.Array, count: jax.Array) -> RidgeState:
        """Statistics of rows ``offset .. offset + count`` (count <= ``partial_cap``; 0: zero
        statistics) of ``cluster`` in the within-cluster order. Vmapped, only the entries with
        rows to add gather them (:func:`_partials_batched`)."""
        return _partial_stats(self, cluster, offset, count)


def _gathered_stats(p: Ridge, cluster: jax.Array, offset: jax.Array, count: jax.Array) -> RidgeState:
    """:meth:`Ridge._partial` of one entry: ``partial_cap`` rows gathered, those past ``count`` zeroed."""
    i = jnp.arange(p.partial_cap)
    rows = p.rows[jnp.minimum(p.start[cluster] + offset + i, p.xf.shape[0] - 1)]
    return p.row_stats(rows, i < count)


_partial_stats = custom_vmap(_gathered_stats)

SPARSE_SHARE = 8  # a vmapped batch of partial statistics gathers in groups of 1/8 of its entries


@_partial_stats.def_vmap
def _partials_batched(axis_size: int, in_batched, p: Ridge, cluster, offset, count) -> tuple[RidgeState, RidgeState]:
    """The batching rule of :meth:`Ridge._partial`: a batch (an environment step of every PPO or DQN
    environment, greedy's candidates) has rows to gather in a few entries only (an episode's last,
    budget-clipped pick), but vmapped, every entry gathered ``partial_cap`` rows and formed their
    (r+1)^2 statistics: at 64 environments, r = 64, ~40% of an environment step. Here the entries
    with rows to add are gathered ``axis_size / SPARSE_SHARE`` at a time, in as many rounds as they
    need (none when no entry has rows), the others get zeros; the same statistics as plain vmap."""
    p_batched, cluster_b, offset_b, count_b = in_batched
    if any(jax.tree.leaves(p_batched)) or not count_b:  # proxies batched too, or one count for all
        axes = (jax.tree.map(lambda b: 0 if b else None, p_batched), *(0 if b else None for b in in_batched[1:]))
        return jax.vmap(_gathered_stats, in_axes=axes)(p, cluster, offset, count), RidgeState(True, True, True)
    cluster, offset = (a if b else jnp.broadcast_to(a, (axis_size,)) for a, b in ((cluster, cluster_b), (offset, offset_b)))
    group = max(1, axis_size // SPARSE_SHARE)
    need = count > 0
    order = jnp.nonzero(need, size=-(-axis_size // group) * group, fill_value=axis_size)[0]  # entries with rows first
    r1, c = p.xty.shape[1:]
    zero = RidgeState(jnp.zeros((axis_size, p.xtx.shape[1]), jnp.float32), jnp.zeros((axis_size, r1, c), jnp.float32),
                      jnp.zeros(axis_size, jnp.int32))

    def gather_group(g, out: RidgeState) -> RidgeState:
        idx = jax.lax.dynamic_slice(order, (g * group,), (group,))
        j = jnp.minimum(idx, axis_size - 1)
        stats = jax.vmap(partial(_gathered_stats, p))(cluster[j], offset[j], jnp.where(idx < axis_size, count[j], 0))
        return jax.tree.map(lambda a, s: a.at[idx].set(s.astype(a.dtype), mode="drop"), out, stats)

    return jax.lax.fori_loop(0, -(-need.sum() // group), gather_group, zero), RidgeState(True, True, True)


@partial(jax.jit, static_argnames="chunk")
def _score_picks(p: Ridge, take: jax.Array, clusters: jax.Array, counts: jax.Array, chunk: int) -> Scores:
    state = p.take_stats(take)
    return jax.lax.map(lambda a: p.score_state(p.add(state, a[0], a[1], take[a[0]])), (clusters, counts),
                       batch_size=chunk)


@jax.jit
def _score_rows(p: Ridge, rows: jax.Array) -> Scores:
    return p.score_state(p.row_stats(rows, jnp.ones(rows.shape, bool)))


def one_blas_thread() -> None:
    """Limit every BLAS library of the process (OpenBLAS, MKL, ...) to one thread, with threadpoolctl.

    On CPU, XLA runs a batch of LAPACK calls (the ridge proxy's Cholesky solves) by spreading the
    batch over its own thread pool, and jaxlib's LAPACK is scipy's OpenBLAS, whose threads then nest
    inside XLA's: on 2 cores they spin-wait for each other. Measured on 2 cores, d = 384, 20k rows:
    ridge scores 2.4x faster for a batch of 1,024 subsets and 16x for one; PPO on those features made
    no progress in 100 s, against 50 s for the whole run with one BLAS thread. Called by :func:`make`;
    it stays in force for the process (numpy matrix products run on one thread afterwards)."""
    import importlib

    from threadpoolctl import threadpool_limits
    importlib.import_module("scipy.linalg")  # loads the OpenBLAS jaxlib's LAPACK calls, so the limit reaches it
    threadpool_limits(limits=1, user_api="blas")


def make(cfg: ProxyConfig, num_classes: int, clustering, xf: np.ndarray, train_y: np.ndarray,
         xv: np.ndarray, yv: np.ndarray) -> Ridge:
    """The ridge proxy over whole clusters from train features xf (N, r+1), labels (N,), and
    validation features xv (M, r+1), labels (M,). Limits BLAS to one thread (:func:`one_blas_thread`)."""
    one_blas_thread()
    sizes = np.asarray(clustering.sizes, np.int32)
    rows, start = member_order(clustering)
    return Ridge(cfg=cfg, num_classes=num_classes, partial_cap=int(sizes.max()), quota=0, xv=jnp.asarray(xv),
                 yv=jnp.asarray(yv, jnp.int32), sizes=jnp.asarray(sizes), xf=jnp.asarray(xf),
                 yf=jnp.asarray(train_y, jnp.int32), rows=jnp.asarray(rows, jnp.int32),
                 start=jnp.asarray(start, jnp.int32), **chunk_stats(xf, train_y, num_classes, rows, start, sizes, 0))


def fit_ridge(proxy: Ridge, mask) -> np.ndarray:
    """The ridge weights (r+1, C) of one subset (a (K,) bool mask); refuses the empty subset."""
    mask = check_masks(mask, proxy.k)[0]
    if not mask.any():
        raise JaxselError("cannot fit a proxy on an empty subset (all-false mask)")
    s = proxy.take_stats(proxy.take(jnp.asarray(mask)))
    return np.asarray(ridge_weights(s.xtx, s.xty, proxy.cfg.lam))
