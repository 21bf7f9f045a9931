"""A long process's compiled programs (jaxsel.programs): room made before the kernel's memory-map limit."""

import logging
import sys

import jax
import jax.numpy as jnp

from jaxsel import programs


def test_near_the_memory_map_limit_jaxs_compiled_programs_are_cleared(tmp_path, caplog, monkeypatch):
    """Break-it round 48: ~170 selections of different shapes in one Python process died in LLVM
    ("Cannot allocate memory", then a segmentation fault, no Python error): each XLA:CPU program holds
    memory maps, JAX keeps every program, and the kernel allows a process vm.max_map_count maps. Past
    SHARE of them, the entry points' make_room clears JAX's caches (with a note), which frees the maps:
    a jitted function then compiles again."""
    monkeypatch.setattr(programs, "_floor", None)  # not what an earlier test's real clearing left (CI)
    traced = []
    f = jax.jit(lambda x: traced.append(1) or x + 1)
    f(jnp.ones(3))
    maps, limit = tmp_path / "maps", tmp_path / "max_map_count"
    maps.write_text("mapping\n" * 10)
    limit.write_text("100\n")
    assert programs.map_count(maps, limit) == (10, 100) and not programs.make_room(maps, limit)
    f(jnp.ones(3))
    assert len(traced) == 1  # kept
    limit.write_text("12\n")
    with caplog.at_level(logging.INFO, logger="jaxsel"):
        assert programs.make_room(maps, limit)
    assert "held 10 of the 12 memory maps the kernel allows it (vm.max_map_count)" in caplog.text
    f(jnp.ones(3))
    assert len(traced) == 2  # compiled again
    assert not programs.make_room(maps, limit)  # the maps that stayed are not programs: not cleared again ...
    maps.write_text("mapping\n" * 11)
    assert programs.make_room(maps, limit)  # ... until the count grows past them by REGROWTH of the allowance
    maps.write_text("mapping\n" * 9)
    assert not programs.make_room(maps, limit) and programs._floor == 9  # maps closed: the floor falls ...
    maps.write_text("mapping\n" * 10)
    assert programs.make_room(maps, limit)  # ... and growth counts from it (10 of 12 again, 1 past the floor)
    monkeypatch.setattr(programs, "_floor", None)
    assert programs.map_count(tmp_path / "no-such-file", limit) is None  # a system that does not say: nothing done
    if sys.platform == "linux" and jax.default_backend() == "cpu":  # the real counts: XLA:CPU programs of new shapes
        # add maps, clearing gives them back (a GPU's programs live on the device)
        before = programs.map_count()[0]
        for n in range(1, 41):
            jax.jit(lambda x: jnp.tanh(x) * 2 + 1)(jnp.ones(n)).block_until_ready()
        grown = programs.map_count()[0]
        limit.write_text(f"{grown}\n")
        assert programs.make_room(None, limit)
        assert grown > before + 40 and programs.map_count()[0] < grown - 40, (before, grown, programs.map_count())
