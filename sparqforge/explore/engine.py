"""The sweep engine on Dask ``distributed``: every point not yet in the results store is one
task; the client records each result as it arrives.

On one machine a ``LocalCluster`` runs one single-threaded worker process per core (each
under a nanny, which restarts a worker that dies); ``scheduler`` names an existing cluster
instead (its workers need the same environment: the tool versions are part of each point's
key and a worker with others refuses the point). A worker lost in the middle of a point has
the point re-run elsewhere by the scheduler (up to Dask's ``allowed-failures``, 3 by
default), and the re-run stops the lost attempt's tools first.
"""

__all__ = ["run_sweep", "SweepResult", "first_line"]

import dataclasses
import logging
import os
import sys
import time
from pathlib import Path

from ..errors import ConfigError
from .store import STORE_NAME, Store
from .tasks import run_build, run_latency

KEEP = ("bitstreams", "builds")
#: How long the client tries to reach a scheduler named with ``--scheduler``.
CONNECT_TIMEOUT = "20s"


@dataclasses.dataclass
class SweepResult:
    """What a sweep did: ``points`` (build points in the spec), ``finished`` and ``failed``
    (of them, in the store now), ``ran`` (built in this run), ``skipped`` (already in the
    store), the same counts for latency points, and the store."""
    points: int
    finished: int
    failed: int
    ran: int
    skipped: int
    latency_points: int
    latency_finished: int
    latency_failed: int
    seconds: float
    store: Store


def _import_dask():
    try:
        import distributed
    except ImportError:
        raise ConfigError("sparqforge explore runs on Dask: install it with "
                          "pip install 'sparqforge[explore]' (dask[distributed] and "
                          "matplotlib)") from None
    return distributed


class _Progress:
    """A progress bar on a terminal, one plain line per finished point otherwise."""

    def __init__(self, total, stream, quiet):
        self._total, self._stream, self._quiet = total, stream, quiet
        self._tty = hasattr(stream, "isatty") and stream.isatty()
        self._done = self._failed = 0

    def point(self, what, result):
        self._done += 1
        self._failed += result["status"] != "ok"
        if self._quiet:
            return
        if self._tty:
            width = 30
            filled = width * self._done // max(self._total, 1)
            self._stream.write(f"\rexplore [{'#' * filled}{'.' * (width - filled)}] "
                               f"{self._done}/{self._total} ({self._failed} failed)")
            if self._done == self._total:
                self._stream.write("\n")
        else:
            self._stream.write(f"explore: {self._done}/{self._total} {what}: "
                               f"{_describe(result)}\n")
        self._stream.flush()


def first_line(error):
    """An error for one line: its first line, and its last when there are more (a tool's
    failure: what failed, then the tool's last words; the whole text is in the store)."""
    lines = (error or "").strip().splitlines() or ["no message"]
    return lines[0] if len(lines) == 1 else f"{lines[0]} ... {lines[-1].strip()}"


def _describe(result):
    if result["status"] != "ok":
        return f"failed: {first_line(result.get('error'))}"
    if "cycles" in result:
        return f"{result['cycles']:,.0f} cycles per inference ({result['seconds']} s)"
    util = result.get("utilization") or {}
    fmax = result.get("fmax_mhz")
    parts = [f"{fmax:.2f} MHz" if fmax else None,
             ", ".join(f"{util[k]:,} {k.upper()}" for k in ("lut", "dsp", "bram")
                       if util.get(k) is not None)]
    return "; ".join(p for p in parts if p) + f" ({result['seconds']} s)"


def _cluster(distributed, workers, scheduler):
    if scheduler:
        try:
            return None, distributed.Client(scheduler, timeout=CONNECT_TIMEOUT)
        except (OSError, TimeoutError) as exc:
            raise ConfigError(f"Cannot reach the Dask scheduler {scheduler}: {exc}; start one "
                              f"with dask scheduler (docs/explore.md)") from None
    # One single-threaded worker process per core: each point is a synthesis or a
    # place-and-route run that uses one core for minutes.
    cluster = distributed.LocalCluster(n_workers=workers, threads_per_worker=1,
                                       processes=True, dashboard_address=":0",
                                       silence_logs=logging.ERROR)
    return cluster, distributed.Client(cluster)


