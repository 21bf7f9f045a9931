import json

import numpy as np
import pytest

from jaxsel import cluster, data, selection
from jaxsel.errors import JaxselError
from jaxsel.selection import Selection, balance_caps, class_caps, indices_for, take_for


@pytest.fixture(scope="module")
def cl():
    rng = np.random.default_rng(0)
    return cluster.kmeans(rng.standard_normal((300, 4)).astype(np.float32), 10)


def test_exact_budget_and_trim_rule(cl):
    order = list(np.argsort(cl.sizes)[::-1][:3])
    full = sum(cl.sizes[order])
    budget = full - 5
    idx = indices_for(cl, order, budget)
    assert len(idx) == budget and len(set(idx.tolist())) == budget
    for c in order[:-1]:  # all but the last cluster come whole
        assert set(cl.members(c)) <= set(idx.tolist())
    last = set(cl.members(order[-1]))
    assert len(last & set(idx.tolist())) == cl.sizes[order[-1]] - 5
    # the last cluster gives up its first rows in the within-cluster order
    rows, start = cluster.member_order(cl)
    head = rows[start[order[-1]]:start[order[-1]] + cl.sizes[order[-1]] - 5]
    assert set(head.tolist()) == last & set(idx.tolist())
    np.testing.assert_array_equal(idx, indices_for(cl, order, budget))
    assert len(indices_for(cl, order, full + 50)) == full  # fewer than the budget: all of them
    # picks after the budget is reached add nothing
    assert take_for(order + [int(np.argmin(cl.sizes))], cl.sizes, budget).sum() == budget


def test_class_caps_closed_forms():
    # proportional: Hamilton's largest remainder (4 x 5/11 = 1.82, 1.09, 1.09 -> 1, 1, 1 + the largest remainder)
    assert class_caps(np.array([500, 300, 200]), 10, "proportional").tolist() == [5, 3, 2]
    assert class_caps(np.array([5, 3, 3]), 4, "proportional").tolist() == [2, 1, 1]
    # equal: 10 each, the 3-row class gives all it has, its 7 left are split 4/3 (the tie to the lower class)
    assert class_caps(np.array([100, 100, 3]), 30, "equal").tolist() == [14, 13, 3]
    assert class_caps(np.array([7, 9]), 16, "equal").tolist() == [7, 9]  # the whole pool
    # three classes given whole, the other seven within one row of each other (a new user's Debian
    # sections got 52 beside 50: rounds of equal shares left a round's remainder row with its class)
    counts = np.array([80, 120, 360, 40, 480, 640, 280, 24, 200, 32])
    assert class_caps(counts, 451, "equal").tolist() == [51, 51, 51, 40, 51, 51, 50, 24, 50, 32]
    rng = np.random.default_rng(0)
    for _ in range(200):
        counts = rng.integers(1, 60, rng.integers(2, 12))
        examples = int(rng.integers(1, counts.sum() + 1))
        caps = class_caps(counts, examples, "equal")
        partial = caps < counts
        assert caps.sum() == examples and (caps <= counts).all()
        if partial.any():  # every class not given whole is within one of the largest cap
            assert caps[partial].max() - caps[partial].min() <= 1 and caps[partial].min() >= caps.max() - 1
    with pytest.raises(JaxselError, match="unknown balance"):
        class_caps(np.array([5, 5]), 4, "even")
    with pytest.raises(JaxselError, match="cannot balance"):
        class_caps(np.array([5, 5]), 11, "equal")


