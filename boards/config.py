"""Board system configurations: an :class:`~sparqforge.config.AcceleratorConfig` plus what the
board system around it needs (clock, UART, receive FIFO, how multipliers are built), read from
a flat JSON object (``make bitstream CONFIG=file``). For example::

    {"rows": 8, "cols": 8, "a_bits": 8, "w_bits": 8, "sparsity": null, "tables": false,
     "act_depth": 1024, "w_depth": 2048, "groups": 32, "max_depth": 4096,
     "frame_bytes": 1088, "clk_freq": 100e6, "baud": 115200}

Accelerator keys left out take :class:`~sparqforge.config.AcceleratorConfig`'s defaults,
``clk_freq`` the board oscillator's frequency, ``baud`` 115200. ``mac_multipliers`` changes
only how the design is synthesized: ``"dsp"`` (the default) maps every multiplier to DSP
blocks, ``"lut"`` builds the MAC arrays' (at most 8 x 8 bits) from LUTs and carry chains,
which relieves the routing around the DSP blocks of a large array.
"""

__all__ = ["SystemConfig", "MAC_MULTIPLIERS", "load_config", "make_soc"]

import dataclasses

from ..config import AcceleratorConfig, read_json
from ..errors import ConfigError

MAC_MULTIPLIERS = ("dsp", "lut")


@dataclasses.dataclass(frozen=True)
class SystemConfig:
    """A board system: the accelerator and the parts around it.

    Parameters
    ----------
    accelerator : AcceleratorConfig
    clk_freq : float or None
        System clock, Hz (``None``: the board oscillator's).
    baud : int
        UART bit rate.
    rx_fifo : int
        UART receive FIFO depth, bytes.
    mac_multipliers : str
        ``"dsp"`` or ``"lut"`` (see the module docstring).

    Raises
    ------
    ConfigError
        On a bad value (the Soc checks clock and baud rate together when it is built).
    """
    accelerator: AcceleratorConfig = AcceleratorConfig()
    clk_freq: float = None
    baud: int = 115200
    rx_fifo: int = 16
    mac_multipliers: str = "dsp"

    def __post_init__(self):
        if not isinstance(self.accelerator, AcceleratorConfig):
            raise ConfigError(f"accelerator must be an AcceleratorConfig, not "
                              f"{self.accelerator!r}")
        if self.clk_freq is not None and (not isinstance(self.clk_freq, (int, float))
                                          or isinstance(self.clk_freq, bool)
                                          or not self.clk_freq > 0):
            raise ConfigError(f"clk_freq (system clock, Hz) must be a positive number, not "
                              f"{self.clk_freq!r}")
        if not isinstance(self.baud, int) or isinstance(self.baud, bool) or self.baud <= 0:
            raise ConfigError(f"baud (UART bit rate) must be a positive integer, not "
                              f"{self.baud!r}")
        if (not isinstance(self.rx_fifo, int) or isinstance(self.rx_fifo, bool)
                or not 2 <= self.rx_fifo <= 4096):
            raise ConfigError(f"rx_fifo (receive FIFO bytes) must be an integer in 2..4096, "
                              f"not {self.rx_fifo!r}")
        if self.mac_multipliers not in MAC_MULTIPLIERS:
            raise ConfigError(f"mac_multipliers must be \"dsp\" or \"lut\", not "
                              f"{self.mac_multipliers!r}")

    @classmethod
    def system_keys(cls):
        """The keys of the parts around the accelerator."""
        return tuple(f.name for f in dataclasses.fields(cls) if f.name != "accelerator")

    @classmethod
    def from_json(cls, obj, *, where="configuration"):
        """A system from a flat JSON object of accelerator and system keys.

        Raises
        ------
        ConfigError
            On an unknown key or a bad value, naming ``where``.
        """
        if not isinstance(obj, dict):
            raise ConfigError(f"The {where} must be a JSON object of accelerator parameters, "
                              f"not {type(obj).__name__}")
        allowed = AcceleratorConfig.keys() + cls.system_keys()
        unknown = sorted(set(obj) - set(allowed))
        if unknown:
            raise ConfigError(f"The {where} has unknown keys {unknown}; allowed are "
                              f"{list(allowed)}")
        accelerator = AcceleratorConfig.from_json(
            {k: v for k, v in obj.items() if k in AcceleratorConfig.keys()}, where=where)
        try:
            return cls(accelerator, **{k: v for k, v in obj.items() if k in cls.system_keys()})
        except ConfigError as exc:
            raise ConfigError(f"The {where}: {exc}") from None

    def to_json(self):
        """The flat JSON object :meth:`from_json` reads."""
        return {**self.accelerator.to_json(),
                **{key: getattr(self, key) for key in self.system_keys()}}

    def replace(self, **changes):
        """A copy with ``changes``, accelerator and system keys alike (validated)."""
        acc = {k: v for k, v in changes.items() if k in AcceleratorConfig.keys()}
        system = {k: v for k, v in changes.items() if k not in acc}
        return dataclasses.replace(self, accelerator=self.accelerator.replace(**acc), **system)


def load_config(path):
    """Read a configuration JSON file.

    Raises
    ------
    ConfigError
        Naming the file: missing, not JSON, unknown keys or bad values.
    """
    return SystemConfig.from_json(read_json(path, "configuration"),
                                  where=f"configuration {path}")


def make_soc(config, *, clk_freq):
    """A :class:`~sparqforge.hw.soc.Soc` for ``config`` (a :class:`SystemConfig`) at
    ``clk_freq`` Hz.

    Raises
    ------
    ConfigError
        When the clock and baud rate cannot be combined (the Soc's message).
    """
    from ..hw.soc import Soc

    try:
        return Soc(config.accelerator, clk_freq=clk_freq, baud=config.baud,
                   rx_fifo=config.rx_fifo)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"Impossible configuration: {exc}") from None
