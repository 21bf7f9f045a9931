"""Checkpoints: state and record saved as one step, a failed save leaves the previous step, a
foreign signature is refused, no resume starts afresh."""

import json
import re
import time

import jax.numpy as jnp
import numpy as np
import pytest

from jaxsel.checkpoint import Checkpoints, Stopwatch
from jaxsel.errors import JaxselError


def tree(x: float):
    return {"w": jnp.full((3,), x), "n": jnp.int32(int(x))}


def test_state_and_record_round_trip_and_only_the_newest_step_is_kept(tmp_path):
    ck = Checkpoints(tmp_path / "c", "sig", resume=False)
    assert ck.step is None
    ck.save(1, tree(1.0), {"epoch": 1})
    ck.save(2, tree(2.0), {"epoch": 2})
    again = Checkpoints(tmp_path / "c", "sig", resume=True)
    state, record = again.restore(tree(0.0))
    from jaxsel import code_version
    assert again.step == 2 and record == {"epoch": 2, "signature": "sig", "jaxsel_version": code_version()}
    np.testing.assert_array_equal(state["w"], np.full(3, 2.0))
    assert int(state["n"]) == 2
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == [".jaxsel-checkpoints", "2"]


def test_orbax_notes_on_its_own_metadata_file_stay_off_the_terminal(tmp_path, caplog):
    """Break-it round 50: a step whose ``_CHECKPOINT_METADATA`` (orbax's own record of it) was gone or
    damaged resumed to the right result, with "WARNING:absl:Metadata file does not exist" or a two-line
    "ERROR:absl:Failed to json parse Metadata file" around jaxsel's output. jaxsel checks a step by its
    own record: those notes are dropped, other absl records are not."""
    import logging
    ck = Checkpoints(tmp_path / "c", "sig", resume=False)
    ck.save(1, tree(1.0), {"epoch": 1})
    metadata = tmp_path / "c" / "1" / "_CHECKPOINT_METADATA"
    assert metadata.exists()
    for damage in ("{garbage", None):
        if damage is None:
            metadata.unlink()
        else:
            metadata.write_text(damage)
        state, record = Checkpoints(tmp_path / "c", "sig", resume=True).restore(tree(0.0))
        assert record["epoch"] == 1 and int(state["n"]) == 1
        assert [r.getMessage() for r in caplog.records if r.name == "absl"] == [], damage
    logging.getLogger("absl").warning("another note")
    assert [r.getMessage() for r in caplog.records if r.name == "absl"] == ["another note"]


def test_a_restored_state_runs_the_fresh_states_compiled_step(tmp_path):
    """A resumed PPO selection compiled its update again (7-9 s on CPU, and a miss in the persistent
    cache): orbax restored the arrays committed to their device, a fresh run's are not. Restored
    arrays are committed where the target's are."""
    import jax
    step = jax.jit(lambda t: {**t, "w": t["w"] + 1, "n": t["n"] + 1})
    fresh = step({"w": jnp.ones(3, jnp.float32), "n": jnp.int32(1), "k": jax.random.key(0)})  # (not weakly typed:
    committed = jax.device_put(jnp.zeros(2), jax.devices()[0])                                # restored arrays are not)
    ck = Checkpoints(tmp_path / "c", "sig", resume=False)
    ck.save(1, {**fresh, "c": committed})
    state, _ = Checkpoints(tmp_path / "c", "sig", resume=True).restore({**fresh, "c": committed})
    assert [a.committed for a in jax.tree.leaves(state)] == [True, False, False, False]  # c, k, n, w
    step({k: state[k] for k in fresh})
    assert step._cache_size() == 1
    np.testing.assert_array_equal(state["w"], np.full(3, 2.0))
    np.testing.assert_array_equal(jax.random.key_data(state["k"]), jax.random.key_data(fresh["k"]))


def test_a_save_that_fails_midway_leaves_the_previous_step(tmp_path):
    ck = Checkpoints(tmp_path / "c", "sig", resume=False)
    ck.save(1, tree(1.0), {"epoch": 1})
    with pytest.raises(TypeError):  # the record cannot be written: the state was, in the temporary step
        ck.save(2, tree(2.0), {"epoch": object()})
    again = Checkpoints(tmp_path / "c", "sig", resume=True)
    state, record = again.restore(tree(0.0))
    assert again.step == 1 and record["epoch"] == 1 and float(state["w"][0]) == 1.0
    again.save(2, tree(2.0), {"epoch": 2})  # and the run goes on from there
    assert Checkpoints(tmp_path / "c", "sig", resume=True).restore(tree(0.0))[1]["epoch"] == 2