@pytest.mark.parametrize("quota", [0, 4])
@pytest.mark.parametrize("balance", ["proportional", "equal"])
def test_class_caps_fill_every_class_exactly(quota, balance):
    """Random pick orders under class caps (label-pure clusters): every class gets exactly its cap,
    so the budget is exact, and each row is chosen once."""
    from jaxsel.agents import search
    rng = np.random.default_rng(1)
    labels = np.repeat([0, 1, 2], [180, 90, 30])
    c = cluster.kmeans(rng.standard_normal((300, 4)).astype(np.float32), 12, labels=labels)
    caps = balance_caps(c, labels, 45, balance)
    assert caps.caps.sum() == 45 and (caps.caps == class_caps(np.bincount(labels), 45, balance)).all()
    for seed in range(20):
        order = search.complete([], c.sizes, 45, np.random.default_rng(seed), quota, caps)
        take = take_for(order, c.sizes, 45, quota, caps)
        np.testing.assert_array_equal(np.bincount(caps.cluster_class, weights=take, minlength=3), caps.caps)
        rows = indices_for(c, order, 45, quota, caps)
        assert len(np.unique(rows)) == 45 and (np.bincount(labels[rows], minlength=3) == caps.caps).all()
    mixed = cluster.kmeans(rng.standard_normal((300, 4)).astype(np.float32), 12)
    with pytest.raises(JaxselError, match="label-pure"):
        balance_caps(mixed, labels, 45, balance)
    with pytest.raises(JaxselError, match="unknown balance 'even'"):
        balance_caps(c, labels, 45, "even")


@pytest.mark.parametrize("order", ["random", "typical"])
def test_member_order_is_a_partition_led_by_the_table(cl, order, tmp_path):
    x = np.random.default_rng(0).standard_normal((300, 4)).astype(np.float32)  # the rows cl clustered
    if order == "typical":
        cl = cluster.typical_order(cl, x)
        cl.save(tmp_path / "c.npz")
        np.testing.assert_array_equal(cluster.Clustering.load(tmp_path / "c.npz").within, cl.within)
    rows, start = cluster.member_order(cl)
    assert sorted(rows.tolist()) == list(range(len(cl.assignment)))
    for j in range(cl.k):
        part = rows[start[j]:start[j + 1]]
        assert (cl.assignment[part] == j).all()
        head = cl.table[j][cl.table[j] >= 0]
        np.testing.assert_array_equal(part[:len(head)], head)
        if order == "typical":  # nearest the centroid first
            assert (np.diff(np.linalg.norm(x[part] - cl.centroids[j], axis=1)) >= -1e-6).all()
    again = cluster.member_order(cl)
    np.testing.assert_array_equal(rows, again[0])


def test_quota_takes_follow_the_typical_order(cl):
    """Quota picks on a typical-ordered clustering take each cluster's most central rows, and the
    ridge proxy's chunk statistics score them as a fit on exactly those rows."""
    import jax.numpy as jnp

    from jaxsel import proxy, selection
    rng = np.random.default_rng(0)
    x = rng.standard_normal((300, 4)).astype(np.float32)
    typ = cluster.typical_order(cl, x)
    y = (x[:, 0] > 0).astype(int)
    p = proxy.make(x, y, typ, x[:50], y[:50]).with_quota(3).with_partial_cap(3)
    order = [0, 1, 0, 2, 0]
    take = take_for(order, typ.sizes, 14, quota=3)
    assert take.tolist()[:3] == [8, 3, 3] and take.sum() == 14  # the 5th pick is trimmed to 2 rows
    rows = selection.rows_for(typ, take)
    d0 = np.linalg.norm(x[typ.assignment == 0] - typ.centroids[0], axis=1)
    assert np.isclose(np.sort(d0)[:8], np.sort(np.linalg.norm(x[rows[typ.assignment[rows] == 0]] - typ.centroids[0],
                                                                 axis=1))).all()
    assert float(p.score(jnp.asarray(take)).loglik) == pytest.approx(float(p.score_rows(rows).loglik), abs=1e-5)


