"""Misuse of the Python API is a JaxselError naming the problem, not an AttributeError, a Chex or JAX
tracing error, or a silently wrong result (found by a new user's test of the library)."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsel import agents, baselines, cluster, data, embed, experiment, finetune, label_issues, proxy, selection
from jaxsel.config import EmbedSpec
from jaxsel.errors import JaxselError


@pytest.fixture(scope="module")
def parts():
    rng = np.random.default_rng(0)
    x, v = rng.standard_normal((120, 16)).astype(np.float32), rng.standard_normal((30, 16)).astype(np.float32)
    y, yv = np.arange(120) % 3, np.arange(30) % 3
    c = cluster.kmeans(x, 6)
    return x, y, v, yv, c, proxy.make(x, y, c, v, yv)


def metrics_sink(path):
    from jaxsel import metrics
    with metrics.logging_to(path):
        pass


CASES = {
    "one string embedded letter by letter": (lambda x, y, v, yv, c, p: embed.encode("hello", model="hash"),
                                             "not one string"),
    "None among the texts": (lambda x, y, v, yv, c, p: embed.encode(["a", None], model="hash"), r"texts\[1\] is NoneType"),
    "fractional row indices truncated": (lambda x, y, v, yv, c, p: p.score_rows(np.array([0.5, 1.7])), "must be integers"),
    "a fractional seed": (lambda x, y, v, yv, c, p: agents.SelectConfig(seed=1.5), "seed must be an integer"),
    "a mask of the wrong length": (lambda x, y, v, yv, c, p: p.score(jnp.zeros(5, bool)), r"shape \(6,\)"),
    "a fractional k": (lambda x, y, v, yv, c, p: cluster.kmeans(x, 1.5), "k must be an integer"),
    "k as a string": (lambda x, y, v, yv, c, p: cluster.kmeans(x, "3"), "k must be an integer"),
    "select's first two swapped": (lambda x, y, v, yv, c, p: agents.select(c, p, y, agents.SelectConfig()),
                                   "Proxy as proxy"),
    "a dict for the config": (lambda x, y, v, yv, c, p: agents.select(p, c, y, {"method": "random"}),
                              "SelectConfig as config"),
    "a name for the clustering": (lambda x, y, v, yv, c, p: proxy.make(x, y, "c", v, yv), "Clustering third"),
    "another clustering than the proxy's": (lambda x, y, v, yv, c, p: agents.select(p, cluster.kmeans(x, 5), y),
                                            "not the one the proxy was made with"),
    "labels other than the proxy's": (lambda x, y, v, yv, c, p: agents.select(p, c, np.roll(y, 1)),
                                      "differ from the labels the proxy was made with"),
    "resume without a checkpoint folder": (lambda x, y, v, yv, c, p: agents.select(p, c, y, resume=True),
                                           "needs the ckpt_dir"),
    "a seed below zero for k-means": (lambda x, y, v, yv, c, p: cluster.kmeans(x, 3, seed=-1), "seed must be"),
    "no k-means initialisation": (lambda x, y, v, yv, c, p: cluster.kmeans(x, 3, n_init=0), "n_init must be"),
    "more random rows than there are": (lambda x, y, v, yv, c, p: baselines.random_indices(10, 20, 0),
                                        "cannot choose 20 of 10"),
    "no config for a run": (lambda x, y, v, yv, c, p: experiment.run(None), "config file's path or a RunConfig"),
    "a quota without quota picks": (lambda x, y, v, yv, c, p: agents.SelectConfig(method="greedy", quota=4),
                                    'granularity="quota"'),  # was accepted and ignored (SelectSpec refused it)
    "a NaN k-means tolerance": (lambda x, y, v, yv, c, p: cluster.kmeans(x, 3, tol=float("nan")), "tol must be"),
    "a negative k-means tolerance": (lambda x, y, v, yv, c, p: cluster.kmeans(x, 3, tol=-1), "tol must be"),
    "a budget the environment cannot read": (lambda x, y, v, yv, c, p: agents.env.make_env(p, c, y, "a/b"),
                                             "budget must be a number like 0.05"),
    "no split to embed": (lambda x, y, v, yv, c, p: embed.embed_dataset({"train": []}, "hash", splits=()),
                          "splits is empty"),  # returned every split
    "a negative sample size": (lambda x, y, v, yv, c, p: proxy.stratified_subsample(y, -5, 0), "whole number of rows"),
    "a log folder that is a file": (lambda x, y, v, yv, c, p: metrics_sink(__file__), "is a file, not a folder"),
    "a finetune model that is neither built in nor a folder": (
        lambda x, y, v, yv, c, p: experiment.RunConfig(finetune={"model": "/nonexistent/typo"}),
        r"\[finetune\]: unknown model '/nonexistent/typo'"),  # was found after the first stages had run
    "an embedding model that is neither": (lambda x, y, v, yv, c, p: EmbedSpec(model="mini-lm"),
                                           "embed unknown model 'mini-lm'"),
    "noise over one class": (lambda x, y, v, yv, c, p: data.noise.corrupt(np.zeros(120, int), c.assignment, 1),
                             "at least two classes"),  # numpy's "low >= high"
    "a take with two clusters in part": (lambda x, y, v, yv, c, p: p.score(np.array([1, 1, 0, 0, 0, 0])),
                                         "at most one cluster in part"),  # was scored as another subset
    "a selection repeating a row": (lambda x, y, v, yv, c, p: selection.Selection([], np.array([3, 1, 3]), {})
                                    .save("unused.json"), r"repeat 1 row\(s\) \(row 3 2 times\)"),
    "an assignment of another length": (lambda x, y, v, yv, c, p: baselines.stratified_indices(y, y[:5], 6, 0),
                                        "one cluster per row"),
    # a new user's round on the Python API: make_env took what select refuses
    "an environment over another clustering": (lambda x, y, v, yv, c, p: agents.env.make_env(p, cluster.kmeans(x, 5), y,
                                                                                             0.1),
                                               "not the one the proxy was made with"),
    "an environment over other labels": (lambda x, y, v, yv, c, p: agents.env.make_env(p, c, np.roll(y, 1), 0.1),
                                         "differ from the labels the proxy was made with"),
    "a fractional quota": (lambda x, y, v, yv, c, p: agents.env.make_env(p, c, y, 0.1, quota=2.5),
                           "quota must be a whole number >= 0, got 2.5"),
    "a negative reward scale": (lambda x, y, v, yv, c, p: agents.env.make_env(p, c, y, 0.1, reward_scale=-1.0),
                                "reward_scale must be a finite number > 0"),
    "no feature dimensions": (lambda x, y, v, yv, c, p: agents.env.make_env(p, c, y, 0.1, feature_dims=-1),
                              "feature_dims must be a whole number >= 1"),
    # score_rows of every kind reads indices as ridge does (a mask had been read as rows 0 and 1)
    "a bool mask as knn rows": (lambda x, y, v, yv, c, p: proxy.make(x, y, c, v, yv, proxy.ProxyConfig(kind="knn"))
                                .score_rows(np.ones(120, bool)), "must be integers, got bool .*np.flatnonzero"),
    "fractional rows for a trained head": (lambda x, y, v, yv, c, p: proxy.make(
        x, y, c, v, yv, proxy.ProxyConfig(kind="linear", steps=2)).score_rows([0.5]), "must be integers"),
    "rows past the end for a trained head": (lambda x, y, v, yv, c, p: proxy.make(
        x, y, c, v, yv, proxy.ProxyConfig(kind="linear", steps=2)).score_rows([-5, 10**7]), r"lie in \[0, 120\)"),
    "stratified k-means over labels that are not class ids": (lambda x, y, v, yv, c, p: cluster.kmeans(x, 3, labels=y - 1),
                                                              "labels must be class ids"),
    # round 18: each was a misleading error, a numpy traceback or a silently wrong answer
    "cleanlab's issues of another length (sampled the first rows only)": (
        lambda x, y, v, yv, c, p: agents.select(p, c, y, agents.SelectConfig(method="cleanlab", budget=0.1),
                                                issues=np.zeros(30, bool)), r"issues must be a bool array of shape \(120,\)"),
    "cleanlab's issues as row indices": (
        lambda x, y, v, yv, c, p: agents.select(p, c, y, agents.SelectConfig(method="cleanlab", budget=0.1),
                                                issues=np.array([3, 5])), r"for row indices pass np.isin"),
    "the typical baseline on embeddings of another width": (
        lambda x, y, v, yv, c, p: agents.select(p, c, y, agents.SelectConfig(method="typical", budget=0.1),
                                                train_x=x[:, :3]), "embeddings of width 3 for centroids of width 16"),
    "the typical baseline on NaN embeddings": (
        lambda x, y, v, yv, c, p: agents.select(p, c, y, agents.SelectConfig(method="typical", budget=0.1),
                                                train_x=x * np.nan), "holds NaN or inf values"),
    "embeddings whose squares overflow the proxy's float32 sums": (
        lambda x, y, v, yv, c, p: proxy.make(x * 1e20, y, c, v, yv), r"train embeddings reach 3.9e\+20: .* overflow"),
    "macro-F1 of a class past num_classes (scored it)": (lambda x, y, v, yv, c, p: finetune.macro_f1([0, 1], [0, 7], 2),
                                                          "predictions holds class 7, but there are 2 classes"),
    "macro-F1 over True classes": (lambda x, y, v, yv, c, p: finetune.macro_f1([0], [0], True),
                                   "num_classes must be an integer >= 1, got True"),
    "the filter's path over another clustering (accepted for the searches)": (
        lambda x, y, v, yv, c, p: agents.select_unflagged(np.zeros(120, bool), p, cluster.typical_order(c, x), y,
                                                          agents.SelectConfig(method="greedy", budget=0.1),
                                                          train_x=x, validation=(v, yv)),
        "other rows, or list them in another order"),
    "macro-F1 of nothing (NaN and numpy warnings)": (lambda x, y, v, yv, c, p: finetune.macro_f1([], [], 2),
                                                     "macro-F1 of no examples"),
    # round 38 (the Python API as a notebook user): silent nonsense or numpy tracebacks before
    "label issues over another clustering's assignment (same sizes: wrong flags)": (
        lambda x, y, v, yv, c, p: label_issues.find(p, y, np.random.default_rng(0).permutation(c.assignment)),
        "clusters hold other rows"),
    "validation classes none of which is a train class (every subset scored 0)": (
        lambda x, y, v, yv, c, p: proxy.make(x, y, c, v, yv + 3), "no validation label is a class of the train"),
    "stratified sample of 2-D labels (indices past the rows)": (
        lambda x, y, v, yv, c, p: proxy.stratified_subsample(y.reshape(60, 2), 5, 0), "one label per row"),
    "stratified sample of NaN labels (numpy's 'a cannot be empty')": (
        lambda x, y, v, yv, c, p: proxy.stratified_subsample(np.array([np.nan, 1.0] * 10), 6, 0), "NaN"),
    "stratified sample without a seed (a TypeError)": (
        lambda x, y, v, yv, c, p: proxy.stratified_subsample(y, 6, None), "seed that is a whole number"),
    "a fractional number of random rows (numpy's TypeError)": (
        lambda x, y, v, yv, c, p: baselines.random_indices(120, 10.0, 0), "cannot choose 10.0 of 120"),
    "a negative seed for random rows (numpy's ValueError)": (
        lambda x, y, v, yv, c, p: baselines.random_indices(120, 3, -1), "seed must be a whole number >= 0"),
    "NaN weights to apportion (huge negative shares)": (
        lambda x, y, v, yv, c, p: baselines.apportion(np.array([np.nan, 1.0]), 3), "must be finite, none negative"),
    "negative weights to apportion (a negative share)": (
        lambda x, y, v, yv, c, p: baselines.apportion(np.array([-1, 3]), 2), "must be finite, none negative"),
    "negative class counts to cap (a negative cap)": (
        lambda x, y, v, yv, c, p: selection.class_caps(np.array([-5, 10]), 3, "proportional"), "none negative"),
    "a budget above one (more examples than rows)": (
        lambda x, y, v, yv, c, p: selection.budget_examples(1.5, 10), r"fraction in \(0, 1\] of at least one row"),
    "a budget of no rows (one example of none)": (
        lambda x, y, v, yv, c, p: selection.budget_examples(0.5, 0), r"fraction in \(0, 1\] of at least one row"),
    "an unknown embedding dtype for the hash model (ignored)": (
        lambda x, y, v, yv, c, p: embed.encode(["a"], "hash", dtype="foo"), "unknown embedding dtype 'foo'"),
    # round 42 (the Python API as a notebook user): a tracer error, an AttributeError, an override ignored
    "score_batch inside jax.jit": (lambda x, y, v, yv, c, p: jax.jit(lambda m: p.score_batch(m).accuracy)(
        np.ones((2, 6), bool)), r"call it outside jax.jit \(inside a traced function, jax.vmap\(proxy.score\)"),
    "a dict as PPO's config": (lambda x, y, v, yv, c, p: agents.ppo.make_train({"total_timesteps": 64},
                                                                               agents.env.make_env(p, c, y, 0.1)),
                               "make_train takes a PPOConfig as config, got dict"),
    "a dict as DQN's config": (lambda x, y, v, yv, c, p: agents.dqn.make_train({"total_timesteps": 64},
                                                                               agents.env.make_env(p, c, y, 0.1)),
                               "make_train takes a DQNConfig as config, got dict"),
    "an unknown data override of a RunConfig (ignored)": (
        lambda x, y, v, yv, c, p: experiment.run(experiment.RunConfig(name="x"), "unused", bogus_option=1),
        r"run\(\.\.\., \*\*data_overrides\) \[data\]: unknown key 'bogus_option'"),
}

TOKENS = {  # the transformer proxy's token ids: a negative id had scored NaN, the rest were IndexErrors
    "negative ids": (lambda t: -t, r"must lie in \[0, 30522\)"),
    "ids past the vocabulary": (lambda t: t + 10**6, r"must lie in \[0, 30522\)"),
    "float ids": (lambda t: t.astype(np.float32), "must be integer token ids, got float32"),
    "one row of ids": (lambda t: t[0], r"must be token ids of shape \(120, T\)"),
    "too few rows": (lambda t: t[:100], r"must be token ids of shape \(120, T\), got shape \(100, 8\)"),
    "more tokens than positions": (lambda t: np.tile(t, (1, 80)), "hold 640 tokens a row; the model has 512"),
}


@pytest.mark.parametrize("case", TOKENS)
def test_transformer_tokens_are_checked(parts, case):
    x, y, v, yv, c, _ = parts
    tokens = 1 + np.arange(120 * 8).reshape(120, 8) % 50
    cfg = proxy.ProxyConfig(kind="transformer", tiny=True, steps=2)
    change, message = TOKENS[case]
    with pytest.raises(JaxselError, match=message):
        proxy.make(x, y, c, v, yv, cfg, train_tokens=change(tokens), val_tokens=tokens[:30])


@pytest.mark.parametrize("case", CASES)
def test_api_misuse_is_a_jaxsel_error(parts, case):
    call, message = CASES[case]
    with pytest.raises(JaxselError, match=message):
        call(*parts)


def test_unknown_splits_files_and_arguments_are_named(tmp_path, table_file, capsys):
    """embed_dataset names the splits a dataset has (and takes one split as a string); export names
    its argument types and how to give a file's columns; Selection.load names a JSON that is not a
    selection; class ids no label uses get a warning (they count as classes)."""
    dd = data.load(str(table_file))
    with pytest.raises(JaxselError, match="no split 'valid'.*train, validation, test"):
        embed.embed_dataset(dd, "hash", splits=("train", "valid"), use_cache=False, progress=False)
    assert list(embed.embed_dataset(dd, "hash", splits="train", use_cache=False, progress=False)) == ["train"]
    sel = selection.Selection([], np.arange(5), {}, {"fingerprint": data.dataset_fingerprint(dd)})
    with pytest.raises(JaxselError, match="takes a Selection and a DatasetDict"):
        selection.export(dd, sel, tmp_path / "o.jsonl")
    with pytest.raises(JaxselError, match=r"jaxsel.data.source_columns\(path"):
        selection.export(sel, dd, tmp_path / "o.jsonl", source_columns=str(table_file))
    (tmp_path / "s.json").write_text(json.dumps({}))
    with pytest.raises(JaxselError, match="not a jaxsel selection file"):
        selection.Selection.load(tmp_path / "s.json")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((60, 8)).astype(np.float32)
    labels = np.array([0, 5, 7])[np.arange(60) % 3]
    capsys.readouterr()
    p = proxy.make(x, labels, cluster.kmeans(x, 4), x[:12], labels[:12])
    assert p.num_classes == 8 and "class ids [1, 2, 3, 4, 6] appear in no train or validation" in capsys.readouterr().err
    codes = np.array([0, 1, 2, 100_000])[np.arange(60) % 4]  # ids, not classes: a 100,001-class table (75 GB) before
    with pytest.raises(JaxselError, match="they run to 100000 .4 distinct ids in 72 train and validation rows.; renumber"):
        proxy.make(x, codes, cluster.kmeans(x, 4), x[:12], codes[:12])
    codes = codes * 10**7  # ids to 10^12: the unused-id warning built set(range(C)) first (OOM-killed at 2e9)
    with pytest.raises(JaxselError, match="they run to 1000000000000 .4 distinct ids"):
        proxy.make(x, codes, cluster.kmeans(x, 4), x[:12], codes[:12])


def test_wrong_rows_and_data_in_the_data_path_are_named(tmp_path, table_file):
    """A bool mask given as row ids made derive build a pool of copies of rows 0 and 1; an unknown
    split name was ignored; finetune passed wrong indices to datasets (deep pyarrow errors); load
    of a DataFrame was a TypeError; Python's export overwrote the dataset's own source file."""
    import datasets
    import pandas as pd
    dd = data.load(str(table_file))
    n = len(dd["train"])
    mask = np.zeros(n, bool)
    mask[:3] = True
    for rows, message in (({"train": mask}, "np.flatnonzero"), ({"train": [0.5, 1.5]}, "integer row indices"),
                          ({"dev": [0]}, "unknown split 'dev'"), ({"train": [n]}, rf"\[0, {n}\)"),
                          ({"train": []}, "train split would be empty"),
                          ({"validation": []}, "validation split would be empty"), (np.arange(3), "must be a dict")):
        with pytest.raises(JaxselError, match=message):
            data.derive(dd, rows, tag="t")
    with pytest.raises(JaxselError, match="train_labels holds class 99"):
        data.derive(dd, {"train": [0, 1]}, train_labels=[0, 99], tag="t")
    assert len(data.derive(dd, {"train": np.flatnonzero(mask)}, tag="t")["train"]) == 3
    for indices, message in ((mask, "np.flatnonzero"), ([-1, 2], r"\[0, "), ([n], r"\[0, ")):
        with pytest.raises(JaxselError, match=message):
            finetune.finetune(dd, indices, progress=False)
    with pytest.raises(JaxselError, match="validation, test splits"):
        finetune.finetune(datasets.DatasetDict({"train": dd["train"]}), [0], progress=False)
    with pytest.raises(JaxselError, match="write in-memory data to a file"):
        data.load(pd.DataFrame({"text": ["a"], "label": ["x"]}))
    assert data.source_file(dd) == str(table_file.resolve())
    assert data.source_file(data.derive(dd, {"train": [0, 1]}, tag="t")) == str(table_file.resolve())
    sel = selection.Selection([], np.arange(3), {}, {"fingerprint": data.dataset_fingerprint(dd)})
    before = table_file.read_bytes()
    with pytest.raises(JaxselError, match="refusing to write"):
        selection.export(sel, dd, table_file)
    with pytest.raises(JaxselError, match="not an export format"):
        selection.export(sel, dd, tmp_path / "kept.xlsx")
    assert table_file.read_bytes() == before and not (tmp_path / "kept.xlsx").exists()
    # nor the selection's own files, saved or loaded (round 42: the command refused them, the library wrote over them)
    sel.save(tmp_path / "sel.json")
    for kept in (sel, selection.Selection.load(tmp_path / "sel.json")):
        for own in (tmp_path / "sel.json", tmp_path / "sel.indices.npy"):
            with pytest.raises(JaxselError, match="refusing to write"):
                selection.export(kept, dd, own, "jsonl")
    assert len(selection.Selection.load(tmp_path / "sel.json").indices) == 3


def test_label_ids_outside_the_classes_are_refused_everywhere():
    """Every Python entry point that takes class ids checks them: ids past the proxy's classes gave
    IndexErrors (make_env, cluster_agreement), a raw cleanlab ValueError (find), multi-GB class
    tables (balance_caps) or wrapped around silently (noise.corrupt took ids modulo C, -1 as the
    last class); uint64 ids past int64 read as -1. label_issues.judgeable takes any ids."""
    from jaxsel import label_issues
    from jaxsel.agents import env
    from jaxsel.data import noise
    from jaxsel.errors import check_labels
    rng = np.random.default_rng(0)
    x, xv = rng.standard_normal((400, 16)).astype(np.float32), rng.standard_normal((100, 16)).astype(np.float32)
    y, yv = rng.integers(0, 3, 400), rng.integers(0, 3, 100)
    cl = cluster.kmeans(x, 10)
    p = proxy.make(x, y, cl, xv, yv)
    ids = np.array([3, 7, 42, 1000])[np.arange(400) % 4]
    for call in (lambda: env.make_env(p, cl, ids, 0.05), lambda: label_issues.find(p, ids, cl.assignment),
                 lambda: label_issues.cluster_agreement(ids, label_issues.out_of_cluster_probs(p, cl.assignment),
                                                        cl.assignment, cl.k),
                 lambda: noise.corrupt(ids, cl.assignment, 4)):
        with pytest.raises(JaxselError, match="holds class 1000, but there are [34] classes"):
            call()
    with pytest.raises(JaxselError, match="got -1"):
        noise.corrupt(np.array([0, 1, -1] * 133 + [0]), cl.assignment, 3)
    with pytest.raises(JaxselError, match="they run to 1000000000 in 400 rows"):
        big = np.array([0, 1, 2, 10**9])[np.arange(400) % 4]
        selection.balance_caps(cluster.kmeans(x, 12, labels=big), big, 20, "equal")
    with pytest.raises(JaxselError, match="got 18446744073709551615"):
        check_labels(np.array([0, 2**64 - 1], np.uint64), "labels")
    compact = np.unique(ids, return_inverse=True)[1]
    np.testing.assert_array_equal(label_issues.judgeable(ids * 10**6, cl.assignment, cl.k),
                                  label_issues.judgeable(compact, cl.assignment, cl.k))


def test_finetune_refuses_repeated_rows(table_file):
    """Rows named twice were trained on twice (and counted twice among the examples used): a
    subset names each row once."""
    with pytest.raises(JaxselError, match=r"train_indices repeat 2 row\(s\) \(row 0 3 times\)"):
        finetune.train_and_evaluate(data.load(table_file), [0, 0, 1, 0, 2, 2])


def test_score_takes_lists_and_checks_values_outside_jit_only(parts):
    """A list is a subset as its array is (it raised AttributeError); under jit only the shape is
    checked (the values are not known), and the same mask scores the same either way."""
    *_, p = parts
    mask = np.array([True, False, True, False, False, False])
    want = float(p.score(mask).accuracy)
    assert float(p.score(mask.tolist()).accuracy) == want
    assert float(jax.jit(p.score)(mask).accuracy) == want
    assert float(jax.jit(lambda q, m: q.score(m))(p, mask).accuracy) == want


@pytest.mark.parametrize("kind", ["knn", "linear"])
def test_every_proxy_kind_refuses_other_labels(parts, kind):
    """Only the ridge proxy compared select's labels with its own: a knn or linear proxy selected
    (and recorded label counts) with permuted labels."""
    x, y, v, yv, c, _ = parts
    p = proxy.make(x, y, c, v, yv, proxy.ProxyConfig(kind=kind))
    with pytest.raises(JaxselError, match="differ from the labels the proxy was made with"):
        agents.select(p, c, np.roll(y, 1), agents.SelectConfig(method="stratified", budget=0.1))
    sel = agents.select(p, c, y, agents.SelectConfig(method="stratified", budget=0.1))
    assert len(sel.indices) == 12 and sel.meta["train_labels_digest"] == selection.digest(y)  # what apply checks


@pytest.mark.parametrize("kind", ["ridge", "knn", "linear"])
def test_every_proxy_kind_refuses_the_same_sizes_in_other_rows_or_order(parts, kind):
    """Only the cluster sizes were compared: typical_order's reordering of the same partition (or
    two rows swapped between clusters) was accepted, and the recorded proxy score was of other
    rows than the exported ones (0.605 against 0.540)."""
    x, y, v, yv, c, _ = parts
    p = proxy.make(x, y, c, v, yv, proxy.ProxyConfig(kind=kind))
    a, b = np.flatnonzero(c.assignment == 0)[0], np.flatnonzero(c.assignment == 1)[0]
    swapped = c.assignment.copy()
    swapped[[a, b]] = swapped[[b, a]]
    others = {"typical order": cluster.typical_order(c, x),
              "two rows swapped": cluster.Clustering(swapped, c.centroids, c.sizes, np.where(c.table == a, b, np.where(
                  c.table == b, a, c.table)), c.inertia, c.meta)}
    for name, other in others.items():
        with pytest.raises(JaxselError, match="other rows, or list them in another order"):
            agents.select(p, other, y, agents.SelectConfig(method="random-search", budget=0.1))
    typical = others["typical order"]
    q = proxy.make(x, y, typical, v, yv, proxy.ProxyConfig(kind=kind))
    sel = agents.select(q, typical, y, agents.SelectConfig(method="random-search", budget=0.1))
    if kind != "linear":  # a trained head scores its index table only
        assert sel.scores["proxy_accuracy"] == pytest.approx(float(q.score_rows(sel.indices).accuracy), abs=1e-6)


def test_finetune_names_a_label_column_that_is_not_class_ids():
    """A DatasetDict built by hand with plain int or string labels raised AttributeError ('Value'
    object has no attribute 'names')."""
    from datasets import Dataset, DatasetDict
    for labels in ([0, 1, 0, 1], ["a", "b", "a", "b"]):
        dd = DatasetDict({s: Dataset.from_dict({"text": ["x y", "y z", "z x", "x x"], "label": labels})
                          for s in ("train", "validation", "test")})
        with pytest.raises(JaxselError, match=r"class_encode_column\('label'\)\), got text: Value, label: Value"):
            finetune.train_and_evaluate(dd, None, finetune.FinetuneConfig(model="tiny-bert"))
        dd = dd.class_encode_column("label")  # the fix the message names is accepted by the check
        assert isinstance(dd["train"].features["label"].names, list)


def test_finetune_names_an_empty_split():
    """An empty test split trained the model, then macro-F1 returned NaN with numpy's warnings."""
    from datasets import Dataset, DatasetDict
    rows = {"text": ["x y", "y z", "z x", "x x"], "label": [0, 1, 0, 1]}
    whole = DatasetDict({s: Dataset.from_dict(rows) for s in ("train", "validation", "test")}).class_encode_column("label")
    for split in ("validation", "test"):
        with pytest.raises(JaxselError, match=f"the {split} split has no rows"):
            finetune.train_and_evaluate(DatasetDict(whole, **{split: whole[split].select([])}), None,
                                        finetune.FinetuneConfig(model="tiny-bert"))


