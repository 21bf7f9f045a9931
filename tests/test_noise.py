import numpy as np
import pytest

from jaxsel.data import noise
from jaxsel.errors import JaxselError


def _toy(n=400, k=20, c=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, c, n), rng.integers(0, k, n)


def test_flips_whole_clusters_and_duplicates_others():
    labels, assign = _toy()
    r = noise.corrupt(labels, assign, 3, flip_fraction=0.2, duplicate_fraction=0.1, copies=3, seed=1)
    assert len(r.flipped_clusters) == 4 and len(r.duplicated_clusters) == 2
    assert not set(r.flipped_clusters) & set(r.duplicated_clusters)
    n = len(labels)
    # the first n rows are the clean split in order; only flipped clusters change label, each by one shift
    assert np.array_equal(r.source[:n], np.arange(n))
    for c in range(20):
        rows = np.flatnonzero(assign == c)
        shift = (r.labels[rows] - labels[rows]) % 3
        assert len(set(shift.tolist())) == 1
        assert (shift[0] != 0) == (c in r.flipped_clusters)
        assert r.flipped[rows].all() == (c in r.flipped_clusters)
    # copies: exact repeats of the duplicated clusters' rows, same cluster id and label
    dup_rows = np.flatnonzero(np.isin(assign, r.duplicated_clusters))
    assert r.duplicate.sum() == 3 * len(dup_rows) and len(r.source) == n + 3 * len(dup_rows)
    extra = r.source[n:]
    assert np.array_equal(np.sort(extra), np.sort(np.tile(dup_rows, 3)))
    assert np.array_equal(r.assignment, assign[r.source])
    assert np.array_equal(r.labels[n:], r.labels[extra])
    assert r.corrupted.sum() == r.flipped.sum() + r.duplicate.sum()
    # cluster ids 0, 10, .., 190 (not contiguous) are 20 clusters too: 180 had been counted, 18 flipped
    spread = noise.corrupt(labels, assign * 10, 3, flip_fraction=0.2, duplicate_fraction=0.1, copies=3, seed=1)
    assert np.array_equal(spread.flipped_clusters, 10 * r.flipped_clusters)
    assert np.array_equal(spread.labels, r.labels) and np.array_equal(spread.source, r.source)


def test_same_seed_same_corruption_and_zero_is_identity():
    labels, assign = _toy()
    a = noise.corrupt(labels, assign, 3, seed=5)
    b = noise.corrupt(labels, assign, 3, seed=5)
    assert np.array_equal(a.labels, b.labels) and np.array_equal(a.source, b.source)
    z = noise.corrupt(labels, assign, 3, flip_fraction=0.0, duplicate_fraction=0.0)
    assert np.array_equal(z.labels, labels) and not z.corrupted.any()


@pytest.mark.parametrize("kw", [dict(flip_fraction=1.2), dict(flip_fraction=0.6, duplicate_fraction=0.5),
                                dict(copies=0)])
def test_bad_settings_are_one_line_errors(kw):
    labels, assign = _toy()
    with pytest.raises(JaxselError):
        noise.corrupt(labels, assign, 3, **kw)


def test_source_noise_flips_a_share_of_each_bad_cluster_only():
    labels, assign = _toy(n=2000, k=20)
    r = noise.corrupt(labels, assign, 3, kind="source", flip_fraction=0.25, duplicate_fraction=0.1, seed=2,
                      rate_range=(0.2, 0.6))
    n = len(labels)
    assert len(r.flipped_clusters) == 5 and not set(r.flipped_clusters) & set(r.duplicated_clusters)
    changed = r.labels[:n] != labels
    assert np.array_equal(changed, r.flipped[:n])
    for c in range(20):
        share = changed[assign == c].mean()
        if c in r.flipped_clusters:
            assert 0.2 - 0.02 <= share <= 0.6 + 0.02  # its drawn rate, up to rounding
        else:
            assert share == 0
    assert len({round(changed[assign == c].mean(), 2) for c in r.flipped_clusters}) > 1  # rates differ by source