def test_save_load_apply(tmp_path, table_file, cl, capsys):
    dd = data.load(str(table_file))
    sel = Selection([1, 2], np.array([0, 3, 5]), {"proxy_accuracy": 0.5},
                    {"fingerprint": data.dataset_fingerprint(dd), "method": "random"})
    out = tmp_path / "sel"
    sel.save(out / "s.json")
    assert sorted(p.name for p in out.iterdir()) == ["s.indices.npy", "s.json"]  # no temporary files left
    back = Selection.load(out / "s.json")
    np.testing.assert_array_equal(back.indices, sel.indices)
    assert back.scores == sel.scores and back.cluster_ids == [1, 2]
    assert back == sel and back != Selection([1, 2], np.array([0, 3, 6]), sel.scores, sel.meta)  # ==: a ValueError (round 51)
    assert back != Selection([1, 2], sel.indices, sel.scores, sel.meta, np.array([1, 1, 2])) and back != "sel.json"
    assert back.apply(dd)["text"] == [dd["train"]["text"][i] for i in (0, 3, 5)]
    other = data.load(str(table_file), seed=5)
    with pytest.raises(JaxselError, match="selection was made for another dataset .* split options differ; a sel"):
        back.apply(other)
    older = Selection([1, 2], np.array([0, 3, 5]), {}, dict(back.meta, jaxsel_version="0.0.1"))  # another jaxsel's
    with pytest.raises(JaxselError, match=r"options differ, or this jaxsel reads them otherwise than the one that made "
                                          r"it \(0.0.1\); a selection of a pool"):
        older.apply(other)
    unrecorded = Selection([1], np.array([0, 3]), {}, {})  # made by the library without meta
    assert unrecorded.apply(other)["text"] == [other["train"]["text"][i] for i in (0, 3)]
    assert "cannot be checked against this dataset" in capsys.readouterr().err
    counts = np.bincount(data.column(dd["train"], "label")).tolist()  # what agents.select records
    counted = Selection([1], np.array([0, 3]), {}, {"train_label_counts": counts})
    assert counted.apply(dd)["text"] == [dd["train"]["text"][i] for i in (0, 3)]
    smaller = data.derive(dd, {"train": np.arange(len(dd["train"]) - 1)}, tag="one row less")
    with pytest.raises(JaxselError, match=rf"made for a train split of {sum(counts)} rows with class counts"):
        counted.apply(smaller)  # was exported to any dataset with enough rows
    labels = np.asarray(data.column(dd["train"], "label"))
    sequenced = Selection([1], np.array([0, 3]), {}, {"train_label_counts": counts,
                                                      "train_labels_digest": selection.digest(labels)})
    assert sequenced.apply(dd)["text"] == [dd["train"]["text"][i] for i in (0, 3)]
    assert np.bincount(data.column(other["train"], "label")).tolist() == counts  # another split, same counts
    with pytest.raises(JaxselError, match="same class counts but its labels in another order"):
        sequenced.apply(other)  # was applied to rows it never chose
    with pytest.raises(JaxselError, match="the train split only"):
        Selection([1], np.array([0, 10_000]), {}, {}).apply(other)


def test_bad_files(tmp_path):
    (tmp_path / "x.json").write_text("{not json")
    np.save(tmp_path / "x.indices.npy", np.arange(3))
    with pytest.raises(JaxselError, match="not a readable selection"):
        Selection.load(tmp_path / "x.json")
    (tmp_path / "y.json").write_text(json.dumps({"format": "other"}))
    np.save(tmp_path / "y.indices.npy", np.arange(3))
    with pytest.raises(JaxselError, match="not a jaxsel selection"):
        Selection.load(tmp_path / "y.json")
    with pytest.raises(JaxselError, match="missing"):
        Selection.load(tmp_path / "z.json")


