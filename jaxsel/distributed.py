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

import errno
import socket
import threading

import jax

from jaxsel.errors import JaxselError, say


JOIN_GRACE = 60  # seconds JAX's own join deadline lies past ``timeout``: this module's ends the wait first, in one line
_join_thread: threading.Thread | None = None  # this process's join, once started


def initialize(coordinator: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, timeout: int = 300) -> None:
    """``jax.distributed.initialize`` with the given coordinator (``HOST:PORT``), process count and
    this process's id (all three, or none to let JAX detect a cluster). Call before any JAX
    computation. Says on stderr that it waits for the others. Raises JaxselError for a partial or
    inconsistent set, a port outside 1..65535, a port another program listens on (process 0 hosts
    the coordination service there: JAX's gRPC server crashed the process, a segmentation fault),
    and when not all processes joined within ``timeout`` seconds. JAX's join runs on a helper thread
    that the main thread waits on, so Ctrl-C stops the wait (KeyboardInterrupt); after a failed
    join that thread may still wait inside JAX, so end the process without the interpreter's
    teardown (``os._exit``, as ``jaxsel`` does): :func:`joining` tells."""
    global _join_thread
    given = [v is not None for v in (coordinator, num_processes, process_id)]
    if any(given) and not all(given):
        raise JaxselError("multi-process runs need --coordinator, --num-processes and --process-id together")
    if all(given):
        host, _, port = coordinator.rpartition(":")
        if not host or not (port.isascii() and port.isdigit()) or not 0 < int(port) < 65536:
            raise JaxselError(f"--coordinator must be HOST:PORT with a port in 1 .. 65535 (e.g. 10.0.0.1:1234), "
                              f"got {coordinator!r}")
        if num_processes < 1:
            raise JaxselError(f"--num-processes must be at least 1, got {num_processes}")
        if not 0 <= process_id < num_processes:
            raise JaxselError(f"--process-id must lie in [0, {num_processes}), got {process_id}")
    if timeout < 1:
        raise JaxselError(f"--join-timeout must be at least 1 second, got {timeout}")
    if all(given):
        if process_id == 0:
            check_port_free(int(port))
        say(f"jaxsel: process {process_id} of {num_processes} joining {coordinator}: waiting up to {timeout} s for "
            f"all {num_processes} (--join-timeout; Ctrl-C stops)")
    _join_thread, failed = _on_thread(lambda: jax.distributed.initialize(
        coordinator, num_processes, process_id, initialization_timeout=timeout + JOIN_GRACE), "jaxsel-join")
    _join_thread.join(timeout)  # a Ctrl-C interrupts the wait (lock waits take signals on POSIX)
    if _join_thread.is_alive():
        raise JaxselError(f"not all {num_processes or 'the'} processes joined {coordinator or 'the run'} within "
                          f"{timeout} s (--join-timeout): start every process with the same --coordinator and "
                          f"--num-processes")
    if failed:
        e = failed[0]
        if isinstance(e, (RuntimeError, ValueError, TypeError)):
            raise JaxselError(f"cannot join the multi-process run: {str(e).splitlines()[0]}")
        raise e


def leave(timeout: float = 30.0) -> bool:
    """End this process's part of a joined run: ``jax.distributed.shutdown`` (a barrier every process
    reaches at its end) on a helper thread, waited on for ``timeout`` seconds. False when the barrier
    did not pass by then (a process gone: JAX would wait for its heartbeat to time out, ~90 s, and
    then abort this process with its C++ trace, after its work was done and written): the caller
    should then end the process at once (``os._exit``)."""
    thread, _ = _on_thread(jax.distributed.shutdown, "jaxsel-leave")
    thread.join(timeout)
    return not thread.is_alive()


def _on_thread(fn, name: str) -> tuple[threading.Thread, list[BaseException]]:
    """``fn()`` started on a daemon thread (JAX's joins release the GIL, so the main thread can wait
    on it with a timeout and take Ctrl-C), and the list its exception, if any, is put in."""
    failed: list[BaseException] = []

    def run() -> None:
        try:
            fn()
        except BaseException as e:  # handed to the waiting thread
            failed.append(e)

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    return thread, failed


def joining() -> bool:
    """Whether this process started a multi-process join (it may still wait inside JAX, or be
    joined: either way the process should end with ``os._exit``, see :func:`initialize`)."""
    return _join_thread is not None


def check_port_free(port: int) -> None:
    """Raise JaxselError when another program listens on ``port`` of this host (any interface), where
    process 0 is to host JAX's coordination service. A port left in TIME_WAIT by an earlier run
    counts as free, as it does for gRPC (SO_REUSEADDR)."""
    for family, address in ((socket.AF_INET6, ("::", port)), (socket.AF_INET, ("", port))):
        try:
            sock = socket.socket(family, socket.SOCK_STREAM)
        except OSError:  # no IPv6 on this host: the IPv4 check
            continue
        with sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(address)
            except OSError as e:
                if e.errno == errno.EADDRINUSE:
                    raise JaxselError(f"port {port} is in use on this host (another program, or another run's process "
                                      f"0): give --coordinator another port") from None
                if e.errno == errno.EACCES:
                    raise JaxselError(f"port {port} needs privileges to listen on: give --coordinator a port "
                                      f"above 1023") from None
                if e.errno == errno.EADDRNOTAVAIL and family == socket.AF_INET6:
                    continue
                raise
        return


def primary() -> bool:
    """Whether this process writes files: process 0 (always true in a single-process run)."""
    return jax.process_index() == 0 if jax.distributed.is_initialized() else True
