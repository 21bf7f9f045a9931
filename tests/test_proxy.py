import json
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxsel import cluster, proxy
from jaxsel.errors import JaxselError

N, D, C, K, S = 1200, 24, 3, 30, 8


@pytest.fixture(scope="module")
def problem():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((N, D)).astype(np.float32)
    y = (x[:, 0] + 0.3 * rng.standard_normal(N) > 0).astype(int) + (x[:, 1] > 1)
    xv = rng.standard_normal((300, D)).astype(np.float32)
    yv = (xv[:, 0] > 0).astype(int) + (xv[:, 1] > 1)
    return x, y, cluster.kmeans(x, K, table_size=S), xv, yv


def masks(k=K, n=6, seed=1):
    rng = np.random.default_rng(seed)
    out = np.zeros((n, k), bool)
    for i in range(n):
        out[i, rng.choice(k, i + 1, replace=False)] = True
    return out


def ridge_reference(x, y, xv, cfg, mean, proj):
    """From-scratch float64 ridge on the given rows."""
    f = lambda a: np.concatenate([(a - mean) @ proj, np.ones((len(a), 1))], 1).astype(np.float64)
    xf, yo = f(x), np.eye(C)[y]
    w = np.linalg.solve(xf.T @ xf + cfg.lam * np.eye(xf.shape[1]), xf.T @ yo)
    return cfg.temperature * f(xv) @ w


@pytest.mark.parametrize("project,projection", [(None, "pca"), (8, "pca"), (8, "random")])
def test_ridge_equals_fit_on_union(problem, project, projection):
    x, y, cl, xv, yv = problem
    cfg = proxy.ProxyConfig(kind="ridge", project=project, projection=projection, lam=0.5)
    p = proxy.make(x, y, cl, xv, yv, cfg)
    mean, proj = proxy.projector(x, cfg)
    for m in masks():
        rows = np.isin(cl.assignment, np.flatnonzero(m))
        want = ridge_reference(x[rows], y[rows], xv, cfg, mean, proj)
        w = proxy.fit_ridge(p, m)
        got = np.asarray(p.xv) @ w * cfg.temperature
        np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)
        s = p.score(jnp.asarray(m))
        assert float(s.accuracy) == pytest.approx((want.argmax(1) == yv).mean(), abs=1e-6)
        logp = want - np.log(np.exp(want).sum(1, keepdims=True))
        assert float(s.loglik) == pytest.approx(logp[np.arange(len(yv)), yv].mean(), abs=1e-4)


def test_wide_ridge_packs_lower_blocks_and_equals_fit_on_union():
    """Above ``SEQUENTIAL_SOLVE`` features the statistics are stored as their lower blocks (150
    dimensions + bias: 3 blocks of 51 rows, one padded feature): pack/unpack keep the lower
    blocks exactly and leave the upper ones zero, and the whole-cluster, batched, partial and
    incremental scores, the weights, and the leave-one-cluster-out probabilities all equal
    float64 from-scratch fits."""
    from jaxsel import label_issues
    from jaxsel.proxy import ridge
    from jaxsel.selection import rows_for
    rng = np.random.default_rng(4)
    d, k = 150, 12
    x = rng.standard_normal((900, d)).astype(np.float32)
    y = (x[:, 0] > 0).astype(int) + (x[:, 1] > 1)
    xv = rng.standard_normal((200, d)).astype(np.float32)
    yv = (xv[:, 0] > 0).astype(int) + (xv[:, 1] > 1)
    cl = cluster.kmeans(x, k)
    cfg = proxy.ProxyConfig(kind="ridge", project=None, lam=0.5)
    p = proxy.make(x, y, cl, xv, yv, cfg)
    assert ridge.blocks(d + 1) == (3, 51) and p.xtx.shape == (k, 6 * 51 * 51)
    a = rng.standard_normal((d + 1, d + 1))
    a = a + a.T
    full = np.asarray(ridge.unpack(ridge.pack(jnp.asarray(a)), d + 1))
    low = np.kron(np.tril(np.ones((3, 3))), np.ones((51, 51)))[:d + 1, :d + 1].astype(bool)
    np.testing.assert_allclose(full[:d + 1, :d + 1][low], a[low], rtol=1e-6)
    assert not full[:d + 1, :d + 1][~low].any() and not full[d + 1:].any()
    mean, proj = proxy.projector(x, cfg)
    ms = masks(k, 4, 2)
    batch = p.score_batch(ms)
    for i, m in enumerate(ms):
        rows = np.isin(cl.assignment, np.flatnonzero(m))
        want = ridge_reference(x[rows], y[rows], xv, cfg, mean, proj)
        np.testing.assert_allclose(np.asarray(p.xv) @ proxy.fit_ridge(p, m) * cfg.temperature, want, atol=1e-3)
        acc = (want.argmax(1) == yv).mean()
        assert float(p.score(jnp.asarray(m)).accuracy) == pytest.approx(acc, abs=1e-6)
        assert float(batch.accuracy[i]) == pytest.approx(acc, abs=1e-6)
    take = (ms[1] * cl.sizes).astype(np.int32)
    take[np.flatnonzero(~ms[1])[0]] = 5
    rows = rows_for(cl, take)
    acc = (ridge_reference(x[rows], y[rows], xv, cfg, mean, proj).argmax(1) == yv).mean()
    assert float(p.score(jnp.asarray(take)).accuracy) == pytest.approx(acc, abs=1e-6)
    state = p.init()
    for c in np.flatnonzero(take):
        state = jax.jit(p.add)(state, c, take[c])
    assert float(p.score_state(state).accuracy) == pytest.approx(acc, abs=1e-6)
    probs = label_issues.out_of_cluster_probs(p, cl.assignment)
    for c in (0, 5):
        rows = cl.assignment != c
        want = ridge_reference(x[rows], y[rows], x[~rows], cfg, mean, proj)
        want = np.exp(want - want.max(1, keepdims=True))
        np.testing.assert_allclose(probs[~rows], want / want.sum(1, keepdims=True), atol=1e-4)


