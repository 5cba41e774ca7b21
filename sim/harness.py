"""Build and run the compiled stream harness (``harness/stream_harness.cpp``) for a block.

The harness drives and checks every clock in C++; Python writes the stimulus words once and
reads the results once, so a Verilated block runs at the speed of the compiled model. Builds
are cached by a hash of the Verilog, the port description and the harness source.
"""

__all__ = ["cache_dir", "VerilatedBinary", "StreamHarness", "pipe_io_header"]

import hashlib
import json
import os
import platform
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from ..errors import ToolError
from . import objcache
from .ports import payload_words
from .verilator import ensure_verilator

HARNESS_DIR = Path(__file__).parent / "harness"
VERILATOR_FLAGS = ["-Wno-fatal", "-Wno-lint", "-Wno-style", "--x-assign", "fast",
                   "--x-initial", "fast", "-O3"]
# -O3 plus -march=native made the 8x8 array's model about 5x faster than -O2 here.
CXX_OPT = "-O3 -march=native"


def _cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            return next((line for line in f if line.startswith("model name")), "")
    except OSError:
        return platform.processor()


def cache_dir():
    """Where compiled models live: ``$SPARQFORGE_CACHE`` or ``~/.cache/sparqforge``."""
    return Path(os.environ.get("SPARQFORGE_CACHE", Path.home() / ".cache" / "sparqforge"))


def _mangle(name):
    """Verilator's C++ member name for a Verilog port (it escapes ``__``)."""
    return name.replace("__", "___05F")


def _accessors(name, width):
    port = _mangle(f"{name}__payload")
    words = payload_words(width)
    if width <= 32:
        setter, getter = f"t->{port} = w[0];", f"w[0] = t->{port};"
    elif width <= 64:
        setter = f"t->{port} = (QData)w[0] | ((QData)w[1] << 32);"
        getter = f"w[0] = (uint32_t)t->{port}; w[1] = (uint32_t)(t->{port} >> 32);"
    else:
        setter = f"for (int i = 0; i < {words}; i++) t->{port}[i] = w[i];"
        getter = f"for (int i = 0; i < {words}; i++) w[i] = t->{port}[i];"
    return "\n".join([
        f"static void {name}_set(DUT *t, const uint32_t *w) {{ {setter} }}",
        f"static void {name}_get(DUT *t, uint32_t *w) {{ {getter} }}",
        f"static CData &{name}_valid(DUT *t) {{ return t->{_mangle(name + '__valid')}; }}",
        f"static CData &{name}_ready(DUT *t) {{ return t->{_mangle(name + '__ready')}; }}",
    ])


def ports_header(desc):
    """C++ header describing the block's streams to the harness."""
    lines = ["#pragma once", '#include "Vdut.h"', "using DUT = Vdut;",
             "struct PortDef { const char *name; size_t words;",
             "    void (*set_payload)(DUT *, const uint32_t *);",
             "    void (*get_payload)(DUT *, uint32_t *);",
             "    CData &(*valid)(DUT *); CData &(*ready)(DUT *); };"]
    tables = {"in": [], "out": []}
    for name, port in desc["ports"].items():
        if port["kind"] != "stream":
            continue
        lines.append(_accessors(name, port["width"]))
        tables[port["dir"]].append(
            f'{{"{name}", {payload_words(port["width"])}, {name}_set, {name}_get, '
            f'{name}_valid, {name}_ready}}')
    for direction, entries in tables.items():
        table = entries or ["{nullptr, 0, nullptr, nullptr, nullptr, nullptr}"]
        lines.append(f"static const PortDef {direction.upper()}_PORTS[] = {{"
                     + ", ".join(table) + "};")
        lines.append(f"static const size_t N_{direction.upper()}_PORTS = {len(entries)};")
    return "\n".join(lines) + "\n"


def pipe_io_header():
    """``{"pipe_io.h": text}``: the pipe protocol the link and UART harnesses share, as an
    extra file for :class:`VerilatedBinary`."""
    return {"pipe_io.h": (HARNESS_DIR / "pipe_io.h").read_text()}