def test_a_wrong_split_column_is_named_in_one_short_line(table_file):
    """split_col naming the text column listed every distinct text (921 KB for a real file)."""
    with pytest.raises(JaxselError) as e:
        data.load(table_file, split_col="text")
    msg = str(e.value)
    assert msg.startswith("split column has 60 other values (") and ", ...); expected only" in msg and len(msg) < 400


def test_string_budgets_and_fractional_split_seeds(parts, table_file):
    """make_env took no "1/16" (a TypeError) though SelectConfig does; data.load's seed=1.5 and
    min_class_rows=2.5 reached numpy (a TypeError) or were accepted."""
    x, y, v, yv, c, p = parts
    assert int(agents.env.make_env(p, c, y, "1/4")[1].budget) == int(agents.env.make_env(p, c, y, 0.25)[1].budget) == 30
    for bad in (dict(seed=1.5), dict(min_class_rows=2.5)):
        with pytest.raises(JaxselError, match="must be integers"):
            data.load(table_file, **bad)


def test_finetune_checkpoints_belong_to_their_data(tmp_path):
    """A DatasetDict built by hand had its checkpoints signed by row indices only: another one of
    the same size resumed them (the first one's model scored on the second's test split).
    Stopping without a checkpoint folder had thrown the training away and returned None."""
    from datasets import Dataset, DatasetDict

    def made(words):
        return DatasetDict({s: Dataset.from_dict({"text": [f"{w} {i}" for i, w in enumerate(words * 4)],
                                                  "label": [i % 2 for i in range(len(words) * 4)]})
                            .class_encode_column("label") for s in ("train", "validation", "test")})
    cfg = finetune.FinetuneConfig(model="tiny-bert", epochs=2, batch_size=8, max_length=8, min_steps=0)
    with pytest.raises(JaxselError, match="stop_after_epochs needs a ckpt_dir"):
        finetune.train_and_evaluate(made(["a", "b"]), None, cfg, stop_after_epochs=1, progress=False)
    assert finetune.train_and_evaluate(made(["a", "b"]), None, cfg, ckpt_dir=tmp_path / "ck", stop_after_epochs=1,
                                       progress=False) is None
    with pytest.raises(JaxselError, match="another run configuration"):
        finetune.train_and_evaluate(made(["c", "d"]), None, cfg, ckpt_dir=tmp_path / "ck", resume=True, progress=False)
    done = finetune.train_and_evaluate(made(["a", "b"]), None, cfg, ckpt_dir=tmp_path / "ck", resume=True,
                                       progress=False)
    assert len(done["val_accuracy_per_epoch"]) == 2  # the same data resumes


