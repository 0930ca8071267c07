"""The Ray executor: engine A's batches on a Ray cluster (``pip install 'alphaloop[ray]'``).

``executor: {kind: ray, address: auto | ray://host:port | host:port | null, workers: N}``

- ``address`` is where the cluster is: ``auto`` (the cluster this machine belongs to),
  ``host:port`` (a head node's GCS), ``ray://host:port`` (Ray Client), or null: a
  private single-machine Ray started for the run and stopped with it.
- ``workers`` is how many chunks run at once; null: the cluster's CPUs when attached.

Per :meth:`RayExecutor.map` call (one per iteration's engine A stage) the panel goes to
the object store once (``ray.put``); every task gets a reference, so a worker
deserializes it zero-copy. Chunks are submitted with at most ``2 × workers`` tasks in
flight and their results are collected as they finish (``ray.wait``), then put back in
chunk order: the same numbers as the local executor for any worker count.

Retries. Ray re-executes a task only when its worker or node is lost (``max_retries``
for system failures, ``retry_exceptions=False``): a task is a pure function of its
chunk, and its output is returned as a value (never written by the worker), so running
it twice changes nothing. An exception raised by the work itself comes back as itself,
for the orchestrator's own retry policy to classify. A cluster that keeps losing the
task is a TRANSIENT ``EXECUTOR_LOST``; one that cannot be reached is a TRANSIENT
``EXECUTOR_UNAVAILABLE``.

Where the work ran (which nodes, how many worker processes, how many chunks each) is
counted per task; :meth:`RayExecutor.describe` says it in one line.
"""

from __future__ import annotations

import socket
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from alphaloop.data.bars import Bars
from alphaloop.errors import AlphaloopError, ErrorClass

MAX_RETRIES = 4
"""Re-executions of a task whose worker or node died (Ray's system-failure retries)."""
IN_FLIGHT_PER_WORKER = 2
"""Tasks in flight per worker: one running, one queued behind it, no more."""


class ExecutorError(AlphaloopError):
    """The cluster could not run the work (not the work itself failing)."""

    code = "EXECUTOR_ERROR"
    error_class = ErrorClass.TRANSIENT


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ExecutorError("executor kind 'ray' needs Ray: pip install 'alphaloop[ray]'",
                            code="EXECUTOR_RAY_MISSING",
                            error_class=ErrorClass.PERMANENT) from None
    return ray


def _reachable(address: str | None, timeout_s: float = 5.0) -> None:
    """Refuse an address nothing listens on at once (``ray.init`` would wait on it)."""
    if address is None or address == "auto":
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except (OSError, ValueError) as exc:
        raise ExecutorError(f"cannot attach to the Ray cluster at {address!r}: {exc}",
                            code="EXECUTOR_UNAVAILABLE") from None


def _run_chunk(fn: Callable[[Any], Any], bars: Bars, chunk: Any) -> tuple[Any, str, int]:
    """One chunk in a Ray worker: the panel (resolved from the object store by Ray)
    becomes the worker's panel, as in a local pool worker. Returns where it ran."""
    import os

    import numba
    import ray

    from alphaloop.orchestrator import executors

    executors._PANEL["bars"] = bars
    numba.set_num_threads(1)  # the cluster is the parallelism
    return fn(chunk), ray.get_runtime_context().get_node_id(), os.getpid()


class RayExecutor:
    """Engine A's chunks as Ray tasks; see the module docstring."""

    def __init__(self, workers: int | None, bars: Bars, address: str | None = None) -> None:
        self.ray = ray = _import_ray()
        self.bars = bars
        self.address = address
        self._owns_ray = not ray.is_initialized()
        if self._owns_ray:
            _reachable(address)
            try:
                if address is None:  # a private single-machine Ray for this run
                    ray.init(num_cpus=workers or None, include_dashboard=False,
                             log_to_driver=False, configure_logging=False)
                else:
                    ray.init(address=address, log_to_driver=False, configure_logging=False)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                raise ExecutorError(f"cannot attach to the Ray cluster at {address!r}: "
                                    f"{str(exc).splitlines()[0] if str(exc) else exc}",
                                    code="EXECUTOR_UNAVAILABLE") from None
        cpus = int(ray.cluster_resources().get("CPU", 1))
        self.workers = max(1, workers or cpus)
        self._task = ray.remote(num_cpus=1, max_retries=MAX_RETRIES,
                                retry_exceptions=False)(_run_chunk)
        self.chunks_by_node: Counter[str] = Counter()
        self.processes: set[tuple[str, int]] = set()
        self._names: dict[str, str] = {}  # node id -> address, kept for after close

    in_process = False

    def map(self, fn: Callable[..., Any], chunks: Sequence[Any]) -> list[Any]:
        ray = self.ray
        if not chunks:
            return []
        panel = ray.put(self.bars)  # once per call: once per iteration's engine A stage
        cap = IN_FLIGHT_PER_WORKER * self.workers
        results: list[Any] = [None] * len(chunks)
        pending: dict[Any, int] = {}
        submitted = 0
        try:
            while submitted < len(chunks) or pending:
                while submitted < len(chunks) and len(pending) < cap:
                    pending[self._task.remote(fn, panel, chunks[submitted])] = submitted
                    submitted += 1
                # ready anywhere is enough: ``_get`` fetches it (no copy made twice)
                done, _ = ray.wait(list(pending), num_returns=1, fetch_local=False)
                for ref in done:
                    index = pending.pop(ref)
                    value, node, pid = self._get(ref)
                    results[index] = value
                    self.chunks_by_node[node] += 1
                    self.processes.add((node, pid))
        finally:
            for ref in pending:  # an error: nothing more of this call runs
                ray.cancel(ref, force=False)
            del panel
        self._names.update(self._node_names())
        return results

    def _get(self, ref: Any) -> tuple[Any, str, int]:
        ray = self.ray
        try:
            out: tuple[Any, str, int] = ray.get(ref)
            return out
        except ray.exceptions.RayTaskError as exc:
            cause = exc.cause if isinstance(exc.cause, BaseException) else None
            if cause is not None:  # the work failed: the orchestrator decides
                raise cause from None
            raise ExecutorError(f"a Ray task failed: {exc}", code="EXECUTOR_LOST") from None
        except ray.exceptions.RayError as exc:  # lost worker or node, retries spent
            raise ExecutorError(f"the Ray cluster lost a task after {MAX_RETRIES} retries: "
                                f"{type(exc).__name__}: {str(exc).splitlines()[0]}",
                                code="EXECUTOR_LOST") from None

    def _node_names(self) -> dict[str, str]:
        """Node id → address of every node the cluster has known."""
        try:
            return {n["NodeID"]: n["NodeManagerAddress"] for n in self.ray.nodes()}
        except Exception:  # the cluster is unreachable: ids are all we have
            return {}

    def describe(self) -> str:
        """Where the work ran, in one line."""
        where = self.address or "a private local Ray"
        if not self.chunks_by_node:
            return f"ray ({where}): {self.workers} workers; no chunk ran"
        per_node = ", ".join(f"{self._names.get(node, '?')}/{node[:8]}: {n}"
                             for node, n in sorted(self.chunks_by_node.items()))
        return (f"ray ({where}): {sum(self.chunks_by_node.values())} chunks on "
                f"{len(self.chunks_by_node)} node(s) [{per_node}], "
                f"{len(self.processes)} worker processes, up to {self.workers} at once")

    def close(self) -> None:
        if self._owns_ray and self.ray.is_initialized():
            self.ray.shutdown()
