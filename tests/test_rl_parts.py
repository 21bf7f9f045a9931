"""Unit tests of the RL building blocks: the Deep Sets networks, best-episode tracking, DQN's
replay buffer, and PPO's action masking."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxsel import cluster, proxy
from jaxsel.agents import dqn, episodes, networks, ppo
from jaxsel.agents.env import make_env
from jaxsel.errors import JaxselError


def network_inputs(seed: int, lead=(), k: int = 7, state: int = 3, features: int = 4):
    rng = np.random.default_rng(seed)
    obs = rng.standard_normal((*lead, k, state)).astype(np.float32)
    obs[..., 0] = rng.random((*lead, k)) < 0.4  # share taken
    return obs, rng.standard_normal((k, features)).astype(np.float32)


def network_reference(params: dict, obs: np.ndarray, feats: np.ndarray):
    """Either network on one observation (K, D), written out in float64 numpy, cluster by cluster."""
    p = {name: {k: np.asarray(v, np.float64) for k, v in layer.items()} for name, layer in params.items()}
    relu = lambda a: np.maximum(a, 0.0)  # noqa: E731
    dense = lambda name, x: x @ p[name]["w"] + p[name]["b"]  # noqa: E731
    late = "feat1" in p
    h = np.stack([relu(dense("feat2" if late else "enc2", relu(dense("feat1" if late else "enc1",
                  f if late else np.concatenate([o, f]))))) for o, f in zip(obs, feats)])
    share = obs[:, 0]
    ctx = np.concatenate([h.mean(0), (h * share[:, None]).sum(0) / max(share.sum(), 1.0)])
    if late:
        out = np.array([dense("out2", relu(dense("out1", np.concatenate([h[i], ctx, obs[i]])))) for i in range(len(h))])
        value = dense("val2", relu(dense("val1", np.concatenate([ctx, obs.mean(0)]))))
    else:
        out = np.array([dense("out2", relu(dense("out1", np.concatenate([h[i], ctx])))) for i in range(len(h))])
        value = dense("val2", relu(dense("val1", ctx)))
    return out[:, 0], float(value[0])


@pytest.mark.parametrize("network", networks.NETWORKS)
def test_network_equals_its_written_out_reference(network):
    """Each network's outputs and value, batched (N, K, D) or (A, N, K, D), equal a float64 numpy
    reference computing them one cluster at a time from the formulas in the module docstring."""
    params = networks.init(jax.random.PRNGKey(0), 3, 4, hidden=8, network=network)
    biases = jax.random.split(jax.random.PRNGKey(5), len(params))  # init's zero biases would hide a misplaced one
    params = {name: dict(layer, b=0.3 * jax.random.normal(key, layer["b"].shape))
              for (name, layer), key in zip(params.items(), biases)}
    obs, feats = network_inputs(1, (2, 3))
    out, value = networks.apply(params, jnp.asarray(obs), jnp.asarray(feats))
    assert out.shape == (2, 3, 7) and value.shape == (2, 3)
    for i in np.ndindex(2, 3):
        want_out, want_value = network_reference(params, obs[i], feats)
        np.testing.assert_allclose(out[i], want_out, rtol=1e-5, atol=1e-6)
        assert float(value[i]) == pytest.approx(want_value, rel=1e-5, abs=1e-6)
        one, v = networks.apply(params, jnp.asarray(obs[i]), jnp.asarray(feats))
        np.testing.assert_allclose(one, out[i], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("network", networks.NETWORKS)
def test_network_is_permutation_equivariant_over_clusters(network):
    params = networks.init(jax.random.PRNGKey(0), 3, 4, hidden=8, network=network)
    obs, feats = network_inputs(0)
    perm = np.random.default_rng(1).permutation(7)
    out, value = networks.apply(params, jnp.asarray(obs), jnp.asarray(feats))
    out_p, value_p = networks.apply(params, jnp.asarray(obs[perm]), jnp.asarray(feats[perm]))
    np.testing.assert_allclose(out_p, np.asarray(out)[perm], rtol=1e-5, atol=1e-6)
    assert float(value_p) == pytest.approx(float(value), rel=1e-5, abs=1e-6)
    obs2 = obs.copy()
    obs2[0, 0] = 1 - obs2[0, 0]  # what is taken changes every cluster's output through the context
    assert not np.allclose(networks.apply(params, jnp.asarray(obs2), jnp.asarray(feats))[0][1:], np.asarray(out)[1:])
    masked = networks.masked(out, jnp.arange(7) % 2 == 0)
    assert int(jnp.argmax(masked)) % 2 == 0 and float(masked[1]) < -1e8


def test_network_refuses_features_of_another_width_and_unknown_names():
    params = networks.init(jax.random.PRNGKey(0), 3, 4, hidden=8, network="late")
    obs, feats = network_inputs(0, features=5)
    with pytest.raises(AssertionError):
        networks.apply(params, jnp.asarray(obs), jnp.asarray(feats))
    for bad in ("mid", "LATE"):  # was: the early network's parameters, silently
        with pytest.raises(JaxselError, match=f"unknown network '{bad}'"):
            networks.init(jax.random.PRNGKey(0), 3, 4, network=bad)


@pytest.mark.parametrize("network", networks.NETWORKS)
def test_preferences_add_one_logit_per_cluster_at_their_own_rate(network):
    """With ``clusters``, a network holds one zero preference per cluster, added to its outputs
    (the value unchanged); ``preference_rate`` scales the preferences' Adam updates by its factor
    and leaves the other updates alone; factor 0 adds nothing to the optimizer."""
    import optax
    plain = networks.init(jax.random.PRNGKey(0), 3, 4, hidden=8, network=network)
    params = networks.init(jax.random.PRNGKey(0), 3, 4, hidden=8, network=network, clusters=7)
    np.testing.assert_array_equal(params.pop("preference"), np.zeros(7))
    pref = jnp.asarray(np.random.default_rng(2).standard_normal(7), jnp.float32)
    obs, feats = network_inputs(3, (2, 3))
    out, value = networks.apply(plain, jnp.asarray(obs), jnp.asarray(feats))
    out_p, value_p = networks.apply(dict(params, preference=pref), jnp.asarray(obs), jnp.asarray(feats))
    np.testing.assert_allclose(out_p, np.asarray(out) + np.asarray(pref), rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(value_p, value)
    params["preference"] = pref
    grads = jax.tree.map(lambda a: jnp.full_like(a, 0.3), params)
    adam, fast = optax.adam(1e-2), optax.chain(optax.adam(1e-2), networks.preference_rate(5.0))
    want, _ = adam.update(grads, adam.init(params), params)
    got, _ = fast.update(grads, fast.init(params), params)
    for name in params:
        scale = 5.0 if name == "preference" else 1.0
        for a, b in zip(jax.tree.leaves(got[name]), jax.tree.leaves(want[name])):
            np.testing.assert_allclose(a, scale * np.asarray(b), rtol=1e-6)
    assert networks.optimizer_extras(0.0) == ()
    with pytest.raises(JaxselError, match="ppo preference_rate must be in"):
        ppo.PPOConfig(preference_rate=-1.0)


def test_select_config_builds_agent_configs_from_dicts():
    """A dict of PPOConfig / DQNConfig fields, as a config file spells them, becomes the config (it was
    accepted as a dict and failed inside select with an AttributeError); a bad key or value, or
    another type, is one JaxselError."""
    from jaxsel.agents import SelectConfig
    assert SelectConfig(method="ppo", ppo={"network": "late", "num_envs": 8}).ppo == ppo.PPOConfig(network="late",
                                                                                                  num_envs=8)
    assert SelectConfig(method="dqn", dqn={"network": "late"}).dqn.network == "late"
    for bad, says in ((dict(ppo={"netwrk": "late"}), r"\[select.ppo\]: unknown key 'netwrk'"),
                      (dict(ppo={"network": "mid"}), r"\[select.ppo\]: unknown network 'mid'"),
                      (dict(dqn=3), "select dqn must be a jaxsel.agents.dqn.DQNConfig or a dict")):
        with pytest.raises(JaxselError, match=says):
            SelectConfig(**bad)


def test_configs_built_in_python_check_their_field_types():
    """Configs made directly (not from a TOML file) check each field's type as the file path does: a
    string where a number goes raised a raw TypeError deep inside, True passed as 1.0; whole numbers
    become floats where a float goes, so a checkpoint made with rate 64 resumes with 64.0."""
    from jaxsel.agents import SelectConfig
    from jaxsel.config import ClusterSpec, DataSpec, FinetuneConfig, ProxyConfig
    for make, says in ((lambda: ppo.PPOConfig(preference_rate="64"), "ppo preference_rate must be a number, got '64'"),
                       (lambda: ppo.PPOConfig(lr="0.1"), "ppo lr must be a number, got '0.1'"),
                       (lambda: dqn.DQNConfig(preference_rate=True), "dqn preference_rate must be a number, got True"),
                       (lambda: dqn.DQNConfig(num_envs=2.0), "dqn num_envs must be an integer, got 2.0"),
                       (lambda: ppo.PPOConfig(preference_rate=1e4), r"preference_rate must be in \[0, 1000\]"),
                       (lambda: ClusterSpec(order="best"), "unknown cluster order 'best'"),
                       (lambda: ProxyConfig(project=-1), r"proxy project must be at least 1 \(0: all"),
                       (lambda: ppo.PPOConfig(lr=10**400), "ppo lr must be a finite number, got an integer of 401 digits"),
                       (lambda: ppo.PPOConfig(ent_coef=-0.5), "ppo ent_coef must be a number >= 0"),
                       (lambda: ProxyConfig(weight_decay=float("nan")), "proxy weight_decay must be a number >= 0"),
                       (lambda: FinetuneConfig(schedule="cos"), "unknown finetune schedule 'cos'"),
                       (lambda: FinetuneConfig(warmup=5.0), r"finetune warmup must be in \[0, 1\]"),
                       (lambda: ClusterSpec(seed=2**64), "cluster seed must be an integer of at most 2,147,483,647"),
                       (lambda: ClusterSpec(seed=-1), "cluster seed must be a seed from 0 to 2147483647, got -1"),
                       (lambda: ProxyConfig(kind="linear", steps=10**11), "proxy steps must be an integer of at most"),
                       (lambda: SelectConfig(ppo={"lr": -1.0}), r"^\[select.ppo\]: lr must be a number > 0"),
                       (lambda: DataSpec(name="a\0b"), "data name must not contain a NUL character")):
        with pytest.raises(JaxselError, match=says):
            make()
    c = ppo.PPOConfig(preference_rate=64, num_envs=np.int64(8))
    assert c == ppo.PPOConfig(preference_rate=64.0, num_envs=8) and type(c.preference_rate) is float
    assert type(c.num_envs) is int and ProxyConfig(project=0).project is None  # 0: all dimensions, as --project 0
    assert ClusterSpec(stratified=np.bool_(True)).stratified is True


def test_orthogonal_init_is_the_qr_of_its_gaussian_draws():
    """Each matrix of one call (drawn together, zero-padded to the largest) is Q of the QR of its
    own key's (max, min) Gaussian draw."""
    shapes, scales = [(8, 5), (5, 8), (64, 64), (192, 64), (64, 1), (1, 3)], [1.5, 1.0, 2 ** 0.5, 0.01, 1.5, 1.0]
    keys = jax.random.split(jax.random.PRNGKey(7), len(shapes))
    for key, shape, scale, w in zip(keys, shapes, scales, networks.orthogonal(keys, shapes, scales)):
        w = np.asarray(w)
        z = np.asarray(jax.random.normal(key, (max(shape), min(shape)), jnp.float32), np.float64)
        q, r = np.linalg.qr(z)  # Mezzadri's recipe in float64: Q with R's diagonal made positive
        q = scale * q * np.sign(np.diag(r))
        assert w.shape == shape
        np.testing.assert_allclose(w, q if shape[0] >= shape[1] else q.T, atol=1e-5 * scale)
        gram = w.T @ w if shape[0] >= shape[1] else w @ w.T
        np.testing.assert_allclose(gram, scale ** 2 * np.eye(min(shape)), atol=1e-5 * scale ** 2)


