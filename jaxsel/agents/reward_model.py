"""A learned reward model: an ensemble of small MLPs from the share of each cluster a subset takes
(a (K,) mask for whole clusters, :func:`coverage` for a take) to a proxy score.

Used for WarmStart (fit on proxy-scored random masks before RL starts), for reward-model rollouts
(``Surrogate`` stands in for the proxy in the environment; see ``jaxsel.agents``), and by
CLIMB-Disc to choose which candidates deserve a true proxy evaluation. The ensemble's spread is
the uncertainty.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct


@dataclass(frozen=True)
class RewardModelConfig:
    """The ensemble and how each member is fit (full-batch AdamW on the standardized scores)."""

    members: int = 4  # MLPs in the ensemble, each from its own initialisation and bootstrap resample
    hidden: int = 64  # width of each MLP's one hidden layer
    steps: int = 300  # full-batch AdamW steps per fit
    lr: float = 3e-3
    weight_decay: float = 1e-4  # AdamW's decoupled weight decay


def _init_one(key, k: int, hidden: int) -> dict:
    k1, k2 = jax.random.split(key)
    f32 = jnp.float32
    return {"w1": jax.random.normal(k1, (k, hidden), f32) / np.float32(np.sqrt(k)), "b1": jnp.zeros(hidden, f32),
            "w2": jax.random.normal(k2, (hidden, 1), f32) / np.float32(np.sqrt(hidden)), "b2": jnp.zeros(1, f32)}


def _predict_one(p: dict, masks: jax.Array) -> jax.Array:
    h = jax.nn.relu(masks @ p["w1"] + p["b1"])
    return (h @ p["w2"] + p["b2"])[:, 0]


def fit(key: jax.Array, masks, scores, cfg: RewardModelConfig = RewardModelConfig()) -> dict:
    """Fit the ensemble to (B, K) masks and (B,) scores; each member sees a bootstrap resample.

    The rows are padded (with zero weight) to the next power of two from 64, so a search whose log
    grows round by round compiles one program per bucket and config, not one per call."""
    x, y = np.asarray(masks, np.float32), np.asarray(scores, np.float32)
    n = len(x)
    if n < 1 or len(y) != n:
        raise ValueError(f"fit needs at least one (mask, score) pair and as many scores as masks, got {n} masks "
                         f"and {len(y)} scores")
    rows = max(64, 1 << (n - 1).bit_length())
    xp = np.zeros((rows, x.shape[1]), np.float32)
    xp[:n] = x
    yp = np.zeros(rows, np.float32)
    yp[:n] = y
    return _fit(jax.random.split(key, cfg.members), jnp.asarray(xp), jnp.asarray(yp), jnp.int32(n), cfg)


@partial(jax.jit, static_argnames="cfg")
def _fit(keys: jax.Array, x: jax.Array, y: jax.Array, n: jax.Array, cfg: RewardModelConfig) -> dict:
    """:func:`fit` on (R, K) masks and (R,) scores of which the first ``n`` rows are real."""
    valid = (jnp.arange(len(y)) < n).astype(jnp.float32)
    mu = (y * valid).sum() / n
    sd = jnp.sqrt((valid * (y - mu) ** 2).sum() / n) + 1e-6
    yn = (y - mu) / sd * valid
    tx = optax.adamw(cfg.lr, weight_decay=cfg.weight_decay)

    def train_one(k):
        k_init, k_boot = jax.random.split(k)
        p = _init_one(k_init, x.shape[1], cfg.hidden)
        # n draws with replacement among the n real rows, draw i from its own key: the same resample
        # whatever the padding (whose draws count nothing)
        draws = jax.vmap(lambda i: jax.random.randint(jax.random.fold_in(k_boot, i), (), 0, n, jnp.int32))(
            jnp.arange(len(y)))
        w = jnp.zeros(len(y), jnp.float32).at[draws].add(valid)
        loss = lambda p: (w * (_predict_one(p, x) - yn) ** 2).sum() / w.sum()

        def step(carry, _):
            p, o = carry
            g = jax.grad(loss)(p)
            u, o = tx.update(g, o, p)
            return (optax.apply_updates(p, u), o), None

        return jax.lax.scan(step, (p, tx.init(p)), None, cfg.steps)[0][0]

    return {"members": jax.vmap(train_one)(keys), "mu": mu, "sd": sd}


@jax.jit
def predict(model: dict, masks) -> tuple[jax.Array, jax.Array]:
    """Mean and ensemble standard deviation of the predicted score for (B, K) masks."""
    x = jnp.asarray(masks, jnp.float32)
    preds = jax.vmap(_predict_one, in_axes=(0, None))(model["members"], x) * model["sd"] + model["mu"]
    return preds.mean(0), preds.std(0)


@struct.dataclass
class Surrogate:
    """The reward model in the proxy interface (``init`` / ``add`` / ``score_state`` / ``score``), so
    the selection environment can train an agent on predicted rewards. Its input is the share of
    each cluster taken (1 for a whole cluster), as in :func:`coverage`."""

    model: dict
    sizes: jax.Array  # (K,) int32 examples per cluster
    num_classes: int = struct.field(pytree_node=False)
    kind: str = struct.field(pytree_node=False, default="surrogate")

    def init(self):
        return jnp.zeros(self.sizes.shape[0], jnp.float32)

    def add(self, state, cluster, count=None, start=0):
        size = self.sizes[cluster]
        count = size - start if count is None else jnp.minimum(count, size - start)
        return state.at[cluster].add(count / jnp.maximum(size, 1))

    def score_state(self, state):
        from jaxsel.proxy import Scores
        mean, _ = predict(self.model, state[None])
        return Scores(mean[0], jnp.float32(0.0))

    def score(self, subset):
        take = subset * self.sizes if subset.dtype == jnp.bool_ else subset
        return self.score_state(take / jnp.maximum(self.sizes, 1))

    def value(self, scores):
        """The predicted objective (carried in the ``accuracy`` slot of the scores)."""
        return scores.accuracy


def coverage(take: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """(..., K) float32 share of each cluster a take holds: the reward model's input."""
    return (np.asarray(take) / np.maximum(np.asarray(sizes), 1)).astype(np.float32)