def test_a_step_left_unfinished_by_a_stopped_process_is_removed_on_resume(tmp_path):
    """A Ctrl-C during a save left ``2.orbax-checkpoint-tmp`` beside the checkpoints, and the resumed
    run's first save printed orbax's warning about it (a new user's test): resuming removes it."""
    Checkpoints(tmp_path / "c", "sig", resume=False).save(1, tree(1.0), {"epoch": 1})
    (tmp_path / "c" / "2.orbax-checkpoint-tmp" / "state").mkdir(parents=True)  # what the stopped save left
    again = Checkpoints(tmp_path / "c", "sig", resume=True)
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == [".jaxsel-checkpoints", "1"] and again.step == 1
    again.save(2, tree(2.0), {"epoch": 2})
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == [".jaxsel-checkpoints", "2"]
    # round 30: a Ctrl-C inside the save itself leaves no unfinished step for a resume to find
    real = again._manager.save

    def stopped(step, **kw):
        (tmp_path / "c" / f"{step}.orbax-checkpoint-tmp-1" / "state").mkdir(parents=True)
        raise KeyboardInterrupt
    again._manager.save = stopped
    with pytest.raises(KeyboardInterrupt):
        again.save(3, tree(3.0), {"epoch": 3})
    again._manager.save = real
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == [".jaxsel-checkpoints", "2"] and again.step == 2


def test_signature_differences_name_the_settings():
    from jaxsel.checkpoint import signature_differences
    written = '{"config": {"ppo": {"network": "early", "lr": 1}}, "k": 4}'
    now = '{"config": {"ppo": {"network": "late", "lr": 1}}}'
    assert signature_differences(written, now) == (" (it differs in config.ppo.network ('early' written, 'late' now), "
                                                   "k (4 written, absent now))")
    assert signature_differences(written, written) == signature_differences("a", now) == ""
    # another method: the agents it does not run stand at placeholders, and are not named (a new user's test)
    ppo = '{"config": {"method": "ppo", "ppo": {"network": "late"}, "dqn": {"network": "early"}}}'
    dqn = '{"config": {"method": "dqn", "ppo": {"network": "early"}, "dqn": {"network": "late"}}}'
    assert signature_differences(ppo, dqn) == " (it differs in config.method ('ppo' written, 'dqn' now))"
    # settings the method does not read: an older jaxsel signed climb with agreement = true as given, this one
    # resets it (agents.reads); only what climb reads is named
    older = '{"config": {"method": "climb", "agreement": true, "horizon": 8, "climb_rounds": 3}}'
    assert signature_differences(older, '{"config": {"method": "climb", "climb_rounds": 3}}') == ""
    assert signature_differences(older, '{"config": {"method": "climb", "climb_rounds": 2}}') == \
        " (it differs in config.climb_rounds (3 written, 2 now))"
    # a setting left out of a signature at its keyless value is named by that value (it was "None written")
    assert signature_differences('{"config": {"method": "ppo"}}', '{"config": {"method": "ppo", "agreement": true}}') \
        == " (it differs in config.agreement (False written, True now))"


def test_an_older_jaxsels_checkpoint_is_named_as_such(tmp_path):
    """Rounds 21 and 22 of new users' tests: a checkpoint an older jaxsel wrote, resumed with the same
    settings, was refused as "another run configuration", naming settings the user never changed
    (the placeholder settings of an agent the method does not run among them). Checkpoints record
    the jaxsel that wrote them; one that records none is older than that."""
    from jaxsel import code_version
    from jaxsel.checkpoint import CheckpointMismatch, refusal
    old = '{"config": {"method": "ppo", "ppo": {"lr": 1}, "dqn": {"total_timesteps": 5}}}'
    new = '{"config": {"method": "ppo", "ppo": {"lr": 1, "preference_rate": 64.0}, "dqn": {"total_timesteps": 6}}}'
    e = refusal("checkpoint in F", old, new, None)
    # a setting added since is read at the value that ran before it existed (its keyless one)
    differs = " (it differs in config.ppo.preference_rate (0.0 written, 64.0 now))"
    assert isinstance(e, CheckpointMismatch)
    assert e.reason == f"checkpoint in F was written by an older jaxsel (this is {code_version()}), with other settings{differs}"
    assert str(e) == e.reason + "; use a new output folder, or start afresh (no --resume; resume=False in Python)"
    assert refusal("F", old, new, "0.1.0+gabcdef0").reason.startswith(
        f"F was written by jaxsel 0.1.0+gabcdef0 (this is {code_version()}), with other settings (it differs in")
    assert refusal("F", old, new, code_version()).reason == f"F was written by another run configuration{differs}"
    Checkpoints(tmp_path / "c", old, resume=False).save(1, tree(1.0))  # by this jaxsel
    with pytest.raises(CheckpointMismatch, match="written by another run configuration"):
        Checkpoints(tmp_path / "c", new, resume=True)


