"""The accelerator configuration: one type that every part of sparqforge takes.

:class:`AcceleratorConfig` is the hardware generator's input (:class:`~sparqforge.hw.
accelerator.Accelerator`), what the CLI presets and board configurations hold, what a device
reports to INFO and what the runtime checks a bundle against. Its fields are the only list of
accelerator parameter names; everything else (JSON keys, INFO fields, CLI presets) is derived
from :func:`dataclasses.fields` of it, and every derived width (accumulator, weight word,
lane and depth bits) is a property here.

One rule for bad values: every value that is not accepted raises
:class:`~sparqforge.errors.ConfigError` (a ``ValueError``), whose message names the parameter,
what it accepts and the value given. The configuration is validated once, when it is made.

>>> config = AcceleratorConfig(rows=4, cols=4, sparsity=(2, 4))
>>> config.acc_bits, config.weight_bytes
(28, 10)
>>> AcceleratorConfig.from_json(config.to_json()) == config
True
>>> AcceleratorConfig(a_bits=9)
Traceback (most recent call last):
...
sparqforge.errors.ConfigError: a_bits (activation width) must be an integer in 2..8, not 9
"""

__all__ = ["AcceleratorConfig", "PRESETS", "preset"]

import dataclasses
import json
from pathlib import Path

from .errors import ConfigError
from .sw.golden.numerics import acc_bits as _acc_bits
from .sw.golden.numerics import max_depth_for

#: Widest accumulator the accelerator allows (thresholds are one bit wider and fit int32).
MAX_ACC_BITS = 31


def _integer(name, value, low, high, what):
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ConfigError(f"{name} ({what}) must be an integer in {low}..{high}, "
                          f"not {value!r}")
    return value