def test_instance_noise_flips_the_ambiguous_rows_toward_the_classifier():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1000, 5))
    labels = (x[:, 0] > 0).astype(int)
    assign = rng.integers(0, 10, 1000)
    r = noise.corrupt(labels, assign, 2, kind="instance", flip_fraction=0.1, duplicate_fraction=0.0, x=x, seed=1)
    flipped = r.flipped[:1000]
    assert flipped.sum() == 100 and np.array_equal(r.labels[:1000][flipped], 1 - labels[flipped])
    # the ambiguous rows sit at the class boundary: far closer to it than the rows kept
    assert np.abs(x[flipped, 0]).max() < np.quantile(np.abs(x[~flipped, 0]), 0.25)
    with pytest.raises(JaxselError, match="needs the train embeddings"):
        noise.corrupt(labels, assign, 2, kind="instance")


def test_near_duplicates_are_perturbed_copies():
    rng = np.random.default_rng(0)
    labels, assign = _toy(n=300, k=10)
    texts = [" ".join(f"w{j}" for j in rng.integers(0, 50, 12)) + f" id{i}" for i in range(300)]
    r = noise.corrupt(labels, assign, 3, duplicate_fraction=0.2, copies=2, seed=3, near_duplicates=True, texts=texts)
    extra = r.source[300:]
    assert len(r.copy_texts) == len(extra) and r.duplicate[300:].all()
    assert sum(t != texts[i] for t, i in zip(r.copy_texts, extra)) >= 0.9 * len(extra)  # not byte-identical
    for t, i in zip(r.copy_texts, extra):  # but made of the original's words, most of them kept
        assert set(t.split()) <= set(texts[i].split()) and len(t.split()) >= 0.5 * len(texts[i].split())
    exact = noise.corrupt(labels, assign, 3, duplicate_fraction=0.2, copies=2, seed=3)
    assert exact.copy_texts is None and np.array_equal(exact.source, r.source)


def test_fields_added_later_keep_the_spelling_of_earlier_configs():
    """Stage caches are keyed by a config's spelling: fields added later, at their defaults, are left
    out, so the caches of earlier runs stay valid; set to anything else, they count."""
    from jaxsel.config import FinetuneConfig, NoiseSpec, spelling
    assert spelling(NoiseSpec()) == "NoiseSpec(flip_fraction=0.2, duplicate_fraction=0.1, copies=3, seed=0)"
    assert "kind='source'" in spelling(NoiseSpec(kind="source"))
    ft = FinetuneConfig()
    assert spelling(ft) == repr(ft).replace(", length_buckets='auto'", "")  # min_steps' default changed: it counts
    assert "min_steps=100" in spelling(ft) and "min_steps=300" in spelling(FinetuneConfig(min_steps=300))
    assert spelling(FinetuneConfig(min_steps=0)) == repr(FinetuneConfig(min_steps=0)).replace(
        ", min_steps=0", "").replace(", length_buckets='auto'", "")  # the former default keeps earlier keys
    assert "length_buckets='one'" in spelling(FinetuneConfig(length_buckets="one"))
    from jaxsel.config import ProxyConfig
    assert spelling(ProxyConfig()) == repr(ProxyConfig()).replace(", score_on='validation'", "").replace(
        ", batch_chunk=1024", "").replace(", neighbors=10, candidates=256", "")
    assert "batch_chunk=8" in spelling(ProxyConfig(batch_chunk=8))
    assert "neighbors=5" in spelling(ProxyConfig(kind="knn", neighbors=5))
    assert "score_on='validation+train'" in spelling(ProxyConfig(score_on="validation+train"))
    # defaults changed since (PPO's network, "early" until 2026-12-05; its value clipping, on until 2026-12-06):
    # the former defaults keep the keys and checkpoint signatures of then (a config pinning them keeps its
    # caches), the new ones are spelled out
    from jaxsel.agents.ppo import PPOConfig
    from jaxsel.config import settings
    before, now = PPOConfig(network="early", clip_value=True), PPOConfig()
    assert "network" not in spelling(before) and "clip_value" not in spelling(before)
    assert spelling(now) == spelling(before).replace("clip_eps=0.2", "clip_eps=0.2, clip_value=False")[:-1] + \
        ", network='late')"
    assert settings(now) == dict(settings(before), network="late", clip_value=False)