def test_a_checkpoint_from_before_a_setting_existed_resumes_where_it_ran_the_same(tmp_path):
    """Upgrades (break-it round 37): PPO's clip_value is absent from a signature written before it existed,
    and that run clipped the value: a config pinning clip_value = true resumed nothing ("clip_value (None
    written, True now)") and the default was said to differ from None. A signature is read at the values
    that ran before a setting existed; a changed algorithm (agents.revision) is its own difference."""
    from jaxsel.agents import SelectConfig, ppo as ppo_mod
    from jaxsel.checkpoint import CheckpointMismatch, same_signature, signature_differences
    from jaxsel.config import settings

    def signed(cfg, drop=(), **extra):
        config = settings(cfg.used())
        config["ppo"] = {k: v for k, v in config["ppo"].items() if k not in drop}
        return json.dumps({"config": config, "k": 8, "meta": {}, **extra}, sort_keys=True)
    pinned = SelectConfig(method="ppo", ppo=ppo_mod.PPOConfig(network="early", clip_value=True))
    older = signed(pinned, drop=("clip_value",))  # as a jaxsel from before clip_value signed the same run
    assert same_signature(older, signed(pinned)) and signature_differences(older, signed(pinned)) == ""
    now = signed(SelectConfig(method="ppo", ppo=ppo_mod.PPOConfig(network="early")))
    assert not same_signature(older, now)
    assert signature_differences(older, now) == " (it differs in config.ppo.clip_value (True written, False now))"
    Checkpoints(tmp_path / "c", older, resume=False).save(1, tree(1.0))
    Checkpoints(tmp_path / "c", signed(pinned), resume=True)  # resumes
    with pytest.raises(CheckpointMismatch, match=r"clip_value \(True written, False now\)"):
        Checkpoints(tmp_path / "c", now, resume=True)
    climb = SelectConfig(method="climb")
    assert not same_signature(signed(climb), signed(climb, revision=2))
    assert signature_differences(signed(climb), signed(climb, revision=2)) == " (it differs in revision (1 written, 2 now))"


DAMAGED = """
import sys
import jax
from jaxsel.checkpoint import Checkpoints, CheckpointMismatch
from pathlib import Path
folder = Path(sys.argv[1])
big = {f"a{i}": jax.random.normal(jax.random.key(i), (20_000,)) for i in range(8)}  # not compressed away
Checkpoints(folder, "sig", resume=False).save(1, big)
for f in (folder / "1" / "state" / "ocdbt.process_0" / "d").iterdir():
    f.write_bytes(b"")
try:
    Checkpoints(folder, "sig", resume=True).restore(big)
except CheckpointMismatch as e:
    print(e, file=sys.stderr)
Checkpoints(folder, "sig", resume=False).save(2, big)  # the work goes on while the abandoned reads end
"""


