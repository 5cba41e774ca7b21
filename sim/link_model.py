"""Build the Verilated accelerator top with the byte-link harness (cached)."""

__all__ = ["LinkModel"]

import hashlib
import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from ..errors import ToolError
from . import objcache
from .harness import CXX_OPT, HARNESS_DIR, VERILATOR_FLAGS, _cpu_model, cache_dir
from .verilator import ensure_verilator


class LinkModel:
    """An :class:`~sparqforge.hw.accelerator.Accelerator` (or any top with ``rx``, ``tx``
    and ``idle``) compiled with ``sim/harness/link_harness.cpp``.

    Parameters
    ----------
    top : wiring.Component
        The design to simulate; it is wrapped in a
        :class:`~sparqforge.hw.link_top.LinkTop` (clock and reset ports).
    name : str
        Module name of the simulated top.
    """

    def __init__(self, top, name="accelerator", *, jobs=2):
        from ..hw.emit import to_verilog
        from ..hw.link_top import LinkTop

        self._verilog = to_verilog(LinkTop(top), name)
        self._name = name
        self._jobs = jobs
        self.info = getattr(top, "info", None)
        source = (HARNESS_DIR / "link_harness.cpp").read_text()
        key = hashlib.sha256("\0".join([self._verilog, source, " ".join(VERILATOR_FLAGS),
                                        CXX_OPT, _cpu_model()]).encode()).hexdigest()[:20]
        self._dir = cache_dir() / "link" / f"{name}-{key}"
        self.build_seconds = 0.0

    @property
    def executable(self):
        return self._dir / "Vlink"

    def build(self):
        if self.executable.is_file():
            return self.executable
        start = time.monotonic()
        info = ensure_verilator()
        self._dir.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=self._dir.name + ".", dir=self._dir.parent))
        try:
            (work / "design.v").write_text(self._verilog)
            shutil.copy(HARNESS_DIR / "link_harness.cpp", work / "link_harness.cpp")
            cmd = [info.executable, "--cc", "--exe", "--build", "-j", str(self._jobs),
                   "--prefix", "Vtop", "--top-module", self._name, *VERILATOR_FLAGS,
                   "-CFLAGS", CXX_OPT, "-MAKEFLAGS", "OPT_FAST=-O3", "-MAKEFLAGS",
                   "OPT_SLOW=-O1", "-Mdir", str(work / "obj"), "-o", str(work / "Vlink"),
                   str(work / "design.v"), str(work / "link_harness.cpp")]
            cache_flags = ["harness", *VERILATOR_FLAGS, CXX_OPT, _cpu_model()]
            for option in objcache.prime(work / "obj", cache_dir(), cache_flags):
                cmd[1:1] = ["-MAKEFLAGS", option]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                raise ToolError(f"Verilator build of {self._name} failed:\n"
                                + proc.stdout[-4000:] + proc.stderr[-4000:])
            objcache.store(work / "obj", cache_dir(), cache_flags)
            shutil.rmtree(work / "obj", ignore_errors=True)
            (work / "info.json").write_text(json.dumps({"name": self._name}))
            if self._dir.exists():
                shutil.rmtree(work)
            else:
                work.rename(self._dir)
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise
        self.build_seconds = time.monotonic() - start
        return self.executable
