"""Accelerator configurations for boards: the Accelerator's parameters plus the clock
frequency and UART baud rate, as a dict or a JSON file (``make bitstream CONFIG=file``).

A configuration file is a JSON object, for example::

    {"rows": 8, "cols": 8, "a_bits": 8, "w_bits": 8, "sparsity": null, "tables": false,
     "act_depth": 1024, "w_depth": 2048, "groups": 32, "max_depth": 4096,
     "frame_bytes": 1088, "clk_freq": 100e6, "baud": 115200}

Keys left out take the Accelerator's defaults (``clk_freq`` the board oscillator's, ``baud``
115200); ``sparsity`` is ``null`` or ``[n, m]``. ``mac_multipliers`` changes only how the
design is synthesized: ``"dsp"`` (the default) maps every multiplier to DSP blocks, ``"lut"``
builds the MAC arrays' (at most 8 x 8 bits) from LUTs and carry chains, which relieves the
routing around the DSP blocks of a large array.
"""

__all__ = ["ACCELERATOR_KEYS", "SOC_KEYS", "BUILD_KEYS", "load_config", "check_config",
           "make_soc"]

import json
from pathlib import Path

from ..errors import ConfigError

ACCELERATOR_KEYS = ("rows", "cols", "a_bits", "w_bits", "sparsity", "tables", "threshold_bits",
                    "act_depth", "w_depth", "groups", "max_depth", "frame_bytes", "product_stages")
SOC_KEYS = ("clk_freq", "baud", "rx_fifo")
BUILD_KEYS = ("mac_multipliers",)
MAC_MULTIPLIERS = ("dsp", "lut")


def check_config(config, *, where="configuration"):
    """Return a normalized copy of ``config`` (``sparsity`` as a tuple).

    Raises
    ------
    ConfigError
        On a key that is neither an Accelerator parameter nor a Soc one, or a malformed
        value.
    """
    if not isinstance(config, dict):
        raise ConfigError(f"The {where} must be a JSON object of accelerator parameters, "
                          f"not {type(config).__name__}")
    allowed = ACCELERATOR_KEYS + SOC_KEYS + BUILD_KEYS
    unknown = sorted(set(config) - set(allowed))
    if unknown:
        raise ConfigError(f"The {where} has unknown keys {unknown}; allowed are "
                          f"{list(allowed)}")
    config = dict(config)
    multipliers = config.get("mac_multipliers", "dsp")
    if multipliers not in MAC_MULTIPLIERS:
        raise ConfigError(f"The {where} has mac_multipliers {multipliers!r}; use \"dsp\" or "
                          f"\"lut\"")
    sparsity = config.get("sparsity")
    if sparsity is not None:
        if (not isinstance(sparsity, (list, tuple)) or len(sparsity) != 2
                or not all(isinstance(v, int) for v in sparsity)):
            raise ConfigError(f"The {where} has sparsity {sparsity!r}; use null or [n, m] "
                              f"(for example [2, 4])")
        config["sparsity"] = tuple(sparsity)
    return config


def load_config(path):
    """Read a configuration JSON file.

    Raises
    ------
    ConfigError
        Naming the file: missing, not JSON, or with unknown keys.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"Cannot read the configuration {path}: {exc.strerror}") from None
    try:
        config = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"The configuration {path} is not JSON (line {exc.lineno}: "
                          f"{exc.msg}); see docs/boards.md for the format") from None
    return check_config(config, where=f"configuration {path}")


def make_soc(config, *, clk_freq):
    """A :class:`~sparqforge.hw.soc.Soc` for ``config`` at ``clk_freq`` Hz.

    Raises
    ------
    ConfigError
        When the accelerator, clock or baud rate parameters are impossible (the message of
        the block that rejected them).
    """
    from ..hw.soc import Soc

    config = check_config(config)
    params = {key: config[key] for key in ACCELERATOR_KEYS if key in config}
    extra = {key: config[key] for key in ("baud", "rx_fifo") if key in config}
    if params.get("threshold_bits") == 0 and not params.get("tables"):
        del params["threshold_bits"]   # what a table-less accelerator reports
    try:
        return Soc(clk_freq=clk_freq, **extra, **params)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"Impossible configuration: {exc}") from None
