"""Connecting to Ray and sizing the pool of workers.

Resources are sized so that every worker fits at once and nothing else waits for a CPU: the
job's input is a list of files made on the driver (no read tasks), so the actors may take
all of the cluster's CPUs. A pool that asks for more than the cluster has would wait forever
(two 1-CPU actors plus a read task on 2 CPUs deadlocks), so :func:`size_workers` gives CPU
workers fractional CPUs when more workers than CPUs are asked for.
"""

from __future__ import annotations

import logging
import math
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from deblur_cli.errors import DeblurError

#: Default torch threads per CPU worker: beyond about 4 threads one network runs little
#: faster, so a big node is better used by several workers.
DEFAULT_THREADS = 4


@dataclass(frozen=True)
class WorkerSpec:
    """The actor pool.

    Attributes:
        count: number of actors (workers).
        num_cpus, num_gpus: Ray resources of each actor.
        threads: torch CPU threads of each actor.
        device: the ``device`` its :class:`~deblur_cli.inference.Deblurrer` gets.
    """

    count: int
    num_cpus: float
    num_gpus: float
    threads: int
    device: str

    def describe(self) -> str:
        kind = f"{self.num_gpus:g} GPU" if self.num_gpus else f"{self.threads} thread{'s' * (self.threads != 1)}"
        return f"{self.count} Ray worker{'s' * (self.count != 1)} x {kind}"


def size_workers(node_cpus: list[float], gpus: float, *, device: str = "auto", workers: int | None = None,
                 threads: int | None = None, gpus_per_worker: float | None = None) -> WorkerSpec:  # fmt: skip
    """The pool for a cluster whose nodes have ``node_cpus`` CPUs and ``gpus`` GPUs in all.

    GPU workers (``device`` ``cuda``/``cuda:N``, or ``auto`` on a cluster with GPUs): one per
    GPU by default (``gpus_per_worker=1``; ``0.5`` puts two on each GPU, so that one decodes
    and writes while the other computes), 1 CPU each. CPU workers: ``threads`` torch threads
    each (default up to :data:`DEFAULT_THREADS`, at most a node's CPUs), as many as fit.

    Raises:
        DeblurError: CUDA asked for on a cluster without GPUs (unless ``workers`` is given:
            an autoscaling cluster adds GPU nodes when the pool asks for them), or bad counts.
    """
    if workers is not None and workers < 1:
        raise DeblurError(f"--workers must be at least 1, got {workers}")
    if threads is not None and threads < 1:
        raise DeblurError(f"--worker-threads must be at least 1, got {threads}")
    if gpus_per_worker is not None and not 0 <= gpus_per_worker <= 8:
        raise DeblurError(f"--worker-gpus must be between 0 and 8, got {gpus_per_worker:g}")
    cuda = device.startswith("cuda")
    use_gpu = cuda or (device == "auto" and gpus >= 1 and gpus_per_worker != 0)
    if use_gpu and gpus_per_worker == 0:
        raise DeblurError("--device cuda needs GPU workers: give --worker-gpus above 0")
    if use_gpu:
        per = gpus_per_worker or 1.0
        if gpus < per and workers is None:
            raise DeblurError("the Ray cluster has no GPU: use --device cpu, or give --workers on a cluster that adds GPU nodes")
        count = workers or max(1, int(gpus / per + 1e-9))
        # Each actor sees only its own GPU(s), as cuda:0.
        return WorkerSpec(count, 1.0, per, threads or 1, "cuda" if cuda else "auto")
    total = sum(node_cpus) or 1.0
    biggest = max(node_cpus, default=1.0)
    if threads is None:
        threads = max(1, int(min(DEFAULT_THREADS, biggest, total / workers if workers else biggest)))
    threads = max(1, min(threads, int(biggest) or 1))
    count = workers or max(1, sum(int(c // threads) for c in node_cpus))
    # Rounded down to Ray's resource unit (1e-4): rounding up could ask for more than there is.
    num_cpus = math.floor(min(float(threads), total / count) * 1e4) / 1e4
    return WorkerSpec(count, num_cpus, 0.0, threads, "cpu" if device == "auto" else device)


def check_reachable(address: str | None, timeout: float = 5.0) -> None:
    """Fail in one line when the cluster at ``HOST:PORT`` (``address``, or ``RAY_ADDRESS`` for
    ``auto``) does not answer: ``ray.init`` would retry it for minutes. Other forms
    (``local``, ``ray://...``, none) are left to Ray.

    Raises:
        DeblurError: nothing accepts a connection at that address.
    """
    if address in (None, "", "auto"):
        address = os.environ.get("RAY_ADDRESS") or None
    if not address or address in ("auto", "local") or "://" in address:
        return
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        return  # ray.init says what is wrong with it
    try:
        socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)), timeout=timeout).close()
    except OSError as exc:
        raise DeblurError(f"cannot connect to the Ray cluster at {address}: {exc.strerror or exc}") from None


@contextmanager
def ray_session(address: str | None) -> Iterator[str]:
    """Ray, connected for the duration of the block; yields a description of the cluster.

    Args:
        address: ``None`` or ``"auto"``: ``RAY_ADDRESS``, else a cluster started with
            ``ray start`` on this machine, else a new local one; ``"local"``: a new local
            cluster for this job; anything else: the address of a running cluster
            (``HOST:6379`` or ``ray://HOST:10001``). Ray already initialised in this process
            is used as it is.

    Raises:
        DeblurError: Ray is not installed, or the cluster cannot be reached.
    """
    try:
        import ray
    except ImportError:
        raise DeblurError('--ray needs Ray: pip install "deblur-cli[ray]"') from None
    if ray.is_initialized():
        yield "the Ray cluster of this process"
        return
    target = None if address in (None, "", "auto") else address
    try:
        ray.init(address=target, include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DeblurError(f"cannot connect to the Ray cluster at {address}: {first}") from None
    try:
        yield f"the Ray cluster at {ray.get_runtime_context().gcs_address}"
    finally:
        ray.shutdown()


def cluster_resources() -> tuple[list[float], float]:
    """``(CPUs of each alive node, GPUs in all)`` of the connected cluster."""
    import ray

    cpus = [float(n["Resources"].get("CPU", 0.0)) for n in ray.nodes() if n.get("Alive")]
    gpus = float(ray.cluster_resources().get("GPU", 0.0))
    return [c for c in cpus if c > 0] or [1.0], gpus
