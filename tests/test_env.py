import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from jaxsel import cluster, proxy, selection
from jaxsel.agents.env import make_env
from jaxsel.errors import JaxselError

K = 24


@pytest.fixture(scope="module")
def setup():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1500, 8)).astype(np.float32)
    y = (x[:, 0] > 0).astype(int)
    xv = rng.standard_normal((200, 8)).astype(np.float32)
    cl = cluster.kmeans(x, K, seed=0)
    p = proxy.make(x, y, cl, xv, (xv[:, 0] > 0).astype(int))
    env, params = make_env(p, cl, y, 0.2, reward_scale=1.0)
    return env, params, p, cl


@pytest.fixture(scope="module")
def quota_setup(setup):
    env, params, p, cl = setup
    return (*make_env(p, cl, np.asarray(p.yf), 0.2, reward_scale=1.0, quota=7), p, cl)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), granularity=st.sampled_from(["cluster", "quota"]))
def test_episode_invariants(setup, quota_setup, seed, granularity):
    """Random valid picks: the budget is exact, the take follows the budget rule, and the return
    is the score of the exported rows, computed from those rows."""
    env, params, p, cl = setup if granularity == "cluster" else quota_setup
    quota, sizes = params.quota, np.asarray(cl.sizes)
    step = jax.jit(env.step)
    rng = np.random.default_rng(seed)
    obs, state = env.reset(jax.random.PRNGKey(0), params)
    total, picked, take = 0.0, [], np.zeros(K, np.int32)
    for t in range(params.max_steps):
        valid = np.asarray(env.action_mask(state, params))
        np.testing.assert_array_equal(valid, take < sizes)
        action = int(rng.choice(np.flatnonzero(valid)))
        picked.append(action)
        assert take.sum() < int(params.budget)  # the episode never continues past the budget
        obs, state, reward, done, info = step(jax.random.PRNGKey(t), state, action, params)
        total += float(reward)
        take = selection.take_for(picked, sizes, int(params.budget), quota)
        assert int(info["chosen"]) == take.sum()
        if done:
            break
    assert bool(done) and take.sum() == int(params.budget)
    if quota == 0:
        assert len(set(picked)) == len(picked)
    np.testing.assert_array_equal(np.asarray(info["final_take"]), take)
    assert [int(a) for a in np.asarray(info["final_order"]) if a >= 0] == picked
    # the return is the score of the exported rows (last pick trimmed), scored from those rows
    exported = selection.indices_for(cl, picked, int(params.budget), quota)
    assert len(exported) == len(np.unique(exported)) == int(params.budget)
    want = float(p.score_rows(exported).accuracy) - float(p.score(jnp.zeros(K, bool)).accuracy)
    assert total == pytest.approx(want, abs=1e-5)
    assert float(info["final_score"]) == pytest.approx(float(p.score_rows(exported).accuracy), abs=1e-5)
    assert not np.asarray(state.taken).any() and int(state.step) == 0  # auto-reset


def test_quota_chunk_statistics_equal_a_fit_on_their_rows(setup):
    """Every take of whole quota chunks (and one partial chunk) scores as a ridge fit on its rows."""
    env, params, p, cl = setup
    q = p.with_quota(7).with_partial_cap(7)
    rng = np.random.default_rng(1)
    sizes = np.asarray(cl.sizes)
    for _ in range(20):
        take = np.minimum((rng.integers(0, 6, K) * 7), sizes).astype(np.int32)
        j = rng.integers(K)
        take[j] = min(sizes[j], take[j] + rng.integers(1, 7)) if take[j] < sizes[j] else take[j]
        rows = selection.rows_for(cl, take)
        got, want = q.score(jnp.asarray(take)), p.score_rows(rows)
        assert float(got.loglik) == pytest.approx(float(want.loglik), abs=1e-4)
        assert float(got.accuracy) == pytest.approx(float(want.accuracy), abs=1e-5)
    assert p.with_quota(0) is p and q.with_quota(0).quota == 0
    with pytest.raises(JaxselError, match="at most one chunk of 7 rows in part"):
        q.score_batch(np.array([[3, 3] + [0] * (K - 2)]))


def test_vmapped_rollout_in_scan(setup):
    env, params, p, cl = setup
    keys = jax.random.split(jax.random.PRNGKey(0), 8)
    obs, states = jax.vmap(env.reset, in_axes=(0, None))(keys, params)
    assert obs.shape == (8, K, 3)  # the clusters' state; their static features stay in params

    def body(carry, key):
        states, ret = carry
        valid = jax.vmap(env.action_mask, in_axes=(0, None))(states, params)
        action = jax.random.categorical(key, jnp.where(valid, 0.0, -1e9))
        _, states, r, done, info = jax.vmap(env.step, in_axes=(0, 0, 0, None))(jax.random.split(key, 8), states, action, params)
        return (states, ret + r), (done, info["final_score"])

    (_, ret), (done, final) = jax.jit(lambda s: jax.lax.scan(body, (s, jnp.zeros(8)), jax.random.split(keys[0], 40)))(states)
    assert np.asarray(done).sum() > 8  # episodes finished and restarted