def test_incomplete_or_mistyped_files_are_named(tmp_path):
    """A well-formed JSON of the selection format missing a field raised KeyError, a list of
    digests TypeError, a 0-d index file TypeError; float indices loaded."""
    Selection([1, 2], np.array([3, 5, 9]), {"proxy_accuracy": 0.5}, {"a": 1}).save(tmp_path / "s.json")
    doc = json.loads((tmp_path / "s.json").read_text())
    changes = {"no num_examples": (lambda d: d.pop("num_examples"), "no 'num_examples'"),
               "no meta": (lambda d: d.pop("meta"), "no 'meta'"),
               "digests a list": (lambda d: d.update(digests=[]), "'digests' must be of type dict, got list"),
               "no indices digest": (lambda d: d["digests"].pop("indices"), "'digests' must name"),
               "cluster ids a string": (lambda d: d.update(cluster_ids="abc"), "'cluster_ids' must be of type list"),
               "cluster ids floats": (lambda d: d.update(cluster_ids=[1.5]), "'cluster_ids' must be integers"),
               # what export and finetune --selection read back: AttributeError, TypeError, KeyError tracebacks
               "data options a list": (lambda d: d["meta"].update(data_options=[1, 2]), "meta 'data_options' must be dict"),
               "dataset a number": (lambda d: d["meta"].update(dataset=5), "meta 'dataset' must be str"),
               "counts a number": (lambda d: d["meta"].update(train_label_counts=5), "must be a list of counts, got 5"),
               "counts of strings": (lambda d: d["meta"].update(train_label_counts=["a"]), "must be a list of counts")}
    for name, (change, message) in changes.items():
        bad = json.loads(json.dumps(doc))
        change(bad)
        (tmp_path / "t.json").write_text(json.dumps(bad))
        np.save(tmp_path / "t.indices.npy", np.array([3, 5, 9]))
        with pytest.raises(JaxselError, match=message):
            Selection.load(tmp_path / "t.json")
    undigested = {k: v for k, v in doc.items() if k != "digests"}  # the format before digests
    (tmp_path / "t.json").write_text(json.dumps(undigested))
    np.save(tmp_path / "t.indices.npy", np.array([3, 5, 9]))
    for clusters, message in ((np.array([1, 2]), r"holds \(2,\) int64, not one cluster id per selected row"),
                              (np.array(["a", "b", "c"]), "<U1, not one cluster id"),
                              (np.array([1, None, 2], object), "not a readable array")):
        np.save(tmp_path / "t.clusters.npy", clusters, allow_pickle=True)
        with pytest.raises(JaxselError, match=message):
            Selection.load(tmp_path / "t.json")
    (tmp_path / "t.clusters.npy").unlink()
    for indices, message in ((np.array(5), "holds a 0-D int64 array"), (np.array([1.5, 2.0, 3.0]), "float64 array"),
                             (np.array([1, 2, 2**63 + 5], np.uint64), r"must lie in \[0, 9223372036854775808\)"),
                             (np.array([1, 1, 2]), "repeat 1 row")):
        np.save(tmp_path / "t.indices.npy", indices)
        with pytest.raises(JaxselError, match=message):
            Selection.load(tmp_path / "t.json")


def test_negative_or_non_integer_rows_are_refused(tmp_path, table_file, capsys):
    """A selection's rows must be non-negative integers: save refuses others, and a file forged
    with a negative row (its digest rewritten to match) gets a one-line error from export (on
    loading), not datasets' OverflowError traceback."""
    from jaxsel import cli, selection
    dd = data.load(str(table_file))
    meta = {"fingerprint": data.dataset_fingerprint(dd), "dataset": str(table_file), "method": "greedy"}
    for bad, match in ((np.array([-1, 3]), "must be non-negative, got -1..3"), (np.array([0.0, 3.0]), "integer row"),
                       (np.array([[0, 3]]), "1-D"), (np.array([True, False]), "bool mask")):
        with pytest.raises(JaxselError, match=match):
            Selection([], bad, {}, meta).save(tmp_path / "bad.json")
        with pytest.raises(JaxselError, match=match):
            Selection([], bad, {}, meta).apply(dd)
    Selection([], np.array([1, 3]), {}, meta).save(tmp_path / "s.json")
    forged = np.array([-1, 3])
    np.save(tmp_path / "s.indices.npy", forged)
    doc = json.loads((tmp_path / "s.json").read_text())
    doc["digests"]["indices"] = selection.digest(forged)
    (tmp_path / "s.json").write_text(json.dumps(doc))
    assert cli.main(["export", str(tmp_path / "s.json"), "--data", str(table_file),
                     "--out", str(tmp_path / "k.jsonl")]) == 2
    err = capsys.readouterr().err
    assert "index file's rows must be non-negative, got -1..3" in err and "Traceback" not in err  # refused on load


