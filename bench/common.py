"""Shared benchmark plumbing: environment record, timing, table printing, JSON results."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from jaxsel.experiment.report import environment

RESULTS = Path(__file__).parent / "results"


def count(low: int = 1):
    """An argparse type: one integer >= ``low`` (``--reps 0`` had run on, ``--micro-batches 0`` written zeros)."""
    def parse(text: str) -> int:
        try:
            number = float(text)  # 1e3 too
        except ValueError:
            number = None
        if number is None or not number.is_integer():
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number")
        value = int(number)
        if value < low:
            raise argparse.ArgumentTypeError(f"{text!r} is below {low}")
        return value
    return parse


def counts(low: int = 1):
    """An argparse type: comma-separated integers >= ``low`` (``1e3`` reads as 1,000), as a list."""
    one = count(low)
    return lambda text: [one(part.strip()) for part in text.split(",")]


def budget(text: str) -> float:
    """An argparse type: a budget as ``jaxsel`` reads one (0.05, 1/16), strictly between 0 and 1."""
    from jaxsel.errors import JaxselError
    from jaxsel.selection import parse_budget
    try:
        return parse_budget(text)
    except JaxselError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def entry(main) -> None:
    """Run a benchmark's ``main``: a JaxselError (a user's mistake: no such config, more clusters
    than rows) ends it with one line and exit 2, as the ``jaxsel`` command does, not a traceback."""
    from jaxsel.errors import JaxselError
    try:
        sys.exit(main())
    except JaxselError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


def peer_blas():
    """A context giving a peer (scikit-learn, a numpy environment) BLAS's default of one thread per
    core while it runs: a jaxsel ridge proxy limits BLAS to one thread for the whole process
    (``jaxsel.proxy.ridge.one_blas_thread``), which a user's own scikit-learn would not have."""
    from threadpoolctl import threadpool_limits
    return threadpool_limits(limits=os.cpu_count(), user_api="blas")


def timeit(fn, *, repeat: int = 3, min_time: float = 0.0) -> float:
    """Median seconds of ``fn()`` (which must block until done) over ``repeat`` runs, after one warm-up."""
    fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
        if min_time and sum(times) > min_time and len(times) >= 2:
            break
    times.sort()
    return times[len(times) // 2]


def table(rows: list[dict], cols: list[str]) -> str:
    def fmt(v):
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v)
    widths = [max(len(c), *(len(fmt(r.get(c, ""))) for r in rows)) for c in cols]
    line = lambda vals: "  ".join(str(v).rjust(w) for v, w in zip(vals, widths))
    return "\n".join([line(cols), line("-" * w for w in widths)] + [line(fmt(r.get(c, "")) for c in cols) for r in rows])


def matmul_gflops() -> float:
    """GFLOP/s of a float32 XLA matmul of transformer shape (2,048 x 384 @ 384 x 1,536) on the default
    device, median of 10: the host's ceiling, recorded with every result so that hosts compare
    (two 2-core CPU hosts of these benchmarks: 127 and 355)."""
    import jax
    import jax.numpy as jnp
    a, b = jnp.ones((2048, 384), jnp.float32), jnp.ones((384, 1536), jnp.float32)
    mm = jax.jit(jnp.matmul)
    seconds = timeit(lambda: mm(a, b).block_until_ready(), repeat=10)
    return 2 * 2048 * 384 * 1536 / seconds / 1e9


def _lost_values(path: Path, summary: dict) -> list[str]:
    """The keys of ``summary`` that are None where the results file at ``path`` has a value."""
    try:
        before = json.loads(path.read_text()).get("summary", {})
    except (OSError, ValueError, AttributeError):
        return []
    return sorted(k for k, v in summary.items() if v is None and before.get(k) is not None)


PEERS = ("torch", "transformers", "sentence-transformers", "faiss-cpu", "stable-baselines3", "sb3-contrib", "gymnasium")


def peer_versions() -> dict[str, str]:
    """The installed versions of the peers the benchmarks measure against (:data:`PEERS`)."""
    import peers
    return {pkg: v for pkg in PEERS if (v := peers.version(pkg)) != "-"}


def report(name: str, rows: list[dict], cols: list[str], summary: dict, quick: bool) -> None:
    """Print the table, save everything under bench/results/NAME-BACKEND[-quick].json (beside it, as
    ``.no-peers.json``, when a peer the file there measured did not run), and print ``summary`` as the
    last line."""
    env = {**environment(), "fp32_matmul_gflops": round(matmul_gflops(), 1)}
    env["versions"] = {**env.get("versions", {}), **peer_versions()}
    print(table(rows, cols))
    RESULTS.mkdir(exist_ok=True)
    tag = f"{name}-{env['backend']}{'-quick' if quick else ''}.json"
    lost = _lost_values(RESULTS / tag, summary)
    if lost:  # a run without a peer had replaced the committed file that held its ratios
        print(f"note: this run has no {', '.join(lost)} (a peer did not run): saved beside bench/results/{tag}, "
              f"which keeps them", file=sys.stderr)
        tag = tag.removesuffix(".json") + ".no-peers.json"  # ignored by git
    out = {"benchmark": name, "quick": quick, "environment": env, "rows": rows, "summary": summary}
    tmp = RESULTS / f".{tag}.tmp"
    tmp.write_text(json.dumps(out, indent=2) + "\n")
    os.replace(tmp, RESULTS / tag)
    print(f"saved bench/results/{tag}", file=sys.stderr)
    print(json.dumps(summary))
