"""bench/'s shared plumbing: argument types that refuse what a benchmark cannot run, and results
files that a run without its peers does not replace (a new user's round 17)."""

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

BENCH = Path(__file__).parent.parent / "bench"
sys.path.insert(0, str(BENCH))
import common  # noqa: E402


def test_counts_read_whole_numbers_at_or_above_their_floor():
    assert common.counts()("1e3,16, 5") == [1000, 16, 5] and common.count(0)("0") == 0
    for bad in ("abc", "0", "-1", "1.5", "nan", "4,,8"):
        with pytest.raises(argparse.ArgumentTypeError):
            common.counts()(bad)
    assert common.budget("1/16") == 1 / 16
    with pytest.raises(argparse.ArgumentTypeError, match="strictly between 0 and 1, got 2"):
        common.budget("2")


def test_a_run_without_a_peer_keeps_the_file_with_its_ratios(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(common, "RESULTS", tmp_path)
    monkeypatch.setattr(common, "environment", lambda: {"backend": "cpu"})
    monkeypatch.setattr(common, "matmul_gflops", lambda: 1.0)
    kept = tmp_path / "x-cpu-quick.json"
    kept.write_text(json.dumps({"summary": {"x_vs_peer": 2.0, "x": 1.0}}))
    common.report("x", [{"x": 3.0}], ["x"], {"x_vs_peer": None, "x": 3.0}, True)
    assert json.loads(kept.read_text())["summary"]["x_vs_peer"] == 2.0
    assert json.loads((tmp_path / "x-cpu-quick.no-peers.json").read_text())["summary"] == {"x_vs_peer": None, "x": 3.0}
    assert "this run has no x_vs_peer" in capsys.readouterr().err
    common.report("x", [{"x": 4.0}], ["x"], {"x_vs_peer": 2.5, "x": 4.0}, True)  # with the peer: replaced
    assert json.loads(kept.read_text())["summary"] == {"x_vs_peer": 2.5, "x": 4.0}
    assert capsys.readouterr().out.splitlines()[-1] == '{"x_vs_peer": 2.5, "x": 4.0}'  # the last line: the summary


@pytest.mark.parametrize("args, says", [
    (["headline.py", "--budget", "2"], "argument --budget: budget must be strictly between 0 and 1, got 2"),
    (["proxy.py", "--batches", "0"], "argument --batches: '0' is below 1"),
    (["overfit.py", "--config", "nope"], "error: no such config: nope"),
])
def test_bad_benchmark_arguments_are_one_line(args, says, tmp_path):
    before = (BENCH / "results" / "headline.json").read_bytes()
    done = subprocess.run([sys.executable, str(BENCH / args[0]), *args[1:]], capture_output=True, text=True,
                          cwd=tmp_path, timeout=120)
    assert done.returncode == 2 and says in done.stderr and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert (BENCH / "results" / "headline.json").read_bytes() == before  # --budget 2 had emptied it


def test_pools_pairs_each_method_by_pool_in_every_metric():
    """bench/pools.py's summary: each method minus stratified by (pool, seed) in test accuracy,
    validation accuracy and macro-F1, and an A/B against another run's same method, against a
    direct computation (a pool the other run lacks is left out of the A/B)."""
    import pools
    rng = np.random.default_rng(0)

    def rows(methods, n):
        return [dict(pool=p, seed=0, variant="clean", method=m, picked=None, test_accuracy=rng.random(),
                     validation_accuracy=rng.random(), test_macro_f1=rng.random()) for p in range(n) for m in methods]
    mine, theirs = rows(("ppo", "stratified"), 6), rows(("ppo", "stratified"), 5)
    (s,), = [[s for s in pools.summarize(mine, theirs) if s["method"] == "ppo"]]
    get = {(r["method"], r["pool"]): r for r in mine}
    other = {(r["method"], r["pool"]): r for r in theirs}
    for suffix, metric in (("", "test_accuracy"), ("_validation", "validation_accuracy"), ("_macro_f1", "test_macro_f1")):
        d = np.array([get["ppo", p][metric] - get["stratified", p][metric] for p in range(6)])
        assert s[f"vs_stratified{suffix}"] == pytest.approx(d.mean())
        assert s[f"vs_stratified{suffix}_ci95"] == pytest.approx(stats.t.ppf(0.975, 5) * d.std(ddof=1) / np.sqrt(6))
        assert (s[f"vs_stratified{suffix}_wins"], s[f"vs_stratified{suffix}_losses"]) == ((d > 0).sum(), (d < 0).sum())
        v = np.array([get["ppo", p][metric] - other["ppo", p][metric] for p in range(5)])
        assert s[f"versus{suffix}"] == pytest.approx(v.mean()) and len(s[f"versus{suffix}_by_pool"]) == 5
    strat = next(s for s in pools.summarize(mine, theirs) if s["method"] == "stratified")
    assert "versus" in strat and "vs_stratified" not in strat  # the A/B's own check: stratified against its twin
    table = pools.markdown(pools.summarize(mine, theirs))
    assert "validation vs stratified" in table and "macro-F1 vs the other run" in table
    # --pools as the configs' headers spell it (argparse had refused "1,...,16")
    assert pools.ints("1,...,16") == tuple(range(1, 17)) == pools.ints("1-16") and pools.ints("0,3-5") == (0, 3, 4, 5)
    for bad in ("a", "1,...", "1-b"):
        with pytest.raises(argparse.ArgumentTypeError, match="whole numbers like"):
            pools.ints(bad)


def test_runbg_checks_its_arguments_before_starting_anything(tmp_path):
    """Round 43: `bash bench/runbg.sh --help` started a background run of configs/--help.toml (it failed
    in its log only) and no argument at all was bash's "unbound variable"."""
    runbg = str(BENCH / "runbg.sh")
    for args, code, says in (([], 2, "usage: bash bench/runbg.sh NAME [SEEDS]"),
                             (["--help"], 0, "usage: bash bench/runbg.sh NAME [SEEDS]"),
                             (["no-such-config"], 2, "error: no configs/no-such-config.toml committed at HEAD"),
                             (["quick", "1,a"], 2, "error: SEEDS must be comma-separated whole numbers, got '1,a'")):
        done = subprocess.run(["bash", runbg, *args], capture_output=True, text=True, timeout=60, cwd=tmp_path)
        assert done.returncode == code and says in done.stderr and done.stdout == "", (args, done.stderr)  # no "started"