@pytest.mark.parametrize("kind", ["ridge", "linear", "mlp"])
def test_incremental_jit_and_vmap_agree(problem, kind):
    x, y, cl, xv, yv = problem
    p = proxy.make(x, y, cl, xv, yv, proxy.ProxyConfig(kind=kind, max_clusters=8, steps=10))
    ms = masks()
    batch = p.score_batch(ms)
    score = jax.jit(lambda p, m: p.score(m))
    add, score_state = jax.jit(lambda p, s, c: p.add(s, c)), jax.jit(lambda p, s: p.score_state(s))
    for i, m in enumerate(ms):
        one = score(p, m)
        state = p.init()
        for c in np.flatnonzero(m):
            state = add(p, state, c)
        inc = score_state(p, state)
        for a in (one, inc):
            assert float(a.accuracy) == pytest.approx(float(batch.accuracy[i]), abs=1e-5)
            assert float(a.loglik) == pytest.approx(float(batch.loglik[i]), abs=1e-4)


@pytest.mark.parametrize("kind", ["linear", "mlp"])
def test_trained_kinds_vmapped_batch_equals_one_after_another(problem, kind):
    """The vmapped training loops accelerators use ("vmap") give the scores of the sequential
    path CPUs use by default ("map")."""
    x, y, cl, xv, yv = problem
    ms = masks()
    got = {mode: proxy.make(x, y, cl, xv, yv, proxy.ProxyConfig(kind=kind, max_clusters=8, steps=10, batch_mode=mode))
           .score_batch(ms) for mode in ("vmap", "map")}
    chunked = proxy.make(x, y, cl, xv, yv, proxy.ProxyConfig(kind=kind, max_clusters=8, steps=10, batch_mode="vmap",
                                                             batch_chunk=3)).score_batch(ms)  # two chunks of 3
    for other in (got["map"], chunked):
        np.testing.assert_allclose(got["vmap"].accuracy, other.accuracy, atol=1e-6)
        np.testing.assert_allclose(got["vmap"].loglik, other.loglik, atol=1e-4)
    assert len(set(np.round(np.asarray(got["map"].loglik), 5))) > 1  # distinct subsets, distinct scores


@pytest.mark.parametrize("kind", ["ridge", "linear", "mlp"])
def test_empty_subset_is_chance(problem, kind):
    x, y, cl, xv, yv = problem
    p = proxy.make(x, y, cl, xv, yv, proxy.ProxyConfig(kind=kind, steps=2))
    s = p.score(jnp.zeros(K, bool))
    assert float(s.accuracy) == pytest.approx(1 / C) and float(s.loglik) == pytest.approx(-np.log(C))
    assert float(p.score_state(p.init()).accuracy) == pytest.approx(1 / C)


