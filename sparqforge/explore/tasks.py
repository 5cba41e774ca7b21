"""What one point of a sweep runs on a worker.

A build point runs the real command line (``sparqforge build`` or ``sparqforge synth``) in
its own process group in its own folder, with the point's time limit; a latency point runs a
model on the Verilated accelerator in the worker. Each returns a small dict (no tool output
beyond the report), which the client records; a bitstream travels back only when asked.

A build folder is ``WORK/<key>/``: ``config.json``, ``build/`` (the tools' outputs) and
``attempts``, one line per attempt with the worker's process id and the tool's process
group. A re-run (after a lost worker) stops the previous attempt's tools first.
"""

__all__ = ["run_build", "run_latency", "default_work_root"]

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .spec import tool_versions

#: Where build folders go on a worker when the sweep does not name one (remote workers).
_SCRATCH = "sparqforge-explore"


def default_work_root():
    return Path(tempfile.gettempdir()) / _SCRATCH


def _stop_previous(attempts):
    """Stop the tools of earlier attempts of this point (their worker was lost; they may
    still be running and writing into the same folder)."""
    if not attempts.is_file():
        return 0
    lines = attempts.read_text().split("\n")
    for line in lines:
        fields = line.split()
        if len(fields) == 2:
            try:
                os.killpg(int(fields[1]), signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
    return sum(1 for line in lines if line.strip())


def _error_message(stderr):
    """The command line's error message (its first line names the problem; a tool's failure
    adds the tool's last output lines), or the last lines of stderr."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    for index, line in enumerate(lines):
        if line.startswith("sparqforge: error: "):
            text = "\n".join([line[len("sparqforge: error: "):], *lines[index + 1:]])
            return text if len(text) <= 3000 else text[:1000] + "\n...\n" + text[-2000:]
    return "\n".join(lines[-8:])[-3000:] or "the build stopped without a message"


def _worker():
    return f"{socket.gethostname()}:{os.getpid()}"


def run_build(point, work_root=None, keep=()):
    """Build ``point`` (a :class:`~.spec.BuildPoint`); never raises for a tool's failure.

    Parameters
    ----------
    work_root : path, optional
        Where the point's folder goes (default: the worker's temporary folder).
    keep : collection of str
        ``"bitstreams"``: return the bitstream's bytes; ``"builds"``: keep the build folder
        (otherwise removed once the point has finished).

    Returns
    -------
    dict
        ``status`` (``"ok"`` or ``"failed"``), ``error`` (one line), ``fmax_mhz``,
        ``timing_met``, ``utilization``, ``report`` (the build report's small fields),
        ``seconds``, ``tools`` (the worker's tool versions), ``worker``, ``attempts``,
        ``build_dir`` (on the worker: kept with ``"builds"`` and after a tool's failure) and
        ``bitstream_bytes`` (with ``"bitstreams"``).
    """
    start = time.monotonic()
    folder = Path(work_root or default_work_root()).resolve() / point.key
    folder.mkdir(parents=True, exist_ok=True)
    attempts_file = folder / "attempts"
    attempts = _stop_previous(attempts_file) + 1
    result = {"status": "failed", "worker": _worker(), "attempts": attempts}
    tools = tool_versions(_family(point.board))
    result["tools"] = tools
    if tools != point.tools:
        changed = sorted(k for k in tools if tools[k] != point.tools.get(k))
        result["error"] = (f"the worker's tools differ from the client's ({', '.join(changed)}); "
                           f"install the same environment on every worker")
        return result
    build_dir = folder / "build"
    shutil.rmtree(build_dir, ignore_errors=True)
    config_path = folder / "config.json"
    config_path.write_text(json.dumps(point.config))
    command = [sys.executable, "-m", "sparqforge", point.mode, "--board", point.board,
               "--config", str(config_path), "--out", str(build_dir), "--json"]
    if point.seed is not None:
        command += ["--seed", str(point.seed)]
    if point.router is not None:
        command += ["--router", point.router]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    with open(attempts_file, "a") as f:
        f.write(f"{os.getpid()} {proc.pid}\n")
    try:
        out, err = proc.communicate(timeout=point.time_limit_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        result["error"] = (f"timed out after {point.time_limit_s:g} s (the point's "
                           f"time_limit_s); the build was stopped")
        result["seconds"] = round(time.monotonic() - start, 1)
        _clean(folder, keep)
        return result
    result["seconds"] = round(time.monotonic() - start, 1)
    if proc.returncode != 0:
        # The failed build's folder stays on the worker, for its logs.
        result["error"] = _error_message(err)
        result["build_dir"] = str(build_dir)
        return result
    report = json.loads(out)
    result.update(status="ok", fmax_mhz=report.get("fmax_mhz"),
                  timing_met=report.get("timing_met"), utilization=report.get("utilization"))
    result["report"] = {k: report.get(k) for k in (
        "stage", "utilization", "capacity", "utilization_source", "fmax_mhz", "timing_met",
        "clocks", "critical_path", "seconds", "message", "seed", "divisor")}
    bitstream = report.get("bitstream")
    if bitstream and "bitstreams" in keep:
        result["bitstream_bytes"] = (build_dir / Path(bitstream).name).read_bytes()
    if "builds" in keep:
        result["build_dir"] = str(build_dir)
    _clean(folder, keep)
    return result


def _clean(folder, keep):
    if "builds" not in keep:
        shutil.rmtree(folder, ignore_errors=True)


def _family(board):
    from ..boards.catalog import get_board

    return get_board(board).family


def run_latency(point):
    """Device cycles per inference of ``point`` (a :class:`~.spec.LatencyPoint`) on the
    Verilated accelerator, at batch 1, with the outputs checked against the golden model;
    never raises for a model that does not fit the configuration.

    Returns
    -------
    dict
        ``status``, ``error``, ``cycles`` (per inference), ``macs`` (per inference, on the
        device), ``rtl_equals_golden``, ``seconds``.
    """
    import numpy as np

    from ..cli.models_bench import run_bundle
    from ..config import AcceleratorConfig
    from ..errors import SparqforgeError
    from ..sw import golden

    start = time.monotonic()
    result = {"status": "failed", "attempts": 1}
    try:
        if point.bundle_digest is None:
            from ..cli.models_bench import _inputs, compile_model

            bundle = compile_model(point.model)
            x = _inputs(point.model, point.images, seed=100)
        else:
            from ..sw.bundle import load

            bundle = load(point.model)
            rng = np.random.default_rng(100)
            x = rng.standard_normal((point.images, *bundle.input["shape"])).astype(np.float32)
        codes = bundle.quantize_input(x)
        want = golden.run_network(bundle.layers, codes)
        config = AcceleratorConfig.from_json(
            {k: point.config[k] for k in AcceleratorConfig.keys()})
        got, runner, _ = run_bundle(bundle, codes, config)
    except SparqforgeError as exc:
        result.update(error=str(exc).splitlines()[0][:2000],
                      seconds=round(time.monotonic() - start, 1))
        return result
    rows = runner.report()
    result.update(status="ok", cycles=runner.cycles / point.images,
                  macs=int(sum(r["macs"] for r in rows if r["where"] == "device")
                           // point.images),
                  rtl_equals_golden=bool(np.array_equal(got, want)),
                  seconds=round(time.monotonic() - start, 1))
    return result
