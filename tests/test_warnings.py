"""jaxsel's warnings are Python warnings of one category: a notebook filters or records them, the
command prints each as one line."""

import subprocess
import sys
import warnings

import pytest

import jaxsel
from jaxsel import errors, selection


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


def test_once_warnings_are_issued_once_a_process():
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        errors.warn("a property of the data", once=True)
        errors.warn("a property of the data", once=True)
        errors.warn("every time")
        errors.warn("every time")
    assert [str(w.message) for w in record] == ["a property of the data", "every time", "every time"]


def test_the_command_prints_one_line_each(tmp_path):
    script = ("import warnings, jaxsel.errors as e\n"
              "with e.warnings_as_lines():\n"
              "    e.warn('first'); e.warn('first'); warnings.warn('other', RuntimeWarning)\n"
              "e.warn('outside')\n")
    err = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stderr
    lines = err.splitlines()
    assert lines[:2] == ["warning: first", "warning: first"]  # each time, one line, no source line
    assert "RuntimeWarning: other" in lines[2]  # other categories as Python shows them
    assert "JaxselWarning: outside" in err and "warning: outside" not in err  # the display restored