def test_vmapped_network_init_has_no_lapack_call():
    # Batched LAPACK QRs running side by side deadlock jaxlib's 2-thread CPU pool (seen: a vmapped
    # PPO on 2 cores hung for good); the initialiser must lower to plain XLA ops.
    init = jax.vmap(lambda k: (networks.init(k, 3, 10, 16, "early"), networks.init(k, 3, 10, 16, "late")))
    assert "custom_call" not in jax.jit(init).lower(jax.random.split(jax.random.PRNGKey(0), 4)).as_text()


def test_chunked_gradient_equals_the_whole_batch_gradient():
    """The network's gradient of a mean loss over 24 samples, summed in chunks of 8 (or 24: one
    chunk), equals jax.grad over the whole batch; chunks divide the batch and hold <= 8,192 rows."""
    obs, feats = network_inputs(1, (24,), k=30)
    w = jax.random.normal(jax.random.PRNGKey(2), (24, 30))
    for network in networks.NETWORKS:
        params = networks.init(jax.random.PRNGKey(0), 3, 4, 16, network)

        def loss(p, o, ww):
            out, v = networks.apply(p, o, jnp.asarray(feats))
            return ((out * ww).sum(1) + v ** 2).mean()

        want = jax.grad(loss)(params, obs, w)
        for chunk in (8, 24):
            got = jax.jit(networks.chunked_grad, static_argnums=(0, 3))(loss, params, (obs, w), chunk)
            jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), got, want)
            # the features' encoding once for all chunks, its gradient through one VJP
            shared = jax.jit(networks.chunked_grad, static_argnums=(0, 3, 4))(
                lambda p, enc, o, ww: ((networks.apply(p, o, jnp.asarray(feats), enc)[0] * ww).sum(1)
                                       + networks.apply(p, o, jnp.asarray(feats), enc)[1] ** 2).mean(),
                params, (obs, w), chunk, lambda p: networks.encode(p, jnp.asarray(feats)))
            jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), shared, want)
    chunk = networks.grad_chunk
    assert chunk(256, 256, "early") == 32 and chunk(256, 100, "early") == 64 and chunk(256, 100, "late") == 128
    assert chunk(96, 4096, "early") == 2 and chunk(96, 4096, "late") == 4 and chunk(7, 10_000, "late") == 1
    assert chunk(10, 10, "early") == 10 and chunk(256, 256, "late") == 64
    assert chunk(257, 256, "early") == 257  # no divisor near 32: the whole batch, not 257 chunks of 1