def reference_training(apply, params, x, y, cfg):
    """A plain Python loop of the same optimiser on the unpadded rows."""
    opt = optax.adamw(cfg.lr, weight_decay=cfg.weight_decay)
    state = opt.init(params)
    loss = lambda p: optax.softmax_cross_entropy_with_integer_labels(apply(p, x), y).mean()
    for _ in range(cfg.steps):
        g = jax.grad(loss)(params)
        upd, state = opt.update(g, state, params)
        params = optax.apply_updates(params, upd)
    return params


def gathered_rows(cl, m):
    rows = cl.table[np.flatnonzero(m)].ravel()
    return rows[rows >= 0]


@pytest.mark.parametrize("classes", [2, 3, proxy.base.UNROLL_CLASSES + 4])
def test_row_scores_equal_a_numpy_reference_with_ties(classes):
    """Tie-aware accuracy credit (1 / size of the argmax set when the label is in it) and the
    label's log-softmax, class by class (few classes) and by reductions (many), against numpy; their
    means from class-major logits too."""
    from scipy.special import log_softmax
    rng = np.random.default_rng(classes)
    logits = rng.integers(-2, 3, (500, classes)).astype(np.float32)  # small integers: many ties
    y = rng.integers(0, classes, 500)
    top = logits == logits.max(1, keepdims=True)
    want_credit = top[np.arange(500), y] / top.sum(1)
    want_loglik = log_softmax(logits.astype(np.float64), 1)[np.arange(500), y]
    got = proxy.base.row_scores(jnp.asarray(logits), jnp.asarray(y))
    np.testing.assert_allclose(np.asarray(got.accuracy), want_credit, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(got.loglik), want_loglik, rtol=1e-5, atol=1e-6)
    assert 0 < (want_credit % 1).mean()  # the draw holds partial credits
    means = proxy.base.scores_from_class_logits(jnp.asarray(logits.T), jnp.asarray(y))  # class-major (the ridge's)
    np.testing.assert_allclose([means.accuracy, means.loglik], [want_credit.mean(), want_loglik.mean()], rtol=1e-5)


@pytest.mark.parametrize("kind", ["linear", "mlp"])
def test_trained_head_equals_training_on_gathered_subset(problem, kind):
    x, y, cl, xv, yv = problem
    cfg = proxy.ProxyConfig(kind=kind, steps=15, max_clusters=8)
    p = proxy.make(x, y, cl, xv, yv, cfg)
    mean, proj = proxy.projector(x, cfg)
    for m in masks()[[0, 3, 5]]:
        rows = gathered_rows(cl, m)
        params = reference_training(proxy.head_logits, p.params0, jnp.asarray(proxy.features(x[rows], mean, proj)),
                                    jnp.asarray(y[rows]), cfg)
        want = np.asarray(proxy.head_logits(params, p.xv))
        got = proxy.scores_from_logits(jnp.asarray(want), jnp.asarray(yv))
        s = p.score(jnp.asarray(m))
        assert float(s.accuracy) == pytest.approx(float(got.accuracy), abs=1e-6)
        assert float(s.loglik) == pytest.approx(float(got.loglik), abs=1e-4)


def test_transformer_equals_training_on_gathered_subset(problem):
    from jaxsel.proxy import transformer as tp
    x, y, cl, xv, yv = problem
    rng = np.random.default_rng(0)
    tok = rng.integers(1, 500, (N, 10))
    tok[:, 7:] = 0
    tokv = rng.integers(1, 500, (len(xv), 10))
    cfg = proxy.ProxyConfig(kind="transformer", tiny=True, steps=3, max_clusters=4, lr=1e-2)
    p = proxy.make(x, y, cl, xv, yv, cfg, train_tokens=tok, val_tokens=tokv)
    m = masks()[2]
    rows = gathered_rows(cl, m)
    apply = lambda prm, t: tp.apply(cfg, p.params0["frozen"], prm, t)
    params = reference_training(apply, p.params0["train"], jnp.asarray(tok[rows]), jnp.asarray(y[rows]), cfg)
    want = proxy.scores_from_logits(apply(params, jnp.asarray(tokv)), jnp.asarray(yv))
    got = p.score_batch(np.stack([m, m]))
    np.testing.assert_allclose(np.asarray(got.accuracy), float(want.accuracy), atol=1e-6)
    np.testing.assert_allclose(np.asarray(got.loglik), float(want.loglik), atol=1e-4)


