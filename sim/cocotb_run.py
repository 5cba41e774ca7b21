"""Run a cocotb 2 bench on a generated block under Verilator, from Python (and so pytest).

The Verilog, its JSON description and the bench's cases go into the build directory; the
bench module reads them from ``SPARQFORGE_COCOTB_CONFIG``.
"""

__all__ = ["CocotbRun", "bench_config"]

import json
import os
from pathlib import Path

from ..errors import ToolError
from . import objcache
from .harness import cache_dir
from .verilator import ensure_verilator

BUILD_ARGS = ["-Wno-fatal", "-Wno-lint", "-Wno-style", "--x-assign", "fast",
              "--x-initial", "fast"]
MAKE_VARS = ["OPT_FAST=-O1", "OPT_SLOW=-O0"]


def _runner_class():
    from cocotb_tools.runner import Verilator

    class Runner(Verilator):
        """cocotb's Verilator runner with extra arguments for its ``make`` step."""
        make_args = []

        def _build_command(self):
            commands = super()._build_command()
            return [*commands[:-1], [*commands[-1], *self.make_args]]
    return Runner


def bench_config():
    """Inside a cocotb bench: the configuration written by :class:`CocotbRun`."""
    with open(os.environ["SPARQFORGE_COCOTB_CONFIG"]) as f:
        return json.load(f)


class CocotbRun:
    """One Verilator build of a block, on which cocotb benches can run several times.

    Parameters
    ----------
    verilog : str
        Verilog text of the block.
    desc : dict
        Its description; ``desc["name"]`` is the top module.
    build_dir : path
        Directory of its own for this build.
    """

    def __init__(self, verilog, desc, build_dir):
        self._desc = desc
        self._dir = Path(build_dir)
        self._dir.mkdir(parents=True, exist_ok=True)
        self._source = self._dir / f"{desc['name']}.v"
        self._source.write_text(verilog)
        ensure_verilator()
        self._runner = _runner_class()()
        # Bench simulations are short: compile the model quickly rather than optimally, and
        # reuse the compiled Verilator runtime.
        sim_build = self._dir / "sim_build"
        cache_flags = ["cocotb", *BUILD_ARGS, *MAKE_VARS]
        self._runner.make_args = [*MAKE_VARS, *objcache.prime(sim_build, cache_dir(),
                                                              cache_flags)]
        try:
            self._runner.build(sources=[self._source], hdl_toplevel=desc["name"],
                               build_dir=sim_build, build_args=BUILD_ARGS,
                               always=True, log_file=self._dir / "build.log")
        except (SystemExit, Exception) as exc:
            raise ToolError(f"Verilator build of {desc['name']} failed; see "
                            f"{self._dir / 'build.log'}") from exc
        objcache.store(sim_build, cache_dir(), cache_flags)

    def test(self, module, config, *, name="run", seed=1):
        """Run bench ``module`` with ``config`` (JSON-able); return ``(tests, failures)``."""
        from cocotb_tools.check_results import get_results
        test_dir = self._dir / name
        test_dir.mkdir(exist_ok=True)
        config_path = test_dir / "config.json"
        config_path.write_text(json.dumps({"desc": self._desc, **config}))
        results = test_dir / "results.xml"
        try:
            self._runner.test(
                test_module=module, hdl_toplevel=self._desc["name"],
                build_dir=self._dir / "sim_build", test_dir=test_dir, seed=seed,
                extra_env={"SPARQFORGE_COCOTB_CONFIG": str(config_path)},
                results_xml=str(results), log_file=test_dir / "sim.log")
        except SystemExit:
            pass  # the runner exits on a failing test; the results file says which
        if not results.is_file():
            raise RuntimeError(f"cocotb wrote no results; see {test_dir / 'sim.log'}")
        return get_results(results)