class VerilatedBinary:
    """A Verilog design compiled by Verilator together with a C++ harness, cached.

    The cache key covers the Verilog, the harness source, extra files and every flag, and
    the CPU model (``-march=native`` binaries only run where they were built).

    Parameters
    ----------
    verilog : str
        The design.
    top : str
        Its top module.
    harness : str
        File name of the harness in ``sim/harness/``.
    kind : str
        Cache subfolder (``harness``, ``link``, ``uart``).
    extra_files : dict
        More files for the build directory (``{name: text}``), e.g. generated headers.
    cflags : str
        Extra C++ flags (``-I`` of the build directory is added).
    prefix : str
        Verilator's class prefix the harness includes (``Vtop.h``, ``Vdut.h``).
    """

    def __init__(self, verilog, top, harness, *, kind, extra_files=None, cflags="",
                 prefix="Vtop", jobs=2):
        self._verilog = verilog
        self._top = top
        self._harness = harness
        self._extra = dict(extra_files or {})
        self._cflags = f"{CXX_OPT} {cflags}".strip()
        self._prefix = prefix
        self._jobs = jobs
        source = (HARNESS_DIR / harness).read_text()
        key = hashlib.sha256("\0".join([verilog, source, json.dumps(self._extra, sort_keys=True),
                                        " ".join(VERILATOR_FLAGS), self._cflags, _cpu_model(),
                                        platform.machine()]).encode()).hexdigest()[:20]
        self._dir = cache_dir() / kind / f"{top}-{key}"
        self.build_seconds = 0.0

    @property
    def executable(self):
        return self._dir / "Vsim"

    def build(self):
        """Compile unless a matching build is cached; return the executable.

        Raises
        ------
        ToolError
            When Verilator is missing or the build fails (the message holds its output).
        """
        if self.executable.is_file():
            return self.executable
        start = time.monotonic()
        info = ensure_verilator()
        self._dir.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=self._dir.name + ".", dir=self._dir.parent))
        try:
            (work / "design.v").write_text(self._verilog)
            for name, text in self._extra.items():
                (work / name).write_text(text)
            shutil.copy(HARNESS_DIR / self._harness, work / self._harness)
            cmd = [info.executable, "--cc", "--exe", "--build", "-j", str(self._jobs),
                   "--prefix", self._prefix, "--top-module", self._top, *VERILATOR_FLAGS,
                   "-CFLAGS", f"{self._cflags} -I{work}", "-MAKEFLAGS", "OPT_FAST=-O3",
                   "-MAKEFLAGS", "OPT_SLOW=-O1", "-Mdir", str(work / "obj"),
                   "-o", str(work / "Vsim"), str(work / "design.v"), str(work / self._harness)]
            cache_flags = ["harness", *VERILATOR_FLAGS, CXX_OPT, _cpu_model()]
            for option in objcache.prime(work / "obj", cache_dir(), cache_flags):
                cmd[1:1] = ["-MAKEFLAGS", option]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                raise ToolError(f"Verilator build of {self._top} failed:\n"
                                + proc.stdout[-4000:] + proc.stderr[-4000:])
            objcache.store(work / "obj", cache_dir(), cache_flags)
            shutil.rmtree(work / "obj", ignore_errors=True)
            if self._dir.exists():
                shutil.rmtree(work)
            else:
                work.rename(self._dir)
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise
        self.build_seconds = time.monotonic() - start
        return self.executable


class StreamHarness:
    """A Verilated block with the compiled stream harness, built on first use.

    Parameters
    ----------
    verilog : str
        Verilog text of the block.
    desc : dict
        Its description (:func:`sparqforge.hw.describe.describe`); ``desc["name"]`` is the
        top module.
    """

    def __init__(self, verilog, desc, *, jobs=2):
        self._desc = desc
        self._binary = VerilatedBinary(verilog, desc["name"], "stream_harness.cpp",
                                       kind="harness",
                                       extra_files={"ports.h": ports_header(desc)},
                                       prefix="Vdut", jobs=jobs)

    @property
    def executable(self):
        return self._binary.executable

    @property
    def build_seconds(self):
        return self._binary.build_seconds

    def build(self):
        """Compile the model unless a matching build is cached; return the executable."""
        return self._binary.build()

    def run(self, inputs, expect, *, stall=0.0, phases=None, seed=1, max_cycles=None):
        """Run one simulation.

        Parameters
        ----------
        inputs : dict
            Input stream name to ``(beats, words)`` uint32 payloads (see
            :func:`sparqforge.sim.ports.pack`).
        expect : dict
            Output stream name to the number of beats to collect.
        stall : float or dict
            Probability that a stream stalls in a cycle (per stream name, or for all).
        phases : dict, optional
            Input stream name to phase (default 0); a stream starts once every input stream
            of a lower phase is consumed.

        Returns
        -------
        (outputs, result) : output stream name to ``(beats, words)`` uint32 arrays, and a dict
        with ``cycles``, ``first_fire`` and ``status`` (``ok`` or ``timeout``).
        """
        exe = self.build()
        ports = self._desc["ports"]

        def stall_of(name):
            return stall.get(name, 0.0) if isinstance(stall, dict) else float(stall)

        total = sum(len(v) for v in inputs.values()) + sum(expect.values())
        if max_cycles is None:
            max_cycles = 64 * total + 10_000
        with tempfile.TemporaryDirectory(prefix="sparqforge-run-") as tmp:
            tmp = Path(tmp)
            lines = [f"seed {seed}", f"max_cycles {max_cycles}"]
            for name, words in inputs.items():
                words = np.ascontiguousarray(words, dtype=np.uint32)
                if words.shape[1:] != (payload_words(ports[name]["width"]),):
                    raise ValueError(f"Stimulus for {name!r} has shape {words.shape}")
                words.tofile(tmp / f"in_{name}.bin")
                lines.append(f"in {name} {len(words)} {stall_of(name)} {(phases or {}).get(name, 0)}")
            for name, count in expect.items():
                lines.append(f"out {name} {count} {stall_of(name)}")
            (tmp / "run.txt").write_text("\n".join(lines) + "\n")
            proc = subprocess.run([str(exe), str(tmp)], capture_output=True, text=True)
            if proc.returncode != 0:
                raise RuntimeError(f"Harness failed ({proc.returncode}): {proc.stderr}")
            result = {}
            for line in (tmp / "result.txt").read_text().splitlines():
                key, value = line.split()
                result[key] = value if key == "status" else int(value)
            outputs = {}
            for name in expect:
                width = payload_words(ports[name]["width"])
                outputs[name] = np.fromfile(tmp / f"out_{name}.bin",
                                            dtype=np.uint32).reshape(-1, width)
        return outputs, result
