"""Permutation-equivariant networks over clusters (Deep Sets), shared by the PPO actor-critic
and the DQN Q-network: one score per cluster plus a pooled value.

An observation is the clusters' state (N, K, D) (share taken, budget used, picks made [, class
room]: :meth:`jaxsel.agents.env.SelectionEnv.observe`) beside their static features (K, F), the
same for every sample. Two ways to join them (Deep Sets, Zaheer et al. 2017, with early or late
fusion):

- ``"early"`` (the agents' default until 2026-12-05): per-cluster embedding h_k of [state_k,
  features_k] (two layers) -> context = [mean h, mean of chosen h] (2H) -> per-cluster output from
  [h_k, context] and a value from the context. Every sample runs the encoder and the head's first
  layer on all K clusters: ~2 K (2 H^2 + (D + F) H) matmul FLOPs forward, ~4.6 M at K = 256,
  H = 64, D + F = 16.
- ``"late"`` (PPOConfig's and DQNConfig's default): the embedding h_k of the features alone (and
  its term of the head's first layer), computed once per call for all samples; the state enters
  the head: output from [h_k, context, state_k], value from [context, mean state]. ~2 K H (D + 2)
  matmul FLOPs per sample, ~0.16 M (XLA's count with the elementwise work: ~20 K H); measured
  forward 4.2x faster at 64 samples, PPO 3-6x the env steps/s, held-out choices within noise of
  early's (bench/README.md, "Late fusion" and "Late fusion as the agents' default").

Either network may also learn one preference per cluster (``init(..., clusters=K)``): a (K,) logit
added to the outputs, as a gradient bandit's action preferences (Sutton & Barto, "Reinforcement
Learning: An Introduction", 2nd ed., 2018, section 2.8). It breaks the permutation equivariance on
purpose: within one run the clusters are fixed, and a preference learns what their features do not
show. :func:`preference_rate` gives it its own learning rate.

Parameters are a plain dict of arrays (their keys say which network) so agents stay pure functions.
"""

from __future__ import annotations

import functools

import chex
import jax
import jax.numpy as jnp
import optax

from jaxsel.config import NETWORKS
from jaxsel.errors import JaxselError


def orthogonal(keys: jax.Array, shapes: list[tuple[int, int]], scales: list[float]) -> list[jax.Array]:
    """Uniformly (Haar) distributed float32 matrices, one (n_in, n_out) per entry of ``shapes``, with
    orthonormal columns (or rows, when n_in < n_out), times their ``scales``; ``keys`` (len(shapes),
    2) holds one PRNG key per matrix. Each is Q of the QR of a (max, min) Gaussian draw with R's
    diagonal made positive (Mezzadri 2007, as ``jax.nn.initializers.orthogonal`` in jax 0.10),
    computed by Gram-Schmidt with reorthogonalisation instead of LAPACK. Why: vmapped over keys
    (several agents trained at once), the initialisations become independent batched QRs, and
    jaxlib's CPU LAPACK kernels split a batch over the same thread pool they run on and block until
    it is done; two of them running together can wedge a 2-thread pool (a 2-core machine) for good.

    All matrices share one Gaussian draw and one Gram-Schmidt loop, each zero-padded to the largest
    (rows, columns): compiled one by one, six layers' draws and loops took XLA:CPU ~2.3 s, ~1/3 of an
    agent's compile. The draws are those of ``jax.random.normal(key, (max, min))`` for each key
    (with jax's default partitionable threefry, a flat draw's first n values are the n of a shorter
    one); zero rows leave a column's projections and norm unchanged, and a column only sees the ones
    before it, so each matrix's block is its own Gram-Schmidt."""
    dims = [(max(shape), min(shape)) for shape in shapes]
    rows, cols = max(t for t, _ in dims), max(s for _, s in dims)
    flat = jax.vmap(lambda k: jax.random.normal(k, (rows * cols,), jnp.float32))(keys)
    z = jnp.stack([jnp.pad(flat[i, :t * s].reshape(t, s), ((0, rows - t), (0, cols - s)))
                   for i, (t, s) in enumerate(dims)])
    dot = functools.partial(jnp.dot, precision=jax.lax.Precision.HIGHEST)

    def gram_schmidt(a: jax.Array) -> jax.Array:  # a: (rows, cols), one zero-padded draw
        def column(j, q):
            v, earlier = a[:, j], (jnp.arange(cols) < j).astype(jnp.float32)
            for _ in range(2):  # "twice is enough": orthogonal to float32 precision
                v = v - dot(q, dot(q.T, v) * earlier)
            return q.at[:, j].set(v / jnp.maximum(jnp.linalg.norm(v), 1e-30))  # padding columns: 0, not NaN

        return jax.lax.fori_loop(0, cols, column, jnp.zeros((rows, cols), jnp.float32))

    q = jax.vmap(gram_schmidt)(z)
    return [scale * (q[i, :t, :s] if n_in >= n_out else q[i, :t, :s].T)
            for i, ((t, s), (n_in, n_out), scale) in enumerate(zip(dims, shapes, scales))]


