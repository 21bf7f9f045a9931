"""What agents keep of finished episodes: the best one seen, and greedy rollouts of a network."""

from __future__ import annotations

from typing import Callable, NamedTuple

import chex
import jax
import jax.numpy as jnp

from jaxsel.agents import networks


HISTORY = 64  # mean episode scores an agent keeps, sampled evenly over its updates


class Chunks(NamedTuple):
    """An agent's training run in pieces: ``init(key, env_params) -> runner``, ``update(runner, n,
    env_params) -> runner`` (n updates, a Python int or a traced int32: one program for any n); PPO
    also exposes its rollout step and learner for host-driven loops."""

    init: Callable
    update: Callable
    rollout_start: Callable | None = None
    env_step: Callable | None = None
    learn: Callable | None = None


class Best(NamedTuple):
    score: jax.Array  # () the proxy's objective (Proxy.value: accuracy or log-likelihood) of the final subset
    take: jax.Array  # (K,) int32 rows taken per cluster
    order: jax.Array  # (max_steps,) int32 picks in order, -1 padded


def empty_best(env_params) -> Best:
    k = env_params.sizes.shape[0]
    return Best(jnp.float32(-jnp.inf), jnp.zeros(k, jnp.int32), jnp.full(env_params.max_steps, -1, jnp.int32))


def empty_history() -> jax.Array:
    """(HISTORY,) float32 NaN: no update has written a slot yet."""
    return jnp.full(HISTORY, jnp.nan, jnp.float32)


def record_mean(history: jax.Array, update: jax.Array, num_updates: int, score_sum: jax.Array,
                episodes: jax.Array) -> jax.Array:
    """``history`` (HISTORY,) with the mean final score of the ``episodes`` that update ``update`` (of
    ``num_updates``) finished, ``score_sum`` their sum, written to its slot; an update that finished
    none leaves the slot as it was, so with more updates than slots a slot keeps the last mean."""
    slot = update * history.shape[0] // num_updates
    return history.at[slot].set(jnp.where(episodes > 0, score_sum / jnp.maximum(episodes, 1), history[slot]))


def track_best(best: Best, done: jax.Array, info: dict) -> Best:
    """Keep the best finished episode among ``done`` envs (done: (E,), info arrays (E, ...))."""
    chex.assert_rank(done, 1)
    chex.assert_equal_shape_prefix([done, info["final_score"], info["final_take"], info["final_order"]], 1)
    score = jnp.where(done, info["final_score"], -jnp.inf)
    i = jnp.argmax(score)
    better = score[i] > best.score
    return Best(jnp.where(better, score[i], best.score), jnp.where(better, info["final_take"][i], best.take),
                jnp.where(better, info["final_order"][i], best.order))


def greedy_rollout(params: dict, env, env_params, key: jax.Array, sample: bool = False) -> Best:
    """One episode taking the network's highest-scoring valid cluster (policy logit or Q) each step,
    or, with ``sample``, drawing it from the softmax of those scores."""
    obs, state = env.reset(key, env_params)

    def body(carry, k):
        obs, state, out, finished = carry
        scores, _ = networks.apply(params, obs, env_params.features)
        scores = networks.masked(scores, env.action_mask(state, env_params))
        action = jax.random.categorical(k, scores) if sample else jnp.argmax(scores)
        obs, state, _, done, info = env.step(key, state, action, env_params)
        out = track_best(out, (done & ~finished)[None], jax.tree.map(lambda a: a[None], info))
        return (obs, state, out, finished | done), None

    (_, _, out, _), _ = jax.lax.scan(body, (obs, state, empty_best(env_params), jnp.bool_(False)),
                                     jax.random.split(key, env_params.max_steps))
    return out