def test_reward_is_score_difference(problem):
    x, y, cl, xv, yv = problem
    p = proxy.make(x, y, cl, xv, yv)
    m = jnp.asarray(masks()[2])
    r = p.reward(m, 0 if not m[0] else 1)
    c = 0 if not m[0] else 1
    assert float(r) == pytest.approx(float(p.score(m.at[c].set(True)).accuracy - p.score(m).accuracy))


def test_validation_subsample_is_stratified_and_seeded():
    y = np.repeat([0, 1, 2], [600, 300, 100])
    a = proxy.stratified_subsample(y, 100, seed=0)
    assert np.bincount(y[a]).tolist() == [60, 30, 10]
    assert np.array_equal(a, proxy.stratified_subsample(y, 100, seed=0))
    assert len(proxy.stratified_subsample(y, None, 0)) == 1000


@pytest.mark.parametrize("size", [400, 100, 30, 27, 26, 20])
def test_stratified_subsample_has_exactly_the_size_asked(size):
    """26 classes of 14-43 rows: the rounded shares summed to 398-401 rows for 400; now exactly
    ``size``, every class within a row of its share (one row each while size allows), no row twice."""
    rng = np.random.default_rng(0)
    counts = rng.integers(14, 44, 26)
    y = np.repeat(np.arange(26), counts)
    a = proxy.stratified_subsample(y, size, seed=1)
    got = np.bincount(y[a], minlength=26)
    assert len(a) == len(np.unique(a)) == size
    assert np.all(np.abs(got - counts / counts.sum() * size) < 1 + 1e-9)
    assert (got >= 1).all() if size >= 26 else got.max() == 1


def test_max_picks_matches_brute_force():
    rng = np.random.default_rng(0)
    for _ in range(20):
        sizes = rng.integers(1, 50, 12)
        budget = int(rng.integers(1, sizes.sum()))
        want = 0
        for order in (np.argsort(sizes), rng.permutation(12)):  # smallest-first is the worst case
            total, n = 0, 0
            for s in sizes[order]:
                n += 1
                total += s
                if total >= budget:
                    break
            want = max(want, n)
        assert proxy.max_picks(sizes, budget) == want


def test_reward_cache_counts_hits(problem):
    x, y, cl, xv, yv = problem
    cache = proxy.RewardCache(proxy.make(x, y, cl, xv, yv))
    ms = masks()
    first = cache.scores(ms)
    again = cache.scores(np.concatenate([ms[:3], ms[:3]]))
    assert cache.misses == 6 and cache.hits == 6
    np.testing.assert_array_equal(again, np.concatenate([first[:3], first[:3]]))


def test_bad_input(problem):
    x, y, cl, xv, yv = problem
    p = proxy.make(x, y, cl, xv, yv)
    with pytest.raises(JaxselError, match=r"shape \(B, 30\)"):
        p.score_batch(np.zeros((2, 29), bool))
    with pytest.raises(JaxselError, match="empty subset"):
        proxy.fit_ridge(p, np.zeros(K, bool))
    bad = x.copy()
    bad[3, 2] = np.nan
    with pytest.raises(JaxselError, match="NaN"):
        proxy.make(bad, y, cl, xv, yv)
    with pytest.raises(JaxselError, match="unknown proxy"):
        proxy.make(x, y, cl, xv, yv, proxy.ProxyConfig(kind="svm"))
    lin = proxy.make(x, y, cl, xv, yv, proxy.ProxyConfig(kind="linear", max_clusters=2))
    with pytest.raises(JaxselError, match="max_clusters=2"):
        lin.score_batch(masks()[[4]])
    # rows of every cluster (a random baseline's): all of them trained on, not the first max_clusters
    # clusters' (a review found score_rows dropping the rest silently)
    rows = np.arange(0, N, 3)
    every = proxy.make(x, y, cl, xv, yv, proxy.ProxyConfig(kind="linear"))
    assert len(np.unique(np.asarray(cl.assignment)[rows])) > 2
    np.testing.assert_allclose(float(lin.score_rows(rows).loglik), float(every.score_rows(rows).loglik), atol=1e-6)