def init(key: jax.Array, state: int, features: int, hidden: int = 64, network: str = "late",
         clusters: int = 0) -> dict:
    """Parameters for observations of ``state`` columns per cluster beside ``features`` static
    ones, ``hidden`` units, the ``network`` of :data:`NETWORKS` (JaxselError for another); with
    ``clusters`` > 0, also a zero preference per cluster ("preference", (clusters,))."""
    if network not in NETWORKS:
        raise JaxselError(f"unknown network {network!r} (choose from {', '.join(NETWORKS)})")
    net = _init(key, state, features, hidden, network)
    return dict(net, preference=jnp.zeros(clusters, jnp.float32)) if clusters > 0 else net


def preference_rate(factor: float) -> optax.GradientTransformation:
    """Scales the update of the "preference" parameters by ``factor`` (the rest unchanged): put
    after Adam, whose steps do not depend on the gradient's scale, it gives the preferences a
    learning rate ``factor`` times the network's. A dense layer's output moves by ~lr x its
    fan-in per step, a lone (K,) logit by ~lr: a preference at the network's own rate barely moves
    within a run."""
    def scale(updates, params=None):
        return dict(updates, preference=updates["preference"] * factor) if "preference" in updates else updates
    return optax.stateless(scale)


def optimizer_extras(rate: float) -> tuple[optax.GradientTransformation, ...]:
    """What an agent chains after Adam for a preference learning-rate factor ``rate`` (0: nothing,
    so agents without preferences keep their optimizer state's structure)."""
    return (preference_rate(rate),) if rate else ()


def _init(key: jax.Array, state: int, features: int, hidden: int, network: str) -> dict:
    first = ("feat1", features) if network == "late" else ("enc1", state + features)
    second = "feat2" if network == "late" else "enc2"
    late = state if network == "late" else 0  # late fusion: the state joins the head's first layers
    layers = [(*first, hidden, 2 ** 0.5), (second, hidden, hidden, 2 ** 0.5), ("out1", 3 * hidden + late, hidden, 2 ** 0.5),
              ("out2", hidden, 1, 0.01), ("val1", 2 * hidden + late, hidden, 2 ** 0.5), ("val2", hidden, 1, 1.0)]
    weights = orthogonal(jax.random.split(key, len(layers)), [(n_in, n_out) for _, n_in, n_out, _ in layers],
                         [scale for *_, scale in layers])
    # float32 even under x64
    return {name: {"w": w, "b": jnp.zeros(n_out, jnp.float32)} for (name, _, n_out, _), w in zip(layers, weights)}


def _apply(p: dict, x: jax.Array) -> jax.Array:
    return x @ p["w"] + p["b"]


def _late_pre(per: jax.Array, base: jax.Array, state: jax.Array, w_state: jax.Array) -> jax.Array:
    """Late fusion's first head layer before its ReLU, (n, K, H): per_k + base_n + state_nk @ w_state,
    the product written as D broadcast terms so that XLA fuses it with the sums (D is 3 or 4)."""
    return per + base[:, None] + sum(state[..., j, None] * w_state[j] for j in range(state.shape[-1]))


@jax.custom_vjp
def _late_head(per: jax.Array, base: jax.Array, state: jax.Array, w_state: jax.Array, w_out: jax.Array) -> jax.Array:
    """Late fusion's per-cluster outputs before their bias, (n, K): relu(:func:`_late_pre`) @ w_out,
    from the clusters' term ``per`` (K, H) (features and the layer's bias), the samples' context
    term ``base`` (n, H), the state (n, K, D) and the weights of the state (D, H) and of the output
    (H,). Its gradient is written out: the (n, K, H) activations are recomputed once, not stored,
    and each parameter's gradient reads them once, summed over samples by matrix products. Autodiff of the same formula
    made XLA:CPU read them ~9 times per chunk, a reduction over the leading axis of (n, K, H) among
    them, slow once K H passes ~32k (8 x 1,024 x 64: 1.45 ms against 0.03 ms as ones(n) @ (n, K H));
    written out, the gradient at K = 256 costs ~10% less and the forward pass ~30% less
    (bench/README.md, "Late fusion's head")."""
    return jax.nn.relu(_late_pre(per, base, state, w_state)) @ w_out