def test_derived_texts_are_strings_and_hash_unambiguously(table_file):
    """derive's new texts were joined with NUL to be hashed: ["a\\0b", "c"] and ["a", "b\\0c"] gave one
    fingerprint (one stage cache for both); a None text reached datasets' TypeError."""
    dd = data.load(table_file)
    rows = {"train": np.arange(2)}
    one, two = (data.derive(dd, rows, train_texts=t, tag="x") for t in (["a\0b", "c"], ["a", "b\0c"]))
    assert data.dataset_fingerprint(one) != data.dataset_fingerprint(two)
    plain = data.derive(dd, rows, train_texts=["a", "b"], tag="x")  # texts without NUL hash as they did
    assert data.joined(["a", "b"]) == "a\0b" and data.dataset_fingerprint(plain) != data.dataset_fingerprint(one)
    with pytest.raises(JaxselError, match=r"train_texts\[1\] is NoneType, not a string"):
        data.derive(dd, rows, train_texts=["a", None], tag="x")


def test_token_widths_may_differ_and_other_kinds_say_they_ignore_tokens(parts, capsys):
    """Train and validation ids of other widths are padded to one (the validation+train scoring joins
    them); a ridge proxy given tokens says it ignores them (it was silent)."""
    x, y, v, yv, c, _ = parts
    tokens = 1 + np.arange(150 * 8).reshape(150, 8) % 50
    cfg = proxy.ProxyConfig(kind="transformer", tiny=True, steps=2, score_on="validation+train")
    p = proxy.make(x, y, c, v, yv, cfg, train_tokens=tokens[:120], val_tokens=tokens[120:, :5])
    assert p.xv.shape[1] == 8 and np.isfinite(float(p.score(np.ones(6, bool)).accuracy))
    proxy.make(x, y, c, v, yv, train_tokens=tokens[:120], val_tokens=tokens[120:])
    assert "the ridge proxy ignores them" in capsys.readouterr().err


