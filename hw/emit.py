"""Emit a generated block as Verilog, RTLIL and its JSON description."""

__all__ = ["to_verilog", "to_rtlil", "description"]

from amaranth.back import rtlil, verilog

from .describe import describe


def to_verilog(component, name):
    return verilog.convert(component, name=name, emit_src=False)


def to_rtlil(component, name):
    return rtlil.convert(component, name=name, emit_src=False)


def description(component, name):
    """Ports plus the block's ``params`` and whichever of ``acc_bits``, ``latency`` and
    ``min_tile_beats`` it defines."""
    extra = {key: getattr(component, key)
             for key in ("acc_bits", "latency", "min_tile_beats", "tag_bits")
             if hasattr(component, key)}
    return describe(component, name=name, params=component.params, extra=extra)
