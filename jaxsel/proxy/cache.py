"""The reward cache: searches score many subsets, often the same ones again."""

from __future__ import annotations

import numpy as np

from jaxsel.proxy.base import Proxy, with_picks


class RewardCache:
    """Host-side memo of proxy objective values keyed by the subset (mask or take), with hit counts."""

    def __init__(self, proxy: Proxy):
        self.proxy, self.table, self.hits, self.misses = proxy, {}, 0, 0
        self.sizes = np.asarray(proxy.sizes)

    def scores(self, masks) -> np.ndarray:
        """(B,) float32: the objective (``Proxy.value``) of each subset in a (B, K) batch of masks
        or takes, computing only new ones."""
        masks = self.proxy.check_takes(masks)
        if masks.dtype == bool:
            masks = masks * self.sizes.astype(np.int32)
        return self._memo(masks, lambda i: self.proxy.score_batch(masks[i]))

    def pick_scores(self, take: np.ndarray, clusters: np.ndarray, counts: np.ndarray) -> np.ndarray:
        """(P,) float32: the objective of ``take`` (K,) plus ``counts[i]`` rows of ``clusters[i]``,
        each on its own (:meth:`Proxy.score_picks`: a kind may score only what a pick changes)."""
        clusters, counts = np.asarray(clusters), np.asarray(counts)
        cands = self.proxy.check_takes(with_picks(take, clusters, counts))
        return self._memo(cands, lambda i: self.proxy.score_picks(take, clusters[i], counts[i]))

    def _memo(self, takes: np.ndarray, score) -> np.ndarray:
        """The objective of each take (B, K), calling ``score(indices)`` for the ones not seen yet."""
        keys = [m.tobytes() for m in takes]
        todo = {k: i for i, k in enumerate(keys) if k not in self.table}
        self.hits += len(keys) - len(todo)
        self.misses += len(todo)
        if todo:
            acc = np.asarray(self.proxy.value(score(np.array(list(todo.values()), np.int64))))
            self.table.update(zip(todo, acc.tolist()))
        return np.array([self.table[k] for k in keys], np.float32)