def test_numpy_and_jax_budgets_read_as_their_decimal(parts):
    """A numpy or 0-d jax float budget is its shortest decimal (float32's 0.05 had been recorded as
    0.05000000074505806, and a jax scalar refused as no fraction)."""
    for b in (np.float32(0.05), jnp.float32(0.05), jnp.bfloat16(0.0625), np.float64(0.05), "1/20"):
        assert agents.SelectConfig(budget=b).budget == (0.0625 if getattr(b, "dtype", None) == jnp.bfloat16 else 0.05)
        assert experiment.RunConfig(budgets=(b,)).budgets[0] == agents.SelectConfig(budget=b).budget
    with pytest.raises(JaxselError, match=r"between 0 and 1, got 1\.5$"):  # its value, not Array(1.5, dtype=...)
        agents.SelectConfig(budget=jnp.float32(1.5))
    with pytest.raises(JaxselError, match="fraction in"):
        selection.budget_examples(True, 5)  # a bool is no fraction (it had given all 5 rows)


def test_select_runs_in_32_bits_under_jax_enable_x64(parts, monkeypatch):
    """select (searches and baselines too, not only the agents' training) runs with x64 off: an
    extraction had left its decorator on the agents' path only, which no result could show."""
    x, y, v, yv, c, p = parts
    seen = []
    greedy = agents.search.greedy
    monkeypatch.setattr(agents.search, "greedy", lambda *a, **k: seen.append(jax.config.jax_enable_x64) or greedy(*a, **k))
    with jax.enable_x64(True):
        agents.select(p, c, y, agents.SelectConfig(method="greedy", budget=0.1), progress=False)
    assert seen == [False]


