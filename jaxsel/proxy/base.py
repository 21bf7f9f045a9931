"""What every proxy kind shares: its config, its scores, the feature projection, the chunk layout
of takes, and the :class:`Proxy` base class that states the protocol."""

from __future__ import annotations

import functools
from typing import ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from jaxsel.config import ProxyConfig
from jaxsel.errors import JaxselError, is_int, warn
from jaxsel.proxy import batch

HIGHEST = jax.lax.Precision.HIGHEST



def check_subset(subset, k: int) -> None:
    """Raise JaxselError unless ``subset`` is one (K,) mask or take (its shape is static, so this holds
    under jit too)."""
    if tuple(subset.shape) != (k,):
        raise JaxselError(f"a subset must have shape ({k},) (a mask or take over the {k} clusters), got {tuple(subset.shape)}")

class Scores(NamedTuple):
    """Validation accuracy (ties share credit) and mean log-likelihood of the true label."""

    accuracy: jax.Array
    loglik: jax.Array


UNROLL_CLASSES = 16  # row_scores works class by class up to this many classes


def row_scores(logits: jax.Array, y: jax.Array) -> Scores:
    """Per row (M,): the tie-aware accuracy credit and log-likelihood of labels y (M,) under logits (M, C).

    Up to ``UNROLL_CLASSES`` classes the max, tie count, label's logit and log-sum-exp are built
    from the C columns one at a time (elementwise work XLA fuses into one loop): XLA:CPU's
    reductions over a minor axis of 2-3 elements and its gather of the label's column ran ~6x
    slower (64 batches of 4,000 rows, 3 classes: 8.3 ms against 1.5). The same values."""
    c = logits.shape[-1]
    if c > UNROLL_CLASSES:
        top = logits >= logits.max(-1, keepdims=True)
        credit = jnp.take_along_axis(top, y[:, None], 1)[:, 0] / top.sum(-1)
        logp = jax.nn.log_softmax(logits.astype(jnp.float32), -1)
        return Scores(credit, jnp.take_along_axis(logp, y[:, None], 1)[:, 0])
    return _class_by_class([logits[:, i] for i in range(c)], y)


def _class_by_class(cols: list[jax.Array], y: jax.Array) -> Scores:
    """:func:`row_scores` from the logits of each class, C arrays (M,)."""
    top = functools.reduce(jnp.maximum, cols)
    ties = sum((col >= top).astype(jnp.int32) for col in cols)
    mine = functools.reduce(lambda a, i: jnp.where(y == i, cols[i], a), range(1, len(cols)), cols[0])
    top32 = top.astype(jnp.float32)
    lse = jnp.log(sum(jnp.exp(col.astype(jnp.float32) - top32) for col in cols))
    return Scores((mine >= top) / ties, mine.astype(jnp.float32) - top32 - lse)


def mean_scores(rows: Scores) -> Scores:
    """The means of per-row scores (M,), float32 whatever jax_enable_x64 says: scores flow into
    scan carries of fixed dtype."""
    return Scores(*(a.mean().astype(jnp.float32) for a in rows))


def scores_from_logits(logits: jax.Array, y: jax.Array) -> Scores:
    """Tie-aware accuracy and mean log-likelihood of labels y (M,) under logits (M, C)."""
    return mean_scores(row_scores(logits, y))


def scores_from_class_logits(logits: jax.Array, y: jax.Array) -> Scores:
    """:func:`scores_from_logits` of logits laid out class-major, (C, M): up to ``UNROLL_CLASSES``
    classes each class's row is contiguous, so the class-by-class work reads whole vectors instead
    of every C-th float (vmapped over 64 ridge subsets of 4,000 validation rows, 3 classes: the
    accuracy 1.9 -> 1.2 ms; the ridge environment's step 13.8k -> 16.4k env steps/s)."""
    if logits.shape[0] > UNROLL_CLASSES:
        return scores_from_logits(logits.T, y)
    return mean_scores(_class_by_class(list(logits), y))


def chance(num_classes: int) -> Scores:
    """The score of the empty subset: a uniform prediction."""
    return Scores(jnp.float32(1.0 / num_classes), jnp.float32(-np.log(num_classes)))


def or_chance(scores: Scores, nonempty: jax.Array, num_classes: int) -> Scores:
    """``scores`` where ``nonempty``, else :func:`chance` (jit-safe)."""
    return jax.tree.map(lambda a, b: jnp.where(nonempty, a, b), scores, chance(num_classes))


