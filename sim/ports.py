"""Pack and unpack stream beats to and from the flat payload words a simulator sees.

A payload of ``width`` bits is ``ceil(width / 32)`` little-endian 32-bit words (at least
one), the layout Verilator uses for its ports. Field positions come from the JSON
description written by :func:`sparqforge.hw.describe.describe`.
"""

__all__ = ["payload_words", "pack", "unpack", "beats_to_ints", "ints_to_beats"]

import itertools

import numpy as np


def payload_words(width):
    return max(1, (width + 31) // 32)


def _elements(field):
    """Yield ``(index, bit_offset)`` of every element of a leaf field."""
    for index in itertools.product(*(range(n) for n in field["shape"])):
        yield index, field["offset"] + sum(i * s for i, s in zip(index, field["strides"]))


def pack(port, beats, count):
    """Pack ``count`` beats into a ``(count, words)`` ``uint32`` array.

    ``beats`` maps leaf field names to integer arrays of shape ``(count, *field_shape)``;
    missing fields are zero. Values are truncated to their field width (two's complement).
    """
    words = np.zeros((count, payload_words(port["width"])), dtype=np.uint64)
    for name, value in beats.items():
        field = port["fields"].get(name)
        if field is None:
            raise KeyError(f"Port has no field {name!r}; it has {sorted(port['fields'])}")
        value = np.asarray(value, dtype=np.int64).reshape((count, *field["shape"]))
        mask = np.uint64((1 << field["width"]) - 1)
        for index, bit in _elements(field):
            element = value[(slice(None), *index)].astype(np.uint64) & mask
            word, shift = divmod(bit, 32)
            spread = element << np.uint64(shift)
            words[:, word] |= spread & np.uint64(0xFFFFFFFF)
            if shift + field["width"] > 32:
                words[:, word + 1] |= spread >> np.uint64(32)
    return words.astype(np.uint32)


def unpack(port, words):
    """Inverse of :func:`pack`: a dict of leaf fields, each ``(count, *field_shape)`` int64."""
    words = np.asarray(words, dtype=np.uint64)
    words = np.concatenate([words, np.zeros((len(words), 1), dtype=np.uint64)], axis=1)
    out = {}
    for name, field in port["fields"].items():
        width = field["width"]
        value = np.zeros((len(words), *field["shape"]), dtype=np.int64)
        for index, bit in _elements(field):
            word, shift = divmod(bit, 32)
            both = words[:, word] | (words[:, word + 1] << np.uint64(32))
            element = ((both >> np.uint64(shift)) & np.uint64((1 << width) - 1)).astype(np.int64)
            if field["signed"]:
                element = np.where(element >= (1 << (width - 1)), element - (1 << width), element)
            value[(slice(None), *index)] = element
        out[name] = value
    return out


def beats_to_ints(words):
    """``(count, words)`` uint32 payloads as Python ints (for cocotb and Amaranth sims)."""
    words = np.asarray(words, dtype=np.uint64)
    return [sum(int(w) << (32 * i) for i, w in enumerate(row)) for row in words]


def ints_to_beats(values, width):
    """Python int payloads as a ``(count, words)`` uint32 array."""
    n = payload_words(width)
    return np.array([[(v >> (32 * i)) & 0xFFFFFFFF for i in range(n)] for v in values],
                    dtype=np.uint32).reshape(len(values), n)