def test_late_head_gradient_is_autodiff_of_its_formula():
    """Late fusion's head has a written-out gradient (networks._late_head): it must equal jax's
    autodiff of the plain formula relu(per + base + state @ w_state) @ w_out, every argument's
    cotangent, some pre-activations negative; and finite differences."""
    keys = jax.random.split(jax.random.PRNGKey(3), 6)
    n, k, d, h = 4, 7, 3, 5
    args = (jax.random.normal(keys[0], (k, h)), jax.random.normal(keys[1], (n, h)),
            jax.random.uniform(keys[2], (n, k, d)), jax.random.normal(keys[3], (d, h)),
            jax.random.normal(keys[4], (h,)))
    g = jax.random.normal(keys[5], (n, k))

    def plain(per, base, state, w_state, w_out):
        return jax.nn.relu(per + base[:, None] + state @ w_state) @ w_out

    out, vjp = jax.vjp(networks._late_head, *args)
    want_out, want_vjp = jax.vjp(plain, *args)
    np.testing.assert_allclose(out, want_out, rtol=1e-5, atol=1e-6)
    pre = np.asarray(args[0] + args[1][:, None] + args[2] @ args[3])
    assert (pre < 0).mean() > 0.2 and (pre > 0).mean() > 0.2  # both sides of the ReLU exercised
    for got, want in zip(vjp(g), want_vjp(g)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    from jax.test_util import check_grads
    check_grads(networks._late_head, args, order=1, modes=["rev"], atol=1e-2, rtol=1e-2)
    with jax.enable_x64(True):  # float64 states beside float32 weights: each cotangent in its input's dtype
        wide = (args[0], args[1].astype(jnp.float64), args[2].astype(jnp.float64), args[3], args[4])
        got = jax.vjp(networks._late_head, *wide)[1](g.astype(jnp.float64))
        assert [x.dtype for x in got] == [x.dtype for x in wide]
        for a, b in zip(got, want_vjp(g)):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_track_best_keeps_the_best_finished_episode():
    k, steps = 4, 3
    params = type("P", (), {"sizes": jnp.ones(k, jnp.int32), "max_steps": steps})()
    best = episodes.empty_best(params)
    info = {"final_score": jnp.array([0.5, 0.9, 0.7]), "final_take": jnp.arange(12, dtype=jnp.int32).reshape(3, 4),
            "final_order": jnp.arange(9, dtype=jnp.int32).reshape(3, 3)}
    best = episodes.track_best(best, jnp.array([True, False, True]), info)  # env 1 (0.9) is not finished
    assert float(best.score) == pytest.approx(0.7) and best.take.tolist() == [8, 9, 10, 11]
    assert best.order.tolist() == [6, 7, 8]
    worse = dict(info, final_score=jnp.array([0.6, 0.1, 0.2]))
    assert float(episodes.track_best(best, jnp.ones(3, bool), worse).score) == pytest.approx(0.7)
    assert float(episodes.track_best(best, jnp.zeros(3, bool), info).score) == pytest.approx(0.7)


def test_replay_buffer_is_a_ring_of_the_last_transitions():
    k, size, e = 3, 5, 3
    item = dqn.Transition(jnp.zeros(k, jnp.int32), *(jnp.int32(0),) * 3, jnp.float32(0), jnp.bool_(False),
                          jnp.zeros(k, jnp.int32), jnp.int32(0), jnp.int32(0))
    b = dqn.buffer_init(item, size)
    ref = []  # every transition ever added, as its action id
    for t in range(4):
        ids = np.arange(t * e, (t + 1) * e)
        batch = jax.tree.map(lambda x: jnp.broadcast_to(x, (e, *x.shape)), item)._replace(
            action=jnp.asarray(ids, jnp.int32), taken=jnp.asarray(np.repeat(ids[:, None], k, 1), jnp.int32))
        b = dqn.buffer_add(b, batch)
        ref += list(ids)
        want = np.full(size, 0)
        for i, a in enumerate(ref):  # a slow ring buffer
            want[i % size] = a
        np.testing.assert_array_equal(b.data.action, want)
        np.testing.assert_array_equal(b.data.taken[:, 0], want)
        assert int(dqn.buffer_filled(b)) == min(len(ref), size) and bool(b.full) == (len(ref) >= size)
    sample = dqn.buffer_sample(dqn.buffer_add(dqn.buffer_init(item, 16), batch), jax.random.PRNGKey(0), 64)
    assert set(np.asarray(sample.action).tolist()) == set(np.asarray(batch.action).tolist())  # written rows only


def test_ppo_rollouts_take_only_valid_actions():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((200, 8)).astype(np.float32)
    y = (x[:, 0] > 0).astype(int)
    cl = cluster.kmeans(x, 10, seed=0)
    env, params = make_env(proxy.make(x, y, cl, x[:40], y[:40]), cl, y, 0.3, quota=6)
    cfg = ppo.PPOConfig(num_envs=4, num_steps=24, total_timesteps=96)
    fns = ppo.make_chunks(cfg, env)
    runner = fns.init(jax.random.PRNGKey(1), params)
    step = jax.jit(lambda carry: jax.lax.scan(lambda c, _: fns.env_step(params, c, _), carry, None, cfg.num_steps))
    _, traj = step(fns.rollout_start(runner))
    valid = np.asarray(traj.valid)  # (T, E, K)
    action = np.asarray(traj.action)
    assert valid[np.arange(valid.shape[0])[:, None], np.arange(valid.shape[1])[None], action].all()
    assert (~valid).any()  # the mask did exclude something: exhausted clusters
    assert np.isfinite(np.asarray(traj.log_prob)).all() and np.asarray(traj.done).any()


def test_history_keeps_a_slots_mean_through_updates_that_finish_no_episode():
    h = episodes.empty_history()
    n = 3 * episodes.HISTORY  # three updates per slot
    h = episodes.record_mean(h, jnp.int32(3), n, jnp.float32(1.5), jnp.int32(2))  # slot 1: 0.75
    h = episodes.record_mean(h, jnp.int32(4), n, jnp.float32(0.0), jnp.int32(0))  # slot 1, no episode: kept
    h = episodes.record_mean(h, jnp.int32(6), n, jnp.float32(0.0), jnp.int32(0))  # slot 2, no episode: still NaN
    h = np.asarray(h)
    assert h[1] == 0.75 and np.isnan(h[0]) and np.isnan(h[2]) and np.isnan(h[3:]).all()
    h = np.asarray(episodes.record_mean(jnp.asarray(h), jnp.int32(5), n, jnp.float32(0.9), jnp.int32(1)))
    assert np.isclose(h[1], 0.9)  # the slot's last update that finished episodes


@pytest.mark.parametrize("every", [1, 3])
def test_dqn_takes_a_gradient_step_every_train_every_updates_after_learning_starts(every):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((200, 8)).astype(np.float32)
    y = (x[:, 0] > 0).astype(int)
    cl = cluster.kmeans(x, 10, seed=0)
    env, params = make_env(proxy.make(x, y, cl, x[:40], y[:40]), cl, y, 0.3, quota=6)
    cfg = dqn.DQNConfig(num_envs=4, total_timesteps=4 * 40, learning_starts=50, batch_size=16, train_every=every)
    fns = dqn.make_chunks(cfg, env)
    runner = fns.update(fns.init(jax.random.PRNGKey(0), params), cfg.num_updates, params)
    # update u adds 4 transitions: the buffer holds 4 (u + 1) when it decides whether to learn
    expected = sum(1 for u in range(cfg.num_updates) if 4 * (u + 1) >= cfg.learning_starts and u % every == 0)
    assert int(optax.tree_utils.tree_get(runner.opt_state, "count")) == expected == cfg.learning_updates
    for steps, starts, every, size in ((4000, 500, 1000, 20_000), (400, 500, 1, 20_000), (4000, 500, 1, 100),
                                       (4000, 0, 7, 20_000), (4000, 3, 1, 20_000)):  # against the count it stands for
        c = dqn.DQNConfig(num_envs=32, total_timesteps=steps, learning_starts=starts, train_every=every, buffer_size=size)
        assert c.learning_updates == sum(1 for u in range(c.num_updates) if min(32 * (u + 1), size) >= starts
                                         and u % every == 0), (steps, starts, every, size)


def test_dqn_exploration_falls_linearly_then_stays():
    """eps_fraction 0 explored at random for the whole run: optax holds a schedule of no steps at its start."""
    c = dqn.DQNConfig(num_envs=1, total_timesteps=100, eps_start=1.0, eps_end=0.05, eps_fraction=0.5)
    eps = dqn.exploration(c)
    np.testing.assert_allclose([float(eps(u)) for u in (0, 25, 50, 99)], [1.0, 1.0 - 0.95 / 2, 0.05, 0.05], rtol=1e-6)
    never = dqn.exploration(dqn.DQNConfig(num_envs=1, total_timesteps=100, eps_end=0.05, eps_fraction=0.0))
    assert [float(never(u)) for u in (0, 1, 99)] == [pytest.approx(0.05)] * 3