def projector(x: np.ndarray, cfg: ProxyConfig) -> tuple[np.ndarray, np.ndarray]:
    """Mean (d,) and (d, r) matrix of the projection, fitted on train embeddings x (N, d) only."""
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
    """Sorted indices of a seeded, label-stratified sample of exactly ``size`` rows of labels ``y``
    (N,) (all N rows when ``size`` is None or at least N): each class its rounded share, at least
    one row while ``size`` allows (below the number of classes, a warning names how many classes get
    none), the rounding's excess or shortfall taken from or given to the classes whose share it
    moved most (ties broken by the seed). Raises JaxselError for labels that are not one per row (or
    hold NaN), a ``size`` that is not a whole number >= 1, or a ``seed`` that is not one >= 0."""
    y = np.asarray(y)
    if y.ndim != 1:
        raise JaxselError(f"a stratified sample needs one label per row, got labels of shape {y.shape}")
    if y.dtype.kind == "f" and not np.isfinite(y).all():
        raise JaxselError("a stratified sample needs labels without NaN or infinite values")
    if size is not None and (not is_int(size) or size < 1):
        raise JaxselError(f"a stratified sample needs a whole number of rows >= 1, got {size!r}")
    if not is_int(seed) or seed < 0:
        raise JaxselError(f"a stratified sample needs a seed that is a whole number >= 0, got {seed!r}")
    if size is None or size >= len(y):
        return np.arange(len(y))
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(y, return_counts=True)
    if size < len(classes):
        warn(f"a stratified sample of {size} rows leaves {len(classes) - size} of the {len(classes)} classes "
             f"without a row")
    share = counts / counts.sum() * size
    take = np.minimum(np.maximum(np.round(share).astype(int), 1), counts)
    tie = np.random.default_rng([seed, 1]).permutation(len(classes))  # the sample's own draws stay as they were

    def most(gap: np.ndarray) -> int:
        best = np.flatnonzero(gap == gap.max())
        return int(best[np.argmin(tie[best])])

    while take.sum() != size:  # a row at a time; the one-row floor may take several rows from a large class
        if take.sum() > size:
            take[most(np.where(take > (1 if size >= len(classes) else 0), take - share, -np.inf))] -= 1
        else:
            take[most(np.where(take < counts, share - take, -np.inf))] += 1
    return np.sort(np.concatenate([rng.choice(np.flatnonzero(y == c), t, replace=False)
                                   for c, t in zip(classes, take)]))


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


def max_picks(sizes: np.ndarray, budget: int, quota: int = 0) -> int:
    """The most picks an episode can make before reaching ``budget`` examples when a pick adds a
    whole cluster (``quota`` 0) or a chunk of ``quota`` rows: it ends at the first pick whose
    total reaches the budget, so at most the count of smallest chunks whose running sum first
    reaches it."""
    ch = chunks(sizes, quota)
    run = np.cumsum(np.sort(ch["chunk_end"] - ch["chunk_begin"]))
    return int(min(np.searchsorted(run, budget) + 1, len(run)))


def with_picks(take, clusters, counts) -> np.ndarray:
    """(P, K) int32: the take (K,) with ``counts[i]`` more rows of ``clusters[i]``, one row per pick."""
    cands = np.repeat(np.asarray(take, np.int32)[None], len(clusters), 0)
    cands[np.arange(len(clusters)), clusters] += np.asarray(counts, np.int32)
    return cands


