"""Array configurations as the CLI takes them, and the block each one generates."""

__all__ = ["ArrayConfig", "build_array", "parse_sparsity", "parse_shape"]

import re
from dataclasses import asdict, dataclass

from ..errors import ConfigError


@dataclass(frozen=True)
class ArrayConfig:
    """Generator parameters of a MAC array (dense or N:M sparse)."""
    rows: int = 8
    cols: int = 8
    a_bits: int = 8
    a_signed: bool = True
    w_bits: int = 8
    w_signed: bool = True
    max_depth: int = 4096
    groups: int = 1
    out_bits: int = None
    out_signed: bool = None
    sparsity: tuple = None      # (N, M) or None for dense
    dequant: str = "none"       # "power": table and threshold units around the array
    act_code_bits: int = 4
    w_code_bits: int = 4
    out_code_bits: int = 4
    packed_products: bool = False   # dense arrays: two products per multiplier block

    def as_dict(self):
        return asdict(self)

    @property
    def name(self):
        """Module name of the generated block."""
        if self.dequant == "power":
            return "power_mac_array"
        return "mac_array" if self.sparsity is None else "sparse_mac_array"


def build_array(config, *, sparse_class=None):
    """Generate the block for ``config`` (an N:M array as ``sparse_class``, by default
    :class:`~sparqforge.hw.sparse_mac_array.SparseMacArray`).

    Raises
    ------
    ConfigError
        With the generator's own message when a parameter is impossible.
    """
    # Deferred: importing Amaranth is slow and not every command needs it.
    from ..hw.mac_array import MacArray
    from ..hw.power_mac_array import PowerMacArray
    from ..hw.sparse_mac_array import SparseMacArray

    kw = dict(rows=config.rows, cols=config.cols, a_bits=config.a_bits,
              a_signed=config.a_signed, w_bits=config.w_bits, w_signed=config.w_signed,
              max_depth=config.max_depth, groups=config.groups, out_bits=config.out_bits,
              out_signed=config.out_signed)
    if config.dequant not in ("none", "power"):
        raise ConfigError(f"Dequant must be 'none' or 'power', not {config.dequant!r}")
    try:
        if config.dequant == "power":
            if config.out_bits is not None or config.out_signed is not None:
                raise ConfigError("--out-bits/--out-unsigned do not apply with --dequant "
                                  "power; use --out-code-bits")
            kw.pop("out_bits"), kw.pop("out_signed")
            return PowerMacArray(sparsity=config.sparsity, act_code_bits=config.act_code_bits,
                                 w_code_bits=config.w_code_bits,
                                 out_code_bits=config.out_code_bits, **kw)
        if config.sparsity is None:
            return MacArray(packed_products=config.packed_products, **kw)
        if config.packed_products:
            raise ConfigError("packed products need a dense array; leave out --sparsity")
        n, m = config.sparsity
        return (sparse_class or SparseMacArray)(n=n, m=m, **kw)
    except (TypeError, ValueError) as exc:
        raise ConfigError(str(exc)) from None


def parse_sparsity(text):
    """``"N:M"`` -> ``(N, M)``."""
    found = re.fullmatch(r"\s*(\d+)\s*:\s*(\d+)\s*", text or "")
    if found is None:
        raise ConfigError(f"Sparsity must look like N:M (for example 2:4), not {text!r}")
    return int(found[1]), int(found[2])


def parse_shape(text):
    """``"MxKxN"`` -> ``(M, K, N)``, all positive."""
    found = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*[xX]\s*(\d+)\s*", text or "")
    if found is None or min(int(v) for v in found.groups()) < 1:
        raise ConfigError(f"Shape must be MxKxN with positive sizes (for example 64x256x64), "
                          f"not {text!r}")
    return tuple(int(v) for v in found.groups())
