"""Machine-readable description of a generated block: ports, payload fields, parameters.

The description is plain JSON-able data. Simulation drivers and the CLI read it to pack and
unpack stream beats without importing Amaranth layouts, so a Verilog file plus its JSON is
everything a testbench needs.
"""

__all__ = ["describe", "layout_fields"]

from amaranth.hdl import Shape
from amaranth.lib import data, stream, wiring


def layout_fields(layout, prefix="", offset=0, shape=(), strides=()):
    """Flatten a layout into leaf fields ``{name: {offset, width, signed, shape, strides}}``.

    Array dimensions become ``shape`` / ``strides`` (in bits) on each leaf, outermost first,
    so a leaf element at index ``(i, j)`` starts at ``offset + i * strides[0] + j *
    strides[1]``.
    """
    if isinstance(layout, data.StructLayout):
        fields = {}
        for name, field in layout:
            fields.update(layout_fields(field.shape, f"{prefix}{name}.", offset + field.offset,
                                        shape, strides))
        return fields
    if isinstance(layout, data.ArrayLayout):
        elem = layout.elem_shape
        elem_size = (elem.size if isinstance(elem, data.Layout) else Shape.cast(elem).width)
        return layout_fields(elem, prefix, offset, shape + (layout.length,),
                             strides + (elem_size,))
    if isinstance(layout, data.Layout):
        raise TypeError(f"Unsupported layout {layout!r}")
    cast = Shape.cast(layout)
    name = prefix[:-1] if prefix else "value"
    return {name: {"offset": offset, "width": cast.width, "signed": cast.signed,
                   "shape": list(shape), "strides": list(strides)}}


def describe(component, *, name, params, extra=None):
    """Describe ``component``'s ports for the JSON file written next to its Verilog.

    Stream members become ``{"kind": "stream", "dir": "in"|"out", "width", "fields"}`` with
    Verilog ports ``<name>__valid``, ``<name>__ready`` and ``<name>__payload``; plain
    members become ``{"kind": "signal", "dir", "width"}``.
    """
    ports = {}
    for member_name, member in component.signature.members.items():
        direction = "in" if member.flow == wiring.In else "out"
        if member.is_signature and isinstance(member.signature, stream.Signature):
            payload = getattr(component, member_name).payload
            layout = payload.shape() if isinstance(payload, data.View) else payload.shape()
            width = Shape.cast(layout).width
            ports[member_name] = {"kind": "stream", "dir": direction, "width": width,
                                  "fields": layout_fields(layout)}
        elif member.is_port:
            ports[member_name] = {"kind": "signal", "dir": direction,
                                  "width": Shape.cast(member.shape).width}
        else:
            raise TypeError(f"Cannot describe member {member_name!r} of {component!r}")
    desc = {"name": name, "clock": "clk", "reset": "rst", "params": dict(params),
            "ports": ports}
    desc.update(extra or {})
    return desc
