"""Where candidates are measured: in this process, in N local processes, or on N actors of a Ray cluster.

Trials are independent, so each pool hands a batch out and returns the measurements in the batch's order;
the search tells the sampler in ask order, which keeps the front the same whatever the pool. Each worker
loads the parent once (`search.measure.Evaluator`). On Ray, every node must import matslice (install it
there, `pip install 'matslice[search]'`) and read the checkpoint at the same path (shared storage).
"""

from __future__ import annotations

import socket
from collections.abc import Sequence
from typing import Any, Protocol

from gemma3n.errors import UserError
from search.measure import Setup
from slicer.plan import SliceSpec


class Pool(Protocol):
    workers: int
    load_seconds: float

    def measure(self, specs: Sequence[SliceSpec]) -> list[dict[str, Any]]: ...

    def close(self) -> None: ...


class InProcess:
    """One evaluator in this process: the default, and what the tests compare the parallel pools with."""

    workers = 1

    def __init__(self, setup: Setup) -> None:
        from search.measure import Evaluator

        self.evaluator = Evaluator(setup)
        self.load_seconds = self.evaluator.load_seconds

    def measure(self, specs: Sequence[SliceSpec]) -> list[dict[str, Any]]:
        return [self.evaluator.measure(spec) for spec in specs]

    def close(self) -> None:
        self.evaluator.close()


class Processes:
    """`workers` spawned processes on this machine, each with its own loaded parent."""

    def __init__(self, setup: Setup, workers: int) -> None:
        import multiprocessing
        import time
        from concurrent.futures import ProcessPoolExecutor

        from search.measure import start_worker

        started = time.perf_counter()
        self.workers = workers
        # spawn, not fork: a forked torch with threads already started can deadlock
        self.executor = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                            initializer=start_worker, initargs=(setup,))
        self.executor.submit(int).result()  # the first worker is up and has loaded the parent
        self.load_seconds = time.perf_counter() - started

    def measure(self, specs: Sequence[SliceSpec]) -> list[dict[str, Any]]:
        from search.measure import measure_in_worker

        return list(self.executor.map(measure_in_worker, specs))

    def close(self) -> None:
        self.executor.shutdown(cancel_futures=True)


def _probe(address: str, timeout: float = 5.0) -> None:
    """Fail in seconds, not after Ray's own minute of retries, when nothing listens at `address`."""
    if address in ("auto", "local"):
        return
    target = address.removeprefix("ray://")
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit():
        raise UserError(f"--ray {address}: give the head node as HOST:PORT (e.g. 10.0.0.5:6379), ray://HOST:PORT, "
                        f"auto (the cluster this machine joined) or local (a Ray instance started here)")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout):
            pass
    except OSError as error:
        raise UserError(f"cannot reach the Ray cluster at {address} ({error.strerror or error}): start it with "
                        f"`ray start --head` on the head node, or check the address and port") from None


class RayActors:
    """`workers` Ray actors (default: one per `threads` CPUs of the cluster), each with its own loaded parent."""

    def __init__(self, setup: Setup, address: str, workers: int | None) -> None:
        import time

        try:
            import ray
        except ImportError:
            raise UserError("--ray needs ray: pip install 'matslice[search]'") from None
        _probe(address)
        started = time.perf_counter()
        try:
            if address == "local":
                ray.init(num_cpus=(workers or 1) * setup.threads, include_dashboard=False, log_to_driver=False)
            else:
                ray.init(address=address, log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError) as error:
            raise UserError(f"cannot join the Ray cluster at {address}: {str(error).splitlines()[0]} (with token "
                            "authentication, Ray's default, this machine needs the head's token in ~/.ray/auth_token "
                            "or $RAY_AUTH_TOKEN; on a trusted network start head and clients with "
                            "RAY_AUTH_MODE=disabled)") from None
        self._ray = ray
        cpus = int(ray.cluster_resources().get("CPU", 1))
        self.workers = workers or max(1, cpus // setup.threads)
        from search.measure import Evaluator

        actor = ray.remote(num_cpus=setup.threads, num_gpus=1 if setup.device == "cuda" else 0)(Evaluator)
        self.actors = [actor.remote(setup) for _ in range(self.workers)]
        ray.get([a.__ray_ready__.remote() for a in self.actors])
        self.load_seconds = time.perf_counter() - started

    def measure(self, specs: Sequence[SliceSpec]) -> list[dict[str, Any]]:
        pending = [self.actors[i % self.workers].measure.remote(spec) for i, spec in enumerate(specs)]
        return self._ray.get(pending)

    def close(self) -> None:
        for actor in self.actors:
            self._ray.kill(actor)
        self._ray.shutdown()


def open_pool(setup: Setup, workers: int | None, ray_address: str | None) -> Pool:
    if ray_address is not None:
        return RayActors(setup, ray_address, workers)
    if (workers or 1) > 1:
        return Processes(setup, workers)
    return InProcess(setup)