def test_labels_that_are_not_class_ids_are_refused(problem):
    """-1 ("unlabelled") used to wrap around to the last class, and strings, fractions, wrong lengths
    and out-of-range ids surfaced as numpy tracebacks (a new user's test): each is one JaxselError,
    from proxy.make and from agents.select; integral floats are class ids."""
    from jaxsel import agents
    from jaxsel.agents import SelectConfig
    x, y, cl, xv, yv = problem
    cases = {"drop unlabelled": np.where(np.arange(N) < 10, -1, y), "integer class ids": y + 0.5,
             "such as": np.array(["a", "b"])[y % 2], "labels for": y[:-1]}
    for match, bad in cases.items():
        with pytest.raises(JaxselError, match=match):
            proxy.make(x, bad, cl, xv, yv)
    with pytest.raises(JaxselError, match="at least 2 classes"):
        proxy.make(x, np.zeros(N, int), cl, xv, np.zeros(len(xv), int))
    np.testing.assert_array_equal(proxy.make(x, y.astype(float), cl, xv, yv).score_batch(masks()).accuracy,
                                  proxy.make(x, y, cl, xv, yv).score_batch(masks()).accuracy)
    p = proxy.make(x, y, cl, xv, yv)
    config = SelectConfig(method="stratified", budget=0.1)
    for match, bad in {"drop unlabelled": np.where(np.arange(N) < 10, -1, y), "labels for": y[:-1],
                       "there are 3 classes": np.where(np.arange(N) < 10, 5, y)}.items():
        with pytest.raises(JaxselError, match=match):
            agents.select(p, cl, bad, config, progress=False)
    sel = agents.select(p, cl, y, config, progress=False)  # a baseline's search score was a bare NaN: not JSON
    assert sel.scores["search_score"] is None and json.loads(json.dumps(sel.scores, allow_nan=False))


SHARDED = textwrap.dedent("""
    import os, sys
    os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"
    os.environ["JAX_PLATFORMS"] = "cpu"  # forced host devices; on a GPU machine too
    import jax, numpy as np
    sys.path.insert(0, "tests")
    from test_proxy import masks, N, D, K
    from jaxsel import cluster, proxy
    assert jax.device_count() == 4
    rng = np.random.default_rng(0)
    x = rng.standard_normal((N, D)).astype(np.float32); y = (x[:, 0] > 0).astype(int)
    xv = rng.standard_normal((200, D)).astype(np.float32); yv = (xv[:, 0] > 0).astype(int)
    cl = cluster.kmeans(x, K, table_size=8)
    ms = masks(n=7)
    for kind in ("ridge", "linear"):
        p = proxy.make(x, y, cl, xv, yv, proxy.ProxyConfig(kind=kind, steps=5))
        sharded = p.score_batch(ms)
        single = [p.score(m) for m in ms]
        np.testing.assert_allclose(np.asarray(sharded.accuracy), [float(s.accuracy) for s in single], atol=1e-6)
        np.testing.assert_allclose(np.asarray(sharded.loglik), [float(s.loglik) for s in single], atol=1e-4)
    print("sharded ok")
""")


