"""Build the Verilated accelerator top with the byte-link harness (cached)."""

__all__ = ["LinkModel"]

from .harness import VerilatedBinary, pipe_io_header


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

        self.info = getattr(top, "info", None)
        self._binary = VerilatedBinary(to_verilog(LinkTop(top), name), name,
                                       "link_harness.cpp", kind="link",
                                       extra_files=pipe_io_header(), jobs=jobs)

    @property
    def executable(self):
        return self._binary.executable

    def build(self):
        """Compile unless cached; return the executable (see :class:`VerilatedBinary`)."""
        return self._binary.build()
