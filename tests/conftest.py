import os

import numpy as np
import pytest


@pytest.fixture
def tmp_cache(tmp_path, monkeypatch):
    """An empty JAXSEL_CACHE for tests that write to the cache."""
    monkeypatch.setenv("JAXSEL_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def table_file(tmp_path):
    """A small CSV with text/label columns, 3 classes, 60 rows."""
    rng = np.random.default_rng(0)
    words = {"pos": "good great fine", "neg": "bad awful poor", "neu": "ok plain so-so"}
    lines = ["text,label"]
    for i in range(60):
        lab = list(words)[i % 3]
        lines.append(f"\"{' '.join(rng.choice(words[lab].split(), 4))} {i}\",{lab}")
    p = tmp_path / "small.csv"
    p.write_text("\n".join(lines) + "\n")
    return p


def pytest_configure(config):
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
