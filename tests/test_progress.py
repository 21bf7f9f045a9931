"""Progress in a log file: single lines (stage, done/total, rate, ETA), never redrawn bars."""

import numpy as np

from jaxsel import cli, progress


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_lines_print_at_start_every_interval_and_at_the_end(capsys):
    clock = Clock()
    with progress.Lines(total=100, desc="ppo", unit="update", interval=30, clock=clock) as bar:
        for step in range(100):
            clock.t += 1.0  # one update a second: a line at 30 s, 60 s, 90 s
            bar.update(1)
            bar.set_postfix(best=f"{step / 100:.2f}")
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "ppo: 0/100 update (0%)"
    assert lines[1] == "ppo: 30/100 update (30%), 1 update/s, 30s, ETA 1:10, best=0.28"  # the postfix set before that update
    assert len(lines) == 5 and lines[-1].startswith("ppo: 100/100 update (100%), 1 update/s, 100s, best=0.99")


def test_cli_progress_in_a_log_is_line_oriented(tmp_path, capsys):
    rng = np.random.default_rng(0)
    words = {"pos": "good great fine lovely", "neg": "bad awful poor dull"}
    rows = [f"{' '.join(rng.choice(words[y].split(), 5))} {i},{y}" for i, y in enumerate(["pos", "neg"] * 100)]
    (tmp_path / "d.csv").write_text("text,label\n" + "\n".join(rows) + "\n")
    assert cli.main(["select", str(tmp_path / "d.csv"), "--model", "hash", "--method", "greedy", "--k", "6",
                     "--granularity", "quota", "--out", str(tmp_path / "greedy")]) == 0
    err = capsys.readouterr().err
    assert "\r" not in err and "\x1b[" not in err  # no redrawn bars, no cursor movement
    lines = [line for line in err.splitlines() if line.startswith("greedy: ")]
    assert lines[0].startswith("greedy: 0/8 ex") and "8/8 ex (100%)" in lines[-1] and len(lines) <= 3


def test_the_end_is_not_printed_twice(capsys):
    clock = Clock()
    bar = progress.Lines(range(2), desc="run", unit="cell", interval=30, clock=clock)
    for _ in bar:
        clock.t += 40  # every update prints
    bar.close()
    assert capsys.readouterr().err.splitlines()[-2:] == ["run: 1/2 cell (50%), 0.025 cell/s, 40s, ETA 0:40",
                                                         "run: 2/2 cell (100%), 0.025 cell/s, 80s"]
