import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from jaxsel import cluster, proxy, selection
from jaxsel.env import make_env
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


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_episode_invariants(setup, seed):
    env, params, p, cl = setup
    step = jax.jit(env.step)
    rng = np.random.default_rng(seed)
    obs, state = env.reset(jax.random.PRNGKey(0), params)
    total, picked, chosen = 0.0, [], 0
    for t in range(K):
        valid = np.asarray(env.action_mask(state))
        assert valid.sum() == K - t
        action = int(rng.choice(np.flatnonzero(valid)))
        assert action not in picked
        picked.append(action)
        assert chosen < int(params.budget)  # the episode never continues past the budget
        obs, state, reward, done, info = step(jax.random.PRNGKey(t), state, action, params)
        total += float(reward)
        chosen = min(chosen + int(cl.sizes[action]), int(params.budget))  # the last pick only fills the budget
        assert int(info["chosen"]) == chosen
        if done:
            break
    assert bool(done) and chosen == int(params.budget)
    mask = np.zeros(K, bool)
    mask[picked] = True
    np.testing.assert_array_equal(np.asarray(info["final_mask"]), mask)
    assert [int(a) for a in np.asarray(info["final_order"]) if a >= 0] == picked
    # the return is the score of the exported rows (last cluster trimmed), scored from those rows
    exported = selection.indices_for(cl, picked, int(params.budget))
    assert len(exported) == int(params.budget)
    want = float(p.score_rows(exported).accuracy) - float(p.score(jnp.zeros(K, bool)).accuracy)
    assert total == pytest.approx(want, abs=1e-5)
    assert float(info["final_score"]) == pytest.approx(float(p.score_rows(exported).accuracy), abs=1e-5)
    assert not np.asarray(state.mask).any() and int(state.step) == 0  # auto-reset


def test_vmapped_rollout_in_scan(setup):
    env, params, p, cl = setup
    keys = jax.random.split(jax.random.PRNGKey(0), 8)
    obs, states = jax.vmap(env.reset, in_axes=(0, None))(keys, params)
    assert obs.shape == (8, K, params.features.shape[1] + 3)

    def body(carry, key):
        states, ret = carry
        valid = jax.vmap(env.action_mask)(states)
        action = jax.random.categorical(key, jnp.where(valid, 0.0, -1e9))
        _, states, r, done, info = jax.vmap(env.step, in_axes=(0, 0, 0, None))(jax.random.split(key, 8), states, action, params)
        return (states, ret + r), (done, info["final_score"])

    (_, ret), (done, final) = jax.jit(lambda s: jax.lax.scan(body, (s, jnp.zeros(8)), jax.random.split(keys[0], 40)))(states)
    assert np.asarray(done).sum() > 8  # episodes finished and restarted


def test_bad_budget(setup):
    env, params, p, cl = setup
    with pytest.raises(JaxselError, match="budget"):
        make_env(p, cl, np.zeros(1500, int), 1.0)