def test_sharded_equals_single_device():
    p = subprocess.run([sys.executable, "-c", SHARDED], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "sharded ok" in p.stdout


def test_loglik_objective_drives_rewards_and_the_cache(problem):
    """With ``objective="loglik"`` the env reward, ``Proxy.reward`` and ``RewardCache`` all use the
    mean validation log-likelihood, and the empty subset is -log C."""
    from jaxsel.agents.env import make_env
    x, y, cl, xv, yv = problem
    p = proxy.make(x, y, cl, xv, yv, proxy.ProxyConfig(objective="loglik"))
    mask = np.zeros(cl.k, bool)
    mask[[0, 2]] = True
    full = p.score(jnp.asarray(mask))
    assert float(p.reward(jnp.asarray(mask).at[2].set(False), 2)) == pytest.approx(
        float(full.loglik - p.score(jnp.asarray(mask).at[2].set(False)).loglik), abs=1e-5)
    assert proxy.RewardCache(p).scores(mask[None])[0] == pytest.approx(float(full.loglik), abs=1e-5)
    env, params = make_env(p, cl, y, 0.5, reward_scale=1.0)
    _, s = env.reset(jax.random.PRNGKey(0), params)
    assert float(s.score) == pytest.approx(-np.log(p.num_classes), abs=1e-5)
    _, s, r, _, _ = env.step(jax.random.PRNGKey(0), s, jnp.int32(0), params)
    one = np.zeros(cl.k, bool)
    one[0] = True
    assert float(r) == pytest.approx(float(p.score(jnp.asarray(one)).loglik) + np.log(p.num_classes), abs=1e-4)
    with pytest.raises(JaxselError):
        proxy.make(x, y, cl, xv, yv, proxy.ProxyConfig(objective="f1"))


def test_partial_take_equals_a_fit_on_its_rows(problem):
    """A take with one cluster in part: the whole-subset form, the incremental form and
    ``score_rows`` all score exactly the rows the take exports (ridge: checked against a float64
    from-scratch fit on those rows)."""
    from jaxsel.selection import rows_for
    x, y, cl, xv, yv = problem
    cfg = proxy.ProxyConfig(kind="ridge", lam=0.5)
    p = proxy.make(x, y, cl, xv, yv, cfg)
    mean, proj = proxy.projector(x, cfg)
    big = int(np.argmax(cl.sizes))
    take = np.zeros(K, np.int32)
    take[[3, 7]] = cl.sizes[[3, 7]]
    take[big] = cl.sizes[big] // 3
    rows = rows_for(cl, take)
    assert len(rows) == take.sum()
    want = ridge_reference(x[rows], y[rows], xv, cfg, mean, proj)
    acc = (want.argmax(1) == yv).mean()
    assert float(p.score(jnp.asarray(take)).accuracy) == pytest.approx(acc, abs=1e-6)
    assert float(p.score_rows(rows).accuracy) == pytest.approx(acc, abs=1e-6)
    state = p.init()
    for c, n in ((3, None), (7, None), (big, int(take[big]))):
        state = jax.jit(lambda s, c, n: p.add(s, c, n))(state, c, cl.sizes[c] if n is None else n)
    assert float(p.score_state(state).accuracy) == pytest.approx(acc, abs=1e-6)
    assert float(p.score_batch(take[None]).accuracy[0]) == pytest.approx(acc, abs=1e-6)
    bad = take.copy()
    bad[3] -= 1
    with pytest.raises(JaxselError, match=r"at most one cluster in part \(integer subsets are takes, rows per cluster; a bool mask takes whole clusters\)$"):
        p.score_batch(bad[None])
    ones = (np.arange(cl.k) % 2).astype(int)  # 0/1 ints, e.g. from randint(0, 2): takes of one row (break-it round 51)
    with pytest.raises(JaxselError, match=r"whole clusters; for 0/1 masks pass masks.astype\(bool\)\)$"):
        p.score_batch(ones[None])
    # class caps leave one cluster in part per class: with_partials scores every partial chunk
    rows = rows_for(cl, bad)
    want = (ridge_reference(x[rows], y[rows], xv, cfg, mean, proj).argmax(1) == yv).mean()
    several = p.with_partials(3)
    assert float(several.score(jnp.asarray(bad)).accuracy) == pytest.approx(want, abs=1e-6)
    assert float(several.score_batch(np.stack([bad, take])).accuracy[0]) == pytest.approx(want, abs=1e-6)
    assert float(several.score(jnp.asarray(take)).accuracy) == pytest.approx(acc, abs=1e-6)
    # a trained proxy sees a partial cluster through the head of its index table
    lin = proxy.make(x, y, cl, xv, yv, proxy.ProxyConfig(kind="linear", steps=5))
    small = np.zeros(K, np.int32)
    small[big] = 3
    np.testing.assert_allclose(float(lin.score(jnp.asarray(small)).loglik),
                               float(lin.score_rows(rows_for(cl, small)).loglik), atol=1e-6)


@pytest.mark.parametrize("partial_share", [0.0, 0.05, 0.4, 1.0])
def test_vmapped_partial_chunks_equal_one_by_one(problem, partial_share):
    """Vmapped, the ridge proxy's partial-chunk statistics gather only the entries with rows (in
    groups, as many rounds as needed): whatever share of a batch has rows, every entry equals its
    statistics computed alone, and so do the steps of vmapped environments' ``add``; nested vmaps
    and a count shared by the batch take the plain route with the same result."""
    x, y, cl, xv, yv = problem
    p = proxy.make(x, y, cl, xv, yv, proxy.ProxyConfig(kind="ridge"))
    rng = np.random.default_rng(3)
    n = 37  # groups of 4, the last one padded
    clusters = rng.integers(0, K, n).astype(np.int32)
    offsets = (rng.integers(0, 3, n) * (cl.sizes[clusters] > 5)).astype(np.int32)
    counts = np.where(rng.random(n) < partial_share, rng.integers(1, 5, n), 0).astype(np.int32)
    batched = jax.jit(jax.vmap(p._partial))(clusters, offsets, counts)
    one = jax.jit(p._partial)
    for i in range(n):
        alone = one(clusters[i], offsets[i], counts[i])
        for a, b in zip(batched, alone):
            np.testing.assert_array_equal(np.asarray(a[i]), np.asarray(b))
    nested = jax.jit(jax.vmap(jax.vmap(p._partial, in_axes=(0, 0, None)), in_axes=(None, None, 0)))(
        clusters, offsets, counts[:3])
    for j in range(3):
        for a, b in zip(nested, one(clusters[0], offsets[0], counts[j])):
            np.testing.assert_array_equal(np.asarray(a[j, 0]), np.asarray(b))
    state = p.init()
    added = jax.jit(jax.vmap(lambda c, k, s: p.add(state, c, k, s)))(clusters, counts + (counts == 0) * 999, offsets)
    for i in range(n):
        alone = jax.jit(lambda c, k, s: p.add(state, c, k, s))(clusters[i], counts[i] + (counts[i] == 0) * 999,
                                                               offsets[i])
        for a, b in zip(added, alone):
            np.testing.assert_allclose(np.asarray(a[i]), np.asarray(b), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("dim", [9, 200])
def test_vmapped_ridge_solves_equal_one_by_one(dim):
    """Vmapped, ridge_weights solves large systems one at a time (``ridge.SEQUENTIAL_SOLVE``) and
    small ones as a batch: either way every solution equals the system solved alone, and solves
    (X^T X + lam I) W = X^T Y (float64 numpy); nested vmaps and a lam shared by the batch too."""
    from jaxsel.proxy import ridge
    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, 2 * dim, dim)).astype(np.float32)
    xtx, xty = np.einsum("bni,bnj->bij", x, x), rng.standard_normal((6, dim, 3)).astype(np.float32)
    lam = np.float32(0.5)
    batched = np.asarray(jax.jit(jax.vmap(ridge.ridge_weights, in_axes=(0, 0, None)))(xtx, xty, lam))
    nested = np.asarray(jax.jit(jax.vmap(jax.vmap(ridge.ridge_weights, in_axes=(0, 0, None)), in_axes=(0, 0, None)))(
        xtx.reshape(2, 3, dim, dim), xty.reshape(2, 3, dim, 3), lam)).reshape(batched.shape)
    one = jax.jit(ridge.ridge_weights)
    for i in range(6):
        alone = np.asarray(one(xtx[i], xty[i], lam))
        np.testing.assert_allclose(batched[i], alone, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(nested[i], alone, rtol=1e-5, atol=1e-6)
        exact = np.linalg.solve(xtx[i].astype(np.float64) + lam * np.eye(dim), xty[i].astype(np.float64))
        np.testing.assert_allclose(alone, exact, rtol=1e-3, atol=1e-4)


def test_batches_of_every_size_share_a_few_compiled_scorers(problem):
    """A search scores batches whose size changes every step: sizes are padded to a few shapes
    (powers of two up to the chunk, or up to 8 one after another, then multiples of it), and the
    padding leaves scores unchanged."""
    from jaxsel.proxy.batch import _score_sharded, padded_batch
    assert [padded_batch(b, 64, 1) for b in (1, 2, 3, 5, 64, 65, 130)] == [1, 2, 4, 8, 64, 128, 192]
    assert [padded_batch(b, 64, 1, sequential=True) for b in (1, 3, 8, 9, 17)] == [1, 4, 8, 16, 24]
    assert padded_batch(3, 64, 8) == 8  # and a multiple of the device count
    x, y, cl, xv, yv = problem
    p = proxy.make(x, y, cl, xv, yv, proxy.ProxyConfig(batch_chunk=16))
    ms = np.random.default_rng(3).random((40, K)) < 0.3
    one = np.array([float(p.score(jnp.asarray(m)).accuracy) for m in ms])
    before = _score_sharded._cache_size()
    for b in range(9, 17):  # eight sizes, one padded shape
        np.testing.assert_allclose(np.asarray(p.score_batch(ms[:b]).accuracy), one[:b], atol=1e-6)
    assert _score_sharded._cache_size() - before == 1
    np.testing.assert_allclose(np.asarray(p.score_batch(ms).accuracy), one, atol=1e-6)  # 40 -> 48: three chunks
    from jaxsel.proxy.ridge import CPU_CHUNK
    assert p.batch_chunk == 16 and proxy.make(x, y, cl, xv, yv).batch_chunk == CPU_CHUNK == 64  # CPU: at most 64
    many = np.random.default_rng(4).random((150, K)) < 0.3  # 150 -> 192: three chunks of 64
    np.testing.assert_allclose(np.asarray(proxy.make(x, y, cl, xv, yv).score_batch(many).accuracy),
                               np.asarray(p.score_batch(many).accuracy), atol=1e-6)


def test_ridge_pick_scores_equal_scoring_each_candidate(problem):
    """Ridge's greedy step (the take's statistics once plus each pick's rows) gives the scores of
    each candidate take scored from scratch: whole clusters, quota chunks, and trimmed last picks
    (a partial chunk); a pick that does not start at a chunk boundary goes the general way."""
    from jaxsel.proxy.base import Proxy, with_picks
    x, y, cl, xv, yv = problem
    p = proxy.make(x, y, cl, xv, yv, proxy.ProxyConfig(project=8))
    rng = np.random.default_rng(5)
    for q in (0, 7):
        pq = p.with_quota(q)
        chosen = rng.random(K) < 0.4
        take = (chosen * cl.sizes if q == 0 else chosen * np.minimum(cl.sizes, 14)).astype(np.int32)
        rest = np.flatnonzero(take < cl.sizes)
        counts = cl.sizes[rest] - take[rest] if q == 0 else np.minimum(7, cl.sizes[rest] - take[rest])
        counts[::3] = np.maximum(1, counts[::3] // 2)  # trimmed picks: a partial chunk each
        fast = pq.score_picks(take, rest, counts)
        slow = pq.score_batch(with_picks(take, rest, counts))
        np.testing.assert_allclose(fast.accuracy, slow.accuracy, atol=2e-6)
        np.testing.assert_allclose(fast.loglik, slow.loglik, atol=2e-5)
        assert len(set(np.round(np.asarray(fast.accuracy), 6))) > 1
    pq = p.with_quota(7)
    take = np.zeros(K, np.int32)
    take[0] = 3  # a partial chunk: a pick of cluster 0 starts inside it
    general = Proxy.score_picks(pq, take, np.array([0]), np.array([4]))
    np.testing.assert_allclose(pq.score_picks(take, np.array([0]), np.array([4])).accuracy, general.accuracy)


def test_ridge_proxy_runs_blas_on_one_thread(problem):
    """XLA spreads a batch of LAPACK calls over its own threads and OpenBLAS's threads nested inside
    them spin on a 2-core machine (PPO at d = 384 made no progress), so a ridge proxy limits BLAS
    to one thread for the process."""
    from threadpoolctl import threadpool_info, threadpool_limits
    x, y, cl, xv, yv = problem
    with threadpool_limits(limits=2, user_api="blas"):
        assert {i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"} == {2}
        proxy.make(x, y, cl, xv, yv, proxy.ProxyConfig(project=8))
        assert {i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"} == {1}


def test_a_stratified_sample_smaller_than_the_classes_drops_classes_by_seed(capsys):
    """15 rows of 20 equal classes: the 5 classes left out were always the same (ties went to the
    lowest ids) and nothing was said; now the seed decides, with a warning."""
    y = np.repeat(np.arange(20), 10)
    left_out = {tuple(sorted(set(range(20)) - set(y[proxy.stratified_subsample(y, 15, s)].tolist()))) for s in range(4)}
    assert len(left_out) > 1 and all(len(c) == 5 for c in left_out)
    assert "leaves 5 of the 20 classes without a row" in capsys.readouterr().err


def test_settings_beyond_the_data_are_named_once(problem, capsys):
    """``project`` above the embeddings' width and ``val_size`` above the validation rows keep
    everything, as documented, with a warning each, once (a new user's round: silently clamped); the
    scores are those of the settings that keep everything."""
    x, y, cl, xv, yv = problem
    big = proxy.ProxyConfig(project=10 * D, val_size=10 * len(yv))
    scores = [proxy.make(x, y, cl, xv, yv, big).score_batch(masks()) for _ in range(2)]
    err = capsys.readouterr().err
    assert err.count(f"proxy val_size {10 * len(yv)} exceeds the {len(yv)} validation rows: all are scored") == 1
    assert err.count(f"proxy project {10 * D} exceeds the embeddings' {D} dimensions: all are kept") == 1
    same = proxy.make(x, y, cl, xv, yv, proxy.ProxyConfig(project=None)).score_batch(masks())
    np.testing.assert_array_equal(scores[0].accuracy, same.accuracy)
    assert capsys.readouterr().err == ""
