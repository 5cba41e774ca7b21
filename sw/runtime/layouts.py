"""Bit layouts of the words the host writes into accelerator memories (NumPy only).

They mirror the Amaranth layouts of the hardware (``tests/hw/test_accelerator.py`` checks
that they agree): fields are packed LSB first in declaration order, arrays element 0 first,
and a word travels as ``ceil(bits / 8)`` little-endian bytes.
"""

__all__ = ["REQUANT_FIELDS", "weight_word_bits", "pack_fields", "unpack_fields",
           "pack_weight_words", "unpack_weight_words", "pack_requant", "unpack_requant",
           "index_bits"]

import numpy as np


def index_bits(m):
    return max(1, (m - 1).bit_length())


def _field_list_weight(info):
    """(name, offset, width) of every leaf of one weight word, per (column, kept weight)."""
    n = info.n if info.m else 1
    idx = index_bits(info.m) if info.m else 0
    elem = info.w_bits + idx
    return n, idx, elem


def weight_word_bits(info):
    n, _, elem = _field_list_weight(info)
    return info.cols * n * elem


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


def pack_weight_words(values, indices, info):
    """Weight words from per-beat codes ``values`` ``[beats, cols, n]`` (``[beats, cols]`` for
    a dense array) and ``indices`` (same shape, ignored for a dense array)."""
    n, idx, elem = _field_list_weight(info)
    values = np.asarray(values).reshape(-1, info.cols, n)
    nbytes = info.weight_bytes
    fields = []
    for c in range(info.cols):
        for j in range(n):
            base = (c * n + j) * elem
            fields.append((values[:, c, j], base, info.w_bits))
            if idx:
                fields.append((np.asarray(indices).reshape(-1, info.cols, n)[:, c, j],
                               base + info.w_bits, idx))
    return pack_fields(fields, nbytes)


def unpack_weight_words(words, info):
    """``(codes, indices)``, each ``[beats, cols, n]``: codes as stored (signed)."""
    n, idx, elem = _field_list_weight(info)
    layout = []
    for c in range(info.cols):
        for j in range(n):
            base = (c * n + j) * elem
            layout.append((base, info.w_bits, True))
            layout.append((base + info.w_bits, idx, False) if idx else (base, 0, False))
    flat = unpack_fields(words, layout)
    codes = np.stack(flat[0::2], axis=-1).reshape(-1, info.cols, n)
    indices = np.stack(flat[1::2], axis=-1).reshape(-1, info.cols, n)
    return codes, indices


#: (name, width, signed) of a requantization record, LSB first (10 bytes).
REQUANT_FIELDS = (("bias", 32, True), ("multiplier", 31, False), ("shift", 6, True),
                  ("zero_point", 9, True), ("relu", 1, False))
REQUANT_BYTES = 10


def pack_requant(bias, multiplier, shift, zero_point, relu):
    """Requantization records (one per channel) as ``[channels, 10]`` bytes."""
    values = dict(bias=bias, multiplier=multiplier, shift=shift, zero_point=zero_point,
                  relu=relu)
    fields, offset = [], 0
    for name, width, _ in REQUANT_FIELDS:
        fields.append((np.asarray(values[name]), offset, width))
        offset += width
    return pack_fields(fields, REQUANT_BYTES)


def unpack_requant(words):
    layout, offset = [], 0
    for _, width, is_signed in REQUANT_FIELDS:
        layout.append((offset, width, is_signed))
        offset += width
    return dict(zip((f[0] for f in REQUANT_FIELDS), unpack_fields(words, layout)))
