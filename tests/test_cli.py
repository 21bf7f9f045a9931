import json
import os
import re
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from jaxsel import cli, cluster


def run(*args, env=None):
    return subprocess.run([sys.executable, "-m", "jaxsel", *args], capture_output=True, text=True, env=env)


def test_data_prints_splits(table_file, capsys):
    assert cli.main(["data", str(table_file)]) == 0
    out = capsys.readouterr().out
    assert "train" in out and "validation" in out and "test" in out and "neg" in out


def test_class_names_with_newlines_keep_the_table_one_line_a_row(tmp_path, capsys):
    """Round 31: a label "a\\nb" broke `jaxsel data`'s header (and select's label mix) in two."""
    import csv
    with open(tmp_path / "d.csv", "w", newline="") as f:
        csv.writer(f).writerows([("text", "label")] + [(f"t {i}", ["a\nb", "x,y", "plain"][i % 3]) for i in range(60)])
    assert cli.main(["data", str(tmp_path / "d.csv")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 6 and "a\\nb" in lines[2] and "x,y" in lines[2] and lines[3].startswith("train"), lines


def test_user_error_is_one_line_exit_2():
    p = run("data", "missing.csv")
    assert p.returncode == 2
    assert p.stderr.strip() == f"jaxsel: error: no such file: missing.csv (relative paths, in a config too, are read " \
        f"from the working folder: {Path.cwd()})"  # a config-relative path was a new user's guess


def test_cluster_writes_file(table_file, tmp_path, tmp_cache):
    out = tmp_path / "c.npz"
    assert cli.main(["cluster", str(table_file), "--k", "4", "--model", "hash", "--out", str(out)]) == 0
    c = cluster.Clustering.load(out)
    assert c.k == 4 and c.sizes.sum() == 48 and c.meta["embed_model"] == "hash"


def test_select_clusters_as_jaxsel_cluster_does(table_file, tmp_path, tmp_cache, capsys):
    """``select --cluster-method minibatch`` (and ``[cluster] method``) uses the clustering that
    ``jaxsel cluster --method minibatch`` writes; select had no way to use mini-batch k-means (a user
    with a large file found ``cluster --method minibatch`` a dead end)."""
    for method in ("lloyd", "minibatch"):
        written = tmp_path / f"c-{method}.npz"
        assert cli.main(["cluster", str(table_file), "--k", "4", "--model", "hash", "--method", method,
                         "--out", str(written)]) == 0
        out = tmp_path / method / "sel"
        assert cli.main(["select", str(table_file), "--k", "4", "--model", "hash", "--method", "stratified",
                         "--cluster-method", method, "--out", str(out)]) == 0
        [staged] = (out.parent / "stages").glob("cluster-*.npz")
        np.testing.assert_array_equal(cluster.Clustering.load(staged).assignment,
                                      cluster.Clustering.load(written).assignment)
    assert not np.array_equal(*(cluster.Clustering.load(tmp_path / f"c-{m}.npz").centroids for m in ("lloyd", "minibatch")))
    # a resume under the other method is refused (it continued the agent on the other clusters: a wrong selection)
    sel = ["select", str(table_file), "--k", "4", "--model", "hash", "--method", "ppo", "--steps", "64",
           "--out", str(tmp_path / "ppo")]
    assert cli.main(sel) == 0
    capsys.readouterr()
    assert cli.main(sel + ["--resume", "--cluster-method", "minibatch"]) == 2
    assert "written by another run configuration (it differs in meta.cluster_method" in capsys.readouterr().err


def test_cluster_k_too_large(table_file, tmp_cache, capsys):
    assert cli.main(["cluster", str(table_file), "--k", "100", "--model", "hash"]) == 2
    assert "cannot make 100 clusters from 48" in capsys.readouterr().err


def test_parse_budget():
    assert cli.parse_budget("1/16") == 0.0625 and cli.parse_budget("0.05") == 0.05
    for bad in ("0", "1", "-0.1", "abc", "1/0"):
        try:
            cli.parse_budget(bad)
        except cli.JaxselError:
            continue
        raise AssertionError(bad)
    assert np.isclose(cli.parse_budget("0.5"), 0.5)


def test_a_baseline_missing_a_small_class_says_why(tmp_path, tmp_cache, capsys):
    """Round 31: stratified at a budget with room for every class left the small ones out (it shares the
    budget in proportion to class sizes, as stratified sampling does) and advised only a larger budget;
    the warning now says why and names the search setting that keeps every class."""
    rows = [(f"big {i}", "big") for i in range(240)] + [(f"s{c} {i}", f"small{c}") for c in range(3) for i in range(12)]
    (tmp_path / "d.csv").write_text("text,label\n" + "".join(f"{t},{y}\n" for t, y in rows))
    assert cli.main(["select", str(tmp_path / "d.csv"), "--model", "hash", "--k", "4", "--method", "stratified",
                     "--budget", "0.05", "--out", str(tmp_path / "s")]) == 0
    err = capsys.readouterr().err
    assert "holds no example of classes 'small" in err and \
        "in proportion to their train rows: try a larger budget, or a search with --stratified --balance equal" in err


def test_select_reports_the_exported_rows_and_warns_on_a_missing_class(tmp_path, tmp_cache, capsys, monkeypatch):
    """A budget smaller than one label-pure cluster: the selection is one trimmed cluster, so two
    classes are missing; the printout and the file carry the score of the exported rows."""
    from conftest import write_data
    from jaxsel.selection import Selection
    csv = write_data(tmp_path / "d.csv")
    out = tmp_path / "sel"
    assert cli.main(["select", str(csv), "--split-col", "split", "--model", "hash", "--k", "6", "--stratified",
                     "--method", "greedy", "--budget", "0.05", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    sel = Selection.load(out / "selection.json")
    assert len(sel.indices) == 13 and "the last trimmed to the budget" in captured.out
    assert f"proxy accuracy of these examples {sel.scores['proxy_accuracy']:.4f}" in captured.out
    assert len(sel.meta["missing_classes"]) == 2 and "holds no example of classes" in captured.err
    assert "cannot predict those classes" in captured.err and "or --granularity quota (a pick of whole clusters" in \
        captured.err  # round 39: a 10-class file's greedy of whole clusters missed 3 classes, with no hint of quota
    # quota picks: 4 examples of a cluster per pick, so every class can be reached within the budget
    assert cli.main(["select", str(csv), "--split-col", "split", "--model", "hash", "--k", "6", "--stratified",
                     "--method", "greedy", "--budget", "0.05", "--granularity", "quota", "--quota", "4",
                     "--out", str(tmp_path / "q")]) == 0
    sel = Selection.load(tmp_path / "q" / "selection.json")
    assert len(sel.indices) == 13 and sel.meta["quota"] == 4 and len(sel.cluster_ids) == 4
    assert "(4 picks of up to 4 examples, the last trimmed to the budget)" in capsys.readouterr().out
    # --filter cleanlab: the same budget, chosen among the rows cleanlab does not flag
    assert cli.main(["select", str(csv), "--split-col", "split", "--model", "hash", "--k", "6", "--stratified",
                     "--method", "greedy", "--budget", "0.05", "--granularity", "quota", "--quota", "4",
                     "--filter", "cleanlab", "--out", str(tmp_path / "f")]) == 0
    sel = Selection.load(tmp_path / "f" / "selection.json")
    assert len(sel.indices) == 13 and sel.meta["filter"] == "cleanlab" and "excluded_rows" in sel.meta
    # --filter cleanlab+clusters: cleanlab's rows and the clusters most of whose rows it flags
    assert cli.main(["select", str(csv), "--split-col", "split", "--model", "hash", "--k", "6", "--stratified",
                     "--method", "greedy", "--budget", "0.05", "--granularity", "quota", "--quota", "4",
                     "--filter", "cleanlab+clusters", "--out", str(tmp_path / "fc")]) == 0
    both = Selection.load(tmp_path / "fc" / "selection.json")
    assert len(both.indices) == 13 and both.meta["filter"] == "cleanlab+clusters"
    capsys.readouterr()
    # an example-level baseline ignores the filter, says so, and does not record it
    assert cli.main(["select", str(csv), "--split-col", "split", "--model", "hash", "--k", "6", "--method", "stratified",
                     "--budget", "0.05", "--filter", "cleanlab", "--out", str(tmp_path / "fs")]) == 0
    assert "stratified ignores it" in capsys.readouterr().err
    assert Selection.load(tmp_path / "fs" / "selection.json").meta["filter"] == "none"
    # so do the RL agents' settings given to a search (a new user's round: they passed silently)
    assert cli.main(["select", str(csv), "--split-col", "split", "--model", "hash", "--k", "6", "--method", "greedy",
                     "--budget", "0.05", "--network", "early", "--out", str(tmp_path / "fn")]) == 0
    assert "set the RL agents (ppo, dqn); greedy ignores them" in capsys.readouterr().err
    # ... and name no other default folder (round 34: --horizon, --agreement, --steps made a second one)
    monkeypatch.chdir(tmp_path)
    greedy = ["select", str(csv), "--split-col", "split", "--model", "hash", "--k", "6", "--method", "greedy",
              "--budget", "0.05"]
    wrote = [cli.main(greedy + extra) == 0 and [ln for ln in capsys.readouterr().out.splitlines() if "wrote" in ln]
             for extra in ([], ["--horizon", "8", "--agreement", "--steps", "500"])]
    assert wrote[0] == wrote[1] and wrote[0], wrote
    assert cli.main(greedy + ["--steps", "500", "--horizon", "8"]) == 0
    err = capsys.readouterr().err
    assert "note: --steps, --network and --preference-rate set the RL agents (ppo, dqn); greedy ignores them" in err
    assert "warning: greedy ignores horizon=8: read by" not in err and "greedy ignores horizon=8: it sets" in err
    # --balance equal: per-class caps of the 13 examples, so no class is missing, with whole clusters too
    capsys.readouterr()
    assert cli.main(["select", str(csv), "--split-col", "split", "--model", "hash", "--k", "6", "--stratified",
                     "--method", "greedy", "--budget", "0.05", "--balance", "equal", "--out", str(tmp_path / "b")]) == 0
    sel = Selection.load(tmp_path / "b" / "selection.json")
    assert sel.meta["label_counts"] == sel.meta["class_caps"] == [5, 4, 4] and not sel.meta["missing_classes"]
    assert "holds no example" not in capsys.readouterr().err
    assert cli.main(["select", str(csv), "--split-col", "split", "--model", "hash", "--k", "2", "--method", "greedy",
                     "--budget", "0.05", "--balance", "equal", "--out", str(tmp_path / "m")]) == 2  # 3 classes
    err = capsys.readouterr().err.strip()
    assert "needs label-pure clusters" in err and len(err.splitlines()) == 1
    # example-level baselines ignore the caps, and say so
    assert cli.main(["select", str(csv), "--split-col", "split", "--model", "hash", "--k", "2", "--method", "random",
                     "--budget", "0.05", "--balance", "equal", "--out", str(tmp_path / "r")]) == 0
    assert "random ignores balance='equal'" in capsys.readouterr().err


def test_version():
    """The version with the commit of a git checkout (round 21 of new users' tests: "0.1.0" across
    300 commits that changed results), as git itself reads it."""
    import jaxsel
    jaxsel.code_version.cache_clear()  # as the tree is now: an earlier test of this worker may have read it
    p = run("--version")
    assert p.returncode == 0 and p.stdout.strip() == f"jaxsel {jaxsel.code_version()}"
    assert cli.main(["--version"]) == 0 and cli.main(["no-such-command"]) == 2  # statuses, not SystemExit
    root = Path(jaxsel.__file__).parent.parent
    if (root / ".git").exists():  # an editable install of a clone (the README's, CI's)
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "--short=7", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--", "jaxsel"], capture_output=True,
                               text=True, check=True).stdout.strip() != ""
        assert jaxsel.code_version() == f"{jaxsel.__version__}+g{head}{'.dirty' if dirty else ''}"
    else:
        assert jaxsel.code_version() == jaxsel.__version__


def test_unwritable_output_is_one_line(table_file, tmp_path, tmp_cache, capsys):
    import os
    locked = tmp_path / "locked"
    locked.mkdir()
    os.chmod(locked, 0o500)
    try:
        if os.access(locked, os.W_OK):  # root ignores permissions: use a file where a folder must go
            locked = tmp_path / "a-file"
            locked.write_text("")
        code = cli.main(["cluster", str(table_file), "--k", "4", "--model", "hash", "--out", str(locked / "sub" / "c.npz")])
    finally:
        os.chmod(tmp_path / "locked", 0o700)
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("jaxsel: error: cannot write") and str(locked) in err and "\n" not in err


def test_data_label_issues(tmp_path, tmp_cache, capsys):
    from conftest import write_data
    csv = write_data(tmp_path / "d.csv")
    assert cli.main(["data", str(csv), "--split-col", "split", "--model", "hash", "--k", "12", "--label-issues"]) == 0
    out = capsys.readouterr().out
    assert "label issues (cleanlab on leave-one-cluster-out ridge predictions, k=12):" in out
    assert cli.main(["data", str(csv), "--split-col", "split", "--model", "hash", "--label-issues", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["label_issues"]["rows"] == 252 and 0 <= doc["label_issues"]["flagged"] < 252
    for f in (tmp_cache / "embeddings").iterdir():  # embedding afresh: its lines went to stdout before the JSON
        f.unlink()
    assert cli.main(["data", str(csv), "--split-col", "split", "--model", "hash", "--label-issues", "--json"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out) == doc and "embedding train: 252 texts" in err


def test_usage_mistakes_are_one_line_exit_2(table_file, capsys):
    """Bad option values stop argparse with the option's own message on one line (no usage dump)."""
    for args, says in [(("select", str(table_file), "--budget", "0"), "budget must be strictly between 0 and 1"),
                       (("select", str(table_file), "--budget", "abc"), "budget must be a number like 0.05"),
                       (("select", str(table_file), "--steps", "0"), "--steps: must be at least 1"),
                       (("finetune", str(table_file), "--batch-size", "0"), "--batch-size: must be at least 1"),
                       (("finetune", str(table_file), "--random-fraction", "2"), "budget must be strictly between"),
                       (("select", str(table_file), "--seed", "-1"), "--seed: must be at least 0"),
                       (("select", str(table_file), "--network", "lat"), "--network: invalid choice: 'lat'"),
                       (("select", str(table_file), "--preference-rate", "1e6"),
                        "--preference-rate: must be in [0, 1000], got 1e6"),
                       (("select", str(table_file), "--seed", str(2**64)), "--seed: must be at most 2147483647"),
                       (("select", str(table_file), "--steps", str(10**11)), "--steps: must be at most 2147483647"),
                       (("data", str(table_file), "--split-seed", "-1"), "--split-seed: must be at least 0"),
                       (("embed", str(table_file), "--max-length", "1"), "--max-length: must be at least 2"),
                       # an unknown option, named by its command (round 41: "jaxsel: error: ... (see jaxsel --help)")
                       (("select", str(table_file), "--bogus", "1"),
                        "jaxsel select: error: unrecognized arguments: --bogus 1 (see jaxsel select --help)")]:
        code = cli.main(list(args))  # argparse's exit becomes main's status (round 29: SystemExit in a notebook)
        err = capsys.readouterr().err
        assert code == 2 and says in err and len(err.strip().splitlines()) == 1, (args, err)


def test_ignored_or_invalid_settings_are_refused(table_file, tmp_path, tmp_cache, capsys):
    from jaxsel import data
    from jaxsel.config import FinetuneConfig, load_config
    assert cli.main(["select", str(table_file), "--model", "hash", "--k", "4", "--quota", "5"]) == 2
    assert "--granularity quota" in capsys.readouterr().err
    cfg = tmp_path / "q.toml"
    cfg.write_text('[select]\nquota = 5\n')
    with np.testing.assert_raises_regex(cli.JaxselError, "granularity"):
        load_config(cfg)
    for bad in (dict(epochs=0), dict(batch_size=0), dict(grad_accum=0), dict(lr=0.0), dict(max_steps=0)):
        with np.testing.assert_raises_regex(cli.JaxselError, "finetune"):
            FinetuneConfig(**bad)
    for model in ("tiny-bert", "minilm"):  # refused with the config, before a run's first stage
        with np.testing.assert_raises_regex(cli.JaxselError, "lora_rank applies to decoders"):
            FinetuneConfig(model=model, lora_rank=2)
    cfg.write_text('[finetune]\nmodel = "minilm"\nlora_rank = 4\n')
    with np.testing.assert_raises_regex(cli.JaxselError, "lora_rank applies to decoders"):
        load_config(cfg)
    assert cli.main(["select", str(table_file), "--model", "hash", "--k", "4", "--val-size", "2",
                     "--out", str(tmp_path / "v")]) == 2
    assert "val_size must be at least the number of classes (3)" in capsys.readouterr().err
    with np.testing.assert_raises_regex(cli.JaxselError, "did you mean 'rotten_tomatoes'"):
        data.load("rotten_tomato")
    header = tmp_path / "header.csv"
    header.write_text("text,label\n")
    with np.testing.assert_raises_regex(cli.JaxselError, "header.csv"):
        data.load(str(header))


def test_select_passes_agent_settings(table_file, tmp_path, tmp_cache, monkeypatch):
    """--network and --preference-rate reach both agents' configs (they were settable from run
    configs and the library only); without --network each agent keeps its own default."""
    from jaxsel import agents

    class Stop(Exception):
        pass

    def capture(proxy, clustering, labels, config, **kw):
        seen.append(config)
        raise Stop
    seen = []
    monkeypatch.setattr(agents, "select", capture)
    with pytest.raises(Stop):
        cli.main(["select", str(table_file), "--model", "hash", "--k", "4", "--network", "late",
                  "--preference-rate", "64", "--out", str(tmp_path / "s")])
    assert (seen[0].ppo.network, seen[0].ppo.preference_rate, seen[0].dqn.network) == ("late", 64.0, "late")
    with pytest.raises(Stop):
        cli.main(["select", str(table_file), "--model", "hash", "--k", "4", "--network", "early",
                  "--out", str(tmp_path / "e")])
    assert (seen[1].ppo.network, seen[1].ppo.preference_rate, seen[1].dqn.network) == ("early", 0.0, "early")
    with pytest.raises(Stop):
        cli.main(["select", str(table_file), "--model", "hash", "--k", "4", "--out", str(tmp_path / "d")])
    assert (seen[2].ppo, seen[2].dqn) == (agents.ppo.PPOConfig(), agents.dqn.DQNConfig())


def test_selection_records_how_to_read_its_data(tmp_path, tmp_cache, monkeypatch):
    """A selection made from a relative path with renamed columns exports from any folder without
    repeating them, and a byte-identical copy of the file is the same dataset (the fingerprint is
    the content, not the path's spelling)."""
    from jaxsel import data
    from jaxsel.selection import Selection
    work, other = tmp_path / "work", tmp_path / "other"
    work.mkdir(), other.mkdir()
    rows = ["review,stars"] + [f"\"{w} {w} item {i}\",{s}" for i, (w, s) in
                               enumerate([("good", "5"), ("bad", "1"), ("fine", "3")] * 30)]
    (work / "r.csv").write_text("\n".join(rows) + "\n")
    monkeypatch.chdir(work)
    assert cli.main(["select", "r.csv", "--text-col", "review", "--label-col", "stars", "--model", "hash", "--k", "6",
                     "--method", "stratified", "--budget", "0.2", "--out", "sel"]) == 0
    sel = Selection.load(work / "sel" / "selection.json")
    assert sel.meta["dataset"] == str(work / "r.csv") and sel.meta["data_options"]["text_col"] == "review"
    monkeypatch.chdir(other)
    assert cli.main(["export", str(work / "sel" / "selection.json"), "--out", "kept.csv"]) == 0
    kept = (other / "kept.csv").read_text().splitlines()
    assert kept[0] == "text,label,row,source_row,cluster,kept" and len(kept) == 1 + len(sel.indices)
    (other / "copy.csv").write_bytes((work / "r.csv").read_bytes())
    assert cli.main(["export", str(work / "sel" / "selection.json"), "--data", "copy.csv", "--out", "k2.jsonl"]) == 0
    opts = dict(text_col="review", label_col="stars")
    assert data.dataset_fingerprint(data.load("copy.csv", **opts)) == \
        data.dataset_fingerprint(data.load(str(work / "r.csv"), **opts)) == sel.meta["fingerprint"]


def test_exported_source_rows_join_back_to_the_users_file(tmp_path, tmp_cache, monkeypatch, capsys):
    """`source_row` is the kept row's position among the file's data rows, through dropped rows
    (empty text, missing label), --dedup and the stratified split, so the user's own columns join
    back; `row` alone (the train-split index) could not do that (a new user's test). The export
    carries those columns itself: `id`; the user's `row` as `user_row` (jaxsel has a `row`); a
    numeric column with gaps as numbers and gaps. --no-source-columns leaves them out."""
    import pandas as pd
    rng = np.random.default_rng(0)
    words = {"pos": "good great fine", "neg": "bad awful poor", "neu": "ok plain fair"}
    lines = ["id,text,label,row,score"]
    for i in range(150):
        lab = list(words)[i % 3]
        text = "" if i in (5, 17) else "same text" if i in (40, 41) else " ".join(rng.choice(words[lab].split(), 4)) + f" n{i}"
        lines.append(f"id{i},{text},{'' if i == 9 else lab},r{i},{'' if i % 4 == 0 else i / 2}")
    (tmp_path / "d.csv").write_text("\n".join(lines) + "\n")
    monkeypatch.chdir(tmp_path)
    assert cli.main(["select", "d.csv", "--dedup", "--model", "hash", "--k", "6", "--method", "random",
                     "--budget", "0.3", "--out", "sel"]) == 0
    assert cli.main(["export", "sel/selection.json", "--out", "kept.csv"]) == 0
    kept, source = pd.read_csv("kept.csv"), pd.read_csv("d.csv", dtype=str, keep_default_na=False)
    assert len(kept) > 20
    assert list(kept.columns) == ["text", "label", "row", "source_row", "cluster", "kept", "id", "user_row", "score"]
    for _, r in kept.iterrows():
        orig = source.iloc[r["source_row"]]
        assert (orig["text"], orig["label"]) == (r["text"], r["label"]) and orig["id"] == f"id{r['source_row']}"
        assert r["id"] == orig["id"] and r["user_row"] == orig["row"] and str(r["score"]) == (orig["score"] or "nan")
    sidecar = json.loads(Path("kept.csv.jaxsel.json").read_text())
    assert sidecar["columns"]["user_row"] == "the source's column 'row'"
    assert cli.main(["export", "sel/selection.json", "--complement", "--out", "rest.parquet"]) == 0
    rest = pd.read_parquet("rest.parquet")
    assert sorted([*rest["row"], *kept["row"]]) == list(range(len(rest) + len(kept)))  # the whole train split
    assert (rest["id"] == [f"id{i}" for i in rest["source_row"]]).all()
    assert cli.main(["export", "sel/selection.json", "--no-source-columns", "--out", "bare.jsonl"]) == 0
    assert list(pd.read_json("bare.jsonl", lines=True).columns) == ["text", "label", "row", "source_row", "cluster", "kept"]
    # the source file moved: said so, with the option that names it (round 44: "no such file" alone)
    Path("d.csv").rename("moved.csv")
    capsys.readouterr()
    assert cli.main(["export", "sel/selection.json", "--out", "again.csv"]) == 2
    assert capsys.readouterr().err.strip() == (f"jaxsel: error: the selection's dataset {tmp_path / 'd.csv'} is no longer "
                                               "there: give the file with --data (its content is checked against the "
                                               "selection's fingerprint)")
    assert cli.main(["export", "sel/selection.json", "--data", "moved.csv", "--out", "again.csv"]) == 0
    assert pd.read_csv("again.csv").equals(kept)


def test_export_writes_source_columns_of_any_kind(tmp_path, tmp_cache, monkeypatch, capsys):
    """Source columns Arrow cannot type as they are still export (a new user's test: bytes made a
    JSONL export fail with a traceback; nested and mixed values came out as Python reprs): bytes as
    base64, a mixed column as JSON text that parses back to the source's values. A sidecar that
    cannot be written stops the export before the data file is written."""
    import base64
    import pandas as pd
    monkeypatch.chdir(tmp_path)
    n = 150
    texts, labels = [f"{'good fine' if i % 2 else 'bad poor'} {i}" for i in range(n)], ["p", "n"] * (n // 2)
    mixed = [[{"a": i}, [i, "x"], "s", True, None][i % 5] for i in range(n)]
    pd.DataFrame({"text": texts, "label": labels, "blob": [bytes([i, 0, 255]) for i in range(n)]}).to_parquet("d.parquet")
    Path("d.jsonl").write_text("".join(json.dumps({"text": t, "label": y, "mixed": m}) + "\n"
                                       for t, y, m in zip(texts, labels, mixed)))
    from jaxsel import data
    parse, parsed = data._parse_frame, []
    monkeypatch.setattr(data, "_parse_frame", lambda *args: parsed.append(args[0]) or parse(*args))
    for source in ("d.parquet", "d.jsonl"):
        assert cli.main(["select", source, "--model", "hash", "--k", "6", "--method", "random", "--budget", "0.2",
                         "--out", "sel"]) == 0
        parsed.clear()
        assert cli.main(["export", "sel/selection.json", "--out", "k.jsonl"]) == 0
        assert len(parsed) == 1, parsed  # its rows and its other columns from one parse
        for line in Path("k.jsonl").read_text().splitlines():
            r = json.loads(line)
            i = r["source_row"]
            if source == "d.parquet":
                assert base64.b64decode(r["blob"]) == bytes([i, 0, 255])
            else:
                want = mixed[i]
                assert (r["mixed"] if want is None or isinstance(want, str) else json.loads(r["mixed"])) == want
    (tmp_path / "b.jsonl.jaxsel.json").mkdir()
    capsys.readouterr()
    assert cli.main(["export", "sel/selection.json", "--out", "b.jsonl"]) == 2
    assert "b.jsonl.jaxsel.json" in capsys.readouterr().err and not (tmp_path / "b.jsonl").exists()


def test_export_keeps_integer_ids_and_the_files_own_column_names(tmp_path, tmp_cache, monkeypatch):
    """Round 23 of new users' tests: a CSV export wrote an integer column with empty cells as floats
    ("1.0", 2**60 + 1 as 1.152921504606847e+18: pandas' float64), and a CSV's repeated or empty
    header names came out as the names pandas makes up ("x.1", "Unnamed: 4"), which the sidecar
    called the source's columns."""
    import csv
    monkeypatch.chdir(tmp_path)
    n = 120
    ids = [None if i % 4 == 0 else 2**60 + i for i in range(n)]
    Path("d.jsonl").write_text("".join(json.dumps({"text": f"{'good fine' if i % 2 else 'bad poor'} {i}",
                                                   "label": "pn"[i % 2], "id": ids[i], "": f"e{i}"}) + "\n"
                                       for i in range(n)))
    Path("h.csv").write_text("text,label,x,x,,row\n" + "".join(
        f"{'good fine' if i % 2 else 'bad poor'} {i},{'pn'[i % 2]},a{i},b{i},{i},r{i}\n" for i in range(n)))
    for source in ("d.jsonl", "h.csv"):
        assert cli.main(["select", source, "--model", "hash", "--k", "6", "--method", "random", "--budget", "0.3",
                         "--out", "sel"]) == 0
        assert cli.main(["export", "sel/selection.json", "--out", "k.csv"]) == 0
        with open("k.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        about = json.loads(Path("k.csv.jaxsel.json").read_text())["columns"]
        if source == "d.jsonl":
            assert [r["id"] for r in rows] == ["" if ids[int(r["source_row"])] is None else str(ids[int(r["source_row"])])
                                               for r in rows] and any(r["id"] == "" for r in rows)
            assert all(r["column4"] == f"e{r['source_row']}" for r in rows)  # a key "": named by its place
            assert about["column4"] == "the source's column 4, which has no name"
            continue
        assert list(rows[0])[6:] == ["x", "user_x", "column5", "user_row"]
        assert all((r["x"], r["user_x"], r["column5"], r["user_row"]) == (f"a{i}", f"b{i}", str(i), f"r{i}")
                   for r in rows for i in [int(r["source_row"])])
        assert about["user_x"] == "the source's column 'x' (column 4 of its header, where the name repeats)"
        assert about["column5"] == "the source's column 5, which has no name"
        assert about["user_row"] == "the source's column 'row'"


def test_files_read_once_parses_an_unchanged_file_once(tmp_path):
    """Inside files_read_once a file read again unchanged is not parsed again, each read gets its
    own frame, and a changed file is parsed afresh; outside the block every read parses."""
    from jaxsel import data
    f = tmp_path / "d.csv"
    f.write_text("text,label\na,x\nb,y\n")
    with data.files_read_once():
        first = data._read_frame(f, None)
        first.loc[0, "text"] = "changed"
        again = data._read_frame(f, None)
        assert list(again["text"]) == ["a", "b"] and len(data._FRAMES) == 1
        f.write_text("text,label\na,x\nb,y\nc,z\n")
        assert len(data._read_frame(f, None)) == 3
    assert data._FRAMES is None


def test_export_format_follows_the_suffix():
    from jaxsel.selection import export_format
    assert export_format("k.csv") == "csv" and export_format("k.parquet") == "parquet"
    assert export_format("k.JSONL") == "jsonl" and export_format("folder") == "jsonl"
    assert export_format("k.csv", "csv") == "csv" and export_format("out", "arrow") == "arrow"
    with np.testing.assert_raises_regex(cli.JaxselError, "names a csv file but the format is jsonl"):
        export_format("k.csv", "jsonl")


def test_cluster_out_may_name_a_folder(table_file, tmp_path, tmp_cache):
    assert cli.main(["cluster", str(table_file), "--k", "4", "--model", "hash", "--out", str(tmp_path / "cl") + "/"]) == 0
    [written] = (tmp_path / "cl").glob("clustering-k4-*.npz")  # tagged: --model hash is not the default
    assert cluster.Clustering.load(written).k == 4


def test_cluster_never_overwrites_its_data_or_writes_another_format(table_file, tmp_path, tmp_cache, capsys):
    """`cluster --out` naming the data file turned the user's CSV into a zip (a new user's test), and a
    .txt name got an npz inside; both are refused with one line, the file untouched. An export to a
    suffix that is no export format (.xlsx) is refused too, where it used to write JSON lines."""
    before = table_file.read_bytes()
    for out, why in ((str(table_file), "refusing to write"), (str(tmp_path / "c.txt"), "saved as .npz")):
        assert cli.main(["cluster", str(table_file), "--k", "4", "--model", "hash", "--out", out]) == 2
        err = capsys.readouterr().err
        assert why in err and len(err.strip().splitlines()) == 1, err
    assert table_file.read_bytes() == before and not (tmp_path / "c.txt").exists()
    assert cli.main(["cluster", str(table_file), "--k", "4", "--model", "hash", "--out", str(tmp_path / "c.npz")]) == 0
    capsys.readouterr()
    assert cli.main(["export", str(tmp_path / "no-selection.json"), "--out", str(tmp_path / "k.xlsx")]) == 2
    assert "not an export format" in capsys.readouterr().err


def test_run_reads_data_with_dedup_and_split_seed(tmp_path):
    """[data] dedup and split_seed (and run's --dedup / --split-seed) reach the data loader."""
    from jaxsel import experiment
    from jaxsel.config import DataSpec, RunConfig
    f = tmp_path / "d.csv"
    f.write_text("text,label\n" + "".join(f"text {i % 40},{'ab'[i % 2]}\n" for i in range(80)))
    sizes = {}
    for dedup, seed in ((False, 0), (True, 0), (True, 1)):
        dd = experiment.Run(RunConfig(data=DataSpec(name=str(f), dedup=dedup, split_seed=seed)), tmp_path / "r",
                            progress=False).dataset()
        sizes[dedup, seed] = (sum(len(dd[s]) for s in dd), sorted(dd["test"]["text"]))
    assert sizes[False, 0][0] == 80 and sizes[True, 0][0] == 40
    assert sizes[True, 0][1] != sizes[True, 1][1]  # another split
    assert cli.build_parser().parse_args(["run", "--dedup", "--split-seed", "3"]).split_seed == 3


def test_every_help_shows_defaults(capsys):
    for command in ("data", "embed", "cluster", "select", "export", "finetune", "run"):
        assert cli.main([command, "--help"]) == 0
        out = " ".join(capsys.readouterr().out.split())
        assert "(default:" in out and not re.search(r"\(default[^)]*\) \(default:", out), command  # said once
    # argparse prints no line, so no default, for an option without help (--seed, --dtype, --lr once)
    subcommands = cli.build_parser()._subparsers._group_actions[0].choices
    bare = [(name, a.option_strings or a.dest) for name, p in subcommands.items() for a in p._actions if not a.help]
    assert not bare
    # an option unset by default (None) says what happens then: the formatter leaves "(default: None)" out
    unsaid = [(name, a.option_strings) for name, p in subcommands.items() for a in p._actions
              if a.option_strings and a.default is None and not a.required and "default" not in a.help]
    assert not unsaid


def test_library_defaults_are_the_commands_defaults():
    """`import jaxsel` and `jaxsel select` / `jaxsel run` with nothing set agree (a library user once got all
    384 dimensions and 200,000 PPO steps where the command used 64 and 20,000)."""
    from jaxsel.agents import dqn, ppo
    from jaxsel.config import RunConfig
    from jaxsel.proxy import ProxyConfig
    select = cli.build_parser()._subparsers._group_actions[0].choices["select"]
    flags = {a.dest: a.default for a in select._actions}
    assert ProxyConfig() == RunConfig().proxy
    assert ProxyConfig().project == flags["project"] == 64
    assert ppo.PPOConfig().total_timesteps == dqn.DQNConfig().total_timesteps == RunConfig().select.rl_steps == flags["steps"]


def test_export_never_overwrites_its_inputs(tmp_path, tmp_cache, capsys, monkeypatch):
    """--out naming the source file, the selection's own files, or a folder holding the source is
    refused before anything is written; both inputs stay byte-identical."""
    from conftest import write_data
    csv = write_data(tmp_path / "d.csv")
    monkeypatch.chdir(tmp_path)
    assert cli.main(["select", str(csv), "--split-col", "split", "--model", "hash", "--k", "6", "--method", "random",
                     "--out", "sel"]) == 0
    capsys.readouterr()  # select's own lines
    sel = tmp_path / "sel" / "selection.json"
    before = {p: p.read_bytes() for p in (csv, sel, sel.with_suffix(".indices.npy"))}
    for out, fmt in ((csv, []), (sel, []), (sel.with_suffix(".indices.npy"), ["--format", "jsonl"]),
                     (tmp_path, ["--format", "arrow"])):
        assert cli.main(["export", str(sel), "--out", str(out), *fmt]) == 2, out
        err = capsys.readouterr().err
        assert "refusing to write" in err and len(err.strip().splitlines()) == 1, err
    assert {p: p.read_bytes() for p in before} == before


def test_export_replaces_only_what_it_wrote(tmp_path, tmp_cache, capsys, monkeypatch):
    """An arrow export (a folder) once deleted whatever folder --out named, the current folder with
    --out .; a file write went through a device (/dev/null became a regular file). Now a folder of
    other files, the current folder, a folder where a file goes, a device or pipe, a path under a
    file and an unwritable place are refused with one line naming the target; an earlier arrow
    export and a regular file are replaced."""
    from conftest import write_data
    csv = write_data(tmp_path / "d.csv")
    monkeypatch.chdir(tmp_path)
    assert cli.main(["select", str(csv), "--split-col", "split", "--model", "hash", "--k", "6", "--method", "random",
                     "--out", "sel"]) == 0
    sel = str(tmp_path / "sel" / "selection.json")
    precious = tmp_path / "precious"
    (precious / "sub").mkdir(parents=True)
    (precious / "thesis.txt").write_text("thesis")
    os.mkfifo(tmp_path / "pipe")
    (tmp_path / "afile").write_text("x")
    (tmp_path / "link.jsonl").symlink_to(tmp_path / "afile")  # the rename had replaced the link (/dev/stdout too)
    capsys.readouterr()
    refused = [("precious", ["--format", "arrow"]), ("precious/.", ["--format", "arrow"]),
               ("precious", ["--format", "jsonl"]), ("pipe", ["--format", "jsonl"]), ("afile/kept.jsonl", []),
               ("/proc/kept.jsonl", []), ("link.jsonl", [])]
    for out, fmt in refused:
        monkeypatch.chdir(precious if out == "precious/." else tmp_path)  # --out . from inside it
        assert cli.main(["export", sel, "--out", "." if out == "precious/." else out, *fmt]) == 2, out
        err = capsys.readouterr().err.strip()
        assert err.startswith("jaxsel: error: cannot write") and "\n" not in err and ".jsonl." not in err, err
    monkeypatch.chdir(tmp_path)
    assert (precious / "thesis.txt").read_text() == "thesis" and (precious / "sub").is_dir()
    assert stat.S_ISFIFO(os.stat(tmp_path / "pipe").st_mode) and (tmp_path / "afile").read_text() == "x"
    assert (tmp_path / "link.jsonl").is_symlink()
    assert "afile is a file, not a folder" in (cli.main(["export", sel, "--out", "afile/k.jsonl"]) and
                                                 capsys.readouterr().err)
    for _ in range(2):  # a second export replaces the first
        assert cli.main(["export", sel, "--out", "kept", "--format", "arrow"]) == 0
        assert cli.main(["export", sel, "--out", "kept.csv"]) == 0
    assert (tmp_path / "kept" / "state.json").exists() and (tmp_path / "kept.csv").is_file()


def test_selection_files_that_do_not_belong_together_are_refused(tmp_path):
    """An interrupted save (new indices next to the old JSON) or a stale clusters file is caught."""
    from jaxsel.selection import Selection
    path = tmp_path / "s.json"
    Selection([0], np.arange(5), {}, {"method": "a"}, np.zeros(5, np.int64)).save(path)
    np.save(Selection.indices_path(path), np.arange(5, 10))  # the indices of another save of the same size
    with np.testing.assert_raises_regex(cli.JaxselError, "not the ones saved with it"):
        Selection.load(path)
    Selection([0], np.arange(5), {}, {"method": "b"}).save(path)  # no clusters: the old file goes
    assert Selection.load(path).row_clusters is None and not Selection.clusters_path(path).exists()
    index = Selection.indices_path(path)  # a truncated index file is named, not the JSON (round 45)
    index.write_bytes(index.read_bytes()[:20])
    with pytest.raises(cli.JaxselError, match=rf"^{re.escape(str(index))}: not a readable index file \(ValueError\): "
                                              r"make the selection again$"):
        Selection.load(path)


def test_default_outputs_of_files_named_alike_do_not_collide(tmp_path, tmp_cache, monkeypatch):
    from conftest import write_data
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
        write_data(tmp_path / sub / "d.csv")
    monkeypatch.chdir(tmp_path)
    for sub in ("a", "b"):
        assert cli.main(["cluster", f"{sub}/d.csv", "--split-col", "split", "--model", "hash", "--k", "4"]) == 0
        assert cli.main(["cluster", f"{sub}/d.csv", "--split-col", "split", "--model", "hash", "--k", "4",
                         "--seed", "1"]) == 0
    written = sorted(str(p.relative_to(tmp_path / "runs")) for p in (tmp_path / "runs").rglob("*.npz"))
    assert len(written) == 4 and len({p.split("/")[0] for p in written}) == 2, written
    names = {p.split("/")[1] for p in written}  # the same reading options in both folders: the same tag
    assert len(names) == 2 and {n.replace("-s1", "") for n in names} == {min(names, key=len)}, names


def test_default_selection_folders_name_the_reading_options(table_file, tmp_path, tmp_cache, monkeypatch):
    """select's default runs/DATA/METHOD was one folder whatever --split-seed or --dtype said (a second
    select overwrote the first one's selection); a bfloat16 select also reused the float32 clustering
    from the stage cache (its key had no dtype)."""
    monkeypatch.chdir(tmp_path)
    base = ["select", str(table_file), "--model", "hash", "--k", "4", "--method", "stratified", "--budget", "0.2"]
    for extra in ([], ["--split-seed", "3"], ["--dtype", "bfloat16"]):
        assert cli.main(base + extra) == 0
    folders = sorted(p.parent.name for p in tmp_path.rglob("selection.json"))
    assert len(folders) == 3 and all(f.startswith("stratified-") for f in folders), folders
    assert len(list(tmp_path.rglob("stages/cluster-*.npz"))) == 3  # the dtype is part of the clustering's key


def test_default_folders_name_every_option_that_changes_the_output(table_file, tmp_path, tmp_cache, monkeypatch):
    """select's default folder was runs/DATA/METHOD whatever --budget, --seed or --k said, and
    finetune's runs/DATA/finetune-MODEL-rand whatever the fraction or epochs: a second command
    overwrote the first one's output. Now each such option set away from its default tags the name,
    and the same options (a rerun) name the same folder."""
    monkeypatch.chdir(tmp_path)
    base = ["select", str(table_file), "--model", "hash", "--k", "4", "--method", "stratified"]
    for extra in ([], ["--budget", "0.2"], ["--seed", "1"], ["--k", "3"], [], ["--budget", "1/20"],
                  ["--network", cli.NETWORK]):
        assert cli.main(base + extra) == 0
    folders = sorted(p.parent.name for p in tmp_path.rglob("selection.json"))
    assert len(folders) == 4 and len({f.split("-")[0] for f in folders}) == 1, folders  # 1/20, the default network: defaults
    tune = ["finetune", str(table_file), "--model", "tiny-bert", "--epochs", "1", "--min-steps", "0", "--max-length", "8"]
    for extra in (["--random-fraction", "0.2"], ["--random-fraction", "0.3"], ["--random-fraction", "0.2"]):
        assert cli.main(tune + extra) == 0
    assert len(list(tmp_path.rglob("finetune-tiny-bert-rand*/metrics.json"))) == 2
    sels = []
    for i, budget in enumerate(("0.2", "0.3")):  # two selections in folders named alike
        assert cli.main(base + ["--budget", budget, "--out", f"exp{i}/strat"]) == 0
        sels.append(f"exp{i}/strat/selection.json")
    for sel in sels + [str(tmp_path / sels[0])]:  # the first again, spelled absolutely: its own folder again
        assert cli.main(["finetune", "--selection", sel, "--model", "tiny-bert", "--epochs", "1", "--min-steps", "0",
                         "--max-length", "8"]) == 0
    assert len(list(tmp_path.rglob("finetune-tiny-bert-sel-strat-*/metrics.json"))) == 2


def test_default_clustering_file_names_the_reading_options(table_file, tmp_path, tmp_cache, monkeypatch):
    """The default clustering file is tagged with every option that changes what is clustered (how the
    data is read and embedded), so two clusterings of differently read data never overwrite each other;
    the same options name the same file."""
    monkeypatch.chdir(tmp_path)
    base = ["cluster", str(table_file), "--k", "4", "--model", "hash"]
    for extra in ([], ["--max-length", "8"], ["--split-seed", "5"], ["--dedup"], [], ["--seed", "1"]):
        assert cli.main(base + extra) == 0
    names = sorted(p.name for p in tmp_path.rglob("clustering-*.npz"))
    assert len(names) == 5 and sum("-s1-" in n for n in names) == 1, names


def test_more_usage_mistakes_are_one_line(tmp_path, tmp_cache, capsys):
    """A max_length past the model's positions, a bad coordinator, PPO/DQN counts of zero and config
    mistakes (repeats, negative seeds) are one-line JaxselErrors (the CLI's own option checks:
    test_usage_mistakes_are_one_line_exit_2)."""
    from jaxsel import distributed, embed
    from jaxsel.agents.dqn import DQNConfig
    from jaxsel.agents.ppo import PPOConfig
    with np.testing.assert_raises_regex(cli.JaxselError, "exceeds the model's 512 positions"):
        embed.encode(["a b c"], "minilm", max_length=513, progress=False)
    with np.testing.assert_raises_regex(cli.JaxselError, "HOST:PORT"):
        distributed.initialize("notaport", 1, 0)
    for port in ("0", "65536", "99999", "\u00b2", "\u0664\u0661"):  # non-ASCII digits: int() failed, or gRPC segfaulted
        with np.testing.assert_raises_regex(cli.JaxselError, "a port in 1 .. 65535"):
            distributed.initialize(f"localhost:{port}", 2, 0)
    for cls, bad, says in ((PPOConfig, dict(num_envs=0), "ppo num_envs must be at least 1"),
                           (PPOConfig, dict(num_minibatches=3), "must divide"),
                           (DQNConfig, dict(batch_size=0), "dqn batch_size must be at least 1"),
                           (DQNConfig, dict(eps_start=0.1, eps_end=0.5), r"eps_end \(0.5\) must not exceed")):
        with np.testing.assert_raises_regex(cli.JaxselError, says):
            cls(**bad)
    from jaxsel.config import MINILM_LAYERS, load_config
    from jaxsel.models import bert
    assert MINILM_LAYERS == bert.BertConfig().layers
    for body, says in (("", "the config is empty"), ("seeds = [0, 0]", "seeds lists 0 twice"),
                       ('budgets = [0.1, "1/10"]', "budgets lists 0.1 twice"), ("seeds = [-1]", "seeds must be from 0 to 2147483647, got -1"),
                       ("[select]\nrl_steps = -5", "rl_steps must be at least 1"),
                       ('[cluster]\nmethod = "nope"', r"\[cluster\]: unknown method 'nope' \(choose from lloyd, minibatch\)"),
                       ("[select]\nppo = {num_envs = 0}", "num_envs must be at least 1"),
                       ('name = "../x"', "plain folder name"), ('[finetune]\nmodel = "gpt-9"', "unknown model"),
                       ('[proxy]\nkind = "transformer"\nlayers = 8', "layers must be at most MiniLM's 6")):  # 7, 8 were random
        (tmp_path / "c.toml").write_text(body + "\n")
        with np.testing.assert_raises_regex(cli.JaxselError, says):
            load_config(tmp_path / "c.toml")
    capsys.readouterr()
    (tmp_path / "c.toml").write_text("seeds = [0]\n")  # valid, but says which dataset it falls back to
    assert load_config(tmp_path / "c.toml").data.name == "tweets" and "names no dataset" in capsys.readouterr().err


def test_out_of_range_settings_fail_where_they_are_set(tmp_path):
    """Values of the right type but out of range were accepted in a config file or the library (a
    ridge penalty of 0 gave NaN scores and a NaN selection; final = "worst" ran as "best"; a
    negative projection kept 380 of 384 dimensions); each is now one line naming the file, the
    section and the key, or the library setting."""
    from jaxsel.agents import SelectConfig
    from jaxsel.config import load_config
    from jaxsel.proxy import ProxyConfig
    for body, says in (("[proxy]\nlam = 0.0", r"c.toml \[proxy\]: lam must be a number > 0, got 0.0"),
                       ("[proxy]\nproject = -4", r"\[proxy\]: project must be at least 1 \(0: all dimensions\), got -4"),
                       ('[proxy]\nkind = "ridg"', r"\[proxy\]: unknown kind 'ridg'"),
                       ('[select]\nfinal = "worst"', r"\[select\]: unknown final 'worst'"),
                       ("[select]\nppo = {lr = -1.0}", r"\[select.ppo\]: lr must be a number > 0"),
                       ('[select.dqn]\nnetwork = "mid"', r"\[select.dqn\]: unknown network 'mid' \(choose from early, late\)"),
                       ("[data]\nmax_train = -5", r"\[data\]: max_train must be at least 1"),
                       ('[data]\nmissing_labels = "ignore"', r"\[data\]: unknown missing_labels 'ignore'"),
                       ("[noise]\nflip_fraction = 2.0", r"\[noise\]: flip_fraction must be in \[0, 1\]"),
                       ("[embed]\nmax_length = 0", r"\[embed\]: max_length must be at least 2"),
                       ('[embed]\nmodel = "hsah"', r"\[embed\]: unknown model 'hsah'"),
                       ('budgets = ["5%"]', "c.toml: budgets: budget must be a number"),
                       ("budgets = [1.5]", "c.toml: budgets: budget must be strictly between 0 and 1"),
                       ("checkpoint_min_examples = -1", "checkpoint_min_examples must be at least 0"),
                       # ran every cell, then died drawing the mask maps (a new user's test)
                       ('[select]\nbalance = "equal"\n[cluster]\nstratified = true\n[noise]\nkind = "source"',
                        r"balance = 'equal' needs label-pure clusters, and the noisy variant's \[noise\] \(kind = 'source'")):
        (tmp_path / "c.toml").write_text(body + '\n[data]\nname = "tweets"\n' * ("[data]" not in body))
        with np.testing.assert_raises_regex(cli.JaxselError, says):
            load_config(tmp_path / "c.toml")
    for bad, says in ((dict(lam=-1.0), "lam must be a number > 0"), (dict(temperature=0.0), "temperature must be a number > 0"),
                      (dict(objective="f1"), "unknown proxy objective"),
                      (dict(lam=float("inf")), "proxy lam must be a finite number, got inf")):
        with np.testing.assert_raises_regex(cli.JaxselError, says):
            ProxyConfig(**bad)
    for bad in (5, -1, 0.0, 1.0, float("nan"), True):
        with np.testing.assert_raises_regex(cli.JaxselError, "budget must be a fraction strictly between 0 and 1"):
            SelectConfig(budget=bad)
    for bad, says in (("5%", "budget must be a number like 0.05 or 1/16, got '5%'"),  # text, as configs spell it
                      ("3/2", "budget must be strictly between 0 and 1, got 3/2")):
        with np.testing.assert_raises_regex(cli.JaxselError, says):
            SelectConfig(budget=bad)
    from jaxsel.config import FinetuneConfig
    with np.testing.assert_raises_regex(cli.JaxselError, "finetune lr must be a finite number, got inf"):
        FinetuneConfig(lr=float("inf"))
    for bad in (0.0, -1.0, float("nan")):
        with np.testing.assert_raises_regex(cli.JaxselError, r"finetune lr must be a number > 0, got"):
            FinetuneConfig(lr=bad)
    with np.testing.assert_raises_regex(cli.JaxselError, "unknown select method 'gredy'"):
        SelectConfig(method="gredy")
    assert SelectConfig(budget=np.float32(0.05)).budget == np.float32(0.05)


def test_split_caps_below_the_number_of_classes_are_refused(table_file):
    """[data] max_validation = 1 on 3 classes ran on with a warning, one validation row scoring the
    proxy and stopping the finetunes (a new user's test), while a file whose validation split misses a
    class is refused: caps below the classes are refused too, naming the cap."""
    from jaxsel.config import DataSpec
    from jaxsel.experiment import load_dataset
    for cap in ("max_validation", "max_test", "max_train"):
        with pytest.raises(cli.JaxselError, match=rf"\[data\] {cap} = 2 leaves classes without .* 3 classes"):
            load_dataset(DataSpec(name=str(table_file), **{cap: 2}))
    dd = load_dataset(DataSpec(name=str(table_file), max_validation=3))
    assert len(dd["validation"]) == 3 and len(set(dd["validation"]["label"])) == 3


def test_a_run_selection_exports_and_finetunes_from_what_it_records(tmp_path, tmp_cache, monkeypatch):
    """A `jaxsel run` selection records its [data] table (caps included), so `export` rebuilds the
    same capped dataset without options; a noisy-variant selection is refused with the reason."""
    from jaxsel import data, experiment
    from jaxsel.config import ClusterSpec, DataSpec, EmbedSpec, RunConfig
    from jaxsel.selection import Selection
    from conftest import write_data
    csv = write_data(tmp_path / "d.csv")
    spec = DataSpec(name=str(csv), split_col="split", max_train=120, seed=3)
    run = experiment.Run(RunConfig(data=spec, embed=EmbedSpec(model="hash"), cluster=ClusterSpec(k=6)),
                         tmp_path / "r", progress=False)
    dd = run.dataset()
    meta = dict(experiment.data_record(spec), variant="clean", fingerprint=data.dataset_fingerprint(dd))
    sel = Selection([], np.arange(0, 120, 10), {}, meta)
    sel.save(tmp_path / "s.json")
    monkeypatch.chdir(tmp_path)
    assert cli.main(["export", "s.json", "--out", "kept.jsonl"]) == 0
    kept = [json.loads(line) for line in (tmp_path / "kept.jsonl").read_text().splitlines()]
    assert [k["text"] for k in kept] == [dd["train"][int(i)]["text"] for i in sel.indices]
    Selection([], sel.indices, {}, dict(sel.meta, variant="noisy")).save(tmp_path / "n.json")
    assert cli.main(["export", "n.json", "--out", "k2.jsonl"]) == 2
    # reading options given beside a recorded [data] table had been ignored without a word
    with pytest.raises(cli.JaxselError, match="--split-seed cannot change that"):
        cli._recorded(cli.build_parser().parse_args(["export", "s.json", "--out", "k3.jsonl", "--split-seed", "3"]),
                      sel.meta)
    assert cli.main(["export", "s.json", "--out", "k3.jsonl", "--text-col", "label"]) == 2


def test_too_small_data_and_budgets_say_why(tmp_path, capsys):
    """A split left empty names the cause; a budget that rounds to every train row is refused."""
    from jaxsel import data
    f = tmp_path / "few.csv"
    f.write_text("text,label\n" + "".join(f"text {i},c{i}\n" for i in range(12)))  # 12 classes of one row
    with np.testing.assert_raises_regex(cli.JaxselError, "12 rows in 12 classes are too few"):
        data.load(str(f))
    from conftest import write_data
    csv = write_data(tmp_path / "d.csv")
    capsys.readouterr()
    assert cli.main(["select", str(csv), "--split-col", "split", "--model", "hash", "--k", "4", "--method", "random",
                     "--budget", "0.999", "--out", str(tmp_path / "s")]) == 2
    assert "rounds to all of them" in capsys.readouterr().err


def test_ctrl_c_exits_130_and_leaves_no_selection(tmp_path, tmp_cache):
    """Ctrl-C during a search: one line, exit 130, no selection file (only whole checkpoints). The
    same for SIGTERM (what timeout, systemd and Kubernetes send), which had ended it silently."""
    from conftest import write_data
    csv = tmp_path / "d.csv"
    write_data(csv)
    # early, Ctrl-C often landed in jax's gc callback and was lost
    for delay, sig in ((0.2, signal.SIGINT), (1.0, signal.SIGINT), (1.0, signal.SIGTERM)):
        out = tmp_path / f"sel{delay}{sig.name}"
        p = subprocess.Popen([sys.executable, "-m", "jaxsel", "select", str(csv), "--split-col", "split",
                              "--model", "hash", "--k", "6", "--budget", "0.1", "--method", "ppo", "--steps",
                              "10000000", "--out", str(out)], stderr=subprocess.PIPE, text=True)
        seen = ""
        while "ppo:" not in seen:  # the search has started
            line = p.stderr.readline()
            assert line, f"the command ended before its search: {seen}"
            seen += line
        time.sleep(delay)
        p.send_signal(sig)
        rest = p.communicate(timeout=120)[1]
        assert p.returncode == 130  # the last line says how to continue (it had not named the folder)
        held = any(f.name != "seconds.json" for f in (out / "checkpoints").iterdir())
        assert rest.strip().splitlines()[-1] == (
            f"jaxsel: interrupted (to continue, rerun with --resume --out {out})" if held else
            "jaxsel: interrupted (no checkpoint was written yet: rerunning the command starts afresh)")
        assert not (out / "selection.json").exists()


def test_interrupted_suggests_resume_only_once_a_checkpoint_exists(tmp_path, monkeypatch):
    """Ctrl-C in a command's first seconds had suggested --resume though nothing was saved yet."""
    ckpt = tmp_path / "out" / "checkpoints"
    monkeypatch.setattr(cli, "RESUME", [f"to continue, rerun with --resume --out {ckpt.parent}"])
    monkeypatch.setattr(cli, "RESUMABLE", [ckpt])
    first = "jaxsel: interrupted (no checkpoint was written yet: rerunning the command starts afresh)"
    assert cli.interrupted() == first  # no folder
    ckpt.mkdir(parents=True)
    (ckpt / "seconds.json").write_text("{}")
    assert cli.interrupted() == first  # the wall-clock file alone
    (ckpt / "3").mkdir()
    assert cli.interrupted() == f"jaxsel: interrupted (to continue, rerun with --resume --out {ckpt.parent})"
    monkeypatch.setattr(cli, "RESUMABLE", [])  # jaxsel run: its stage folder
    assert cli.interrupted() == f"jaxsel: interrupted (to continue, rerun with --resume --out {ckpt.parent})"


def test_second_ctrl_c_or_the_deadline_leaves_at_once(monkeypatch):
    exits = []
    monkeypatch.setattr(os, "_exit", exits.append)

    def raised(handler) -> bool:
        try:
            handler(signal.SIGINT, None)
        except KeyboardInterrupt:  # caught here: pytest.raises lets KeyboardInterrupt end the session
            return True
        return False

    handler = cli.Interrupts(grace=0.3)
    assert raised(handler) and exits == []
    assert not raised(handler) and exits == [130]  # the second press
    time.sleep(1.5)  # the deadline fires too (a dropped KeyboardInterrupt), while os._exit is still patched
    assert exits == [130, 130]


def test_entry_leaves_without_teardown_after_ctrl_c(monkeypatch):
    """The command's exit after Ctrl-C skips the interpreter's teardown (XLA threads may still run
    the interrupted program; tearing down under them segfaulted about one time in ten)."""
    exits = []
    monkeypatch.setattr(os, "_exit", exits.append)
    monkeypatch.setattr(signal, "signal", lambda *a: None)  # keep pytest's own Ctrl-C handling
    monkeypatch.setattr(sys, "unraisablehook", sys.unraisablehook)  # restored after the test
    for code in (130, 0, 2):
        monkeypatch.setattr(cli, "main", lambda: code)
        with pytest.raises(SystemExit) as e:  # 130 too: the patched os._exit returns
            cli.entry()
        assert e.value.code == code
    assert exits == [130]


def test_a_dropped_ctrl_c_still_ends_the_command(monkeypatch, capsys):
    """Python drops a KeyboardInterrupt raised inside a garbage-collector callback (jax runs one),
    printing a traceback, and the run went on to exit 0 (a new user's test). Such a dropped interrupt
    now leaves at once with 130; other unraisable exceptions are reported as before; and a command
    that returns normally after a Ctrl-C it did not stop for still exits 130."""
    import gc
    exits = []
    monkeypatch.setattr(os, "_exit", exits.append)
    interrupts = cli.Interrupts()
    monkeypatch.setattr(sys, "unraisablehook", interrupts.unraisable)

    def collect_raising(exc):
        def callback(phase, info):
            if phase == "stop":
                raise exc
        gc.callbacks.append(callback)
        try:
            gc.collect()
        finally:
            gc.callbacks.remove(callback)

    collect_raising(ValueError("not an interrupt"))
    assert exits == [] and "not an interrupt" in capsys.readouterr().err
    collect_raising(KeyboardInterrupt())
    assert exits == [130] and "jaxsel: interrupted" in capsys.readouterr().err
    handlers = []
    monkeypatch.setattr(signal, "signal", lambda sig, h: handlers.append(h))

    class NoDeadline:  # the 10 s deadline would call the real os._exit once the test is over
        daemon = False

        def __init__(self, *args):
            pass

        def start(self):
            pass

    monkeypatch.setattr(cli.threading, "Timer", NoDeadline)

    def main_swallowing_ctrl_c():
        try:
            handlers[-1](signal.SIGINT, None)
        except KeyboardInterrupt:
            pass  # as if it had been dropped
        return 0

    monkeypatch.setattr(cli, "main", main_swallowing_ctrl_c)
    with pytest.raises(SystemExit):
        cli.entry()
    assert exits == [130, 130]


def test_a_folder_replaced_atomically_is_put_back_when_the_new_one_cannot_move_in(tmp_path, monkeypatch):
    """Round 30: an arrow export replacing an earlier one removed it (seconds, for a large one) before
    renaming the new one into place, so a kill then left neither. The old folder is now renamed aside
    first; a failure at the last rename puts it back, and a success leaves nothing else beside it."""
    from jaxsel import io

    def write(text):
        with io.atomic_path(out, folder=True, replaces=lambda p: True) as tmp:
            (tmp / "data.arrow").write_text(text)
    out = tmp_path / "export"
    write("old")
    renames = []

    def replace(src, dst):  # other threads may rename files of their own meanwhile
        if Path(src).parent == tmp_path:
            renames.append((Path(src).name, Path(dst).name))
            if Path(dst) == out and len(renames) == 2:  # the new one moving in (the third puts the old one back)
                raise OSError(28, "No space left on device", str(src))
        real(src, dst)
    real = os.replace
    monkeypatch.setattr(io.os, "replace", replace)
    with pytest.raises(OSError):
        write("new")
    assert renames[0][0] == "export" and renames[0][1].startswith(".export.")  # aside, under a temporary's name
    assert (out / "data.arrow").read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["export"]
    monkeypatch.setattr(io.os, "replace", real)
    write("new")
    assert (out / "data.arrow").read_text() == "new" and [p.name for p in tmp_path.iterdir()] == ["export"]


def test_stale_temporaries_are_atomic_paths_own_and_old_enough(tmp_path):
    """Only names atomic_path makes are removed, and with ``min_age`` only those not written lately
    (a stage folder other runs may be writing to)."""
    from jaxsel import io
    old, recent = tmp_path / ".r.json.abcdefgh.json", tmp_path / "s" / ".p.png.k9_x2abc.png"
    others = [tmp_path / ".r.json.keep", tmp_path / ".hidden", tmp_path / "r.json.abcdefgh.json"]
    for f in [old, recent, *others]:
        f.parent.mkdir(exist_ok=True)
        f.write_text("")
    os.utime(old, (time.time() - 3600,) * 2)
    assert io.remove_stale_temporaries(tmp_path, min_age=600) == [old] and recent.exists()
    assert io.remove_stale_temporaries(tmp_path) == [recent] and all(f.exists() for f in others)


def test_unwritable_target_is_named_not_its_temporary_file(capsys):
    """A write refused where the temporary file goes (sysfs refuses even root) names the file
    asked for, not the hidden temporary beside it."""
    from jaxsel import io
    with pytest.raises(OSError) as e:
        io.write_json("/sys/jaxsel-out.json", {})
    assert e.value.filename == "/sys/jaxsel-out.json"


def test_a_failed_command_leaves_no_empty_folder_it_made(table_file, tmp_path, tmp_cache, capsys):
    made = tmp_path / "new" / "deeper"
    assert cli.main(["select", str(table_file), "--model", str(tmp_path / "nowhere"), "--out", str(made)]) == 2
    assert cli.main(["finetune", str(table_file), "--model", "bogus", "--out", str(made)]) == 2
    assert not (tmp_path / "new").exists()
    kept = tmp_path / "kept"  # a folder that was there stays, and so does anything with content
    kept.mkdir()
    (made / "x").mkdir(parents=True)
    (made / "notes.txt").write_text("mine")
    assert cli.main(["finetune", str(table_file), "--model", "bogus", "--out", str(kept)]) == 2
    assert cli.main(["finetune", str(table_file), "--model", "bogus", "--out", str(made)]) == 2
    assert kept.is_dir() and (made / "notes.txt").exists() and (made / "x").is_dir()
    assert "unknown model 'bogus'" in capsys.readouterr().err


def test_two_processes_never_write_one_output_folder(table_file, tmp_path, tmp_cache, capsys):
    """Two commands writing one --out deleted each other's temporaries and mixed their checkpoints
    (a new user's test): the second now stops at once with one line, and the folder is free again
    when the first ends, even by kill -9 (the kernel drops the lock)."""
    folder = tmp_path / "sel"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom jaxsel.io import exclusive\n"
                               "with exclusive(sys.argv[1]):\n    print('held', flush=True)\n    time.sleep(120)",
                               str(folder)], stdout=subprocess.PIPE, text=True)
    args = ["select", str(table_file), "--model", "hash", "--k", "4", "--method", "stratified", "--budget", "0.2",
            "--out", str(folder)]
    try:
        assert holder.stdout.readline().strip() == "held"
        assert cli.main(args) == 2
        err = capsys.readouterr().err
        assert "being written by another jaxsel process" in err and len(err.strip().splitlines()) == 1, err
        assert not (folder / "selection.json").exists()
    finally:
        holder.kill()
        holder.wait()
    assert cli.main(args) == 0 and (folder / "selection.json").exists()
    from jaxsel.errors import JaxselError
    from jaxsel.io import exclusive
    (tmp_path / "a-file").write_text("")
    with pytest.raises(JaxselError, match="a-file is a file, not a folder"), exclusive(tmp_path / "a-file" / "run"):
        pass
    with exclusive(tmp_path / "new" / "run"):  # made for the lock, removed again when left empty
        assert (tmp_path / "new" / "run").is_dir()
    assert not (tmp_path / "new").exists()


def test_select_keeps_its_stage_cache_beside_out_however_out_is_spelled(table_file, tmp_path, tmp_cache, monkeypatch):
    """The clustering stage goes to OUT/../stages: `--out .` put it inside the output folder."""
    work = tmp_path / "a" / "work"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    assert cli.main(["select", str(table_file), "--model", "hash", "--k", "4", "--method", "stratified",
                     "--budget", "0.2", "--out", "."]) == 0
    assert (tmp_path / "a" / "stages").is_dir() and not (work / "stages").exists()


def test_exports_keep_values_and_each_selection_finetunes_into_its_own_folder(tmp_path, tmp_cache, monkeypatch):
    """Exports as a user reads them back: JSON lines kept floats to 10 digits (pandas' writer) and wrote
    timestamps as epoch milliseconds; CSV wrote list cells as numpy's repr ("[0 1]"). Finetunes of two
    selections went to one default folder (the second replaced the first's metrics)."""
    import datetime

    import pandas as pd
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    n = 120
    frame = pd.DataFrame({"text": [f"{'good' if i % 2 else 'bad'} review {i} {rng.choice(['x', 'y', 'z'])}" for i in range(n)],
                          "label": ["pos" if i % 2 else "neg" for i in range(n)],
                          "score": [i / 3 + 1e-13 for i in range(n)],
                          "ts": [datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc) + datetime.timedelta(hours=i)
                                 for i in range(n)],
                          "tags": [[i, i + 1] for i in range(n)]})
    frame.to_parquet("d.parquet")
    for method in ("stratified", "random"):
        assert cli.main(["select", "d.parquet", "--model", "hash", "--k", "4", "--method", method, "--budget", "0.3"]) == 0
    [sel] = [p for p in Path("runs").rglob("selection.json") if p.parent.name.startswith("stratified")]
    assert cli.main(["export", str(sel), "--out", "kept.jsonl"]) == 0 and cli.main(["export", str(sel), "--out", "kept.csv"]) == 0
    kept = [json.loads(line) for line in Path("kept.jsonl").read_text().splitlines()]
    src = frame.set_index("text")
    assert kept and all(r["score"] == src.loc[r["text"], "score"] for r in kept)  # exact, not 10 digits
    assert all(datetime.datetime.fromisoformat(r["ts"]) == src.loc[r["text"], "ts"] for r in kept)
    csv = pd.read_csv("kept.csv")
    assert [json.loads(t) for t in csv["tags"]] == [list(src.loc[t, "tags"]) for t in csv["text"]]
    for s in Path("runs").rglob("selection.json"):
        assert cli.main(["finetune", "--model", "tiny-bert", "--selection", str(s), "--epochs", "1", "--min-steps", "0",
                         "--max-length", "16"]) == 0
    assert len(list(Path("runs").rglob("finetune-tiny-bert-sel-*/metrics.json"))) == 2


def test_a_fresh_start_over_checkpoints_says_so(tmp_path, capsys):
    """select and finetune without --resume replace an earlier run's checkpoints in OUT; a note says
    so (a new user's round: they went without a word), not for the stopwatch file alone or with --resume.
    A start from the beginning removes the earlier run's result (break-it round 45: a failed rerun left
    it, read as its own), a --resume that continues keeps it; a --log-dir inside the checkpoints folder
    (cleared by a fresh start, logs and all) is one line, before anything is written there (the
    session's review: the refused attempt left a log that broke the next run)."""
    import argparse
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    (folder / "seconds.json").write_text("{}")

    def start(resume, log_dir=None):
        (tmp_path / "metrics.json").write_text("{}")
        cli._start(tmp_path, "metrics.json", argparse.Namespace(resume=resume, log_dir=log_dir))
        return (tmp_path / "metrics.json").exists()
    assert not start(resume=True)  # --resume with nothing to resume had started afresh silently
    assert "no checkpoint to resume in" in capsys.readouterr().err
    assert not start(resume=False)
    assert capsys.readouterr().err == ""
    (folder / "3").mkdir()  # a finetune's checkpoint of step 3
    assert start(resume=True)  # continues: keeps it
    assert capsys.readouterr().err == ""
    assert not start(resume=False)
    assert "holds an earlier run's checkpoints; starting afresh replaces them (--resume" in capsys.readouterr().err
    assert start(resume=True, log_dir=str(tmp_path / "logs"))  # beside the checkpoints: fine
    for inside in (folder, folder / "logs"):
        with pytest.raises(cli.JaxselError, match=r"--log-dir .* is inside the checkpoints folder .*checkpoints, whose "
                                                  r"contents a fresh start clears: give the step metrics a folder "
                                                  r"outside it$"):
            start(resume=True, log_dir=str(inside))
    out = tmp_path / "ft"
    assert cli.main(["finetune", "--model", "tiny-bert", "--out", str(out), "--log-dir", str(out / "checkpoints" / "l"),
                     "--random-fraction", "0.1"]) == 2
    assert "is inside the checkpoints folder" in capsys.readouterr().err and not (out / "checkpoints" / "l").exists()


def test_an_output_folder_another_command_holds_is_refused(tmp_path, capsys):
    """Break-it round 50: ``jaxsel finetune --out`` a selection's folder started afresh there and
    cleared the selection's agent checkpoints (``select --resume`` then recomputed it), and ``--out
    OUT/checkpoints`` trained afresh beside the checkpoints it was meant to resume. Each command's
    output folder is its own: another's result file or checkpoints there, or a checkpoints folder
    above it, is one line, before any work."""
    from jaxsel.checkpoint import MARKER
    sel, ft, run = tmp_path / "sel", tmp_path / "ft", tmp_path / "run"
    (sel / "checkpoints" / "agent").mkdir(parents=True)  # as select leaves them: the agent's marked, not checkpoints/
    (sel / "checkpoints" / "agent" / MARKER).touch()
    (ft / "checkpoints" / "40").mkdir(parents=True)  # a finetune's: steps under the marker
    (ft / "checkpoints" / MARKER).touch()
    run.mkdir()
    (run / "results.json").write_text("{}")
    cli._own_folder(sel, "selection.json")  # its own: a resume or a fresh start of the same command
    cli._own_folder(ft, "metrics.json")
    (tmp_path / "stages").mkdir()  # select's clustering cache beside its --out, not a run's
    cli._own_folder(tmp_path, "selection.json")
    for out, result, owner in ((sel, "metrics.json", "jaxsel select"), (ft, "selection.json", "jaxsel finetune"),
                               (run, "metrics.json", "jaxsel run"), (run, "selection.json", "jaxsel run")):
        with pytest.raises(cli.JaxselError, match=f"--out {out} holds the output of {owner} "):
            cli._own_folder(out, result)
    (tmp_path / "done").mkdir()
    (tmp_path / "done" / "selection.json").write_text("{}")  # a finished selection: its result file alone
    with pytest.raises(cli.JaxselError, match="holds the output of jaxsel select"):
        cli._own_folder(tmp_path / "done", "metrics.json")
    for own in (ft, sel):
        for inside in (own / "checkpoints", own / "checkpoints" / ("new" if own == ft else "agent")):
            where = "" if inside.name == "checkpoints" else f"inside {own / 'checkpoints'}, "
            with pytest.raises(cli.JaxselError) as e:
                cli._own_folder(inside, "metrics.json")
            assert str(e.value) == (f"--out {inside} is {where}an earlier run's checkpoints folder: give that run's "
                                    f"own folder ({own}) to resume it, or a new one")
    # the command: one line, exit 2, the selection's checkpoints kept
    assert cli.main(["finetune", "--model", "tiny-bert", "--random-fraction", "0.1", "--out", str(sel)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"jaxsel: error: --out {sel} holds the output of jaxsel select") and err.count("\n") == 1
    assert (sel / "checkpoints" / "agent" / MARKER).exists()


def test_a_reader_leaving_the_pipe_early_does_not_fail_the_command(tmp_path):
    """`jaxsel select ... | head -1` (or a pipe into a command that failed) ended with a
    BrokenPipeError traceback and exit 1 after the selection was written: the command now finishes
    and exits with its own status."""
    from conftest import write_data
    csv = write_data(tmp_path / "d.csv")
    for args in (["data", str(csv), "--split-col", "split"],
                 ["select", str(csv), "--split-col", "split", "--model", "hash", "--method", "greedy", "--k", "10",
                  "--out", str(tmp_path / "sel")]):
        p = subprocess.Popen([sys.executable, "-m", "jaxsel", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
        p.stdout.close()  # the reader is gone before the first line
        err = p.stderr.read()
        assert p.wait() == 0 and "Traceback" not in err and "BrokenPipe" not in err, err
    assert (tmp_path / "sel" / "selection.json").exists()


def test_embed_says_when_it_could_not_cache(table_file, tmp_path, monkeypatch, capsys):
    """With a cache that cannot be written (a file, a read-only folder) jaxsel embed warned, then
    printed 'embeddings cached at ...' anyway."""
    (tmp_path / "cachefile").write_text("")
    monkeypatch.setenv("JAXSEL_CACHE", str(tmp_path / "cachefile"))
    assert cli.main(["embed", str(table_file), "--model", "hash"]) == 0
    out, err = capsys.readouterr()
    assert "embeddings not cached (see the warning)" in out and "warning: embeddings not cached" in err
    assert "cached at" not in out


def test_out_dash_is_refused_not_a_file_named_dash(table_file, tmp_path, monkeypatch, capsys):
    """`export --out -` wrote files named '-' and '-.jaxsel.json' into the working folder."""
    monkeypatch.chdir(tmp_path)
    for command in (["export", "sel.json"], ["select", str(table_file)], ["cluster", str(table_file)],
                    ["finetune", str(table_file)], ["run", "--config", "quick"]):
        assert cli.main([*command, "--out", "-"]) == 2
        err = capsys.readouterr().err
        assert "--out: jaxsel writes files, not standard output" in err and err.count("\n") == 1, err
    assert [p.name for p in tmp_path.iterdir()] == [table_file.name]  # nothing written


def test_a_killed_writes_temporaries_go_with_the_next_write_or_command(tmp_path, table_file):
    """A killed export or embedding-cache write left its hidden temporary for good (33 MB for one
    embedding file), outside jaxsel run: every atomic write now removes its own target's
    temporaries older than 10 minutes, and select/finetune the ones in the folder they lock."""
    from jaxsel import io
    target = tmp_path / "kept.jsonl"
    stale, fresh = tmp_path / ".kept.jsonl.ab12cd_9.jsonl", tmp_path / ".kept.jsonl.zz12cd_9.jsonl"
    unrelated = [tmp_path / ".other.jsonl.ab12cd_9.jsonl", tmp_path / ".kept.jsonl.notmine"]
    for f in [stale, fresh, *unrelated]:
        f.write_text("partial")
    os.utime(stale, (time.time() - 3600,) * 2)
    io.write_utf8(target, "{}\n")
    assert not stale.exists() and fresh.exists() and all(f.exists() for f in unrelated)
    out = tmp_path / "sel"
    out.mkdir()
    planted = out / ".selection.json.k9_x2abc.json"
    planted.write_text("partial")
    assert cli.main(["select", str(table_file), "--model", "hash", "--method", "stratified", "--k", "4",
                     "--out", str(out)]) == 0
    assert not planted.exists() and (out / "selection.json").exists()
    long = tmp_path / ("k" * 240 + ".jsonl")  # a valid name: the temporary's had gone past 255 bytes
    io.write_utf8(long, "{}\n")
    assert long.read_text() == "{}\n"


def test_long_valid_file_names(tmp_path, table_file, monkeypatch, capsys):
    """A 249-byte data file name made a default folder name past 255 bytes, and an export to a
    246-byte name a sidecar name past it: both ended in an OSError traceback."""
    monkeypatch.chdir(tmp_path)
    data = tmp_path / ("d" * 249 + ".csv")
    data.write_bytes(table_file.read_bytes())
    assert cli.main(["select", str(data), "--model", "hash", "--method", "stratified", "--k", "4"]) == 0
    (sel,) = (tmp_path / "runs").glob("*/stratified*/selection.json")
    assert len(sel.parent.parent.name) == 64 + 7
    capsys.readouterr()
    assert cli.main(["export", str(sel), "--out", "k" * 240 + ".jsonl"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("jaxsel: error: cannot write") and "File name too long" in err and err.count("\n") == 1


def test_every_command_keeps_its_compiled_programs(tmp_path):
    """Only jaxsel run enabled the persistent compilation cache: two identical PPO selects each
    compiled for ~5 s of a 9 s command, though the README says the CLI keeps compiled programs."""
    from conftest import write_data
    csv = write_data(tmp_path / "d.csv")
    env = {**os.environ, "JAXSEL_CACHE": str(tmp_path / "cache")}
    env.pop("JAX_COMPILATION_CACHE_DIR", None)  # the suite's shared folder
    subprocess.run([sys.executable, "-m", "jaxsel", "select", str(csv), "--split-col", "split", "--model", "hash",
                    "--method", "ppo", "--steps", "1024", "--k", "6", "--out", str(tmp_path / "p")],
                   env=env, check=True, capture_output=True)
    assert any((tmp_path / "cache" / "xla").iterdir())


def test_a_full_disk_names_the_file_being_written(tmp_path):
    """'jaxsel: error: cannot write the output: No space left on device' named no file."""
    import errno
    from jaxsel import io
    from jaxsel.errors import OutputError
    target = tmp_path / "x.json"
    with pytest.raises(OutputError, match=f"cannot write {target}: No space left on device"):
        with io.atomic_path(target):
            raise OSError(errno.ENOSPC, "No space left on device")
    with pytest.raises(FileNotFoundError):  # another file's error is not the target's
        with io.atomic_path(target):
            open(tmp_path / "absent")
    assert list(tmp_path.iterdir()) == []


def test_an_empty_split_column_name_means_none(tmp_path, tmp_cache, table_file):
    """``--split-col ''`` (how a user clears a config's split column from the command line) and
    ``split_col = ""`` read the file as without a split column: a seeded split with the same
    fingerprint (a KeyError traceback before)."""
    from jaxsel import data
    from jaxsel.config import DataSpec, load_config
    from jaxsel.selection import Selection
    fp = data.dataset_fingerprint(data.load(str(table_file)))
    assert data.dataset_fingerprint(data.load(str(table_file), split_col="")) == fp
    assert DataSpec(split_col="").split_col is None
    toml = tmp_path / "c.toml"
    toml.write_text(f'name = "c"\nmethods = ["random"]\n[data]\nname = "{table_file}"\nsplit_col = "split"\n')
    assert load_config(toml, split_col="").data.split_col is None and load_config(toml).data.split_col == "split"
    assert cli.main(["data", str(table_file), "--split-col", ""]) == 0
    for out, extra in (("a", ["--split-col", ""]), ("b", [])):
        assert cli.main(["select", str(table_file), *extra, "--model", "hash", "--k", "4", "--method", "random",
                         "--out", str(tmp_path / out)]) == 0
    a, b = (Selection.load(tmp_path / out / "selection.json") for out in "ab")
    assert a.meta["fingerprint"] == b.meta["fingerprint"] == fp and np.array_equal(a.indices, b.indices)
    assert cli.main(["export", str(tmp_path / "a" / "selection.json"), "--split-col", "",
                     "--out", str(tmp_path / "kept.jsonl")]) == 0


def test_select_and_export_say_what_loading_dropped(tmp_path, tmp_cache, capsys):
    """Round 25: select, finetune and export never said that rows were dropped (empty texts,
    missing labels, --dedup), only ``jaxsel data`` and ``jaxsel run`` did; a class only in the
    user's test split pointed at a fix that failed too, not at --min-class-rows."""
    rows = [f"text {i} about {'abc'[i % 3]},{'abc'[i % 3]}" for i in range(120)] + [",a", "  ,b", "text x,none"]
    (tmp_path / "d.csv").write_text("text,label\n" + "\n".join(rows) + "\n")
    assert cli.main(["select", str(tmp_path / "d.csv"), "--model", "hash", "--k", "4", "--method", "random",
                     "--out", str(tmp_path / "s")]) == 0
    err = capsys.readouterr().err
    assert "warning: dropped 1 row without a label, 2 rows with an empty text" in err and "'none' (1 row)" in err
    assert cli.main(["export", str(tmp_path / "s" / "selection.json"), "--out", str(tmp_path / "k.csv")]) == 0
    assert "warning: dropped 1 row without a label, 2 rows with an empty text" in capsys.readouterr().err
    # read otherwise than the selection: refused by the fingerprint, the option that differs named first
    assert cli.main(["export", str(tmp_path / "s" / "selection.json"), "--missing-labels", "keep",
                     "--out", str(tmp_path / "k2.csv")]) == 2
    assert "note: read otherwise than the selection: --missing-labels 'keep' (the selection's: 'drop')" in \
        capsys.readouterr().err
    split = ["train", "validation", "test"]
    (tmp_path / "t.csv").write_text("text,label,split\n" + "".join(f"t {i},{'ab'[i % 2]},{split[i % 3]}\n"
                                                                   for i in range(60)) + "only,c,test\n")
    assert cli.main(["data", str(tmp_path / "t.csv"), "--split-col", "split"]) == 2
    err = capsys.readouterr().err
    # the option counts rows outside the test split (round 47): 0 for a class only there
    assert "drop classes this small with --min-class-rows 1 (min_class_rows in a config's [data])" in err
    assert cli.main(["data", str(tmp_path / "t.csv"), "--split-col", "split", "--min-class-rows", "1"]) == 0
    # round 39: a large class without validation rows: the same advice drops smaller classes too, and says so
    (tmp_path / "t2.csv").write_text("text,label,split\n" + "".join(f"t {i},{'ab'[i % 2]},{split[i % 3]}\n"
                                                                    for i in range(300))
                                     + "".join(f"only {i},c,{('train', 'test')[i % 2]}\n" for i in range(40))
                                     + "".join(f"small {i},d,{split[i % 3]}\n" for i in range(6)))
    assert cli.main(["data", str(tmp_path / "t2.csv"), "--split-col", "split"]) == 2
    assert "--min-class-rows 21 (min_class_rows in a config's [data]; it also drops 1 other class)" in \
        capsys.readouterr().err
    assert cli.main(["data", str(tmp_path / "t2.csv"), "--split-col", "split", "--min-class-rows", "21"]) == 0
    # round 31: the advice is left out where it would leave fewer than two classes (it had suggested a
    # --min-class-rows that dropped every class, then "needs at least 2 classes, found 0")
    (tmp_path / "u.csv").write_text("text,label,split\n" + "".join(f"t {i},a,{split[i % 3]}\n" for i in range(12))
                                    + "u 0,b,train\nu 1,b,test\n")
    assert cli.main(["data", str(tmp_path / "u.csv"), "--split-col", "split"]) == 2
    err = capsys.readouterr().err
    assert "class 'b' has 2 rows and none in the validation split" in err and "--min-class-rows" not in err, err


def test_stage_lock_waits_for_another_process_not_for_itself(tmp_path, capsys):
    """A stage folder another process computes is waited for (yielding True: its result may be there);
    the same process locking it again goes on (cell locks never nest today, and one must not hang)."""
    from jaxsel.io import stage_lock
    folder = tmp_path / "cell"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom jaxsel.io import stage_lock\n"
                               "with stage_lock(sys.argv[1]):\n    print('held', flush=True)\n    time.sleep(2)\n"
                               "    open(sys.argv[2], 'w').close()", str(folder), str(tmp_path / "done")],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with stage_lock(folder, note_every=0.5) as waited:
            assert waited and (tmp_path / "done").exists()  # it had to finish first
            with stage_lock(folder) as again:
                assert not again
    finally:
        holder.kill()
        holder.wait()
    notes = capsys.readouterr().err.strip().splitlines()
    assert notes[0] == f"note: another jaxsel process is computing {folder}: waiting for it"
    assert len(notes) > 1 and all(" s so far)" in n for n in notes[1:])  # said again while it waited


def test_a_damaged_compiled_program_is_saved_again_with_one_line(tmp_path):
    """Round 30: a saved program cut short (a kill while jax wrote it: jax writes in place and never
    replaces an entry) printed jax's two-line warning at every later run, which compiled it again. It is
    now removed with one JaxselWarning, saved again by the run that compiles it, and the next run reads it."""
    program = ("import jax, jax.numpy as jnp\nfrom jaxsel import assets\nassets.enable_compilation_cache()\n"
               "jax.config.update('jax_persistent_cache_min_compile_time_secs', 0)\n"
               "def damaged_probe(x):\n    return jnp.sin(x) * 3 + 1\n"
               "print(float(jax.jit(damaged_probe)(jnp.float32(2))))")
    env = {**os.environ, "JAXSEL_CACHE": str(tmp_path)}
    env.pop("JAX_COMPILATION_CACHE_DIR", None)  # the suite's shared folder
    run_it = lambda: subprocess.run([sys.executable, "-c", program], env=env, capture_output=True, text=True)  # noqa: E731
    first = run_it()
    [saved] = (tmp_path / "xla").glob("jit_damaged_probe-*-cache")
    whole = saved.read_bytes()
    saved.write_bytes(whole[:37])
    second = run_it()
    assert second.returncode == 0 and second.stdout == first.stdout, second.stderr
    said = [line for line in second.stderr.splitlines() if "jit_damaged_probe" in line]
    assert len(said) == 1 and "JaxselWarning: a compiled program saved in " in said[0] and \
        "removed, it is compiled and saved again" in said[0], second.stderr
    assert "Error reading persistent" not in second.stderr and len(saved.read_bytes()) > 37  # saved again
    third = run_it()
    assert third.stdout == first.stdout and "jit_damaged_probe" not in third.stderr
    from jaxsel import assets  # a warning whose program has no file to remove stays jax's own
    assert not assets.damaged_program(assets.DAMAGED_PROGRAM + "jit_other': ZstdError: x", tmp_path / "xla")
    assert not assets.damaged_program("another warning", tmp_path / "xla") and saved.exists()


def test_an_unwritable_compilation_cache_is_one_warning(tmp_path, monkeypatch, capsys):
    """Round 25: a read-only JAXSEL_CACHE printed jax's multi-line warning at every program compiled.
    A cache folder that cannot be made leaves the cache off (unset, whatever an earlier call set);
    one that cannot be written is still read, jax writing nothing to it; each with one line. Where
    the environment sets jax's own JAX_COMPILATION_CACHE_DIR, that folder is the cache."""
    import jax

    from jaxsel import assets
    before = jax.config.jax_compilation_cache_dir, jax.config.jax_persistent_cache_min_compile_time_secs
    try:
        monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(tmp_path / "jax's own"))  # jax's variable, where set
        assets.enable_compilation_cache()
        assert jax.config.jax_compilation_cache_dir == str(tmp_path / "jax's own") and not capsys.readouterr().err
        monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR")
        (tmp_path / "file").write_text("not a folder")
        monkeypatch.setenv("JAXSEL_CACHE", str(tmp_path / "file"))
        assets.enable_compilation_cache()
        assert "warning: compiled programs not cached, cannot make" in capsys.readouterr().err
        assert jax.config.jax_compilation_cache_dir is None
        monkeypatch.setenv("JAXSEL_CACHE", str(tmp_path / "ro"))
        (tmp_path / "ro" / "xla").mkdir(parents=True)

        def refused(*args, **kwargs):
            raise PermissionError(13, "Permission denied")
        monkeypatch.setattr(assets.tempfile, "TemporaryFile", refused)
        assets.enable_compilation_cache()
        assert "compiled programs will not be saved, cannot write" in capsys.readouterr().err
        assert jax.config.jax_compilation_cache_dir == str(tmp_path / "ro" / "xla")
        assert jax.config.jax_persistent_cache_min_compile_time_secs == 1e9
    finally:
        jax.config.update("jax_compilation_cache_dir", before[0])
        jax.config.update("jax_persistent_cache_min_compile_time_secs", before[1])
