"""Two CPU processes on localhost (jax.distributed, gloo collectives) compute what one process does:
sharded proxy scoring, a DQN training run, a PPO selection and a data-parallel finetune resumed from
their checkpoints; only process 0 writes. Then how a multi-process run ends when it cannot go on."""

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.assets  # the finetune reads MiniLM's tokenizer

SETUP = """
import json, sys
from pathlib import Path
pid, n, port, folder = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], Path(sys.argv[4])
from jaxsel import distributed
if n > 1:
    distributed.initialize(f"localhost:{port}", n, pid)
import jax, numpy as np
from jaxsel import agents, assets, cluster, data, finetune, io, proxy
assets.enable_compilation_cache()
sys.path.insert(0, "tests")
from conftest import write_data
rng = np.random.default_rng(0)
x = rng.standard_normal((600, 8)).astype(np.float32)
y = (x[:, 0] > 0).astype(int)
xv = rng.standard_normal((100, 8)).astype(np.float32)
cl = cluster.kmeans(x, 12, seed=0)
p = proxy.make(x, y, cl, xv, (xv[:, 0] > 0).astype(int))
"""  # each process: the same proxy over the same clusters

SCRIPT = SETUP + """
from jaxsel.agents import dqn, ppo
from jaxsel.agents.env import make_env
out = {"devices": jax.device_count(), "scores": np.asarray(p.score_batch(rng.random((15, 12)) < 0.4).accuracy).tolist()}
env, params = make_env(p, cl, y, 0.2)
runner = jax.jit(dqn.make_train(dqn.DQNConfig(num_envs=8, total_timesteps=8 * 40, learning_starts=64), env))(
    jax.random.PRNGKey(0), params)
out["dqn_best"] = float(runner.best.score)
# PPO as a checkpointed selection stopped part-way and resumed (two processes' resume once failed: see the test)
cfg = agents.SelectConfig(budget=0.2, checkpoint_every=2, ppo=ppo.PPOConfig(num_envs=8, num_steps=8, total_timesteps=512))
agents.select(p, cl, y, cfg, ckpt_dir=folder / "ppo", progress=False, stop_after=2)  # DQN resumes the same way
out["ppo_resumed"] = agents.select(p, cl, y, cfg, ckpt_dir=folder / "ppo", progress=False, resume=True).indices.tolist()
dd = data.load(str(write_data(folder / f"d{pid}.csv")), split_col="split")
ft = finetune.FinetuneConfig(model="tiny-bert", epochs=2, batch_size=8, max_length=16, lr=1e-3, patience=99, min_steps=0)
finetune.finetune(dd, np.arange(32), ft, progress=False, ckpt_dir=folder / "ft", stop_after_epochs=1)
m = finetune.finetune(dd, np.arange(32), ft, progress=False, ckpt_dir=folder / "ft", resume=True)
out.update({k: m[k] for k in ("test_accuracy", "validation_accuracy", "steps")})
io.write_json(folder / f"written-by-{pid}.json", out)
print("RESULT " + json.dumps(out), flush=True)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def test_two_processes_compute_what_one_does(tmp_path, tmp_cache):
    """Proxy scores, a DQN run, and a PPO selection and a finetune each stopped part-way and
    resumed: two processes end where one does (and a resumed run where an uninterrupted one does:
    test_resume). Both processes restarted with --resume had failed with a traceback
    ("incompatible devices" for PPO and DQN, "cross-host device transfers" for a finetune): each
    restored its replicated state as copies committed to its own device."""
    root = Path(__file__).parent.parent
    port = free_port()
    run = lambda pid, n, folder: subprocess.Popen([sys.executable, "-c", SCRIPT, str(pid), str(n), str(port), str(folder)],
                                                  cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    procs = [run(0, 2, tmp_path / "two"), run(1, 2, tmp_path / "two"), run(0, 1, tmp_path / "one")]  # all at once
    results = []
    for stdout, stderr in [p.communicate(timeout=600) for p in procs]:
        lines = [ln for ln in stdout.splitlines() if ln.startswith("RESULT ")]
        assert lines, stderr[-2000:]
        results.append(json.loads(lines[0][7:]))
    a, b, one = results
    assert a["devices"] == b["devices"] == 2 and one["devices"] == 1
    for key in ("scores", "dqn_best", "ppo_resumed", "test_accuracy", "validation_accuracy", "steps"):
        assert a[key] == b[key], key  # every process reads the same (replicated) results
        assert a[key] == pytest.approx(one[key], abs=1e-5), key
    # only process 0 writes files
    assert [f.name for f in (tmp_path / "two").glob("written-by-*")] == ["written-by-0.json"]


def _select(table_file, out, port: int, pid: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "jaxsel", "select", str(table_file), "--model", "hash", "--k", "3", "--out", str(out),
            "--coordinator", f"localhost:{port}", "--num-processes", "2", "--process-id", str(pid), *extra]


def test_a_process_whose_peers_never_join_says_it_waits_and_ends_after_the_join_timeout(tmp_path, table_file):
    """A new user's process 0 without its peer printed nothing for 5 minutes, then JAX's fatal error
    (an abort with a C++ stack trace): it says what it waits for and for how long
    (``--join-timeout``), and ends then with one line, exit 2, for process 0 (which hosts the
    coordination service) and for a later process alike."""
    root = Path(__file__).parent.parent
    for pid in (0, 1):
        cmd = _select(table_file, tmp_path / "o", free_port(), pid, "--method", "random", "--join-timeout", "2")
        t = time.monotonic()
        done = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=300)
        assert done.returncode == 2 and not (tmp_path / "o" / "selection.json").exists(), done.stderr[-2000:]
        assert f"process {pid} of 2 joining localhost:" in done.stderr and "waiting up to 2 s for all 2" in done.stderr
        assert "jaxsel: error: not all 2 processes joined localhost:" in done.stderr
        assert "Check failure" not in done.stderr and "Traceback" not in done.stderr
        assert time.monotonic() - t < 60  # not JAX's own deadline (JOIN_GRACE later), nor teardown waiting on it


def test_ctrl_c_stops_a_process_waiting_for_its_peers(tmp_path, table_file):
    """Ctrl-C (and SIGTERM) were ignored while JAX waited for the peers (the whole join timeout,
    then its abort): the wait now runs on a helper thread and the interrupt ends it at once."""
    root = Path(__file__).parent.parent
    for sig in (signal.SIGINT, signal.SIGTERM):
        proc = subprocess.Popen(_select(table_file, tmp_path / "o", free_port(), 0, "--method", "random"), cwd=root,
                                stderr=subprocess.PIPE, text=True)
        for line in proc.stderr:
            if "joining localhost:" in line:
                break
        time.sleep(1.0)
        t = time.monotonic()
        proc.send_signal(sig)
        assert proc.wait(60) == 130 and time.monotonic() - t < 30
        assert "interrupted" in proc.stderr.read()


def test_a_port_in_use_is_one_line(tmp_path):
    """Process 0 hosts JAX's coordination service on the coordinator's port: one another program
    listened on crashed the process (gRPC, a segmentation fault)."""
    from jaxsel import distributed
    from jaxsel.errors import JaxselError
    with socket.socket() as s:
        s.bind(("", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(JaxselError, match=f"port {port} is in use on this host"):
            distributed.initialize(f"localhost:{port}", 2, 0)
    distributed.check_port_free(port)  # closed again: free (gRPC's SO_REUSEADDR ignores its TIME_WAIT too)


def test_a_peer_that_dies_ends_the_others_with_one_line(tmp_path, table_file):
    """A process killed mid-run left process 0 with a Python traceback from a gloo collective, then,
    ~70 s later, JAX's abort and its C++ trace: now one line that says to start again with --resume,
    at once."""
    root = Path(__file__).parent.parent
    port = free_port()
    procs = [subprocess.Popen(_select(table_file, tmp_path / f"o{pid}", port, pid, "--method", "ppo", "--steps",
                                      "10000000"), cwd=root, stderr=subprocess.PIPE, text=True) for pid in (0, 1)]
    for line in procs[0].stderr:
        if line.startswith("ppo: "):  # training has begun on both
            break
    time.sleep(2.0)
    procs[1].kill()
    t = time.monotonic()
    assert procs[0].wait(120) == 1 and time.monotonic() - t < 60
    err = procs[0].stderr.read()
    assert "jaxsel: error: the multi-process run broke off" in err and "--resume" in err
    assert "Traceback" not in err and "Check failure" not in err


LEAVE_SCRIPT = """
import os, sys, time
pid, port = int(sys.argv[1]), sys.argv[2]
from jaxsel import distributed
distributed.initialize(f"localhost:{port}", 2, pid)
if pid == 1:
    os._exit(0)  # gone without reaching the end-of-run barrier
t = time.monotonic()
print("LEFT", distributed.leave(timeout=5), round(time.monotonic() - t), flush=True)
os._exit(0)
"""


def test_leaving_a_run_whose_peer_is_gone_takes_its_timeout_not_jax_abort(tmp_path):
    """Process 0 that finished a run whose other process was killed near its end waited ~90 s in
    JAX's end-of-run barrier, then JAX aborted it with a C++ trace (its selection written):
    :func:`jaxsel.distributed.leave` gives up after its timeout instead, so jaxsel exits 0 at once."""
    root = Path(__file__).parent.parent
    port = free_port()
    procs = [subprocess.Popen([sys.executable, "-c", LEAVE_SCRIPT, str(pid), str(port)], cwd=root,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for pid in (0, 1)]
    stdout, stderr = procs[0].communicate(timeout=120)
    procs[1].communicate(timeout=60)
    assert procs[0].returncode == 0, stderr[-2000:]
    left, seconds = stdout.split()[1:]
    assert left == "False" and 5 <= int(seconds) < 15