def test_a_damaged_checkpoint_is_one_line(tmp_path):
    """Round 22 of new users' tests: arrays truncated on disk; the refusal says what is wrong and
    what to do (it said "cannot restore checkpoint ...: Exception"), and nothing else is printed (in
    a subprocess: the reads orbax abandons end with it, and pytest holds the hooks during a test)."""
    import subprocess
    import sys
    p = subprocess.run([sys.executable, "-c", DAMAGED, str(tmp_path / "c")], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert re.fullmatch(r"cannot restore checkpoint .*/1: damaged or incomplete \(Exception: Encountered error while "
                        r"reading array index: .*\); use a new output folder, or start afresh \(no --resume; "
                        r"resume=False in Python\)\n", p.stderr), p.stderr


QUIET = """
import logging, sys
from jaxsel import checkpoint
checkpoint._quiet_abandoned_reads()
def call_soon_threadsafe():  # as asyncio's, called by tensorstore's C++ threads on orbax's closed loop
    raise RuntimeError("Event loop is closed")
try:
    call_soon_threadsafe()
except RuntimeError as e:
    sys.excepthook(RuntimeError, e, e.__traceback__.tb_next)  # its traceback starts in call_soon_threadsafe
ns = {}
exec(compile("def read():\\n    raise Exception('Encountered error while reading array index')", "/x/orbax/serialization.py", "exec"), ns)
class Coroutine:
    def __del__(self):
        ns["read"]()
Coroutine()  # an unraisable exception from orbax's code
logging.getLogger("asyncio").error("Future exception was never retrieved", exc_info=(ValueError, ValueError(
    'OUT_OF_RANGE: Error reading "a54/0" in OCDBT database at local file "/c/1/state/"'), None))
try:
    raise RuntimeError("Event loop is closed")  # raised by our own code: printed
except RuntimeError as e:
    sys.excepthook(RuntimeError, e, e.__traceback__)
logging.getLogger("asyncio").error("another asyncio error")
try:
    ns["read"]()
except Exception as e:
    sys.excepthook(Exception, e, e.__traceback__)  # uncaught, through orbax's code: printed
class Ours:
    def __del__(self):
        raise ValueError("ours")
Ours()
"""


def test_the_tracebacks_of_abandoned_reads_are_dropped_and_no_others():
    """Round 22 of new users' tests: a run on a damaged checkpoint printed 2,437 lines, 403
    tracebacks, around its one warning (the reads orbax abandons when a restore fails print through
    ``sys.excepthook``, ``sys.unraisablehook`` and the ``asyncio`` logger). Each path, with what
    must still be printed (in a subprocess: pytest holds the hooks during a test)."""
    import subprocess
    import sys
    p = subprocess.run([sys.executable, "-c", QUIET], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert p.stderr.count("Traceback") == 3 and "ValueError: ours" in p.stderr and "another asyncio error" in p.stderr
    assert p.stderr.count("/x/orbax/") == 1 and "OCDBT" not in p.stderr and "call_soon_threadsafe" not in p.stderr
    assert p.stderr.count("Event loop is closed") == 1  # ours


def test_foreign_signature_is_refused_and_no_resume_starts_afresh(tmp_path):
    Checkpoints(tmp_path / "c", "a", resume=False).save(5, tree(5.0))
    with pytest.raises(JaxselError, match="another run configuration"):
        Checkpoints(tmp_path / "c", "b", resume=True)
    fresh = Checkpoints(tmp_path / "c", "b", resume=False)
    assert fresh.step is None and [p.name for p in (tmp_path / "c").iterdir()] == [".jaxsel-checkpoints"]
    with pytest.raises(JaxselError, match="no checkpoint"):
        fresh.restore(tree(0.0))


def test_a_fresh_start_never_deletes_a_users_files(tmp_path):
    """finetune(..., ckpt_dir=FOLDER) without resume deleted everything in FOLDER (a user's notes
    and subfolders too). A folder of other files is refused; one jaxsel made (its marker) or one of
    step folders only (made before the marker) is cleared."""
    (tmp_path / "mine" / "sub").mkdir(parents=True)
    (tmp_path / "mine" / "notes.txt").write_text("x")
    with pytest.raises(JaxselError, match=r"holds files that are not checkpoints \(notes.txt, sub\)"):
        Checkpoints(tmp_path / "mine", "a", resume=False)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "x"
    Checkpoints(tmp_path / "old", "a", resume=False).save(3, tree(3.0))
    (tmp_path / "old" / ".jaxsel-checkpoints").unlink()  # as an earlier jaxsel left it
    assert Checkpoints(tmp_path / "old", "b", resume=False).step is None
    made = Checkpoints(tmp_path / "made", "a", resume=False)
    made.save(1, tree(1.0))
    (tmp_path / "made" / "orbax-extra").write_text("")  # a file a newer orbax might keep beside its steps
    assert Checkpoints(tmp_path / "made", "b", resume=False).step is None


def test_stopwatch_adds_the_seconds_of_interrupted_attempts(tmp_path):
    """A resumed job reports the seconds of every attempt: an interrupted one leaves its seconds in the
    file, the next (resuming) adds its own; without resume the count starts again."""
    path = tmp_path / "seconds.json"
    with pytest.raises(KeyboardInterrupt):
        with Stopwatch(path, resume=True):
            time.sleep(0.05)
            raise KeyboardInterrupt
    first = json.loads(path.read_text())["seconds"]
    assert first >= 0.05
    with Stopwatch(path, resume=True) as clock:
        time.sleep(0.05)
    assert clock.before == first and clock.seconds >= first + 0.05
    assert clock.seconds == json.loads(path.read_text())["seconds"]  # frozen at the end, as written
    assert Stopwatch(path, resume=False).before == 0.0
    with Stopwatch(path, resume=True, every=0.02) as clock:  # written as it runs: a kill -9 keeps most of it
        time.sleep(0.2)
        during = json.loads(path.read_text())["seconds"]
    assert clock.before + 0.1 <= during <= clock.seconds


def test_damaged_cache_and_stage_files_are_computed_again(tmp_path, tmp_cache, table_file, capsys):
    """A cache or stage file cut short or overwritten (a full disk, a hand edit) is read as missing: a
    warning names it, the stage computes it again to the same result and rewrites it. A new user's
    truncated embedding cache and stage files had stopped every rerun with a traceback (BadZipFile,
    JSONDecodeError, pickled-data ValueError). An edit that leaves the file readable (other
    assignments, embeddings of another width or rows) was used: the arrays' sha256 (and, for files
    written before those, their shapes) now tell."""
    from jaxsel import data, embed
    from jaxsel.config import ClusterSpec, EmbedSpec
    from jaxsel.experiment import stages
    from jaxsel.io import read_cached, read_json

    x = np.random.default_rng(0).standard_normal((60, 8)).astype(np.float32)
    first = stages.clustering(tmp_path, "fp", x, ClusterSpec(k=4), EmbedSpec(model="hash"), progress=False)
    (path,) = tmp_path.glob("cluster-*.npz")
    dd = data.load(str(table_file))
    emb = embed.embed_dataset(dd, "hash", progress=False)
    (cached,) = (tmp_cache / "embeddings").glob("*.npz")
    seconds, metrics = tmp_path / "seconds.json", tmp_path / "metrics.json"
    seconds.write_text('{"seconds": 2.5}')
    def edited(change, digests=True):  # a hand edit that stays readable: the same names, other values
        def damage(p):
            with np.load(p) as z:
                arrays = {n: z[n] for n in z.files if digests or not n.endswith(".sha256")}
            change(arrays)
            np.savez(p, **arrays)
        return damage

    def cut(arrays):
        for name in [n for n in arrays if not n.endswith(".sha256")]:
            arrays[name] = arrays[name][:-3] if name in ("train", "assignment") else arrays[name]

    damages = [(lambda p: p.write_bytes(p.read_bytes()[:100]),) * 2, (lambda p: p.write_text("garbage"),) * 2,
               # assignments all 0 / embeddings 100 wide: a different selection without a word
               (edited(lambda a: a.update(assignment=np.zeros_like(a["assignment"]))),
                edited(lambda a: a.update(train=a["train"][:, :100]))),
               (edited(cut, digests=False),) * 2]  # files from before the sha256s, rows cut: tracebacks
    for cluster_damage, embedding_damage in damages:
        cluster_damage(path)
        embedding_damage(cached)
        capsys.readouterr()
        again = stages.clustering(tmp_path, "fp", x, ClusterSpec(k=4), EmbedSpec(model="hash"), progress=False)
        np.testing.assert_array_equal(again.assignment, first.assignment)
        for split, e in embed.embed_dataset(dd, "hash", progress=False).items():
            np.testing.assert_array_equal(e, emb[split])
        err = capsys.readouterr().err
        assert f"ignoring the unreadable cache file {path}" in err and f"unreadable cache file {cached}" in err
        assert stages.clustering(tmp_path, "fp", x, ClusterSpec(k=4), EmbedSpec(model="hash")).k == 4  # rewritten
        assert "unreadable" not in capsys.readouterr().err
    assert Stopwatch(seconds, resume=True).before == 2.5
    seconds.write_text('{"broken')
    metrics.write_text('{"broken')
    assert Stopwatch(seconds, resume=True).before == 0.0 and read_cached(metrics, read_json) is None
    assert read_cached(tmp_path / "absent.json", read_json) is None and "absent" not in capsys.readouterr().err


def test_a_finetune_checkpoint_from_before_min_steps_default_names_its_value():
    """A finetune checkpoint written when min_steps defaulted to 0 leaves the field out: a resume under
    the default of 100 is refused, naming "0 written" (it said "None written": no value to pass)."""
    import json
    from jaxsel.checkpoint import same_signature, signature_differences
    from jaxsel.config import FinetuneConfig, settings
    old, now, pinned = (json.dumps({"config": settings(c), "examples": 100})
                        for c in (FinetuneConfig(min_steps=0), FinetuneConfig(), FinetuneConfig(min_steps=0)))
    assert "min_steps" not in old and "config.min_steps (0 written, 100 now)" in signature_differences(old, now)
    assert not same_signature(old, now) and same_signature(old, pinned)
