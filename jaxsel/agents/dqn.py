"""DQN for the selection MDP: ``make_chunks`` / ``make_train`` in the same shape as ``jaxsel.agents.ppo``.

A masked Q-network (``jaxsel.agents.networks``: one Q-value per cluster), a replay buffer held on device
(circular arrays of the compact state: rows taken per cluster, examples chosen, step), double Q-learning targets
from rlax, a linearly decaying epsilon, a periodically copied target network, and masked
argmax actions. Everything is inside ``lax.scan``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Callable, NamedTuple

import chex
import jax
import jax.numpy as jnp
import optax
import rlax

from jaxsel.agents import networks
from jaxsel.agents.env import EnvParams, SelectionEnv, shard_envs
from jaxsel.agents.episodes import Best, Chunks, empty_best, empty_history, record_mean, track_best
from jaxsel.config import MAX_PREFERENCE_RATE, NETWORK, NETWORKS, later
from jaxsel.errors import JaxselError, check_at_least, check_choice, check_range, check_types


@dataclass(frozen=True)
class DQNConfig:
    num_envs: int = 32
    total_timesteps: int = 20_000  # the CLI's and run configs' default too ([select] rl_steps)
    buffer_size: int = 20_000
    batch_size: int = 128
    learning_starts: int = 1_000
    train_every: int = 1  # one gradient step every this many steps of all envs (CleanRL's train_frequency)
    target_every: int = 100
    lr: float = 5e-4
    gamma: float = 1.0
    eps_start: float = 1.0
    eps_end: float = 0.05
    eps_fraction: float = 0.5
    max_grad_norm: float = 10.0
    hidden: int = 64
    network: str = later(NETWORK, before="early")  # NETWORKS: how the clusters' state joins their features
    # ("early" until 2026-12-05; bench/README.md, "Late fusion as the agents' default")
    preference_rate: float = later(0.0)  # > 0: a learned preference per cluster at this x lr (networks.preference_rate)

    def __post_init__(self):
        check_types("dqn", self)
        check_choice("dqn", self, "network", NETWORKS)
        check_range("dqn", self, 0, MAX_PREFERENCE_RATE, "preference_rate")
        check_at_least("dqn", self, 1, "num_envs", "total_timesteps", "buffer_size", "batch_size", "train_every",
                       "target_every", "hidden")
        check_at_least("dqn", self, 0, "learning_starts")
        check_range("dqn", self, 0, float("inf"), "lr", "max_grad_norm", low_open=True)
        check_range("dqn", self, 0, 1, "gamma", "eps_start", "eps_end", "eps_fraction")
        if self.eps_end > self.eps_start:  # exploration that grows as the agent learns: swapped values
            raise JaxselError(f"dqn eps_end ({self.eps_end}) must not exceed eps_start ({self.eps_start}): "
                              f"exploration falls from eps_start to eps_end")

    @property
    def num_updates(self) -> int:
        return max(1, self.total_timesteps // self.num_envs)

    @property
    def learning_updates(self) -> int:
        """Updates that take a gradient step: every ``train_every``-th, from the first after which the
        buffer holds ``learning_starts`` transitions (none when it can hold fewer)."""
        if self.buffer_size < self.learning_starts:
            return 0
        first = max(0, -(-self.learning_starts // self.num_envs) - 1)  # update u adds num_envs: u + 1 of them
        first = -(-first // self.train_every) * self.train_every
        return max(0, -(-(self.num_updates - first) // self.train_every))


class Transition(NamedTuple):
    """One environment step as the replay buffer keeps it: the state fields the observation is
    computed from (not the (K, F) observation itself), before and after the action."""

    taken: jax.Array  # (K,) int32 rows taken per cluster
    chosen: jax.Array  # () int32 examples taken
    step: jax.Array  # () int32
    action: jax.Array  # () int32
    reward: jax.Array  # () float32
    done: jax.Array  # () bool
    next_taken: jax.Array
    next_chosen: jax.Array
    next_step: jax.Array


class Buffer(NamedTuple):
    """A ring buffer of transitions: every field of ``data`` has a leading (N,) axis."""

    data: Transition
    ptr: jax.Array  # () int32 next row to write
    full: jax.Array  # () bool: every row has been written once


def buffer_init(item: Transition, size: int) -> Buffer:
    """An empty buffer of ``size`` rows shaped like ``item`` (one transition, no batch axis)."""
    return Buffer(jax.tree.map(lambda x: jnp.zeros((size, *jnp.shape(x)), jnp.asarray(x).dtype), item),
                  jnp.int32(0), jnp.bool_(False))


def buffer_add(b: Buffer, items: Transition) -> Buffer:
    """Write a batch of E transitions (leading (E,) axis) at the pointer, wrapping around."""
    chex.assert_equal_shape_prefix(jax.tree.leaves(items), 1)
    chex.assert_trees_all_equal_shapes(jax.tree.map(lambda x: x[0], items), jax.tree.map(lambda x: x[0], b.data))
    size, e = b.data.action.shape[0], items.action.shape[0]
    idx = (b.ptr + jnp.arange(e)) % size
    # the buffer's dtypes (jax_enable_x64 makes some actions and counters int64; scatter's implicit cast is deprecated)
    return Buffer(jax.tree.map(lambda d, x: d.at[idx].set(x.astype(d.dtype)), b.data, items), (b.ptr + e) % size,
                  b.full | (b.ptr + e >= size))


def buffer_filled(b: Buffer) -> jax.Array:
    """() int32: rows written so far (at most the size)."""
    return jnp.where(b.full, b.data.action.shape[0], b.ptr)


def buffer_sample(b: Buffer, key: jax.Array, batch_size: int) -> Transition:
    """``batch_size`` transitions drawn uniformly, with replacement, from the rows written."""
    rows = jax.random.randint(key, (batch_size,), 0, jnp.maximum(buffer_filled(b), 1), jnp.int32)
    return jax.tree.map(lambda x: x[rows], b.data)


def relabelled(b: Buffer, env_params: EnvParams) -> Buffer:
    """The buffer's rewards recomputed by ``env_params.proxy`` from each transition's takes before
    and after its action (x ``reward_scale``, as the environment rewards): a reward-model round's new
    model relabels the experience earlier rounds' models rewarded, so every Q-target of a round asks
    one model (PEBBLE, Lee et al., ICML 2021, relabels its replay buffer the same way). Rows never
    written are relabelled too, harmlessly: they are never sampled."""
    value = jax.vmap(lambda take: env_params.proxy.value(env_params.proxy.score(take)))
    d = b.data
    reward = (value(d.next_taken) - value(d.taken)) * env_params.reward_scale
    return b._replace(data=d._replace(reward=reward.astype(d.reward.dtype)))


class Runner(NamedTuple):
    params: dict
    target: dict
    opt_state: optax.OptState
    buffer: Buffer
    env_state: object
    key: jax.Array
    update: jax.Array
    best: Best
    history: jax.Array


def exploration(c: DQNConfig) -> optax.Schedule:
    """Epsilon by update: falls linearly from ``eps_start`` to ``eps_end`` over the first
    ``eps_fraction`` of the updates, then stays; ``eps_fraction`` 0: ``eps_end`` throughout (optax
    holds a schedule of no steps at its start value, which explored at random for the whole run)."""
    if c.eps_fraction == 0:
        return optax.constant_schedule(c.eps_end)
    return optax.linear_schedule(c.eps_start, c.eps_end, c.eps_fraction * c.num_updates)


def make_chunks(config: DQNConfig, env: SelectionEnv) -> Chunks:
    """The training run in resumable pieces: ``init(key, env_params)`` and ``update(runner, n,
    env_params)``; the environment's params are arguments, not constants of the program."""
    c = config
    tx = optax.chain(optax.clip_by_global_norm(c.max_grad_norm), optax.adam(c.lr),
                     *networks.optimizer_extras(c.preference_rate))
    epsilon = exploration(c)

    def init(key: jax.Array, env_params: EnvParams) -> Runner:
        key, k_net, k_env = jax.random.split(key, 3)
        k, state = env.observation_shape(env_params)
        params = networks.init(k_net, state, env_params.features.shape[1], c.hidden, c.network,
                               env.num_actions(env_params) if c.preference_rate else 0)
        _, env_state = jax.vmap(env.reset, in_axes=(0, None))(jax.random.split(k_env, c.num_envs), env_params)
        i32 = jnp.int32(0)
        item = Transition(jnp.zeros(k, jnp.int32), i32, i32, i32, jnp.float32(0), jnp.bool_(False),
                          jnp.zeros(k, jnp.int32), i32, i32)
        buf = buffer_init(item, c.buffer_size)
        return Runner(params, params, tx.init(params), buf, env_state, key, jnp.int32(0), empty_best(env_params),
                      empty_history())

    def _loss(params, encoded, target, batch, obs_of, valid_of, features):
        """``encoded``: :func:`networks.encode` of ``params``; ``target``: the target network's
        params and their encoding."""
        qnet = lambda p, o, e: networks.apply(p, o, features, e)[0]  # noqa: E731  obs (N, K, D) -> Q-values (N, K)
        q_tm1 = qnet(params, obs_of(batch.taken, batch.chosen, batch.step), encoded)
        obs_t = obs_of(batch.next_taken, batch.next_chosen, batch.next_step)
        q_t_value = qnet(target[0], obs_t, target[1])
        q_t_selector = networks.masked(qnet(params, obs_t, encoded), valid_of(batch.next_taken))
        discount = c.gamma * (1.0 - batch.done.astype(jnp.float32))
        td = jax.vmap(rlax.double_q_learning)(q_tm1, batch.action, batch.reward, discount, q_t_value, q_t_selector)
        return rlax.huber_loss(td, 1.0).mean()

    def _update(env_params, runner: Runner, _):
        obs_of = jax.vmap(lambda taken, chosen, step: env.observe(taken, chosen, step, env_params))
        valid_of = jax.vmap(lambda taken: env.valid(taken, env_params))
        key, k_eps, k_rand, k_env, k_batch = jax.random.split(runner.key, 5)
        eps = epsilon(runner.update).astype(jnp.float32)  # float32 even under x64, like every draw below
        s = shard_envs(runner.env_state, c.num_envs)
        valid = valid_of(s.taken)
        obs = obs_of(s.taken, s.chosen, s.step)
        greedy = jnp.argmax(networks.masked(networks.apply(runner.params, obs, env_params.features)[0], valid), -1)
        rand = jax.random.categorical(k_rand, jnp.where(valid, 0.0, -1e9).astype(jnp.float32))
        action = jnp.where(jax.random.uniform(k_eps, (c.num_envs,), jnp.float32) < eps, rand, greedy)
        _, s2, reward, done, info = jax.vmap(env.step, in_axes=(0, 0, 0, None))(
            jax.random.split(k_env, c.num_envs), s, action, env_params)
        # the state after the action, before an ended episode's reset (info's; s2 holds the next episode's
        # first where done): relabelled() scores its take; its observation meets a discount of 0 there
        b = buffer_add(runner.buffer, Transition(s.taken, s.chosen, s.step, action, reward, done,
                                                 info["final_take"], info["chosen"], s.step + 1))
        target_net = (runner.target, networks.encode(runner.target, env_params.features))  # once, not per chunk
        loss = lambda params, encoded, batch: _loss(params, encoded, target_net, batch, obs_of, valid_of,  # noqa: E731
                                                    env_params.features)
        chunk = networks.grad_chunk(c.batch_size, valid.shape[1], c.network)
        learn = buffer_filled(b) >= c.learning_starts

        def _gradient_step(params, opt_state):
            grads = networks.chunked_grad(loss, params, (buffer_sample(b, k_batch, c.batch_size),), chunk,
                                          shared=partial(networks.encode, features=env_params.features))
            updates, new_state = tx.update(grads, opt_state, params)
            keep = lambda new, old: jnp.where(learn, new, old)  # noqa: E731  no learning before learning_starts
            return jax.tree.map(keep, optax.apply_updates(params, updates), params), jax.tree.map(keep, new_state, opt_state)

        if c.train_every == 1:
            params, opt_state = _gradient_step(runner.params, runner.opt_state)
        else:  # lax.cond runs one branch: the updates that do not learn skip the gradient's cost
            params, opt_state = jax.lax.cond(runner.update % c.train_every == 0, _gradient_step, lambda p, o: (p, o),
                                             runner.params, runner.opt_state)
        copy = (runner.update % c.target_every) == 0
        target = jax.tree.map(lambda p, t: jnp.where(copy, p, t), params, runner.target)
        best = track_best(runner.best, done, info)
        history = record_mean(runner.history, runner.update, c.num_updates,
                              jnp.where(done, info["final_score"], 0.0).sum(), done.sum())
        return Runner(params, target, opt_state, b, s2, key, runner.update + 1, best, history), None

    def update(runner: Runner, n: int | jax.Array, env_params: EnvParams) -> Runner:
        step = lambda _, r: _update(env_params, r, None)[0]  # noqa: E731
        return jax.lax.fori_loop(0, n, step, runner)  # a traced n: one program for chunks of any length

    return Chunks(init, update)


def make_train(config: DQNConfig, env: SelectionEnv) -> Callable[[jax.Array, EnvParams], Runner]:
    """train(key, env_params) -> Runner after ``config.num_updates`` iterations; pure, so jit and
    vmap it."""
    if not isinstance(config, DQNConfig):  # a dict's missing attributes were an AttributeError deep inside
        raise JaxselError(f"make_train takes a DQNConfig as config, got {type(config).__name__}")
    fns = make_chunks(config, env)
    return lambda key, env_params: fns.update(fns.init(key, env_params), config.num_updates, env_params)
