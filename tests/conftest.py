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


WORDS = {"pos": "good great fine lovely nice superb", "neg": "bad awful poor dull grim weak",
         "neu": "ok plain so-so average fair usual"}


def write_data(path, test_labels_seed=None, n=360):
    """A 3-class CSV with a split column; ``test_labels_seed`` scrambles the test labels."""
    rng = np.random.default_rng(0)
    lines = ["text,label,split"]
    scramble = None if test_labels_seed is None else np.random.default_rng(test_labels_seed)
    for i in range(n):
        lab = list(WORDS)[i % 3]
        split = "train" if i < 0.7 * n else "validation" if i < 0.85 * n else "test"
        if split == "test" and scramble is not None:
            lab = list(WORDS)[scramble.integers(3)]
        lines.append(f"\"{' '.join(rng.choice(WORDS[lab].split(), 5))} topic{i % 7}\",{lab},{split}")
    path.write_text("\n".join(lines) + "\n")
    return path


def with_and_without_x64(script: str) -> tuple:
    """The JSON string ``out`` that ``script`` sets, parsed, from a subprocess with JAX_ENABLE_X64=1
    and from this process (float32): what the x64 tests compare."""
    import json
    import subprocess
    import sys
    import jax
    assert not jax.config.jax_enable_x64  # this process is the float32 reference
    run = subprocess.run([sys.executable, "-c", script + "\nprint(out)"], capture_output=True, text=True, timeout=600,
                         env={**os.environ, "JAX_ENABLE_X64": "1"})
    assert run.returncode == 0, run.stderr[-2000:]
    here = {}
    exec(script, here)
    return json.loads(run.stdout.splitlines()[-1]), json.loads(here["out"])


# the files that take a worker longest (cold cache, 2026-12-05: 2-3.5 minutes each), scheduled first
SLOW_FIRST = ("test_agents.py", "test_distributed.py", "test_resume.py", "test_experiment.py", "test_exported_rows.py",
              "test_cli.py")


def pytest_collection_modifyitems(config, items):
    """Collect the slowest files first: pytest-xdist hands whole files (``--dist loadfile``) to the
    two workers in collection order, so a slow file collected late ran alone for minutes at the end
    while the other worker idled (the last tenth of the suite took a quarter of its time)."""
    rank = {name: i for i, name in enumerate(SLOW_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest keep their order


# Most of the suite's time is XLA:CPU compiling its many small programs (a profile, 2026-12-07: 1,236 of
# 2,388 s). XLA compiles them faster with LLVM at -O1 and its loop emitters instead of the fusion
# emitters: PPO's update on the known-truth problem 5.4 -> 2.9 s to compile, running at 0.8x; the
# suite from cold caches 19m35s-20m15s -> 12m35s (same slow hours of the host). At -O0 compiling is
# faster still (2.1 s) but the code runs 8x slower: the learning tests took 2.5x as long (13m08s in
# all). bench/xla_flags.py measures them. The flags change some HLO passes (fusion, scatter
# expansion) and the machine code, so float results can differ in their last bits from a run at
# XLA's defaults, which jaxsel's commands keep. A flag of these that XLA_FLAGS already sets is left
# as it is (`XLA_FLAGS=--xla_backend_optimization_level=3 --xla_cpu_use_fusion_emitters=true`: the
# suite at XLA's defaults); flags the installed jaxlib does not know are dropped (XLA aborts on one);
# and on a GPU, none are added.
FAST_COMPILE = ("--xla_backend_optimization_level=1", "--xla_cpu_use_fusion_emitters=false")


def with_flags(*flags: str) -> str:
    """``XLA_FLAGS`` as the environment sets it, with ``flags`` added."""
    return " ".join(filter(None, (os.environ.get("XLA_FLAGS", ""), *flags)))


def _fast_compile() -> None:
    """Add :data:`FAST_COMPILE` to ``XLA_FLAGS`` (all of them, or the first alone, whichever a probe
    process on the CPU backend accepts), once, in the process that starts the workers, which
    inherit it; without them where the probe fails or takes a minute."""
    import subprocess
    import sys
    if "PYTEST_XDIST_WORKER" in os.environ:
        return
    own = os.environ.get("XLA_FLAGS", "")
    wanted = [f for f in FAST_COMPILE if f.split("=")[0] + "=" not in own]
    for flags in (wanted, wanted[:1]):
        if not flags:
            return
        try:
            probe = subprocess.run([sys.executable, "-c", "import jax; print(jax.default_backend())"], timeout=60,
                                   capture_output=True, text=True, env={**os.environ, "XLA_FLAGS": with_flags(*flags)})
        except (subprocess.TimeoutExpired, OSError):
            return
        if probe.returncode == 0:
            if probe.stdout.split()[-1:] == ["cpu"]:
                os.environ["XLA_FLAGS"] = with_flags(*flags)
            return


def pytest_configure(config):
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    _fast_compile()
    # The suite builds the same small programs many times (agents, proxies, finetune steps): keep
    # compiled executables on disk as `jaxsel run` does (the library itself leaves this to callers),
    # in one folder for every test, the commands and scripts they start included (a test's own
    # JAXSEL_CACHE compiled everything again: tests of the cache's own folder unset the variable).
    from jaxsel import assets
    os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(assets.programs_dir()))
    assets.enable_compilation_cache()


@pytest.fixture(autouse=True)
def _warnings_anew():
    """Each test sees the once-per-process warnings (``jaxsel.errors.warn(once=True)``) as a new
    process would, whatever ran before it on its worker, and every JaxselWarning on stderr as the
    ``jaxsel`` command prints it ("warning: ..."), so a test reads a library call's warnings and a
    command's alike (``pytest.warns`` inside a test still records them)."""
    from jaxsel import errors
    errors._warned.clear()
    with errors.warnings_as_lines():
        yield


@pytest.fixture(autouse=True)
def _room_between_tests():
    """A worker runs hundreds of tests in one process and JAX keeps every program they compiled
    (~22,000 memory maps after 25 agent tests): ``jaxsel.programs.make_room`` runs before each test
    at half of the kernel's allowance, so that it never clears inside a test that counts its traces,
    where the library's own calls run it at three quarters (CI's worker crossed three quarters)."""
    from jaxsel import programs
    programs.make_room(share=programs.SHARE / 1.5)
    yield