def _late_head_fwd(per, base, state, w_state, w_out):
    return _late_head(per, base, state, w_state, w_out), (per, base, state, w_state, w_out)


def _late_head_bwd(res, g):
    per, base, state, w_state, w_out = res
    n, k, d = state.shape
    pre = _late_pre(per, base, state, w_state)
    dpre = jnp.where(pre > 0, g[..., None] * w_out, 0.0)  # (n, K, H)
    rows = dpre.reshape(n * k, -1)
    grads = ((jnp.ones(n, g.dtype) @ dpre.reshape(n, -1)).reshape(per.shape), dpre.sum(1), dpre @ w_state.T,
             state.reshape(n * k, d).T @ rows, g.reshape(-1) @ jnp.maximum(pre, 0.0).reshape(n * k, -1))
    return tuple(gr.astype(x.dtype) for gr, x in zip(grads, res))  # float64 states under x64 beside float32 weights


_late_head.defvjp(_late_head_fwd, _late_head_bwd)


def _context(per: jax.Array, share: jax.Array) -> jax.Array:
    """(N, 2H): the clusters' mean embedding and the mean of the taken ones weighted by their
    share taken, from embeddings ``per`` (N, K, H) or (K, H) and shares (N, K)."""
    mean = jnp.broadcast_to(per.mean(-2), (share.shape[0], per.shape[-1]))
    taken = (share @ per if per.ndim == 2 else (per * share[..., None]).sum(1))
    return jnp.concatenate([mean, taken / jnp.maximum(share.sum(1, keepdims=True), 1.0)], 1)


def encode(params: dict, features: jax.Array) -> tuple:
    """What a network computes from its parameters and the static ``features`` (K, F) alone:
    with late fusion the clusters' embeddings h (K, H) and their term of the head's first layer,
    that layer's bias included (K, H); with early fusion nothing, (). :func:`apply` computes it
    when not given; a chunked gradient computes it once for all chunks (:func:`chunked_grad`'s
    ``shared``)."""
    if "feat1" not in params:
        return ()
    chex.assert_rank(features, 2)
    chex.assert_axis_dimension(features, 1, params["feat1"]["w"].shape[0])
    h = jax.nn.relu(_apply(params["feat2"], jax.nn.relu(_apply(params["feat1"], features))))
    return h, h @ params["out1"]["w"][:h.shape[1]] + params["out1"]["b"]


def apply(params: dict, obs: jax.Array, features: jax.Array, encoded: tuple | None = None) -> tuple[jax.Array, jax.Array]:
    """The clusters' state ``obs`` (..., K, D) (share taken in column 0) and static ``features``
    (K, F) -> (per-cluster outputs (..., K), values (...)): one observation (K, D) or a batch
    (N, K, D) or (A, N, K, D); ``encoded``: :func:`encode`'s result, if already computed. The
    early network's dense layers see (samples x K, width) matrices, not a vmapped (K, width) one (late
    fusion's head: :func:`_late_head`): vmapped, each
    weight gradient contracts two axes, which XLA:CPU computes through transposed copies (the
    gradient 1.4x slower at 32 samples x K=256). The outputs include the clusters' preferences
    when the params hold them (:func:`init`'s ``clusters``)."""
    chex.assert_rank(obs, {2, 3, 4})
    chex.assert_rank(features, 2)
    *lead, k, d = obs.shape
    obs = obs.reshape(-1, k, d)
    n = obs.shape[0]
    if "feat1" in params:  # late fusion
        h, per = encode(params, features) if encoded is None else encoded  # (K, H) each
        hidden = h.shape[1]
        ctx = _context(h, obs[..., 0])
        w = params["out1"]["w"]  # rows: [h_k, ctx, state_k]
        out = _late_head(per, ctx @ w[hidden:3 * hidden], obs, w[3 * hidden:], params["out2"]["w"][:, 0]) + \
            params["out2"]["b"]
        value = _apply(params["val2"], jax.nn.relu(_apply(params["val1"], jnp.concatenate([ctx, obs.mean(1)], 1))))
    else:  # early fusion
        x = jnp.concatenate([obs, jnp.broadcast_to(features, (n, k, features.shape[1]))], 2).reshape(n * k, -1)
        chex.assert_axis_dimension(x, 1, params["enc1"]["w"].shape[0])
        h = jax.nn.relu(_apply(params["enc2"], jax.nn.relu(_apply(params["enc1"], x))))  # (N K, H)
        hidden = h.shape[1]
        ctx = _context(h.reshape(n, k, hidden), obs[..., 0])
        # [h_k, ctx] @ W1 split as h_k @ W1[:H] + ctx @ W1[H:]: the context once per sample, not per cluster
        pre = (h @ params["out1"]["w"][:hidden]).reshape(n, k, hidden) + \
            (ctx @ params["out1"]["w"][hidden:] + params["out1"]["b"])[:, None]
        value = _apply(params["val2"], jax.nn.relu(_apply(params["val1"], ctx)))
        out = _apply(params["out2"], jax.nn.relu(pre.reshape(-1, hidden))).reshape(n, k)
    if "preference" in params:
        out = out + params["preference"]
    return out.reshape(*lead, k), value.reshape(lead)