@dataclasses.dataclass(frozen=True)
class AcceleratorConfig:
    """Parameters of one accelerator (see :class:`~sparqforge.hw.accelerator.Accelerator`).

    Parameters
    ----------
    rows, cols : int
        MAC array shape, 1..64 each; ``rows`` activation banks of ``cols`` byte lanes.
    a_bits, w_bits : int
        Operand widths 2..8: unsigned activations, signed weights (8 and 8 with ``tables``).
    sparsity : (int, int) or None
        N:M pattern of a sparse array (which also runs dense layers), or ``None``; ``n`` and
        ``m`` must divide ``cols``.
    tables : bool
        Power-exponent units: operand tables and a threshold unit.
    threshold_bits : int
        Threshold unit code width 1..8 with ``tables``; 0 without (normalized to 0).
    act_depth : int
        Words per activation bank, a power of two in 2..65536.
    w_depth : int
        Weight memory words, 1..65535.
    groups : int
        Channel groups of ``cols`` channels whose parameters the tables hold, 1..4096.
    max_depth : int
        Longest reduction that must not overflow; sizes the accumulators (at most 31 bits).
    frame_bytes : int
        Receive buffer, the largest frame the host may send, 64..32768.
    product_stages : int
        Pipeline stages of each MAC product, 1..3 (see
        :class:`~sparqforge.hw.mac_array.MacArray`); timing only, results are identical.
    packed_products : bool
        Each pair of columns of a row computes its two products with one multiplier block
        (a :class:`~sparqforge.hw.packed_multiplier.PackedMultiplier` on the activation the
        row shares): half the multipliers, the same results (``docs/numerics.md``, "Packed
        products"). Needs an even ``cols``, a dense array (no ``sparsity``: an N:M array
        selects each column's activations, so a row's columns share no operand) and
        ``product_stages`` 1 (the packed multiplier has its own three-stage pipeline).
    conv : bool
        The feeder generates convolution windows itself (``Mode.CONV`` RUNs, see
        ``docs/design.md``, "Convolutions on the device"): a chain of convolutions stays on
        the device, and the host sends only the input. Off, the runtime lowers convolutions
        by im2col on the host (small devices: the iCE40UP5K has no room for the window
        walk).
    program_depth : int
        Slots of stored RUN descriptors, 0..1024 (``Space.PROGRAM`` and the ``RUNS``
        command, ``docs/protocol.md``): a network whose descriptors fit runs each inference
        with one ``RUNS`` per device segment instead of a RUN per layer. 0: none (the
        command and the space are refused).

    Raises
    ------
    ConfigError
        On any value outside its range or a combination that cannot be built.
    """
    rows: int = 8
    cols: int = 8
    a_bits: int = 8
    w_bits: int = 8
    sparsity: tuple = None
    tables: bool = False
    threshold_bits: int = 4
    act_depth: int = 1024
    w_depth: int = 2048
    groups: int = 16
    max_depth: int = 4096
    frame_bytes: int = 1088
    product_stages: int = 1
    packed_products: bool = False
    conv: bool = True
    program_depth: int = 0

    def __post_init__(self):
        _integer("rows", self.rows, 1, 64, "array rows")
        _integer("cols", self.cols, 1, 64, "array columns")
        _integer("a_bits", self.a_bits, 2, 8, "activation width")
        _integer("w_bits", self.w_bits, 2, 8, "weight width")
        sparsity = self.sparsity
        if sparsity is not None:
            if (not isinstance(sparsity, (tuple, list)) or len(sparsity) != 2
                    or not all(isinstance(v, int) and not isinstance(v, bool)
                               for v in sparsity)):
                raise ConfigError(f"sparsity must be null or [n, m] (for example [2, 4]), not "
                                  f"{sparsity!r}")
            n, m = sparsity
            if not 0 < n <= m or not 2 <= m <= 16:
                raise ConfigError(f"sparsity N:M requires 0 < N <= M and 2 <= M <= 16, not "
                                  f"{n}:{m}")
            if self.cols % n or self.cols % m:
                raise ConfigError(f"sparsity {n}:{m} needs N and M to divide cols "
                                  f"({self.cols}); choose cols as a multiple of {m}")
            object.__setattr__(self, "sparsity", (n, m))
        if not isinstance(self.tables, bool):
            raise ConfigError(f"tables (power-exponent units) must be true or false, not "
                              f"{self.tables!r}")
        if self.tables:
            _integer("threshold_bits", self.threshold_bits, 1, 8, "threshold code width")
            if self.a_bits != 8 or self.w_bits != 8:
                raise ConfigError(f"tables map 8-bit codes to 8-bit operands; use a_bits=8 "
                                  f"and w_bits=8, not {self.a_bits} and {self.w_bits}")
        else:
            _integer("threshold_bits", self.threshold_bits, 0, 8, "threshold code width")
            object.__setattr__(self, "threshold_bits", 0)
        _integer("act_depth", self.act_depth, 2, 1 << 16, "words per activation bank")
        if self.act_depth & (self.act_depth - 1):
            raise ConfigError(f"act_depth (words per activation bank) must be a power of two, "
                              f"not {self.act_depth}")
        _integer("w_depth", self.w_depth, 1, (1 << 16) - 1, "weight words")
        _integer("groups", self.groups, 1, 1 << 12, "channel groups")
        _integer("max_depth", self.max_depth, 1, 1 << 24, "longest reduction")
        _integer("frame_bytes", self.frame_bytes, 64, 1 << 15, "receive buffer bytes")
        _integer("product_stages", self.product_stages, 1, 3, "MAC product stages")
        if not isinstance(self.packed_products, bool):
            raise ConfigError(f"packed_products (two products per multiplier) must be true or "
                              f"false, not {self.packed_products!r}")
        if self.packed_products:
            if self.cols % 2:
                raise ConfigError(f"packed_products pairs the columns of each row; use an "
                                  f"even cols, not {self.cols}")
            if self.sparse:
                raise ConfigError("packed_products needs a dense array: an N:M array selects "
                                  "each column's activations, so the columns of a row share "
                                  "no operand; use sparsity null")
            if self.product_stages != 1:
                raise ConfigError(f"packed_products has its own multiplier pipeline; use "
                                  f"product_stages 1, not {self.product_stages}")
        if not isinstance(self.conv, bool):
            raise ConfigError(f"conv (convolution windows on the device) must be true or "
                              f"false, not {self.conv!r}")
        _integer("program_depth", self.program_depth, 0, 1 << 10, "stored RUN descriptors")
        if self.acc_bits > MAX_ACC_BITS:
            limit = max_depth_for(a_bits=self.a_bits, a_signed=False, w_bits=self.w_bits,
                                  w_signed=True, bits=MAX_ACC_BITS)
            raise ConfigError(f"max_depth {self.max_depth} needs a {self.acc_bits}-bit "
                              f"accumulator; the accelerator allows {MAX_ACC_BITS} bits, so "
                              f"use a max_depth of at most {limit}")

    # -- derived quantities: each width exists here and nowhere else --------------------------
    @property
    def sparse(self):
        """The array is N:M sparse (and runs dense layers too)."""
        return self.sparsity is not None

    @property
    def n(self):
        """Kept weights per group (0 for a dense array)."""
        return self.sparsity[0] if self.sparse else 0

    @property
    def m(self):
        """Group size (0 for a dense array)."""
        return self.sparsity[1] if self.sparse else 0

    @property
    def depthwise(self):
        """The array runs depthwise convolutions on the window walk (``Mode.DEPTHWISE``):
        with ``conv`` on a dense array whose columns multiply each their own activation (not
        ``packed_products``, whose column pairs share one), without operand tables (each
        lane would need its own read port of the activation table)."""
        return self.conv and not self.sparse and not self.packed_products and not self.tables

    @property
    def acc_bits(self):
        """Accumulator width: unsigned ``a_bits`` times signed ``w_bits``, ``max_depth``
        deep (:func:`sparqforge.sw.golden.acc_bits`)."""
        return _acc_bits(a_bits=self.a_bits, a_signed=False, w_bits=self.w_bits, w_signed=True,
                         max_depth=self.max_depth)

    @property
    def index_bits(self):
        """Bits of one kept weight's position in its group (0 for a dense array)."""
        return max(1, (self.m - 1).bit_length()) if self.sparse else 0

    @property
    def kept(self):
        """Weights per column in one weight beat: ``n`` for a sparse array, else 1."""
        return self.n if self.sparse else 1

    @property
    def weight_bits(self):
        """Bits of one weight word: per column, ``kept`` codes of ``w_bits`` and their
        indices."""
        return self.cols * self.kept * (self.w_bits + self.index_bits)

    @property
    def weight_bytes(self):
        """Bytes of one weight word on the link."""
        return -(-self.weight_bits // 8)

    @property
    def lane_bits(self):
        """Bits that address a column (lane); 0 for one column."""
        return (self.cols - 1).bit_length()

    @property
    def act_depth_bits(self):
        return (self.act_depth - 1).bit_length()

    @property
    def thresholds(self):
        """Thresholds per channel (0 without tables)."""
        return (1 << self.threshold_bits) - 1

    # -- JSON ---------------------------------------------------------------------------
    @classmethod
    def keys(cls):
        """The parameter names, in order."""
        return tuple(field.name for field in dataclasses.fields(cls))

    def to_json(self):
        """A JSON-able dict of every parameter (``sparsity`` as ``[n, m]`` or ``None``)."""
        out = dataclasses.asdict(self)
        out["sparsity"] = list(self.sparsity) if self.sparse else None
        return out

    @classmethod
    def from_json(cls, obj, *, where="accelerator configuration", base=None):
        """A configuration from a dict of parameters; keys left out take ``base``'s values
        (the defaults when ``base`` is ``None``).

        Raises
        ------
        ConfigError
            On an unknown key or a bad value, naming ``where``.
        """
        if not isinstance(obj, dict):
            raise ConfigError(f"The {where} must be a JSON object of accelerator parameters, "
                              f"not {type(obj).__name__}")
        unknown = sorted(set(obj) - set(cls.keys()))
        if unknown:
            raise ConfigError(f"The {where} has unknown keys {unknown}; known are "
                              f"{list(cls.keys())}")
        try:
            return dataclasses.replace(base or cls(), **obj)
        except ConfigError as exc:
            raise ConfigError(f"The {where}: {exc}") from None

    @classmethod
    def load(cls, path):
        """A configuration from a JSON file of parameters.

        Raises
        ------
        ConfigError
            Naming the file: unreadable, not JSON, unknown keys or bad values.
        """
        return cls.from_json(read_json(path, "accelerator configuration"),
                             where=f"accelerator configuration {path}")

    def replace(self, **changes):
        """A copy with ``changes`` (validated)."""
        return dataclasses.replace(self, **changes)

    def describe(self):
        """One line for people: ``8x8 int8, 2:4 sparse, tables``."""
        bits = (f"int{self.a_bits}" if self.a_bits == self.w_bits
                else f"a{self.a_bits}/w{self.w_bits}")
        extras = [f"{self.n}:{self.m} sparse"] if self.sparse else []
        if self.tables:
            extras.append(f"power-exponent tables, {self.threshold_bits}-bit thresholds")
        if self.packed_products:
            extras.append("packed products")
        return ", ".join([f"{self.rows}x{self.cols} {bits}"] + extras)


def read_json(path, what):
    """The JSON value in the file ``path``; a :class:`ConfigError` naming ``what`` and the file
    when it cannot be read or parsed."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"Cannot read the {what} {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"The {what} {path} is not a text file") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"The {what} {path} is not JSON (line {exc.lineno}: {exc.msg})") \
            from None
    except RecursionError:
        raise ConfigError(f"The {what} {path} is nested too deeply") from None


#: Named accelerator configurations. ``demo`` runs every bundle sparqforge exports (dense
#: and 2:4 layers, power-exponent tables and thresholds); ``int8`` is a plain dense 8x8 int8
#: accelerator; ``networks`` the ULX3S's 8x8 int8 array with memories for whole networks on
#: the device (images of 4096 words per bank, ResNet-8's and DS-CNN's weights and channel
#: groups resident with its residual adds'; 205 of the ECP5-85F's 208 block RAMs after
#: synthesis, see ``docs/boards.md``).
PRESETS = {
    "demo": AcceleratorConfig(sparsity=(2, 4), tables=True, threshold_bits=4, groups=32),
    "int8": AcceleratorConfig(groups=32),
    "networks": AcceleratorConfig(groups=128, act_depth=4096, w_depth=10752,
                                  product_stages=3, program_depth=64),
}


def preset(name):
    """The preset ``name``; a :class:`ConfigError` listing the presets otherwise."""
    if name not in PRESETS:
        raise ConfigError(f"Unknown accelerator preset {name!r}; presets are {list(PRESETS)}")
    return PRESETS[name]
