"""Packing the words the host writes into accelerator memories (NumPy only).

The layouts themselves are :mod:`sparqforge.protocol`'s (``weight_word_fields``,
``REQUANT_RECORD``), which the hardware builds its Amaranth layouts from too: fields are
packed LSB first, and a word travels as ``ceil(bits / 8)`` little-endian bytes.
"""

__all__ = ["pack_fields", "unpack_fields", "pack_weight_words", "unpack_weight_words",
           "pack_requant", "unpack_requant"]

import numpy as np

from ...protocol import REQUANT_BYTES, REQUANT_RECORD, weight_word_fields


def pack_fields(fields, nbytes):
    """Pack ``[(values, offset, width), ...]`` (values: int arrays of one shape ``S``) into
    ``S + (nbytes,)`` little-endian uint8 words."""
    shape = np.shape(fields[0][0])
    words = np.zeros(shape + (nbytes,), dtype=np.uint8)
    for values, offset, width in fields:
        v = np.asarray(values, dtype=np.int64) & ((1 << width) - 1)
        for bit in range(width):
            byte, pos = divmod(offset + bit, 8)
            words[..., byte] |= (((v >> bit) & 1) << pos).astype(np.uint8)
    return words


def unpack_fields(words, layout):
    """Inverse of :func:`pack_fields` for ``layout = [(offset, width, signed), ...]``."""
    words = np.asarray(words, dtype=np.uint8)
    out = []
    for offset, width, is_signed in layout:
        v = np.zeros(words.shape[:-1], dtype=np.int64)
        for bit in range(width):
            byte, pos = divmod(offset + bit, 8)
            v |= ((words[..., byte].astype(np.int64) >> pos) & 1) << bit
        if is_signed:
            v = np.where(v >= 1 << (width - 1), v - (1 << width), v)
        out.append(v)
    return out


def pack_weight_words(values, indices, config):
    """Weight words of an :class:`~sparqforge.config.AcceleratorConfig` from per-beat codes
    ``values`` ``[beats, cols, kept]`` (``[beats, cols]`` for a dense array) and ``indices``
    (same shape, ignored for a dense array)."""
    values = np.asarray(values).reshape(-1, config.cols, config.kept)
    indices = np.asarray(indices).reshape(-1, config.cols, config.kept)
    source = {"code": values, "index": indices}
    fields = [(source[name][:, column, kept], offset, width)
              for column, kept, name, offset, width in weight_word_fields(config)]
    return pack_fields(fields, config.weight_bytes)


def unpack_weight_words(words, config):
    """``(codes, indices)``, each ``[beats, cols, kept]``: codes as stored (signed); indices
    are 0 on a dense array."""
    layout = weight_word_fields(config)
    flat = unpack_fields(words, [(offset, width, name == "code")
                                 for _, _, name, offset, width in layout])
    beats = np.asarray(words).shape[0]
    codes = np.zeros((beats, config.cols, config.kept), dtype=np.int64)
    indices = np.zeros_like(codes)
    for (column, kept, name, _, _), value in zip(layout, flat):
        (codes if name == "code" else indices)[:, column, kept] = value
    return codes, indices


def pack_requant(bias, multiplier, shift, zero_point, relu):
    """Requantization records (one per channel) as ``[channels, REQUANT_BYTES]`` bytes."""
    values = dict(bias=bias, multiplier=multiplier, shift=shift, zero_point=zero_point,
                  relu=relu)
    fields, offset = [], 0
    for name, width, _ in REQUANT_RECORD:
        fields.append((np.asarray(values[name]), offset, width))
        offset += width
    return pack_fields(fields, REQUANT_BYTES)


def unpack_requant(words):
    """The fields of requantization records, by name."""
    layout, offset = [], 0
    for _, width, is_signed in REQUANT_RECORD:
        layout.append((offset, width, is_signed))
        offset += width
    return dict(zip((f[0] for f in REQUANT_RECORD), unpack_fields(words, layout)))
