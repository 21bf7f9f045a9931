"""Several processes, one computation: JAX's multi-controller runtime (``jax.distributed``).

Start the same command once per host (or per process) with ``--coordinator HOST:PORT
--num-processes N --process-id I`` (or, on a Cloud TPU slice or a SLURM/Open MPI job, with none of
them: JAX reads its cluster environment). Every process then sees all devices of all processes:
the proxy's candidate-subset batches and the finetuning batches are sharded over that global mesh
(each process feeds the same host arrays; results are replicated, so every process reads them),
and only process 0 writes files (:func:`primary`; :func:`jaxsel.io.atomic_path` discards the other
processes' writes). PPO's and DQN's vmapped environments are sharded over the global mesh too
(their networks, updates and DQN's replay buffer are replicated; :func:`jaxsel.agents.env.shard_envs`).
On CPU the processes talk through gloo collectives (JAX's default).
"""

from __future__ import annotations

import sys

import jax

from jaxsel.errors import JaxselError


def initialize(coordinator: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, timeout: int = 300) -> None:
    """``jax.distributed.initialize`` with the given coordinator (``HOST:PORT``), process count and
    this process's id (all three, or none to let JAX detect a cluster). Call before any JAX
    computation. Raises JaxselError for a partial or inconsistent set. Says on stderr that it waits
    for the others: when they have not all joined within ``timeout`` seconds, JAX ends the process
    itself (SIGABRT, its own message: the runtime gives Python no error to catch)."""
    given = [v is not None for v in (coordinator, num_processes, process_id)]
    if any(given) and not all(given):
        raise JaxselError("multi-process runs need --coordinator, --num-processes and --process-id together")
    if all(given):
        host, _, port = coordinator.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise JaxselError(f"--coordinator must be HOST:PORT with a port in 1 .. 65535 (e.g. 10.0.0.1:1234), "
                              f"got {coordinator!r}")
        if num_processes < 1:
            raise JaxselError(f"--num-processes must be at least 1, got {num_processes}")
        if not 0 <= process_id < num_processes:
            raise JaxselError(f"--process-id must lie in [0, {num_processes}), got {process_id}")
    if timeout < 1:
        raise JaxselError(f"--join-timeout must be at least 1 second, got {timeout}")
    if all(given):
        print(f"jaxsel: process {process_id} of {num_processes} joining {coordinator}: waiting up to {timeout} s for "
              f"all {num_processes} (--join-timeout; a process that never starts ends this one with JAX's error)",
              file=sys.stderr, flush=True)
    try:
        jax.distributed.initialize(coordinator, num_processes, process_id, initialization_timeout=timeout)
    except (RuntimeError, ValueError, TypeError) as e:
        raise JaxselError(f"cannot join the multi-process run: {str(e).splitlines()[0]}")


def primary() -> bool:
    """Whether this process writes files: process 0 (always true in a single-process run)."""
    return jax.process_index() == 0 if jax.distributed.is_initialized() else True
