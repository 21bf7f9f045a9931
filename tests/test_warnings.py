"""jaxsel's warnings are Python warnings of one category, its notes records of Python's logging: a
notebook filters, records or silences them, the command prints each as one line."""

import logging
import os
import subprocess
import sys
import warnings

import pytest

import jaxsel
from jaxsel import data, errors, selection


def _warning_call():
    """A library call that warns: a budget of 0.1% of 100 rows rounds to no example (one is taken)."""
    return selection.checked_examples(0.001, 100)


def test_a_library_warning_is_a_jaxsel_warning():
    with pytest.warns(jaxsel.JaxselWarning) as record:
        _warning_call()
    assert record[0].category is errors.JaxselWarning and issubclass(jaxsel.JaxselWarning, UserWarning)
    assert "rounds to no example" in str(record[0].message)
    assert record[0].filename == __file__  # shown at the user's line that led to it, not inside jaxsel


def test_a_notebook_can_silence_them(capsys):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", jaxsel.JaxselWarning)
        _warning_call()
    assert capsys.readouterr().err == ""


def test_once_warnings_are_issued_once_a_process(capsys):
    """Once under the default filters and the command's display; every time where the caller's own
    filters say "always" or "error" (round 42: a notebook recording with simplefilter("always"), or
    raising them, got nothing after the first time)."""
    errors.warn("a property of the data", once=True)  # the suite's block: the command's display
    errors.warn("a property of the data", once=True)
    errors.warn("every time")
    errors.warn("every time")
    assert capsys.readouterr().err.splitlines() == ["warning: a property of the data"] + ["warning: every time"] * 2
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        errors.warn("a property of the data", once=True)
        errors.warn("a property of the data", once=True)
    assert [str(w.message) for w in record] == ["a property of the data"] * 2
    with warnings.catch_warnings():
        warnings.simplefilter("error", jaxsel.JaxselWarning)
        with pytest.raises(jaxsel.JaxselWarning, match="a property of the data"):
            errors.warn("a property of the data", once=True)
    errors.warn("a property of the data", once=True)  # the command's display again: shown already
    assert capsys.readouterr().err == ""


def test_the_command_prints_one_line_each():
    script = ("import warnings, jaxsel.errors as e\n"
              "with e.warnings_as_lines():\n"
              "    e.warn('first'); e.warn('first'); warnings.warn('other', RuntimeWarning)\n"
              "e.warn('outside')\n")
    err = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stderr
    lines = err.splitlines()
    assert lines[:2] == ["warning: first", "warning: first"]  # each time, one line, no source line
    assert "RuntimeWarning: other" in lines[2]  # other categories as Python shows them
    assert "JaxselWarning: outside" in err and "warning: outside" not in err  # the display restored


def test_a_once_warning_the_filters_raised_or_ignored_is_issued_again():
    """Round 40: a once-per-process warning was spent before the filters ran: raised as an error once, the
    same call then passed silently (a notebook's rerun, pytest.warns); silenced once, it was never recorded."""
    for action in ("error", "ignore"):
        with warnings.catch_warnings():
            warnings.simplefilter(action, jaxsel.JaxselWarning)
            for _ in range(2):
                try:
                    errors.warn(f"a property of the data ({action})", once=True)
                except jaxsel.JaxselWarning:
                    pass
        with pytest.warns(jaxsel.JaxselWarning, match=rf"a property of the data \({action}\)"):
            errors.warn(f"a property of the data ({action})", once=True)