CHUNK_ROWS = {"early": 8192, "late": 16384}  # observation rows (samples x clusters) per gradient chunk on CPU


def grad_chunk(batch: int, clusters: int, network: str) -> int:
    """Samples per gradient chunk (:func:`chunked_grad`) for a batch of ``batch`` observations of
    ``clusters`` rows each through ``network``: on CPU the largest divisor of ``batch`` with chunk x
    clusters <= ``CHUNK_ROWS[network]``, so each chunk's per-cluster activations stay in cache (the
    early network's gradient at K = 256, 256 samples: 39 ms in chunks of 32 against 66 ms whole,
    2-core CPU; late fusion's head reads its activations fewer times, and its per-chunk launch
    costs weigh more: PPO 9,700 -> 10,800 env steps/s at K = 256 and 3,400 -> 4,400 at 1,024 with
    16,384 rows instead of 8,192, bench/README.md, "Late fusion's head"); the whole batch on
    accelerators, which want the parallelism, and where no divisor comes within 4x of the chunk
    wanted (a prime batch would otherwise run one sample at a time)."""
    want = min(batch, max(1, CHUNK_ROWS[network] // clusters))
    best = max(d for d in range(1, want + 1) if batch % d == 0)
    return batch if jax.default_backend() != "cpu" or 4 * best < want else best


def chunked_grad(loss, params, data, chunk: int, shared=None):
    """The gradient of ``loss(params, *data)``, a mean over the leading axis (n) of every array in
    ``data``, as the average of its gradients over the n // chunk equal chunks (one ``lax.scan``):
    the same gradient to float rounding, with a working set of one chunk. ``chunk`` must divide n.
    With ``shared``, a function of the params alone that every chunk needs (:func:`encode`), the
    loss is ``loss(params, shared(params), *data)``: ``shared`` runs once, and its gradient once,
    through its VJP, with the chunks' gradients with respect to its output summed (late fusion at
    K = 4,096 has chunks of 2 samples, each of which re-encoded all 4,096 clusters)."""
    if shared is None:
        return _chunked(lambda p, _, *d: loss(p, *d), params, (), data, chunk)[0]
    value, vjp = jax.vjp(shared, params)
    direct, through = _chunked(loss, params, value, data, chunk)
    return jax.tree.map(jnp.add, direct, vjp(through)[0])


def _chunked(loss, params, value, data, chunk: int):
    """Gradients of the mean ``loss(params, value, *data)`` over ``data``'s chunks, with respect to
    ``params`` and ``value``."""
    n = jax.tree.leaves(data)[0].shape[0]
    grad = jax.grad(loss, argnums=(0, 1))
    if chunk >= n:
        return grad(params, value, *data)
    parts = jax.tree.map(lambda x: x.reshape(n // chunk, chunk, *x.shape[1:]), data)

    def add(total, part):
        return jax.tree.map(jnp.add, total, grad(params, value, *part)), None

    total, _ = jax.lax.scan(add, jax.tree.map(jnp.zeros_like, (params, value)), parts)
    return jax.tree.map(lambda g: g / (n // chunk), total)


def masked(logits: jax.Array, valid: jax.Array) -> jax.Array:
    """Logits with invalid actions pushed to a large negative value."""
    return jnp.where(valid, logits, -1e9)