def test_bad_budget(setup):
    env, params, p, cl = setup
    with pytest.raises(JaxselError, match="budget"):
        make_env(p, cl, np.asarray(p.yf), 1.0)


def test_an_action_out_of_range_is_the_nearest_cluster_everywhere(setup):
    """Action K + 4 had left ``taken`` unchanged (the write dropped) while the score, reward and
    count came from cluster K - 1 (the reads clamped): the state no longer matched its score."""
    env, params, p, cl = setup
    _, state = env.reset(jax.random.key(0), params)
    _, out, r_out, _, _ = env.step(jax.random.key(0), state, K + 4, params)
    _, last, r_last, _, _ = env.step(jax.random.key(0), state, K - 1, params)
    assert int(out.taken[K - 1]) == int(cl.sizes[K - 1]) and int(out.chosen) == int(out.taken.sum())
    assert float(out.score) == float(last.score) == float(p.score(np.asarray(out.taken)).accuracy)
    assert float(r_out) == float(r_last)


@pytest.mark.parametrize("quota", [0, 4])
def test_a_used_up_cluster_picked_again_changes_nothing(quota):
    """A masked pick "takes no rows": the ridge state had added the cluster's last chunk again
    (X^T X doubled, log-likelihood reward -18.1 for no rows; a new user's round). The state, score
    and budget stay, the reward is 0, and the return is still score(taken) - score(empty)."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((400, 6)).astype(np.float32)
    y = (x[:, 0] + 0.5 * rng.standard_normal(400) > 0).astype(int)
    cl = cluster.kmeans(x, 12, seed=0)
    p = proxy.make(x, y, cl, x[:80], y[:80], proxy.ProxyConfig(objective="loglik"))
    env, params = make_env(p, cl, y, 0.5, reward_scale=1.0, quota=quota)
    small = int(np.argmin(np.asarray(cl.sizes)))
    state = env.reset(jax.random.key(0), params)[1]
    total = 0.0
    while int(state.taken[small]) < int(cl.sizes[small]):
        state, r, _ = env.step_env(state, small, params)
        total += float(r)
    for _ in range(2):
        again, r, _ = env.step_env(state, small, params)
        assert float(r) == 0.0 and int(again.chosen) == int(state.chosen)
        for a, b in zip(jax.tree.leaves(again.pstate), jax.tree.leaves(state.pstate)):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        state = again
    empty = float(p.value(p.score_state(p.init())))
    assert total == pytest.approx(float(p.value(p.score(np.asarray(state.taken)))) - empty, abs=1e-5)


def test_agreement_features_are_the_label_agreement_of_each_cluster(setup):
    from jaxsel import label_issues
    env, params, p, cl = setup
    y = np.asarray(p.yf)  # the train labels the proxy was made with
    env2, params2 = make_env(p, cl, y, 0.2, reward_scale=1.0, agreement=True)
    want = label_issues.cluster_agreement(y, label_issues.out_of_cluster_probs(p, cl.assignment), cl.assignment, K)
    base = np.asarray(make_env(p, cl, y, 0.2, reward_scale=1.0)[1].features)
    np.testing.assert_array_equal(np.asarray(params2.features), np.concatenate([base, want], 1))
    assert params2.features.shape[1] == params.features.shape[1] + 2
    obs, _ = env2.reset(jax.random.PRNGKey(0), params2)
    assert obs.shape == env2.observation_shape(params2)


def test_similarity_features_count_the_scored_rows_nearest_each_cluster(setup):
    """Against a loop over the scored rows: nearest cluster mean in the proxy's features."""
    from jaxsel.agents.env import scored_similarity
    env, params, p, cl = setup
    y = np.asarray(p.yf)
    xf, xv = np.asarray(p.xf)[:, :-1], np.asarray(p.xv)[:, :-1]
    means = np.stack([xf[cl.assignment == j].mean(0) for j in range(K)])
    counts = np.zeros(K)
    for row in xv:
        counts[np.argmin([np.sum((row - m) ** 2) for m in means])] += 1
    sizes = np.bincount(cl.assignment, minlength=K)
    want = np.stack([counts / len(xv) * K, np.log((counts + 1) / (len(xv) * sizes / sizes.sum() + 1))], 1)
    got = scored_similarity(p, cl.assignment, K)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert got[:, 0].sum() == pytest.approx(K)
    env2, params2 = make_env(p, cl, y, 0.2, reward_scale=1.0, similarity=True, agreement=True)
    base = np.asarray(make_env(p, cl, y, 0.2, reward_scale=1.0, agreement=True)[1].features)
    np.testing.assert_array_equal(np.asarray(params2.features), np.concatenate([base, got], 1))
    with pytest.raises(JaxselError, match="assignment"):
        scored_similarity(p, cl.assignment[:10], K)