class Proxy(struct.PyTreeNode):
    """A prepared proxy: a subset of the train clusters -> :class:`Scores` on validation.

    The protocol every kind implements (pure, jit/vmap-able): ``init()`` the state of the empty
    subset, ``add(state, cluster, count, start)`` the state after taking more rows of a cluster,
    ``score_state(state)``, ``score(subset)`` for a whole subset at once, ``score_rows(indices)``
    for any set of train rows (the reference), and ``value(scores)`` the objective selection
    maximises. Arrays are pytree leaves; ``cfg``, ``num_classes``, ``partial_cap``, ``quota`` and
    ``partials`` are static.
    """

    cfg: ProxyConfig = struct.field(pytree_node=False)
    num_classes: int = struct.field(pytree_node=False)
    partial_cap: int = struct.field(pytree_node=False)  # most rows of a partly taken chunk
    quota: int = struct.field(pytree_node=False)  # rows per chunk; 0: whole clusters
    xv: jax.Array  # (M, r+1) validation features, or (M, T) token ids
    yv: jax.Array  # (M,) validation labels
    sizes: jax.Array  # (K,) int32 rows per cluster
    partials: int = struct.field(pytree_node=False, default=1, kw_only=True)  # most partly taken chunks of a take

    sequential_on_cpu: ClassVar[bool] = False  # score_batch "auto": one subset after another on CPU

    @property
    def kind(self) -> str:
        return self.cfg.kind

    @property
    def k(self) -> int:
        return int(self.sizes.shape[0])

    @property
    def batch_chunk(self) -> int:
        """Subsets :meth:`score_batch` vmaps together at most (``cfg.batch_chunk``)."""
        return self.cfg.batch_chunk

    @property
    def max_clusters(self) -> int | None:
        """Most clusters a subset may hold (None: any number)."""
        return None

    def with_partial_cap(self, rows: int) -> "Proxy":
        """The same proxy computing partial chunks of at most ``rows`` rows (cheaper steps when
        the budget is smaller than the largest chunk)."""
        return self.replace(partial_cap=max(1, min(self.partial_cap, int(rows))))

    def with_partials(self, chunks: int) -> "Proxy":
        """The same proxy scoring takes with up to ``chunks`` partly taken chunks (class caps
        stop one pick per class short: :class:`jaxsel.selection.ClassCaps`)."""
        return self.replace(partials=max(1, int(chunks)))

    def with_quota(self, quota: int) -> "Proxy":
        """The same proxy over chunks of ``quota`` rows of each cluster (0: whole clusters).
        Partial chunks may then hold up to ``quota`` rows (the largest cluster for 0): apply
        :meth:`with_partial_cap` after."""
        quota = int(quota)
        if quota < 0:
            raise JaxselError(f"quota must be >= 0 rows, got {quota}")
        if quota == self.quota:
            return self
        largest = int(np.asarray(self.sizes).max())
        return self._chunked(quota).replace(quota=quota, partial_cap=largest if quota == 0 else max(1, min(quota, largest)))

    def _chunked(self, quota: int) -> "Proxy":
        """Kind hook of :meth:`with_quota`: the arrays for chunks of ``quota`` rows."""
        return self

    def boundary(self, take: jax.Array) -> jax.Array:
        """(K,) rows of each cluster's take held in whole chunks (the rest is a partial chunk)."""
        whole = take >= self.sizes
        return jnp.where(whole, self.sizes, 0 if self.quota == 0 else (take // self.quota) * self.quota)

    def count(self, cluster: jax.Array, count: jax.Array | None, start: jax.Array | int) -> jax.Array:
        """Rows an ``add`` takes: ``count`` (default: the rest of the cluster) clipped to the cluster."""
        size = self.sizes[cluster]
        return size - start if count is None else jnp.minimum(count, size - start)

    def take(self, subset: jax.Array) -> jax.Array:
        """(K,) int32 rows taken per cluster: a bool mask means whole clusters."""
        if subset.dtype == jnp.bool_:
            return subset * self.sizes
        return jnp.minimum(subset.astype(jnp.int32), self.sizes)

    # the protocol -------------------------------------------------------------------------------
    def init(self):
        """State of the empty subset."""
        raise NotImplementedError

    def add(self, state, cluster: jax.Array, count: jax.Array | None = None, start: jax.Array | int = 0):
        """State after taking rows ``start .. start + count`` of ``cluster`` in the within-cluster
        order (default: all of it). ``start`` is a chunk boundary (the rows already taken)."""
        raise NotImplementedError

    def score_state(self, state) -> Scores:
        raise NotImplementedError

    def score_take(self, take: jax.Array) -> Scores:
        """Scores of a (K,) int take (whole chunks, and at most ``partials`` clusters with a partial chunk)."""
        raise NotImplementedError

    def made_with(self, train_labels: np.ndarray) -> bool:
        """Whether ``train_labels`` (N,) are the labels this proxy was made with (those it keeps)."""
        raise NotImplementedError

    def orders_like(self, clustering) -> bool:
        """Whether ``clustering`` lists the rows of each cluster as the one this proxy was made
        with does (the rows a pick takes, in the order a partial pick takes them)."""
        raise NotImplementedError

    def check_clustering(self, clustering) -> None:
        """Raise JaxselError unless ``clustering`` is the one this proxy was made with (its cluster
        sizes, members and within-cluster order, :meth:`orders_like`): with another, a pick scores
        other rows here than the selection exports (e.g. :func:`jaxsel.cluster.typical_order`'s
        reordering of the same partition)."""
        if not np.array_equal(np.asarray(self.sizes), np.asarray(clustering.sizes)):
            raise JaxselError(f"the clustering ({clustering.k} clusters) is not the one the proxy was made with "
                              f"({self.k} clusters of other sizes): pass the clustering given to proxy.make")
        if not self.orders_like(clustering):
            raise JaxselError("the clustering's clusters hold other rows, or list them in another order, than the "
                              "clustering the proxy was made with (e.g. cluster.typical_order's reordering): pass the "
                              "clustering given to proxy.make")

    def check_made_with(self, train_labels: np.ndarray, name: str, caller: str) -> None:
        """Raise JaxselError unless ``train_labels`` (argument ``name`` of ``caller``) are the
        labels this proxy was made with (:meth:`made_with`)."""
        if not self.made_with(train_labels):
            raise JaxselError(f"{name} differ from the labels the proxy was made with: pass the same labels "
                              f"(in the same row order) to proxy.make and {caller}")

    def score_rows(self, rows) -> Scores:
        """Scores of the subset holding exactly the train rows ``rows`` (int indices)."""
        raise NotImplementedError

    def checked_rows(self, rows) -> np.ndarray:
        """``rows`` (any shape of int indices) as the sorted distinct int64 rows they name, checked
        for :meth:`score_rows`: raise JaxselError for a bool mask or another dtype (a mask had been
        read as rows 0 and 1, floats cut to integers) and for rows outside [0, N)."""
        rows = np.asarray(rows)
        if rows.size and rows.dtype.kind not in "iu":
            hint = " (for a bool mask over the rows pass np.flatnonzero(mask))" if rows.dtype == bool else ""
            raise JaxselError(f"row indices must be integers, got {rows.dtype}{hint}")
        rows = np.unique(rows.astype(np.int64))
        n = int(np.asarray(self.sizes).sum())  # every train row is in one cluster
        if len(rows) and (rows.min() < 0 or rows.max() >= n):
            raise JaxselError(f"row indices must lie in [0, {n}), got {rows.min()}..{rows.max()}")
        return rows

    def score(self, subset: jax.Array) -> Scores:
        """Scores of ``subset``: (K,) bool mask or (K,) int take (rows per cluster: whole chunks
        but for at most ``partials`` clusters). Pure; jit and vmap freely. Raises JaxselError for
        another shape, and outside jit for what :meth:`score_batch` refuses."""
        return self.score_take(self.take(self.checked(subset)))

    def checked(self, subset) -> jax.Array:
        """``subset`` checked as :meth:`score_batch` checks a batch's rows where its values are
        known (outside jit: a take with two partly taken clusters was scored as another subset),
        else its shape only; raises JaxselError."""
        try:
            values = np.asarray(subset)
            check_subset(values, self.k)
            return jnp.asarray(self.check_takes(values)[0])
        except jax.errors.TracerArrayConversionError:  # under jit: the subset or the proxy traced
            check_subset(subset, self.k)
            return subset

    def check_takes(self, masks) -> np.ndarray:
        """(B, K) bool masks or int32 takes this proxy can score (:func:`jaxsel.proxy.batch.check_masks`
        under its clusters, sizes, ``max_clusters``, partial cap, quota and partials); raises
        JaxselError naming the fault."""
        return batch.check_masks(masks, self.k, self.max_clusters, sizes=np.asarray(self.sizes),
                                 partial_cap=self.partial_cap, quota=self.quota, partials=self.partials)

    def score_batch(self, subsets) -> Scores:
        """Scores of a (B, K) batch of subsets: bool masks take whole clusters, integer arrays are
        takes (rows per cluster, so 0/1 integers take one row of a cluster, not all of it: pass
        ``masks.astype(bool)``); checked on the host, then scored by one compiled program that vmaps
        over the batch, its axis sharded over all devices. Raises JaxselError for masks it refuses,
        and for traced ones (called inside ``jax.jit``: there, ``jax.vmap(proxy.score)``)."""
        return batch.score_batch(self, subsets)

    def score_picks(self, take, clusters, counts) -> Scores:
        """Scores (P,) of the take (K,) plus ``counts[i]`` more rows of ``clusters[i]``, each
        candidate on its own (a greedy step); the candidates must be valid takes. By default one
        :meth:`score_batch` of the P takes; a kind may compute only what a pick changes."""
        return self.score_batch(with_picks(take, clusters, counts))

    def value(self, scores: Scores) -> jax.Array:
        """The objective selection maximises (``cfg.objective``) out of ``scores``."""
        return scores.loglik if self.cfg.objective == "loglik" else scores.accuracy

    def reward(self, mask: jax.Array, cluster: jax.Array) -> jax.Array:
        """Change in the objective from adding ``cluster`` to ``mask``."""
        return self.value(self.score(mask.at[cluster].set(True))) - self.value(self.score(mask))
