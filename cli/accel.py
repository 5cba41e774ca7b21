"""Accelerator configurations and the runtime backends that run them."""

__all__ = ["PRESETS", "load_accelerator_config", "make_accelerator", "device_info",
           "open_device", "BACKENDS"]

import json
import re
from pathlib import Path

from .errors import ConfigError

#: Named accelerator configurations. ``demo`` runs every bundle sparqforge exports (dense
#: and 2:4 layers, power-exponent tables and thresholds); ``int8`` is a plain dense
#: 8x8 int8 top.
PRESETS = {
    "demo": dict(rows=8, cols=8, a_bits=8, w_bits=8, sparsity=(2, 4), tables=True,
                 threshold_bits=4, act_depth=1024, w_depth=2048, groups=32, max_depth=4096),
    "int8": dict(rows=8, cols=8, a_bits=8, w_bits=8, sparsity=None, tables=False,
                 threshold_bits=4, act_depth=1024, w_depth=2048, groups=32, max_depth=4096),
}
_KEYS = {"rows", "cols", "a_bits", "w_bits", "sparsity", "tables", "threshold_bits",
         "act_depth", "w_depth", "groups", "max_depth", "frame_bytes", "product_stages"}

BACKENDS = "golden, verilator or serial:PORT[@BAUD]"


def load_accelerator_config(name_or_path):
    """A preset name, a board name (its reference configuration) or a JSON file of
    Accelerator parameters (a board configuration file's ``clk_freq``, ``baud`` and
    ``rx_fifo`` are ignored) -> parameter dict."""
    from .boards.catalog import BOARDS
    from .boards.config import BUILD_KEYS, SOC_KEYS

    if name_or_path in PRESETS:
        return dict(PRESETS[name_or_path])
    board = str(name_or_path).replace("_", "-").lower()
    if board in BOARDS:
        return {**PRESETS["int8"], **{key: value for key, value in BOARDS[board].config.items()
                                      if key in _KEYS}}
    path = Path(name_or_path)
    if not path.is_file():
        raise ConfigError(f"Accelerator config {name_or_path!r} is neither a preset "
                          f"({', '.join(PRESETS)}), a board ({', '.join(BOARDS)}) nor a file")
    try:
        params = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"Accelerator config {path} is not valid JSON: {exc}") from None
    params = params.get("accelerator", params) if isinstance(params, dict) else params
    if isinstance(params, dict):
        params = {key: value for key, value in params.items()
                  if key not in SOC_KEYS + BUILD_KEYS}
    if not isinstance(params, dict) or not set(params) <= _KEYS:
        unknown = sorted(set(params) - _KEYS) if isinstance(params, dict) else params
        raise ConfigError(f"Accelerator config {path} has unknown keys {unknown}; known: "
                          f"{sorted(_KEYS)}")
    if params.get("sparsity") is not None:
        params["sparsity"] = tuple(params["sparsity"])
    return {**PRESETS["int8"], **params}


def make_accelerator(params, *, gated=False):
    """The :class:`~sparqforge.hw.accelerator.Accelerator` for ``params``."""
    from .hw.accelerator import Accelerator

    try:
        return Accelerator(**params, gated=gated)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"Impossible accelerator configuration: {exc}") from None


def device_info(params):
    return make_accelerator(params).info


def open_device(backend, params, *, quiet=False, log=print):
    """A :class:`~sparqforge.sw.runtime.link.Device` on ``backend`` (golden, verilator, or
    serial:PORT[@BAUD]) for an accelerator with ``params``."""
    from .sw.runtime.device_model import DeviceModel
    from .sw.runtime.link import Device, LoopbackTransport, PipeTransport, SerialTransport

    if backend == "golden":
        return Device(LoopbackTransport(DeviceModel(device_info(params))))
    if backend == "verilator":
        from .sim.link_model import LinkModel

        model = LinkModel(make_accelerator(params, gated=True))
        if not model.executable.is_file() and not quiet:
            log("building the Verilated accelerator (cached after the first build)...")
        return Device(PipeTransport(model.build()))
    found = re.fullmatch(r"serial:([^@]+)(?:@(\d+))?", backend or "")
    if found:
        return Device(SerialTransport(found[1], int(found[2] or 115200)))
    raise ConfigError(f"Backend must be {BACKENDS}, not {backend!r}")
