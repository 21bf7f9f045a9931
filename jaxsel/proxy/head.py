"""Trained proxies: a model trained inside ``lax.scan`` on a fixed-size sample of each chosen
cluster, scored on validation. :class:`Trained` is what they share; ``linear`` and ``mlp`` are a
softmax head on the projected embeddings (:class:`Head`, here), ``transformer`` a small BERT
(:mod:`jaxsel.proxy.transformer`).

The sample of a cluster is its index-table rows, the head of the within-cluster order, so a
partly taken cluster contributes its first table rows; the loss is masked so shapes never change.
"""

from __future__ import annotations

from functools import partial
from typing import ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxsel.precision import in_32_bits
from jaxsel.proxy.base import HIGHEST, Proxy, ProxyConfig, Scores, or_chance, scores_from_logits


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


def init_head(kind: str, r1: int, c: int, hidden: int, seed: int) -> dict:
    """Initial parameters of the ``linear`` head (zeros) or the ``mlp`` head (He-scaled normal)."""
    if kind == "linear":
        return {"w": jnp.zeros((r1, c), jnp.float32)}
    k1, k2 = jax.random.split(jax.random.key(seed))
    f32 = jnp.float32
    return {"w1": jax.random.normal(k1, (r1, hidden), f32) * np.float32(np.sqrt(2.0 / r1)), "b1": jnp.zeros(hidden, f32),
            "w2": jax.random.normal(k2, (hidden, c), f32) * np.float32(np.sqrt(1.0 / hidden)), "b2": jnp.zeros(c, f32)}


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


class Trained(Proxy):
    """A proxy trained on the index-table rows of the subset; its state is the take (K,) int32."""

    valid: jax.Array  # (K, s) bool: real rows of each cluster's index table
    table: jax.Array  # (K, s) int32 train rows of the index table (-1: padding)
    xs: jax.Array  # (K, s, ...) the table rows' inputs (features or token ids)
    ys: jax.Array  # (K, s) their labels
    params0: dict  # initial parameters of the trained model

    sequential_on_cpu: ClassVar[bool] = True

    @property
    def max_clusters(self) -> int | None:
        return self.cfg.max_clusters

    def init(self) -> jax.Array:
        return jnp.zeros(self.k, jnp.int32)

    def add(self, state: jax.Array, cluster: jax.Array, count: jax.Array | None = None,
            start: jax.Array | int = 0) -> jax.Array:
        return state.at[cluster].add(self.count(cluster, count, start).astype(jnp.int32))

    def score_state(self, state: jax.Array) -> Scores:
        return self.score_take(state)

    def score_take(self, take: jax.Array) -> Scores:
        s = self.valid.shape[1]
        return self.fit_and_score(self.valid & (jnp.arange(s)[None] < take[:, None]))

    def made_with(self, train_labels: np.ndarray) -> bool:
        """Checked on the index table's rows, the only labels this kind keeps."""
        valid = np.asarray(self.valid)
        return np.array_equal(np.asarray(self.ys)[valid], np.asarray(train_labels)[np.asarray(self.table)[valid]])

    def orders_like(self, clustering) -> bool:
        """Checked on the index table, the only rows of a cluster this kind sees."""
        return np.array_equal(np.asarray(self.table), np.asarray(clustering.table))

    @in_32_bits
    def score_rows(self, rows) -> Scores:
        """Scores of training on the index-table rows that are in ``rows`` (what a trained proxy
        sees of any subset), from every cluster they fall in, past ``max_clusters`` too (a random
        baseline's rows span them all)."""
        table = np.asarray(self.table)
        return _fit_and_score(self, jnp.asarray(np.isin(table, self.checked_rows(rows)) & (table >= 0)), self.k)

    def fit_and_score(self, weights: jax.Array, max_clusters: int | None = None) -> Scores:
        """Train on the index-table rows marked in ``weights`` (K, s) bool, of at most
        ``max_clusters`` clusters (default ``cfg.max_clusters``: the lowest ids past it are dropped,
        so callers check the count); score on validation."""
        x, y, w = self._gather(weights, max_clusters or self.cfg.max_clusters)
        return or_chance(scores_from_logits(self.logits(x, y, w), self.yv), weights.any(), self.num_classes)

    def logits(self, x: jax.Array, y: jax.Array, w: jax.Array) -> jax.Array:
        """Validation logits (M, C) after training on inputs x, labels y (n,), row weights w (n,)."""
        raise NotImplementedError

    def _gather(self, weights: jax.Array, max_clusters: int):
        """Rows of the chosen clusters' samples, m = ``max_clusters``: (m*s, ...) inputs, labels and
        weights (0 = padding)."""
        ids = jnp.nonzero(weights.any(1), size=max_clusters, fill_value=-1)[0]
        safe = jnp.maximum(ids, 0)
        valid = (ids >= 0)[:, None] & weights[safe]
        x, y = self.xs[safe], self.ys[safe]
        return x.reshape(-1, *x.shape[2:]), y.reshape(-1), valid.reshape(-1).astype(jnp.float32)


@partial(jax.jit, static_argnums=2)
def _fit_and_score(p: Trained, weights: jax.Array, max_clusters: int | None = None) -> Scores:
    return p.fit_and_score(weights, max_clusters)


class Head(Trained):
    """The ``linear`` / ``mlp`` proxy: a softmax head on the projected embeddings, trained with AdamW."""

    def logits(self, x: jax.Array, y: jax.Array, w: jax.Array) -> jax.Array:
        params = train_head(self.params0, Fixed(*jax.lax.optimization_barrier((x, x.T))), y, w, self.cfg)
        return head_logits(params, self.xv)
