"""Two CPU processes on localhost (jax.distributed, gloo collectives) compute what one process does:
sharded proxy scoring, PPO and DQN training runs and a data-parallel finetune; only process 0 writes."""

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.assets  # the finetune reads MiniLM's tokenizer

SCRIPT = """
import json, sys
from pathlib import Path
pid, n, port, folder = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], Path(sys.argv[4])
from jaxsel import distributed
if n > 1:
    distributed.initialize(f"localhost:{port}", n, pid)
import jax, numpy as np
from jaxsel import assets, cluster, data, finetune, io, proxy
assets.enable_compilation_cache()
from jaxsel.agents import dqn, ppo
from jaxsel.agents.env import make_env
sys.path.insert(0, "tests")
from conftest import write_data
rng = np.random.default_rng(0)
x = rng.standard_normal((600, 8)).astype(np.float32)
y = (x[:, 0] > 0).astype(int)
xv = rng.standard_normal((100, 8)).astype(np.float32)
cl = cluster.kmeans(x, 12, seed=0)
p = proxy.make(x, y, cl, xv, (xv[:, 0] > 0).astype(int))
out = {"devices": jax.device_count(), "scores": np.asarray(p.score_batch(rng.random((15, 12)) < 0.4).accuracy).tolist()}
env, params = make_env(p, cl, y, 0.2)
runner = jax.jit(ppo.make_train(ppo.PPOConfig(num_envs=8, num_steps=8, total_timesteps=512), env))(
    jax.random.PRNGKey(0), params)
out["ppo_best"] = float(runner.best.score)
runner = jax.jit(dqn.make_train(dqn.DQNConfig(num_envs=8, total_timesteps=8 * 40, learning_starts=64), env))(
    jax.random.PRNGKey(0), params)
out["dqn_best"] = float(runner.best.score)
dd = data.load(str(write_data(folder / f"d{pid}.csv")), split_col="split")
m = finetune.finetune(dd, np.arange(32), finetune.FinetuneConfig(model="tiny-bert", epochs=1, batch_size=8,
                                                                 max_length=16, lr=1e-3), progress=False)
out.update({k: m[k] for k in ("test_accuracy", "validation_accuracy", "steps")})
io.write_json(folder / f"written-by-{pid}.json", out)
print("RESULT " + json.dumps(out), flush=True)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def test_two_processes_compute_what_one_does(tmp_path, tmp_cache):
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
    for key in ("scores", "ppo_best", "dqn_best", "test_accuracy", "validation_accuracy", "steps"):
        assert a[key] == b[key], key  # every process reads the same (replicated) results
        assert a[key] == pytest.approx(one[key], abs=1e-5), key
    # only process 0 writes files
    assert [f.name for f in (tmp_path / "two").glob("written-by-*")] == ["written-by-0.json"]


def test_a_process_whose_peers_never_join_says_it_waits_and_ends_after_the_join_timeout(tmp_path, table_file):
    """A new user's process 0 without its peer printed nothing for 5 minutes, then JAX's fatal error:
    it now says what it waits for and for how long (``--join-timeout``), and ends non-zero then (JAX
    aborts the process itself: its runtime raises nothing Python could catch)."""
    root = Path(__file__).parent.parent
    cmd = [sys.executable, "-m", "jaxsel", "select", str(table_file), "--method", "random", "--model", "hash",
           "--k", "3", "--out", str(tmp_path / "o"), "--coordinator", f"localhost:{free_port()}",
           "--num-processes", "2", "--process-id", "0", "--join-timeout", "2"]
    done = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0 and not (tmp_path / "o" / "selection.json").exists()
    assert "process 0 of 2 joining localhost:" in done.stderr and "waiting up to 2 s for all 2" in done.stderr