def test_validation_classes_without_train_rows_are_named(parts, capsys):
    """Validation rows of a class no train row has can never be predicted: a warning names them
    (their share of the validation rows); the proxy still scores the rest as before."""
    x, y, v, yv, c, p = parts
    yv2 = np.where(np.arange(30) < 6, 3, yv)
    capsys.readouterr()
    p2 = proxy.make(x, y, c, v, yv2)
    err = capsys.readouterr().err
    assert "validation classes [3] have no train row" in err and "(20.0% of the validation rows)" in err
    assert float(p2.score(np.ones(c.k, bool)).accuracy) <= 0.8  # the 6 rows of class 3 are never right


def test_apply_without_a_fingerprint_warns_of_other_pools(table_file, capsys):
    """Two pools of one dataset with the same labels in the same order (e.g. stratified pools of
    label-grouped data) but other texts: a selection made without ``meta={"fingerprint": ...}``
    applies to either (it cannot tell them apart), and now says so; with the fingerprint the other
    pool is refused."""
    dd = data.load(str(table_file))
    n = len(dd["train"])
    pools = [data.derive(dd, {}, train_texts=[f"pool {k} row {i}" for i in range(n)], tag=f"pool{k}") for k in (0, 1)]
    y = np.asarray(dd["train"]["label"])
    x = embed.encode(dd["train"]["text"], "hash")
    c = cluster.kmeans(x, 6)
    p = proxy.make(x, y, c, x[:30], y[:30])
    sel = agents.select(p, c, y, agents.SelectConfig(method="random", budget=0.1))
    capsys.readouterr()
    assert [len(sel.apply(pool)) for pool in pools] == [sel.meta["budget_examples"]] * 2
    assert "records no dataset fingerprint: apply checked only the train labels" in capsys.readouterr().err
    signed = agents.select(p, c, y, agents.SelectConfig(method="random", budget=0.1),
                           meta={"fingerprint": data.dataset_fingerprint(pools[0])})
    assert len(signed.apply(pools[0])) == sel.meta["budget_examples"]
    with pytest.raises(JaxselError, match="selection was made for another dataset"):
        signed.apply(pools[1])
