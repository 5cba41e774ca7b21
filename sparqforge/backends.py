"""Opening a device: the golden model, the Verilated accelerator or a board, behind one
:class:`~sparqforge.sw.runtime.link.Device` client.

>>> device = open_device("golden", "demo")
>>> device.info().config == PRESETS["demo"]
True
"""

__all__ = ["BACKENDS", "resolve_config", "open_device"]

import re
from pathlib import Path

from .config import PRESETS, AcceleratorConfig, read_json
from .errors import ConfigError

BACKENDS = "golden, verilator or serial:PORT[@BAUD]"


def resolve_config(name_or_path):
    """An :class:`~sparqforge.config.AcceleratorConfig` from a preset name (``demo``,
    ``int8``), a board name (its reference configuration) or a JSON file of parameters (a
    board configuration file's system keys such as ``clk_freq`` are ignored); a configuration
    is returned as it is.

    Raises
    ------
    ConfigError
        When the name is none of these, or the file is unreadable or invalid.
    """
    from .boards.catalog import BOARDS
    from .boards.config import SystemConfig

    if isinstance(name_or_path, AcceleratorConfig):
        return name_or_path
    if name_or_path in PRESETS:
        return PRESETS[name_or_path]
    board = str(name_or_path).replace("_", "-").lower()
    if board in BOARDS:
        return BOARDS[board].config.accelerator
    path = Path(name_or_path)
    if not path.is_file():
        raise ConfigError(f"Accelerator config {name_or_path!r} is neither a preset "
                          f"({', '.join(PRESETS)}), a board ({', '.join(BOARDS)}) nor a file")
    obj = read_json(path, "accelerator configuration")
    if isinstance(obj, dict) and isinstance(obj.get("accelerator"), dict):
        obj = obj["accelerator"]
    return SystemConfig.from_json(obj, where=f"accelerator configuration {path}").accelerator


def open_device(backend, config, *, quiet=False, log=print):
    """A :class:`~sparqforge.sw.runtime.link.Device` on ``backend`` for an accelerator with
    ``config`` (an :class:`~sparqforge.config.AcceleratorConfig` or anything
    :func:`resolve_config` takes; a board reports its own configuration, so ``config`` only
    matters for ``golden`` and ``verilator``).

    Parameters
    ----------
    backend : str
        ``golden`` (the golden device model in this process), ``verilator`` (the generated
        RTL compiled by Verilator; built on first use and cached) or ``serial:PORT[@BAUD]``
        (a board).
    quiet : bool
        Do not announce a Verilator build.
    log : callable
        Where announcements go.

    Raises
    ------
    ConfigError
        On an unknown backend or configuration.
    ToolError, LinkError
        When Verilator is missing or the serial port cannot be opened.

    Notes
    -----
    A script runs a bundle the way ``sparqforge infer`` does (``docs/runtime.md``, "Running a
    bundle from Python")::

        device = open_device("verilator", "demo")   # built once, then cached
        try:
            runner = Runner(bundle, device)          # sparqforge.sw.runtime.runner
            runner.load()
            out = runner.infer(bundle.quantize_input(x))
        finally:
            device.close()

    The Verilator backend elaborates the accelerator to generate its Verilog every time (the
    build is what is cached), so it creates no Amaranth component that goes unused and
    nothing warns on stderr; ``golden`` and ``serial`` create no hardware at all.
    """
    from .sw.runtime.device_model import DeviceModel
    from .sw.runtime.link import Device, LoopbackTransport, PipeTransport, SerialTransport

    if backend == "golden":
        return Device(LoopbackTransport(DeviceModel(resolve_config(config))))
    if backend == "verilator":
        from .hw.accelerator import Accelerator
        from .sim.link_model import LinkModel

        model = LinkModel(Accelerator(resolve_config(config), gated=True))
        if not model.executable.is_file() and not quiet:
            log("building the Verilated accelerator (cached after the first build)...")
        return Device(PipeTransport(model.build()))
    found = re.fullmatch(r"serial:([^@]+)(?:@(\d+))?", backend or "")
    if found:
        return Device(SerialTransport(found[1], int(found[2] or 3_000_000)))
    raise ConfigError(f"Backend must be {BACKENDS}, not {backend!r}")