def test_an_interrupted_export_never_leaves_an_earlier_sidecar_beside_new_rows(tmp_path, table_file, monkeypatch):
    """The sidecar was written after the rows: interrupted between the two, it described the previous
    export's rows (count, method, budget) beside the new ones."""
    from jaxsel import selection
    dd = data.load(str(table_file))
    meta = {"fingerprint": data.dataset_fingerprint(dd), "dataset": str(table_file), "method": "greedy"}
    out, side = tmp_path / "kept.jsonl", tmp_path / "kept.jsonl.jaxsel.json"
    selection.export(Selection([0], np.array([1, 4, 7]), {}, meta), dd, out)
    assert json.loads(side.read_text())["rows"] == 3

    def interrupted(path, text):
        raise KeyboardInterrupt

    monkeypatch.setattr(selection, "write_utf8", interrupted)
    with pytest.raises(KeyboardInterrupt):
        selection.export(Selection([0], np.array([1, 4, 7, 20, 21]), {}, meta), dd, out)
    assert len(out.read_text().splitlines()) == 5 and not side.exists()  # new rows, and no description of others
    monkeypatch.undo()
    selection.export(Selection([0], np.array([2]), {}, meta), dd, out)
    assert len(out.read_text().splitlines()) == 1 and json.loads(side.read_text())["rows"] == 1


@pytest.mark.parametrize("fmt", ["jsonl", "parquet", "csv", "arrow"])
def test_export_round_trips_through_datasets(tmp_path, table_file, fmt):
    import datasets

    from jaxsel import cli
    from jaxsel.selection import export
    dd = data.load(str(table_file))
    idx = np.array([1, 4, 7, 20])
    sel = Selection([2, 0], idx, {}, {"fingerprint": data.dataset_fingerprint(dd), "dataset": str(table_file),
                                      "method": "greedy", "budget": 0.1}, np.array([2, 2, 0, 0]))
    sel.save(tmp_path / "sel.json")
    names = dd["train"].features["label"].names
    want = sel.apply(dd)

    def read(path):
        if fmt == "arrow":
            return datasets.load_from_disk(str(path))
        kind = {"jsonl": "json", "parquet": "parquet", "csv": "csv"}[fmt]
        return datasets.load_dataset(kind, data_files=str(path), split="train", cache_dir=str(tmp_path / "hf"))

    out = tmp_path / f"kept.{fmt}"
    assert cli.main(["export", str(tmp_path / "sel.json"), "--format", fmt, "--out", str(out)]) == 0
    got = read(out)
    assert list(got["text"]) == list(want["text"]) and list(got["label"]) == [names[i] for i in want["label"]]
    assert list(got["row"]) == idx.tolist() and list(got["cluster"]) == [2, 2, 0, 0] and all(got["kept"])
    side = json.loads((tmp_path / f"kept.{fmt}.jaxsel.json").read_text())
    assert side["contents"].startswith("the KEPT examples") and side["method"] == "greedy" and side["rows"] == 4
    rest = export(Selection.load(tmp_path / "sel.json"), dd, tmp_path / f"rest.{fmt}", fmt, complement=True)
    back = read(rest)
    assert sorted(list(back["row"]) + list(got["row"])) == list(range(len(dd["train"]))) and not any(back["kept"])
    assert set(back["cluster"]) == {-1}  # rows outside the selection: cluster unknown to it
    again = data.load(str(rest))  # jaxsel reads back what it exports (an arrow folder was "not a data file")
    named = again["train"].features["label"].names
    assert sorted((t, named[y]) for s in again for t, y in zip(again[s]["text"], again[s]["label"])) == \
        sorted(zip(back["text"], back["label"]))
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no temporary files left
    other = data.load(str(table_file), seed=5)
    with pytest.raises(JaxselError, match="selection was made for another dataset"):
        export(sel, other, tmp_path / "x", fmt)


