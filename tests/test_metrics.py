"""--log-dir: step metrics as JSON lines (and TensorBoard event files), from the library and the CLI."""

import importlib.util
import json

from jaxsel import cli, metrics


def read(folder):
    return [json.loads(x) for x in (folder / "metrics.jsonl").read_text().splitlines()]


def test_lines_scopes_and_tensorboard(tmp_path):
    metrics.log("nowhere", 1, x=1.0)  # outside logging_to: nothing, no error
    with metrics.logging_to(tmp_path / "a"):
        with metrics.scope("clean"), metrics.scope("ppo"):
            metrics.log("agent", 3, best_score=0.5, mean=float("nan"))
        metrics.log("top", 4, x=2)
    metrics.log("nowhere", 2, x=1.0)
    lines = read(tmp_path / "a")
    assert [(x["stage"], x["step"]) for x in lines] == [("clean/ppo/agent", 3), ("top", 4)]
    assert lines[0]["best_score"] == 0.5 and lines[0]["mean"] is None and lines[1]["x"] == 2.0
    assert importlib.util.find_spec("tensorboardX") is not None  # the dev extra installs it
    assert list((tmp_path / "a").glob("events.out.tfevents.*"))


def test_values_are_numbers_and_steps_integers(tmp_path):
    """A string reached float() (ValueError), a one-element array raised TypeError, step 3.7 was
    logged as 3; numpy and one-element arrays are numbers like any other."""
    import numpy as np
    import pytest

    from jaxsel.errors import JaxselError
    with metrics.logging_to(tmp_path / "b"):
        metrics.log("s", np.int64(1), a=np.float32(0.5), b=np.array([2.0]))
        with pytest.raises(JaxselError, match="metric 'a' must be a number, got str 'high'"):
            metrics.log("s", 2, a="high")
        with pytest.raises(JaxselError, match="step must be an integer, got 3.7"):
            metrics.log("s", 3.7, a=1.0)
    assert [(x["step"], x["a"], x["b"]) for x in read(tmp_path / "b")] == [(1, 0.5, 2.0)]


def test_select_with_log_dir_logs_the_agent(tmp_path, tmp_cache, capsys):
    from conftest import write_data
    from jaxsel.selection import Selection
    csv = write_data(tmp_path / "d.csv")
    out, logs = tmp_path / "sel", tmp_path / "logs"
    assert cli.main(["select", str(csv), "--split-col", "split", "--model", "hash", "--k", "6", "--method", "ppo",
                     "--steps", "4096", "--budget", "0.1", "--out", str(out), "--log-dir", str(logs), "--agreement",
                     "--similarity"]) == 0
    sel = Selection.load(out / "selection.json")
    assert sel.meta["config"]["agreement"] and sel.meta["config"]["similarity"]  # PPO observing both features
    assert len(sel.indices) == 25
    lines = read(logs)
    steps = [x["step"] for x in lines]
    assert all(x["stage"] == "ppo" for x in lines) and steps == sorted(steps) and len(steps) >= 1
    best = [x["best_score"] for x in lines]
    assert best == sorted(best)  # the best episode so far never gets worse
    assert lines[-1]["env_steps"] == sel.scores["env_steps"]
    written = [h for h in sel.scores["history"] if h is not None]  # slots no update wrote stay empty, not 0
    assert len(written) < len(sel.scores["history"]) and min(written) > 0
    assert lines[-1]["mean_episode_score"] == written[-1]