def _command(path, *flags: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """``python FLAGS -m jaxsel data PATH``."""
    import os
    return subprocess.run([sys.executable, *flags, "-m", "jaxsel", "data", str(path)], capture_output=True, text=True,
                          env={**os.environ, **(env or {})})


def test_the_command_follows_the_users_warning_filters(tmp_path):
    """Round 40: the command's own "always" came before -W and PYTHONWARNINGS, so neither silenced nor
    raised its warnings. Now: shown as one line by default, silenced by -W ignore, and -W error
    ends the command with one line and exit status 2."""
    path = tmp_path / "d.csv"  # a label cell with spaces around it: a warning
    path.write_text("text,label\n" + "".join(f"text {i} {w},{label}\n" for i, (w, label) in enumerate(
        [("apple", "a"), ("car", "b"), ("sun", " a")] * 12)))
    shown = _command(path)
    assert shown.returncode == 0 and "warning: label cells with spaces around them are trimmed" in shown.stderr
    ignored = _command(path, "-W", "ignore")
    assert ignored.returncode == 0 and "warning" not in ignored.stderr and ignored.stdout == shown.stdout
    assert "warning" not in _command(path, env={"PYTHONWARNINGS": "ignore::UserWarning"}).stderr
    raised = _command(path, "-W", "error::UserWarning")
    assert raised.returncode == 2 and raised.stderr.strip().splitlines() == [
        "jaxsel: error: " + shown.stderr.split("warning: ", 1)[1].splitlines()[0]], raised.stderr


def test_the_cli_leaves_the_callers_warning_display_and_filters(table_file):
    """Round 40: jaxsel.cli.main replaced warnings.showwarning for good (its cache hook)."""
    from jaxsel import cli
    before, filters = warnings.showwarning, list(warnings.filters)
    assert cli.main(["data", str(table_file)]) == 0
    assert warnings.showwarning is before and warnings.filters == filters


def _noted_file(folder) -> str:
    """A file whose 2-row class --min-class-rows 10 drops, with a note."""
    rows = [(f"text {i}", "pos" if i % 2 else "neg") for i in range(80)] + [("rare one", "odd"), ("rare two", "odd")]
    (folder / "d.csv").write_text("text,label\n" + "".join(f"{t},{y}\n" for t, y in rows))
    return str(folder / "d.csv")


@pytest.fixture
def noted(tmp_path):
    """A call that notes: loading :func:`_noted_file`."""
    path = _noted_file(tmp_path)
    return lambda: data.load(path, min_class_rows=10)


NOTE = "dropped 2 rows of 1 class with fewer than 10 rows: 'odd'"


def test_notes_are_log_records_of_the_jaxsel_logger(noted, capsys):
    """Round 40's note: informational lines were prints a notebook could not silence. They are INFO
    records of the module's logger, shown once as "note: ..." by jaxsel's own display, not passed to
    the root logger (an application's logging.basicConfig would print them a second time)."""
    records, root = [], []
    keep = type("Keep", (logging.Handler,), {"emit": lambda self, r: records.append(r)})()
    root_keep = type("Keep", (logging.Handler,), {"emit": lambda self, r: root.append(r)})()
    logging.getLogger("jaxsel").addHandler(keep)
    logging.getLogger().addHandler(root_keep)
    try:
        noted()
    finally:
        logging.getLogger("jaxsel").removeHandler(keep)
        logging.getLogger().removeHandler(root_keep)
    assert [(r.name, r.levelno, r.getMessage()) for r in records] == [("jaxsel.data", logging.INFO, NOTE)]
    assert not root and capsys.readouterr().err.splitlines() == [f"note: {NOTE}"]


def test_a_notebook_can_silence_the_notes(noted, capsys):
    logger = logging.getLogger("jaxsel")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        noted()
    finally:
        logger.setLevel(level)
    assert capsys.readouterr().err == ""
    noted()  # the display is back with the level
    assert capsys.readouterr().err == f"note: {NOTE}\n"


def test_the_applications_logging_settings_are_kept(tmp_path):
    """Break-it round 41: a level set before ``import jaxsel`` (a notebook's first cell) was reset to
    INFO, and reloading jaxsel gave the logger its display back after an application had routed the
    notes into its own logging. A fresh process: the display is made at the first import."""
    program = ("import importlib, logging, sys\nlogger = logging.getLogger('jaxsel')\n"
               "logger.setLevel(logging.WARNING)\nimport jaxsel\nfrom jaxsel import data\n"
               "data.load(sys.argv[1], min_class_rows=10)\n"
               "logger.handlers.clear()\nlogger.propagate = True\nimportlib.reload(jaxsel)\n"
               "assert logger.handlers == [] and logger.propagate and logger.level == logging.WARNING")
    done = subprocess.run([sys.executable, "-c", program, _noted_file(tmp_path)], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0 and "note:" not in done.stderr, done.stderr[-2000:]


def test_no_line_reaches_standard_output_when_standard_error_is_closed(tmp_path):
    """Break-it round 41: with standard error closed (``2>&-``), notes and warnings went to standard
    output, into ``jaxsel data --json``'s JSON, and a selection ended with exit status 1 and nothing
    said (its progress asked the missing stream whether it was a terminal)."""
    import json
    path = _noted_file(tmp_path)
    command = [sys.executable, "-m", "jaxsel", "data", path, "--min-class-rows", "10", "--json"]
    done = subprocess.run(command, stdout=subprocess.PIPE, text=True, timeout=300, preexec_fn=lambda: os.close(2))
    assert done.returncode == 0 and json.loads(done.stdout)["labels"] == ["neg", "pos"]
    command = [sys.executable, "-m", "jaxsel", "select", path, "--model", "hash", "--k", "4", "--method", "ppo",
               "--steps", "8", "--budget", "0.2", "--min-class-rows", "10", "--out", str(tmp_path / "s")]
    done = subprocess.run(command, stdout=subprocess.PIPE, text=True, timeout=300, preexec_fn=lambda: os.close(2))
    assert done.returncode == 0 and (tmp_path / "s" / "selection.json").exists()
    assert "warning" not in done.stdout and "note" not in done.stdout and done.stdout.startswith("ppo: ")
    done = subprocess.run(command[:4] + ["missing.csv"], stdout=subprocess.PIPE, text=True, timeout=300,
                          preexec_fn=lambda: os.close(2))
    assert done.returncode == 2 and done.stdout == ""
    # descriptor 2 is the null device's, not the first file the command opens (XLA and absl write to it)
    program = ("import os\nfrom jaxsel.__main__ import hold_standard_error\nhold_standard_error()\n"
               "print(os.open(os.devnull, 0))")
    done = subprocess.run([sys.executable, "-c", program], stdout=subprocess.PIPE, text=True, timeout=300,
                          preexec_fn=lambda: os.close(2))
    assert done.returncode == 0 and int(done.stdout) > 2


def test_the_commands_notes_show_under_python_m_jaxsel_cli(tmp_path):
    """Review of round 41: the command module's logger was named by ``__name__``, "__main__" under
    ``python -m jaxsel.cli``, so its notes went to the root logger and were dropped."""
    command = [sys.executable, "-m", "jaxsel.cli", "select", _noted_file(tmp_path), "--min-class-rows", "10", "--model",
               "hash", "--k", "4", "--method", "random", "--filter", "cleanlab", "--budget", "0.2",
               "--out", str(tmp_path / "s")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "note: --filter applies to RL and the cluster searches; random ignores it" in \
        done.stderr, done.stderr[-2000:]
