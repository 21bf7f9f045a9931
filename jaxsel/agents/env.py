"""The selection MDP as a gymnax-style environment.

State: the rows taken per cluster, the pick order, the examples chosen, and the proxy's
incremental state. Action: a cluster not yet exhausted. Transition: the cluster's next rows in
the within-cluster order are taken: all of them (granularity "cluster", the paper's MDP) or its
next ``quota`` rows (granularity "quota"; a cluster can be picked again), while they fit the
budget; the pick that reaches the budget takes only the rows that fit and ends the episode (the
exact budget rule of :mod:`jaxsel.selection`). Reward: the change in the proxy's validation score of the rows taken
(x ``reward_scale``), so no pick is credited for rows the selection will not export. With class
caps (``balance``, :class:`jaxsel.selection.ClassCaps`) a pick also takes no more rows than its
class has room for, and clusters of a full class are masked. The
undiscounted return is (score(exported) - score(empty)) x reward_scale. ``step`` auto-resets,
so vmapped rollouts run inside ``lax.scan``.

    env, params = make_env(proxy, clustering, train_labels, budget=0.05)
    obs, state = env.reset(key, params)
    obs, state, reward, done, info = env.step(key, state, action, params)
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from jax.sharding import NamedSharding, PartitionSpec as P

from jaxsel.cluster import Clustering
from jaxsel.errors import JaxselError, check_labels, is_int
from jaxsel.proxy import Proxy, max_picks
from jaxsel.proxy.batch import mesh
from jaxsel.selection import ClassCaps, budget_examples, parse_budget


@struct.dataclass
class EnvParams:
    proxy: Proxy
    sizes: jax.Array  # (K,) int32 examples per cluster
    features: jax.Array  # (K, F) static per-cluster features
    budget: jax.Array  # () int32 example budget
    reward_scale: float = struct.field(pytree_node=False, default=100.0)
    max_steps: int = struct.field(pytree_node=False, default=1)  # most picks an episode can take
    quota: int = struct.field(pytree_node=False, default=0)  # rows per pick; 0: whole clusters
    cluster_class: jax.Array | None = None  # (K,) int32 class of each cluster; all 0 without class caps
    class_caps: jax.Array | None = None  # (G,) int32 examples allowed per class; (budget,) without caps
    balanced: bool = struct.field(pytree_node=False, default=False)  # class caps on: observe each class's room


class EnvState(NamedTuple):
    taken: jax.Array  # (K,) int32 rows taken per cluster
    order: jax.Array  # (max_steps,) int32 picks in order, -1 padded
    chosen: jax.Array  # () int32 examples taken (never above the budget)
    step: jax.Array  # () int32
    pstate: object  # the proxy's incremental state
    score: jax.Array  # () float32 the proxy's objective now (Proxy.value: accuracy or log-likelihood)


def scored_similarity(proxy: Proxy, assignment: np.ndarray, k: int) -> np.ndarray:
    """(K, 2) float32: how much of what the proxy scores each cluster stands for. Every scored row
    (validation, plus the pool's rows with ``score_on = "validation+train"``) goes to the cluster
    whose mean proxy feature is nearest (Euclidean, in the proxy's projected space); per cluster:
    its share of the scored rows times K (1 on average), and the log density ratio
    log((scored rows + 1) / (M x cluster size / N + 1)): above 0 where the scored rows are denser
    than the pool (the importance weight of data selection by distribution matching, e.g. DSIR:
    Xie et al., "Data Selection for Language Models via Importance Resampling", NeurIPS 2023).
    ``assignment`` (N,): the clustering the proxy was made with. Raises :class:`JaxselError` for a
    proxy without features (a knn proxy lends its ``ridge``)."""
    ridge = proxy.ridge if proxy.kind == "knn" else proxy
    if ridge.kind != "ridge":
        raise JaxselError(f"the scored-row similarity needs the ridge or knn proxy, not {proxy.kind!r}")
    xf, xv = np.asarray(ridge.xf, np.float64)[:, :-1], np.asarray(ridge.xv, np.float64)[:, :-1]  # no bias
    assignment = np.asarray(assignment)
    if assignment.shape != (len(xf),):
        raise JaxselError(f"assignment must have shape ({len(xf)},), got {assignment.shape}")
    sizes = np.bincount(assignment, minlength=k).astype(np.float64)
    means = np.zeros((k, xf.shape[1]))
    np.add.at(means, assignment, xf)
    means /= np.maximum(sizes, 1)[:, None]
    d2 = (xv ** 2).sum(1)[:, None] - 2 * xv @ means.T + (means ** 2).sum(1)[None]
    d2[:, sizes == 0] = np.inf
    counts = np.bincount(d2.argmin(1), minlength=k).astype(np.float64)
    m = len(xv)
    return np.stack([counts / m * k, np.log((counts + 1) / (m * sizes / sizes.sum() + 1))], 1).astype(np.float32)


def cluster_features(clustering, labels: np.ndarray, num_classes: int, budget: int, dims: int = 8,
                     *extra: np.ndarray) -> np.ndarray:
    """(K, 2 + C + dims [+ extra columns]) float32: log size, size / budget, label histogram, PCA of
    the centroids [, each (K, f) array of ``extra``: the ``agreement`` of
    :func:`jaxsel.label_issues.cluster_agreement`, :func:`scored_similarity`]."""
    k = clustering.k
    sizes = np.asarray(clustering.sizes, np.float32)
    hist = np.zeros((k, num_classes), np.float32)
    np.add.at(hist, (clustering.assignment, np.asarray(labels)), 1.0)
    hist /= np.maximum(hist.sum(1, keepdims=True), 1)
    c = clustering.centroids - clustering.centroids.mean(0)
    dims = min(dims, c.shape[1], k)
    _, _, vt = np.linalg.svd(c, full_matrices=False)
    proj = c @ vt[:dims].T
    proj /= np.maximum(proj.std(0, keepdims=True), 1e-6)
    return np.concatenate([np.log1p(sizes)[:, None] / np.log1p(sizes.max()), (sizes / budget)[:, None], hist, proj,
                           *(np.asarray(e, np.float32).reshape(k, -1) for e in extra)], 1).astype(np.float32)


def checked_parts(call: str, proxy: Proxy, clustering, train_labels, *more: tuple) -> np.ndarray:
    """``train_labels`` (N,) as int64 class ids, checked with the proxy and clustering they go with
    for ``call`` (its signature, which the errors name); ``more``: further (value, type, name) to
    check. Raises JaxselError for an argument of the wrong type, or a clustering or labels other
    than the proxy was made with."""
    for value, kind, what in ((proxy, Proxy, "proxy"), (clustering, Clustering, "clustering"), *more):
        if not isinstance(value, kind):
            raise JaxselError(f"{call} takes a {kind.__name__} as {what}, got {type(value).__name__}")
    proxy.check_clustering(clustering)
    labels = check_labels(train_labels, "train_labels", len(clustering.assignment), proxy.num_classes)
    proxy.check_made_with(labels, "train_labels", call.split("(")[0])
    return labels


def make_env(proxy: Proxy, clustering, train_labels, budget: float, *, reward_scale: float = 100.0,
             feature_dims: int = 8, quota: int = 0, agreement: bool = False, similarity: bool = False,
             caps: ClassCaps | None = None) -> tuple["SelectionEnv", EnvParams]:
    """The environment and its params for selecting ``budget`` (a fraction in (0, 1)) of the train
    set, a pick adding a whole cluster (``quota`` 0) or its next ``quota`` rows. ``agreement``:
    the clusters' static features (``params.features``) also hold each cluster's label agreement
    with the ridge proxy's leave-one-cluster-out predictions (share agreeing, mean probability of
    the given labels), a cue for mislabelled clusters; needs the ridge proxy. ``similarity``: they
    also hold each cluster's share of the rows the proxy scores (:func:`scored_similarity`).
    ``caps``: per-class example caps (:func:`jaxsel.selection.balance_caps`); the observation
    then also holds each cluster's class room as a share of the budget. Raises JaxselError for a
    clustering or labels other than the proxy was made with (a cluster id would name other rows in
    the environment than in the proxy), a budget outside (0, 1) (one rounding to no example takes
    one, one rounding to all rows takes them all: :func:`jaxsel.agents.select` warns of the first and
    refuses the second for every method but ``full``), a quota or ``feature_dims`` that is
    not a whole number (>= 0, >= 1) or a ``reward_scale`` that is not a finite number > 0."""
    labels = checked_parts("make_env(proxy, clustering, train_labels, budget)", proxy, clustering, train_labels)
    for name, value, low in (("quota", quota, 0), ("feature_dims", feature_dims, 1)):
        if not is_int(value) or value < low:
            raise JaxselError(f"make_env {name} must be a whole number >= {low}, got {value!r}")
    if isinstance(reward_scale, bool) or not isinstance(reward_scale, (int, float, np.number)) \
            or not 0 < reward_scale < float("inf"):
        raise JaxselError(f"make_env reward_scale must be a finite number > 0, got {reward_scale!r}")
    budget = parse_budget(budget)  # "1/16" as SelectConfig takes it
    n = int(np.sum(clustering.sizes))
    examples = budget_examples(budget, n)  # select refuses one rounding to all rows for every method but full
    extra = []
    if agreement:
        from jaxsel import label_issues
        probs = label_issues.out_of_cluster_probs(proxy, clustering.assignment)
        extra.append(label_issues.cluster_agreement(labels, probs, clustering.assignment, clustering.k))
    if similarity:
        extra.append(scored_similarity(proxy, clustering.assignment, clustering.k))
    feats = cluster_features(clustering, labels, proxy.num_classes, examples, feature_dims, *extra)
    k = clustering.k
    groups = (np.zeros(k, np.int32), np.array([examples], np.int32)) if caps is None else \
        (caps.cluster_class.astype(np.int32), caps.caps.astype(np.int32))
    # class caps: one pick per class may stop short at its cap, so an episode can hold G - 1 more picks
    # and a take as many partly taken chunks as there are classes
    sub = proxy.with_quota(quota).with_partial_cap(examples).with_partials(len(groups[1]))
    params = EnvParams(sub, jnp.asarray(clustering.sizes, jnp.int32), jnp.asarray(feats), jnp.int32(examples),
                       reward_scale, max_picks(np.asarray(clustering.sizes), examples, quota) + len(groups[1]) - 1,
                       quota, jnp.asarray(groups[0]), jnp.asarray(groups[1]), caps is not None)
    return SelectionEnv(), params


def shard_envs(tree, num_envs: int):
    """Inside jit: the environments' axis (leading, ``num_envs``) of every leaf sharded over all
    devices (of all processes, with jax.distributed) when it divides evenly; else unchanged. PPO
    and DQN call it on their vmapped environment states each step."""
    n = jax.device_count()
    if n == 1 or num_envs % n:
        return tree
    sharding = NamedSharding(mesh(), P("batch"))
    return jax.tree.map(lambda a: jax.lax.with_sharding_constraint(a, sharding)
                        if a.ndim and a.shape[0] == num_envs else a, tree)


class SelectionEnv:
    """gymnax-style: ``reset(key, params)``, ``step(key, state, action, params)``; pure, jit/vmap freely.
    Stateless: every instance equals every other (one cache entry for the compiled agents,
    :func:`jaxsel.agents.programs`); a subclass that holds state must define both methods anew."""

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) or NotImplemented

    def __hash__(self) -> int:
        return hash(type(self))

    def observation_shape(self, params: EnvParams) -> tuple[int, int]:
        """(K, 3), or (K, 4) with class caps: the state of each cluster. Its static features,
        ``params.features`` (K, F), are the same in every state: agents' networks take them
        beside the observation (:func:`jaxsel.agents.networks.apply`), so trajectories and
        replay buffers hold only what changes."""
        return params.sizes.shape[0], 3 + params.balanced

    def num_actions(self, params: EnvParams) -> int:
        """K: one action per cluster."""
        return params.sizes.shape[0]

    def observe(self, taken: jax.Array, chosen: jax.Array, step: jax.Array, params: EnvParams) -> jax.Array:
        """(K, 3 [+ 1]) observation of the state fields it depends on (what a replay buffer
        keeps): share of the cluster taken (0 or 1 with whole clusters), budget used, picks / max
        [, with class caps: the cluster's class room / budget]."""
        k = params.sizes.shape[0]
        used = jnp.full((k, 1), chosen / params.budget, jnp.float32)
        steps = jnp.full((k, 1), step / params.max_steps, jnp.float32)
        share = (taken / params.sizes).astype(jnp.float32)[:, None]
        room = [(self.room(taken, params) / params.budget).astype(jnp.float32)[:, None]] if params.balanced else []
        return jnp.concatenate([share, used, steps, *room], 1)

    def observation(self, state: EnvState, params: EnvParams) -> jax.Array:
        """(K, 3 [+ 1]): see :meth:`observe`."""
        return self.observe(state.taken, state.chosen, state.step, params)

    def room(self, taken: jax.Array, params: EnvParams) -> jax.Array:
        """(K,) int32 rows a pick of each cluster may add under the budget and its class's cap
        (without caps: the budget left), given the rows taken (K,)."""
        used = jnp.zeros_like(params.class_caps).at[params.cluster_class].add(taken)
        return (params.class_caps - used)[params.cluster_class]

    def valid(self, taken: jax.Array, params: EnvParams) -> jax.Array:
        """(K,) bool: the clusters that may be picked (not exhausted, their class not full) given
        the rows taken."""
        return (taken < params.sizes) & (self.room(taken, params) > 0)

    def action_mask(self, state: EnvState, params: EnvParams) -> jax.Array:
        """(K,) bool: the clusters that may be picked in ``state``."""
        return self.valid(state.taken, params)

    def initial_state(self, params: EnvParams) -> EnvState:
        """The empty subset: nothing taken, the proxy's empty state and its score."""
        k = params.sizes.shape[0]
        empty = params.proxy.init()
        return EnvState(jnp.zeros(k, jnp.int32), jnp.full(params.max_steps, -1, jnp.int32), jnp.int32(0),
                        jnp.int32(0), empty, params.proxy.value(params.proxy.score_state(empty)))

    def reset(self, key: jax.Array, params: EnvParams) -> tuple[jax.Array, EnvState]:
        """(observation (K, 3 [+ 1]): see :meth:`observe`, state) of :meth:`initial_state`; ``key`` is unused
        (the start is fixed)."""
        state = self.initial_state(params)
        return self.observation(state, params), state

    def step_env(self, state: EnvState, action: jax.Array, params: EnvParams) -> tuple[EnvState, jax.Array, jax.Array]:
        """One transition without auto-reset: (new state, reward (), done () bool). ``action``: a cluster :meth:`action_mask` allows; one
        it masks takes no rows, one outside [0, K) is clipped into it (indexing would clamp some
        reads and drop the write: state, score and reward of different clusters)."""
        action = jnp.clip(jnp.asarray(action, jnp.int32), 0, params.sizes.shape[0] - 1)  # int64 under JAX_ENABLE_X64
        start = state.taken[action]
        count = jnp.minimum(params.sizes[action] - start, self.room(state.taken, params)[action])
        if params.quota:
            count = jnp.minimum(count, params.quota)
        pstate = params.proxy.add(state.pstate, action, count, start)
        score = params.proxy.value(params.proxy.score_state(pstate))
        chosen = state.chosen + count
        taken = state.taken.at[action].add(count)
        order = state.order.at[jnp.minimum(state.step, params.max_steps - 1)].set(action)
        new = EnvState(taken, order, chosen, state.step + 1, pstate, score)
        done = (chosen >= params.budget) | ~self.valid(taken, params).any()
        reward = (score - state.score) * params.reward_scale
        return new, reward, done

    def step(self, key: jax.Array, state: EnvState, action: jax.Array,
             params: EnvParams) -> tuple[jax.Array, EnvState, jax.Array, jax.Array, dict]:
        """(observation, state, reward, done, info): a transition, then reset if the episode ended. ``info`` has the finished episode's
        take, order and score (valid where ``done``). ``action`` as in :meth:`step_env`: under jit nothing
        can refuse one the mask forbids (it takes no rows) or one outside [0, K) (clipped into it)."""
        new, reward, done = self.step_env(state, action, params)
        info = {"final_take": new.taken, "final_order": new.order, "final_score": new.score, "chosen": new.chosen}
        reset = self.initial_state(params)
        state = jax.tree.map(lambda r, n: jnp.where(done, r, n), reset, new)
        return self.observation(state, params), state, reward, done, info
