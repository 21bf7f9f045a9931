"""The knn proxy against a slow brute-force k-NN vote, and its protocol (take, incremental, batch)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsel import cluster, label_issues, proxy
from jaxsel.cluster import member_order
from jaxsel.errors import JaxselError

N, D, C, K = 400, 16, 3, 12


@pytest.fixture(scope="module")
def problem():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((N, D)).astype(np.float32)
    y = (x[:, 0] > 0).astype(int) + (x[:, 1] > 1)
    xv = rng.standard_normal((90, D)).astype(np.float32)
    yv = (xv[:, 0] > 0).astype(int) + (xv[:, 1] > 1)
    return x, y, cluster.kmeans(x, K), xv, yv


def brute_force(x, y, rows, xv, yv, k, own=None):
    """Tie-aware accuracy and Laplace log-likelihood of the exact cosine k-NN vote among ``rows``,
    one scored row at a time (``own``: the train row a scored row is, left out of its vote)."""
    u = lambda a: a / np.linalg.norm(a, axis=1, keepdims=True)
    acc, ll = [], []
    for i, (v, label) in enumerate(zip(u(xv), yv)):
        cand = [r for r in rows if own is None or own[i] < 0 or (r != own[i] and not np.allclose(x[r], x[own[i]]))]
        sims = u(x[cand]) @ v
        near = np.asarray(cand)[np.lexsort((cand, -sims))[:k]]
        votes = np.bincount(y[near], minlength=C)
        top = votes == votes.max()
        acc.append(top[label] / top.sum())
        ll.append(np.log((votes[label] + 1) / (votes.sum() + C)))
    return np.mean(acc), np.mean(ll)


def subsets(cl, n=5, seed=1):
    """Takes: whole clusters plus the first rows of one more (the exported shape)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        take = np.zeros(K, np.int32)
        chosen = rng.choice(K, i + 2, replace=False)
        take[chosen[:-1]] = cl.sizes[chosen[:-1]]
        take[chosen[-1]] = max(1, cl.sizes[chosen[-1]] // 3)
        out.append(take)
    return np.stack(out)


def take_rows(cl, take):
    rows, start = member_order(cl)
    return np.concatenate([rows[start[j]:start[j] + t] for j, t in enumerate(take)])


@pytest.mark.parametrize("k", [1, 5])
def test_knn_equals_brute_force_vote(problem, k):
    """With every train row a candidate the proxy is the exact k-NN classifier of the subset,
    whether the subset comes as a take, as rows, incrementally or in a batch."""
    x, y, cl, xv, yv = problem
    p = proxy.make(x, y, cl, xv, yv, proxy.ProxyConfig(kind="knn", neighbors=k, candidates=N))
    takes = subsets(cl)
    batch = p.score_batch(takes)
    add, score_state = jax.jit(lambda p, s, c, n, a: p.add(s, c, n, a)), jax.jit(lambda p, s: p.score_state(s))
    for i, take in enumerate(takes):
        rows = take_rows(cl, take)
        acc, ll = brute_force(x, y, rows, xv, yv, k)
        state = p.init()
        for j in np.flatnonzero(take):
            state = add(p, state, j, take[j], 0)
        for s in (p.score(jnp.asarray(take)), p.score_rows(rows), score_state(p, state)):
            assert float(s.accuracy) == pytest.approx(acc, abs=1e-6)
            assert float(s.loglik) == pytest.approx(ll, abs=1e-5)
        assert float(batch.accuracy[i]) == pytest.approx(acc, abs=1e-6)


def test_scored_train_rows_vote_without_themselves(problem):
    x, y, cl, xv, yv = problem
    x = x.copy()
    x[1] = x[0]  # an identical twin: left out of row 0's vote too
    p = proxy.make(x, y, cl, xv, yv, proxy.ProxyConfig(kind="knn", neighbors=3, candidates=N, score_on="validation+train"))
    assert p.yv.shape[0] > len(yv)
    own = np.full(len(yv), -1)
    extra = proxy.scored_train_rows(x, y, cl, xv, yv, proxy.ProxyConfig(score_on="validation+train"))
    own = np.concatenate([own, np.flatnonzero(extra)])
    scored_x = np.concatenate([xv, x[extra]])
    table = np.asarray(p.nbr_row)  # N: an entry left out
    for i in np.flatnonzero(own >= 0)[:50]:
        assert own[i] not in table[i] and not any(np.allclose(x[r], x[own[i]]) for r in table[i] if r < N)
    take = subsets(cl)[3]
    acc, ll = brute_force(x, y, take_rows(cl, take), scored_x, np.asarray(p.yv), 3, own)
    assert float(p.score(jnp.asarray(take)).accuracy) == pytest.approx(acc, abs=1e-6)


def test_truncated_candidates_and_chance(problem):
    """Few candidates: a scored row whose candidates are all unselected votes nothing (chance);
    the empty subset scores chance; label issues come from the carried ridge."""
    x, y, cl, xv, yv = problem
    p = proxy.make(x, y, cl, xv, yv, proxy.ProxyConfig(kind="knn", neighbors=3, candidates=8))
    assert p.nbr_row.shape == (len(yv), 8)
    empty = p.score(jnp.zeros(K, jnp.int32))
    assert float(empty.accuracy) == pytest.approx(1 / C) and float(empty.loglik) == pytest.approx(-np.log(C))
    take = subsets(cl)[0]
    chosen = set(take_rows(cl, take))
    table = np.asarray(p.nbr_row)
    covered = np.array([any(r in chosen for r in row) for row in table])
    assert 0 < covered.sum() < len(yv)
    got = p.score(jnp.asarray(take))
    full = proxy.make(x, y, cl, xv, yv, proxy.ProxyConfig(kind="knn", neighbors=3, candidates=N))
    per_row = [brute_force(x, y, [r for r in table[i] if r in chosen], xv[i:i + 1], yv[i:i + 1], 3)[0]
               if covered[i] else 1 / C for i in range(len(yv))]
    assert float(got.accuracy) == pytest.approx(np.mean(per_row), abs=1e-6)
    assert float(got.accuracy) != pytest.approx(float(full.score(jnp.asarray(take)).accuracy), abs=1e-6)
    np.testing.assert_array_equal(label_issues.find(p, y, cl.assignment), label_issues.find(p.ridge, y, cl.assignment))


def test_bad_settings_raise(problem):
    x, y, cl, xv, yv = problem
    with pytest.raises(JaxselError, match="neighbors <= candidates"):
        proxy.make(x, y, cl, xv, yv, proxy.ProxyConfig(kind="knn", neighbors=20, candidates=10))
    p = proxy.make(x, y, cl, xv, yv, proxy.ProxyConfig(kind="knn"))
    with pytest.raises(JaxselError, match="row indices"):
        p.score_rows([N])


def test_cli_selects_with_the_knn_proxy(tmp_path, tmp_cache, capsys):
    """PPO and greedy in quota picks, with the cleanlab filter and the agreement observation (both
    from the carried ridge): the exported rows carry the knn score they were chosen by."""
    from conftest import write_data
    from jaxsel import cli
    from jaxsel.selection import Selection
    csv = write_data(tmp_path / "d.csv")
    common = ["select", str(csv), "--split-col", "split", "--model", "hash", "--k", "6", "--proxy", "knn",
              "--neighbors", "3", "--budget", "0.1", "--granularity", "quota", "--quota", "4"]
    assert cli.main(common + ["--method", "greedy", "--score-on", "validation+train", "--out", str(tmp_path / "g")]) == 0
    assert cli.main(common + ["--method", "ppo", "--steps", "256", "--filter", "cleanlab", "--agreement",
                              "--out", str(tmp_path / "p")]) == 0
    assert "1024 environment steps instead of the 256 asked" in capsys.readouterr().err  # whole PPO updates
    for name in ("g", "p"):
        sel = Selection.load(tmp_path / name / "selection.json")
        assert len(sel.indices) == len(set(sel.indices)) == 25
    assert cli.main(common + ["--method", "greedy", "--neighbors", "300", "--out", str(tmp_path / "bad")]) == 2
    assert "neighbors <= candidates" in capsys.readouterr().err


@pytest.mark.parametrize("score_on", ["validation", "validation+train"])
def test_pick_scores_equal_scoring_each_candidate(problem, score_on):
    """The knn fast path of a greedy step (only the scored rows near the picked cluster) gives the
    scores of each candidate take scored from scratch, for whole clusters and for quota chunks."""
    x, y, cl, xv, yv = problem
    p = proxy.make(x, y, cl, xv, yv, proxy.ProxyConfig(kind="knn", neighbors=5, candidates=40, score_on=score_on))
    assert 0 < p.touch.shape[1] < p.yv.shape[0]  # the point: a pick touches a part of the scored rows
    for q in (0, 7):
        pq = p.with_quota(q)
        take = subsets(cl)[2] if q == 0 else np.where(subsets(cl)[2] > 0, 7, 0).astype(np.int32)
        rest = np.flatnonzero(take < cl.sizes)
        counts = cl.sizes[rest] - take[rest] if q == 0 else np.minimum(7, cl.sizes[rest] - take[rest])
        fast = pq.score_picks(take, rest, counts)
        slow = pq.score_batch(proxy.base.with_picks(take, rest, counts))
        np.testing.assert_allclose(fast.accuracy, slow.accuracy, atol=2e-6)
        np.testing.assert_allclose(fast.loglik, slow.loglik, atol=2e-5)
        assert len(set(np.round(np.asarray(fast.accuracy), 6))) > 1


def test_batches_are_chunked_to_bounded_memory(problem, monkeypatch):
    """score_batch vmaps at most ~CHUNK_BYTES of intermediates at once (a 27k x 256 table would
    otherwise need 44 GB for the default 1,024 subsets), with the same scores."""
    from jaxsel.proxy import knn
    x, y, cl, xv, yv = problem
    p = proxy.make(x, y, cl, xv, yv, proxy.ProxyConfig(kind="knn", candidates=64))
    takes = subsets(cl)
    want = p.score_batch(takes)
    assert p.batch_chunk == 1024
    monkeypatch.setattr(knn, "CHUNK_BYTES", 2 * len(yv) * 64 * (4 * C + 9))
    assert p.batch_chunk == 2
    got = p.score_batch(takes)  # three chunks of 2 (the last padded)
    np.testing.assert_allclose(got.accuracy, want.accuracy, atol=1e-7)
    np.testing.assert_allclose(got.loglik, want.loglik, atol=1e-6)


def test_neighbour_table_breaks_ties_at_its_edge_by_the_lower_row():
    """Rows tied with the last candidate kept: the lower rows, as documented (argpartition had kept an
    arbitrary few of them: duplicate texts embed alike, so ties are common). Against a full stable sort."""
    from jaxsel.proxy.knn import neighbour_table, unit
    rng = np.random.default_rng(3)
    base = rng.standard_normal((30, 8)).astype(np.float32)
    train = base[rng.integers(0, 30, 300)]  # ten copies of each row on average: ties everywhere
    scored = np.concatenate([base[:20] + 0.05 * rng.standard_normal((20, 8)).astype(np.float32), train[:40]])
    own = np.concatenate([np.full(20, -1), np.arange(40)])
    for keep in (5, 17, 64):
        out, real = neighbour_table(train, scored, keep, own, block=16)
        sims = unit(scored) @ unit(train).T
        for i in range(len(scored)):
            s = np.where((own[i] >= 0) & ((np.arange(300) == own[i]) | (sims[i] >= 1 - 1e-6)), -np.inf, sims[i])
            want = np.lexsort((np.arange(300), -s))[:keep]  # most similar first, ties: the lower row first
            assert out[i].tolist() == want.tolist() and real[i].tolist() == np.isfinite(s[want]).tolist()
