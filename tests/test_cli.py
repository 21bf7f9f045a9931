import json
import subprocess
import sys

import numpy as np

from jaxsel import cli, cluster


def run(*args, env=None):
    return subprocess.run([sys.executable, "-m", "jaxsel.cli", *args], capture_output=True, text=True, env=env)


def test_data_prints_splits(table_file, capsys):
    assert cli.main(["data", str(table_file)]) == 0
    out = capsys.readouterr().out
    assert "train" in out and "validation" in out and "test" in out and "neg" in out


def test_user_error_is_one_line_exit_2():
    p = run("data", "missing.csv")
    assert p.returncode == 2
    assert p.stderr.strip() == "jaxsel: error: no such file: missing.csv"


def test_cluster_writes_file(table_file, tmp_path, tmp_cache):
    out = tmp_path / "c.npz"
    assert cli.main(["cluster", str(table_file), "--k", "4", "--model", "hash", "--out", str(out)]) == 0
    c = cluster.Clustering.load(out)
    assert c.k == 4 and c.sizes.sum() == 48 and c.meta["embed_model"] == "hash"


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


def test_select_reports_the_exported_rows_and_warns_on_a_missing_class(tmp_path, tmp_cache, capsys):
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
    assert len(sel.meta["missing_classes"]) == 2 and "holds no example of class" in captured.err
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
    from jaxsel import __version__
    p = run("--version")
    assert p.returncode == 0 and p.stdout.strip() == f"jaxsel {__version__}"


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
