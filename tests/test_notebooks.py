"""Both notebooks run top to bottom on tiny settings, so they never rot."""

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from conftest import write_data
from test_experiment import write_config

pytestmark = pytest.mark.assets
NOTEBOOKS = Path(__file__).parent.parent / "notebooks"


def execute(name: str, cwd: Path, env: dict, monkeypatch) -> nbformat.NotebookNode:
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}).execute()
    return nb


def outputs(nb) -> str:
    return "\n".join(o.get("text", "") or str(o.get("data", {}).get("text/markdown", ""))
                     for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))


def test_quickstart(tmp_path, tmp_cache, monkeypatch):
    data = write_data(tmp_path / "d.csv")
    nb = execute("quickstart.ipynb", tmp_path, {"JAXSEL_NOTEBOOK_TINY": "1", "JAXSEL_NOTEBOOK_DATA": str(data)},
                 monkeypatch)
    text = outputs(nb)
    # the tiny setting's budget is 10% (it was printed as 5%)
    assert "ppo 10%: test accuracy" in text and "random 10%: test accuracy" in text and "stratified 10%" in text
    assert (tmp_path / "quickstart" / "selection.json").exists()


def test_reproduce(tmp_path, tmp_cache, monkeypatch):
    data = write_data(tmp_path / "d.csv")
    # the smallest run that still has the noisy rows the notebook prints (the tiny run test covers the rest)
    cfg = write_config(tmp_path / "tiny.toml", methods=("greedy", "random"), variants=("noisy",))
    nb = execute("reproduce.ipynb", tmp_path, {"JAXSEL_NOTEBOOK_CONFIG": str(cfg), "JAXSEL_NOTEBOOK_DATA": str(data),
                                               "JAXSEL_NOTEBOOK_OUT": str(tmp_path / "run")}, monkeypatch)
    text = outputs(nb)
    assert "| noisy | greedy | 10% | 2 (1 subset) |" in text and "corrupted chosen" in text  # one clustering
    assert (tmp_path / "run" / "results.json").exists()
