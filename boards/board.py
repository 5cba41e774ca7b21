"""What the build flow needs to know about a board, besides its Amaranth platform."""

__all__ = ["Board", "int8_reference"]

from dataclasses import dataclass, field

from ..config import PRESETS
from .config import SystemConfig


def int8_reference(**changes):
    """A board's reference configuration: the ``int8`` preset (a dense 8x8 int8 accelerator
    with the digits networks' buffers) at 100 MHz and 115200 baud, with ``changes`` (to
    accelerator and system keys alike) applied."""
    return SystemConfig(PRESETS["int8"], clk_freq=100e6, baud=115200).replace(**changes)


@dataclass(frozen=True)
class Board:
    """A board the accelerator is built for.

    Attributes
    ----------
    name : str
        Command-line name (``sparqforge build --board NAME``, ``make bitstream BOARD=NAME``).
    title : str
        Human name.
    platform : callable
        Returns a fresh Amaranth platform (device, package, clocks, resources, toolchain).
    family : str
        ``"xilinx"`` (Xray flow), ``"ecp5"`` or ``"ice40"``.
    uart : tuple
        The UART resource ``(name, number)`` (``rx`` and ``tx`` subsignals).
    leds : tuple
        Up to four LED outputs for the Soc's ``leds`` (heartbeat, busy, receiving,
        sending), each ``(name, number)`` or ``(name, number, subsignal)``, or ``None``.
    config : SystemConfig
        The reference configuration.
    notes : str
        What a user must know to connect the board.
    program : str
        How to load the bitstream.
    overrides : dict
        Amaranth toolchain overrides for this board (for example ``synth_opts``).
    router : str
        nextpnr's router for this board's builds (``None``: the family's default,
        :func:`~sparqforge.boards.build.default_router`).
    """
    name: str
    title: str
    platform: object
    family: str
    uart: tuple
    leds: tuple
    config: SystemConfig
    notes: str = ""
    program: str = ""
    overrides: dict = field(default_factory=dict)
    router: str = None