def run_sweep(spec, out_dir, *, workers=None, scheduler=None, keep=(), retry_failed=False,
              quiet=False, stream=None, work_root=None, on_start=None):
    """Run every point of ``spec`` not yet in ``out_dir``'s store.

    Parameters
    ----------
    spec : Spec
    out_dir : path
        The sweep folder: ``results.sqlite``, ``bitstreams/`` (with ``keep`` bitstreams) and,
        on a local cluster, ``work/`` (build folders while they run).
    workers : int, optional
        Local workers (default: one per core); ignored with ``scheduler``.
    scheduler : str, optional
        Address of an existing Dask scheduler (``tcp://host:8786``).
    keep : collection of str
        ``"bitstreams"`` copies each bitstream into ``bitstreams/``; ``"builds"`` keeps the
        build folders on the workers.
    retry_failed : bool
        Re-run points recorded as failed (default: they are not redone).
    on_start : callable, optional
        Called with the client once the tasks are submitted (tests use it).

    Returns
    -------
    SweepResult
    """
    bad = sorted(set(keep) - set(KEEP))
    if bad:
        raise ConfigError(f"--keep takes {' or '.join(KEEP)}, not {', '.join(bad)}")
    if workers is not None and (not isinstance(workers, int) or workers < 1):
        raise ConfigError(f"--workers must be a positive integer, not {workers!r}")
    start = time.monotonic()
    out_dir = Path(out_dir)
    created = [p for p in (out_dir, out_dir / STORE_NAME) if not p.exists()]
    store = Store(out_dir)
    stream = stream or sys.stderr
    done_builds = store.done("builds", retry_failed=retry_failed)
    done_latencies = store.done("latencies", retry_failed=retry_failed)
    builds = [p for p in spec.builds if p.key not in done_builds]
    latencies = [p for p in spec.latencies if p.key not in done_latencies]
    if builds or latencies:
        distributed = _import_dask()
        if work_root is None and not scheduler:
            work_root = out_dir.resolve() / "work"
        try:
            cluster, client = _cluster(distributed, workers or os.cpu_count() or 1, scheduler)
        except ConfigError:
            # Nothing ran: leave nothing behind that this run created.
            store.close()
            for path in reversed(created):
                path.unlink() if path.is_file() else path.rmdir()
            raise
        try:
            _run(distributed, client, builds, latencies, store, out_dir, work_root, keep,
                 _Progress(len(builds) + len(latencies), stream, quiet), on_start)
        finally:
            client.close()
            if cluster is not None:
                cluster.close()
    keys = {p.key for p in spec.builds}
    rows = store.rows("builds", keys)
    latency_rows = store.rows("latencies", {p.key for p in spec.latencies})
    return SweepResult(
        points=len(spec.builds), finished=sum(r["status"] == "ok" for r in rows),
        failed=sum(r["status"] == "failed" for r in rows), ran=len(builds),
        skipped=len(spec.builds) - len(builds), latency_points=len(spec.latencies),
        latency_finished=sum(r["status"] == "ok" for r in latency_rows),
        latency_failed=sum(r["status"] == "failed" for r in latency_rows),
        seconds=round(time.monotonic() - start, 1), store=store)


def _run(distributed, client, builds, latencies, store, out_dir, work_root, keep, progress,
         on_start):
    futures = {}
    for point in builds:
        future = client.submit(run_build, point, work_root, tuple(keep), pure=False,
                               key=f"build-{point.key}")
        futures[future] = ("build", point)
    for point in latencies:
        future = client.submit(run_latency, point, pure=False, key=f"latency-{point.key}")
        futures[future] = ("latency", point)
    if on_start is not None:
        on_start(client)
    for future in distributed.as_completed(futures):
        kind, point = futures[future]
        try:
            result = future.result()
        except Exception as exc:    # noqa: BLE001 - the task's own failure, recorded
            # The task itself raised (a bug) or Dask gave up on it (KilledWorker after its
            # workers died ``allowed-failures`` times): the point is recorded as failed
            # and the sweep goes on.
            result = {"status": "failed", "error": f"{type(exc).__name__}: {exc}"[:2000]}
        if kind == "build":
            data = result.pop("bitstream_bytes", None)
            if data is not None:
                path = out_dir / "bitstreams" / f"{point.key}.bit"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
                result["bitstream"] = str(path)
            store.put_build(point, result)
            progress.point(point.label, result)
        else:
            store.put_latency(point, result)
            progress.point(f"{Path(point.model).name} on {point.config['rows']}x"
                           f"{point.config['cols']}", result)
