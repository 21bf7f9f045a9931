"""The finetuning commands' malloc settings: freed buffers are reused instead of faulted in again."""

import os
import subprocess
import sys

import pytest

from jaxsel import allocator

# 20 allocations of 64 MiB through glibc's malloc, each written then freed: glibc maps and unmaps every one
# of them (above its 32 MiB mmap ceiling), so each is faulted in afresh unless the memory is kept. malloc
# itself, not numpy: numpy 2.0 asks for huge pages on its large arrays, and 2 MiB pages hid the difference.
LOOP = """
import ctypes, resource
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
libc.memset.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    p = libc.malloc(64 << 20)
    libc.memset(p, 1, 64 << 20)
    libc.free(p)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def faults(prelude: str, **env) -> int:
    out = subprocess.run([sys.executable, "-c", prelude + LOOP], capture_output=True, text=True, check=True,
                         env={**{k: v for k, v in os.environ.items() if not allocator.is_malloc_variable(k, v)}, **env})
    return int(out.stdout.split()[-1])


@pytest.mark.skipif(allocator.mallopt() is None, reason="glibc's mallopt")
def test_finetuning_commands_keep_freed_memory_unless_opted_out():
    command = "import jaxsel.__main__ as command; command.configure([{!r}])\n".format
    kept = faults(command("run"))
    default = faults(command("run"), **{allocator.OPT_OUT: "System"})
    assert kept * 5 < default  # one allocation's pages, reused 20 times, against 20 faulted in
    assert faults(command("finetune"), **{allocator.OPT_OUT: "keep"}) * 5 < default
    assert faults(command("select")) > default // 2  # PPO loses more to one arena's search than it gains
    assert faults("import jaxsel.cli, jaxsel.finetune\n") > default // 2  # the library alone changes nothing
    for name, value in [("MALLOC_ARENA_MAX", "8"), ("MALLOC_MMAP_THRESHOLD_", "1048576"),
                        ("GLIBC_TUNABLES", "glibc.malloc.arena_max=8")]:
        assert faults(command("run"), **{name: value}) > default // 2  # the user's own setting rules
    assert faults(command("run"), GLIBC_TUNABLES="glibc.rtld.nns=4", MALLOC_ARENA_MAX="") * 5 < default  # not malloc


@pytest.mark.parametrize("value", ["system", "SYSTEM", " system "])
def test_no_op_when_opted_out(monkeypatch, value):
    monkeypatch.setenv(allocator.OPT_OUT, value)
    assert allocator.keep_freed_memory() is False


@pytest.mark.parametrize("command", ["run", "select"])  # every command checks it
def test_unknown_choice_is_one_line_and_exit_2(command):
    env = {**os.environ, allocator.OPT_OUT: "off"}
    out = subprocess.run([sys.executable, "-m", "jaxsel", command, "--help"], capture_output=True, text=True, env=env)
    assert out.returncode == 2
    assert out.stderr == "jaxsel: error: JAXSEL_MALLOC='off': choose keep or system\n"


def test_describe_names_the_settings(monkeypatch):
    monkeypatch.setattr(allocator, "applied", False)
    for name, value in list(os.environ.items()):
        if allocator.is_malloc_variable(name, value):
            monkeypatch.delenv(name)
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.rtld.nns=4")  # no malloc tunable: not a malloc setting
    assert allocator.describe() == "defaults"
    monkeypatch.setenv("MALLOC_TOP_PAD_", "1")
    monkeypatch.setenv("MALLOC_ARENA_MAX", "1")
    assert allocator.describe() == "MALLOC_ARENA_MAX=1 MALLOC_TOP_PAD_=1"
    monkeypatch.setattr(allocator, "applied", True)
    assert allocator.describe() == "kept (mallopt)"