def test_checked_examples_warn_at_none_and_refuse_all(capsys):
    """`jaxsel finetune --random-fraction 0.0005` trained 1 example without the warning `select` gives
    (a new user's test): both count a fraction's examples through checked_examples."""
    from jaxsel.selection import checked_examples
    assert checked_examples(0.05, 1000) == 50 and capsys.readouterr().err == ""
    assert checked_examples(0.0005, 831, "--random-fraction") == 1
    assert "--random-fraction of 0.0005 of 831 train rows rounds to no example: selecting 1" in capsys.readouterr().err
    with pytest.raises(JaxselError, match="a budget of 0.9999 of 831 train rows rounds to all of them: choose a smaller budget"):
        checked_examples(0.9999, 831)


def test_saves_take_numpy_values_and_keep_other_names_apart(tmp_path):
    """NumPy scalars in scores, meta or a k-means seed made saves fail in json (after the .npy files
    were written); NaN was written as bare NaN (not JSON); ``random.seed0`` and ``random.seed1``
    shared one ``random.indices.npy``, so the first selection could no longer be loaded; a
    row_clusters of another length was saved and broadcast at export."""
    a = Selection([1], np.array([0, 2]), {"acc": np.float32(0.5), "gap": float("nan")}, {"n": np.int64(3)})
    b = Selection([2], np.array([4, 5, 6]), {}, {})
    a.save(tmp_path / "random.seed0")
    b.save(tmp_path / "random.seed1")
    got = Selection.load(tmp_path / "random.seed0")
    assert got.indices.tolist() == [0, 2] and got.scores == {"acc": 0.5, "gap": None} and got.meta == {"n": 3}
    assert Selection.load(tmp_path / "random.seed1").indices.tolist() == [4, 5, 6]
    assert "NaN" not in (tmp_path / "random.seed0").read_text()
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(JaxselError, match="cannot write selection .* as JSON"):
        Selection([], np.array([7]), {}, {"bad": object()}).save(tmp_path / "c.json")
    with pytest.raises(JaxselError, match="one cluster per selected row"):
        Selection([], np.array([1, 2]), {}, {}, row_clusters=np.array([0])).save(tmp_path / "d.json")
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written by either refusal
    x = np.random.default_rng(0).standard_normal((40, 4)).astype(np.float32)
    c = cluster.kmeans(x, 3, seed=np.int64(3))
    c.save(tmp_path / "c.npz")
    assert cluster.Clustering.load(tmp_path / "c.npz").meta["seed"] == 3


def test_source_column_names_follow_the_file_and_say_where_each_comes_from():
    """Export names and sidecar lines of a source's columns (round 24: a column the file names
    "column2" beside an unnamed second column was said to repeat a name the file holds once)."""
    import pandas as pd
    from jaxsel.selection import _source_names
    frame = pd.DataFrame({"Unnamed: 1": [1], "column2": [2], "x": [3], "x.1": [4], "row": [5]})
    frame.attrs["header"] = {"Unnamed: 1": ("", 1), "column2": ("column2", 2), "x": ("x", 3), "x.1": ("x", 4),
                             "row": ("row", 5)}
    names, about = _source_names(frame, ["text", "label", "row"])
    assert names == {"Unnamed: 1": "column2", "column2": "user_column2", "x": "x", "x.1": "user_x", "row": "user_row"}
    assert about == {"column2": "the source's column 2, which has no name",
                     "user_column2": "the source's column 'column2'",
                     "x": "the source's column 'x' (column 4 of its header, where the name repeats)",
                     "user_x": "the source's column 'x' (column 5 of its header, where the name repeats)",
                     "user_row": "the source's column 'row'"}
    plain = pd.DataFrame({"": [1], "a": [2]})  # from Python, without attrs: the frame's own names and places
    assert _source_names(plain, ["text"]) == ({"": "column1", "a": "a"},
                                              {"column1": "the source's column 1, which has no name",
                                               "a": "the source's column 'a'"})


def test_class_lists_quote_their_names():
    """Round 40: "no example of classes food, drink, sports team" read as three classes where there were two."""
    from jaxsel.selection import class_list
    assert class_list([0, 2], ["food", "drink", "sports, team"]) == "classes 'food', 'sports, team'"
    assert class_list([1], ["a", "line\nbreak"]) == "class 'line\\nbreak'"  # one line, whatever the name
