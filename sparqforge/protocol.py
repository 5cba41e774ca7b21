"""The byte protocol between host and accelerator: the one definition that the hardware
(:mod:`sparqforge.hw.executor`, :mod:`sparqforge.hw.host_link`) and the runtime
(:mod:`sparqforge.sw.runtime`) both import. ``docs/protocol.md`` describes it for people.

Frames are SLIP-delimited (``END`` = 0xC0, escaped as ``ESC ESC_END``; ``ESC`` = 0xDB as
``ESC ESC_ESC``), so a lost, corrupted or duplicated byte damages at most the frames around
it and the next ``END`` resynchronises. A request body is
``seq (4) | command (1) | fields... | CRC-32``, a reply body
``seq (4) | status (1) | session (4) | data... | CRC-32``, all little-endian, the CRC being
zlib's CRC-32 over everything before it.

Sessions: a device starts (after power-up, reconfiguration or reset) with session 0 and
executes no WRITE, READ or RUN until a host OPENs it with a nonzero nonce; every reply
carries the device's session, so a host that sees another session knows the device restarted
(or another host opened it) and that what it loaded is gone. A WRITE, READ or RUN is only
executed when its sequence number is newer than the last one executed (a 32-bit unsigned
comparison), so a stale or replayed request is never executed twice.

Everything here is plain Python (``struct``, ``zlib``): field offsets and widths, frame
lengths, address encodings and record layouts are data that Amaranth code slices signals
with and NumPy code packs arrays with.
"""

__all__ = [
    "PROTOCOL_VERSION", "END", "ESC", "ESC_END", "ESC_ESC", "CRC_POLY", "CRC_INIT",
    "CRC_REGISTER_RESIDUE", "CRC_RESIDUE", "SEQ_OFFSET", "CODE_OFFSET", "FIELDS_OFFSET",
    "SEQ_BYTES", "SESSION_BYTES", "REPLY_DATA_OFFSET", "CRC_BYTES", "MIN_FRAME",
    "SEQUENCED", "Command", "Status", "Space", "Request", "REQUESTS", "OPEN_REPLY",
    "HEADER_BYTES", "PAYLOAD_RESERVE", "max_payload", "write_words_per_frame",
    "TABLE_SPACES", "ACT_LANES_WORD_BITS", "ADD_TABLES", "ADD_TABLE_BYTES", "CODE_BITS",
    "TABLE_LANE_BITS", "WEIGHT_TABLE_ALL_BIT", "PROGRAM_BYTE_BITS",
    "AddressField", "address_fields", "encode_address", "address_limit", "word_bytes",
    "REQUANT_RECORD", "REQUANT_BYTES", "THRESHOLD_BYTES", "weight_word_fields", "Mode",
    "RunDescriptor", "RUN_REPLY", "RUNS_REPLY", "DeviceInfo", "FrameError", "slip_encode",
    "SlipDecoder",
    "frame", "unframe", "reply_frame", "unframe_reply",
]

import enum
import struct
from dataclasses import astuple, dataclass, fields

from .config import AcceleratorConfig
from .framing import (CODE_OFFSET, CRC_BYTES, CRC_INIT, CRC_POLY, CRC_REGISTER_RESIDUE,
                      CRC_RESIDUE, END, ESC, ESC_END, ESC_ESC, FIELDS_OFFSET, MIN_FRAME,
                      REPLY_DATA_OFFSET, SEQ_BYTES, SEQ_OFFSET, SESSION_BYTES, FrameError,
                      SlipDecoder, frame, reply_frame, slip_encode, unframe, unframe_reply)

#: Bumped whenever a frame, a field or a meaning changes; a host refuses other versions.
PROTOCOL_VERSION = 7

class Command(enum.IntEnum):
    INFO = 0x01        # report the configuration (no state changes, no sequence check)
    WRITE = 0x02
    READ = 0x03
    RUN = 0x04
    OPEN = 0x05        # start a session: its nonce; reply: the last sequence number, INFO
    RUNS = 0x06        # run stored descriptors (``Space.PROGRAM``): first slot, count


class Status(enum.IntEnum):
    OK = 0
    CRC = 1          # the frame was damaged or cut short (checksum mismatch): send it again
    LENGTH = 2       # frame longer than the device's buffer, or fields of the wrong size
    COMMAND = 3      # unknown command
    RANGE = 4        # address, count or descriptor out of range
    SPACE = 5        # unknown or read-only address space
    STALE = 6        # sequence number not newer than the last executed: not executed
    SESSION = 7      # no session open (the device started since it was opened): not executed


#: Commands that need an open session and a new sequence number.
SEQUENCED = (Command.WRITE, Command.READ, Command.RUN, Command.RUNS)


# ---- requests -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Request:
    """The fixed fields of a request: ``fields`` is a :mod:`struct` format (little-endian)
    of what follows the code; ``data`` is whether words of data follow them (WRITE)."""
    command: Command
    fields: str
    names: tuple
    data: bool = False

    @property
    def size(self):
        """Bytes of the fixed fields."""
        return struct.calcsize(self.fields)

    @property
    def frame_bytes(self):
        """Body length of the request without data (the exact length when it has none)."""
        return FIELDS_OFFSET + self.size + CRC_BYTES

    def offset(self, name):
        """``(offset, size)`` of field ``name`` in the body."""
        position = FIELDS_OFFSET
        for code, field_name in zip(self.fields[1:], self.names):
            size = struct.calcsize("<" + code)
            if field_name == name:
                return position, size
            position += size
        raise KeyError(name)

    def pack(self, *values):
        return struct.pack(self.fields, *values)


REQUESTS = {
    Command.INFO: Request(Command.INFO, "<", ()),
    Command.WRITE: Request(Command.WRITE, "<BI", ("space", "addr"), data=True),
    Command.READ: Request(Command.READ, "<BIH", ("space", "addr", "count")),
    Command.OPEN: Request(Command.OPEN, "<I", ("session",)),
    Command.RUNS: Request(Command.RUNS, "<HH", ("first", "count")),
}

#: OPEN's reply data before the INFO record: the last sequence number the device executed
#: (the host continues above it).
OPEN_REPLY = "<I"


# ---- memory spaces and their address encodings ----------------------------------------------
class Space(enum.IntEnum):
    """Address spaces a WRITE (and for ACT, a READ) targets."""
    ACT = 0            # activation banks: bank, word
    WEIGHT = 1         # weight words
    REQUANT = 2        # requantization records: lane, group
    ACT_TABLE = 3      # activation table entries (every lane): code
    WEIGHT_TABLE = 4   # weight table entries: code, lane, every lane
    THRESHOLD = 5      # thresholds: index, lane, group
    ACT_ALL = 6        # activation banks, every bank at once (write only): word
    ACT_LANES = 7      # the first lanes of every bank's word, the rest 0 (write only): word, lanes
    ADD_TABLE = 8      # residual add table entries (``depthwise`` accelerators): code, input,
    #                    table
    PROGRAM = 9        # stored RUN descriptors, a byte a word (``program_depth`` slots): byte,
    #                    slot


#: Spaces that exist only on accelerators with tables.
TABLE_SPACES = (Space.ACT_TABLE, Space.WEIGHT_TABLE, Space.THRESHOLD)


@dataclass(frozen=True)
class AddressField:
    """A field of a word address: bits ``offset .. offset + width - 1`` (``width`` ``None``:
    every bit from ``offset`` up)."""
    name: str
    offset: int
    width: int


#: Word bits of an ``ACT_LANES`` address (``act_depth`` is at most ``2 ** 16``).
ACT_LANES_WORD_BITS = 17
#: Residual add tables of an accelerator with ``depthwise`` (``Space.ADD_TABLE``, ``Mode.ADD``):
#: each two inputs of 256 entries.
ADD_TABLES = 4
#: An add table entry: a signed 32-bit little-endian integer.
ADD_TABLE_BYTES = 4
#: Byte bits of a ``PROGRAM`` address: each slot holds one RUN descriptor in its first
#: ``RunDescriptor.SIZE`` of ``1 << PROGRAM_BYTE_BITS`` bytes.
PROGRAM_BYTE_BITS = 6
#: Code bits of a table entry's and a threshold's address.
CODE_BITS = 8
#: Lane bits of a weight table entry's address (whatever the array's width), and the bit
#: above them that writes the entry into every lane's table.
TABLE_LANE_BITS = 7
WEIGHT_TABLE_ALL_BIT = CODE_BITS + TABLE_LANE_BITS


def address_fields(space, config):
    """The fields of ``space``'s word addresses on ``config``, LSB first, by name.

    >>> [(f.name, f.offset, f.width) for f in address_fields(Space.THRESHOLD,
    ...     AcceleratorConfig(cols=8, tables=True)).values()]
    [('index', 0, 8), ('lane', 8, 3), ('group', 11, None)]
    """
    lane, depth = config.lane_bits, config.act_depth_bits
    layouts = {
        Space.ACT: (("word", depth), ("bank", None)),
        Space.WEIGHT: (("word", None),),
        Space.REQUANT: (("lane", lane), ("group", None)),
        Space.ACT_TABLE: (("code", None),),
        Space.WEIGHT_TABLE: (("code", CODE_BITS), ("lane", TABLE_LANE_BITS), ("all", 1)),
        Space.THRESHOLD: (("index", CODE_BITS), ("lane", lane), ("group", None)),
        Space.ACT_ALL: (("word", None),),
        # ``lanes`` is the lane count less one. The word field is wider than any depth, so
        # a WRITE that runs past the banks stops at RANGE instead of carrying into it.
        Space.ACT_LANES: (("word", ACT_LANES_WORD_BITS), ("lanes", None)),
        Space.ADD_TABLE: (("code", CODE_BITS), ("input", 1), ("table", None)),
        Space.PROGRAM: (("byte", PROGRAM_BYTE_BITS), ("slot", None)),
    }
    out, offset = {}, 0
    for name, width in layouts[Space(space)]:
        out[name] = AddressField(name, offset, width)
        offset += width or 0
    return out


def encode_address(space, config, **values):
    """The word address of ``values`` (by field name; missing fields are 0).

    >>> encode_address(Space.REQUANT, AcceleratorConfig(cols=8), group=3, lane=5)
    29
    """
    layout = address_fields(space, config)
    address = 0
    for name, value in values.items():
        field = layout[name]
        if value < 0 or (field.width is not None and value >> field.width):
            raise ValueError(f"{Space(space).name} address field {name} = {value} does not fit "
                             f"{field.width} bits")
        address |= value << field.offset
    return address


def address_limit(space, config):
    """One past the highest word address of ``space`` (a WRITE or READ must end below it)."""
    lane = config.lane_bits
    return {
        Space.ACT: config.rows << config.act_depth_bits,
        Space.WEIGHT: config.w_depth,
        Space.REQUANT: config.groups << lane,
        Space.ACT_TABLE: 1 << CODE_BITS,
        # Every-lane writes have the lane field clear: addresses up to (1 << 15) + 255.
        Space.WEIGHT_TABLE: (1 << WEIGHT_TABLE_ALL_BIT) + (1 << CODE_BITS),
        Space.THRESHOLD: config.groups << (CODE_BITS + lane),
        Space.ACT_ALL: config.act_depth,
        # (Of the highest lane count; each count's words must also lie below ``act_depth``.)
        Space.ACT_LANES: ((config.cols - 1) << ACT_LANES_WORD_BITS) + config.act_depth,
        Space.ADD_TABLE: ADD_TABLES << (CODE_BITS + 1),
        Space.PROGRAM: config.program_depth << PROGRAM_BYTE_BITS,
    }[Space(space)]


#: A requantization record, LSB first: ``(name, width, signed)``, for every activation width
#: (a requantizer with ``a_bits``-wide outputs keeps the zero point's low ``a_bits + 1`` bits,
#: which hold every zero point of its output type).
REQUANT_RECORD = (("bias", 32, True), ("multiplier", 31, False), ("shift", 6, True),
                  ("zero_point", 9, True), ("relu", 1, False))
REQUANT_BYTES = -(-sum(width for _, width, _ in REQUANT_RECORD) // 8)
#: A threshold: a signed 32-bit little-endian integer.
THRESHOLD_BYTES = 4


def word_bytes(space, config, addr=0):
    """Bytes of one word of ``space`` on ``config`` (for ``ACT_LANES``, at word address
    ``addr``: its lane count, or ``cols`` for a count the device does not have)."""
    if space == Space.ACT_LANES:
        return min(addr >> ACT_LANES_WORD_BITS, config.cols - 1) + 1
    return {Space.ACT: config.cols, Space.ACT_ALL: config.cols, Space.WEIGHT: config.weight_bytes,
            Space.REQUANT: REQUANT_BYTES, Space.ACT_TABLE: 1, Space.WEIGHT_TABLE: 1,
            Space.THRESHOLD: THRESHOLD_BYTES, Space.ADD_TABLE: ADD_TABLE_BYTES,
            Space.PROGRAM: 1}[Space(space)]


def weight_word_fields(config):
    """``[(column, kept, name, offset, width), ...]`` of one weight word, LSB first: per
    column, per kept weight, its ``code`` (``w_bits``, signed) then, on a sparse array, its
    ``index`` in the group (``index_bits``)."""
    element = config.w_bits + config.index_bits
    out = []
    for column in range(config.cols):
        for kept in range(config.kept):
            base = (column * config.kept + kept) * element
            out.append((column, kept, "code", base, config.w_bits))
            if config.index_bits:
                out.append((column, kept, "index", base + config.w_bits, config.index_bits))
    return out


# ---- payload sizes --------------------------------------------------------------------------
#: Frame buffer bytes that are not payload: sequence number, code, a WRITE's fields and the
#: CRC (11 bytes), rounded up.
PAYLOAD_RESERVE = 16


def max_payload(config):
    """The most data bytes a READ reply carries (and, less 8, a WRITE's data)."""
    return config.frame_bytes - PAYLOAD_RESERVE


def write_words_per_frame(config, word_size):
    """Words of ``word_size`` bytes one WRITE carries."""
    return max(1, (max_payload(config) - 8) // word_size)


# ---- RUN --------------------------------------------------------------------------------------
class Mode(enum.IntFlag):
    """Bits of a RUN descriptor's ``mode``."""
    SPARSE = 1           # N:M sparse beats
    THRESHOLD = 2        # threshold output (else requantize)
    ACT_TABLE = 4        # activations through the activation table
    WEIGHT_TABLE = 8     # weights through the weight tables (else codes pass through)
    CONV = 16            # convolution windows (the descriptor's geometry fields), on ``conv``
    DEPTHWISE = 32       # with CONV: each column its own channel (see ``RunDescriptor``)
    ADD = 64             # with CONV | DEPTHWISE: accumulators through an add table

    @property
    def bit(self):
        """The bit's position."""
        return self.value.bit_length() - 1


@dataclass(frozen=True)
class RunDescriptor:
    """One layer for the controller (all fields little-endian, 44 bytes).

    The layer computes ``m_tiles * rows`` output rows and ``n_tiles * cols`` channels, each
    tile taking ``k_steps`` beats of ``step`` activation lanes. Weight beat ``s`` of channel
    tile ``nt`` is weight word ``w_base + nt * k_steps + s``; its parameter group is
    ``group_base + nt``. ``mode`` is a combination of :class:`Mode` bits.

    **Matrix layout** (``Mode.CONV`` clear; the geometry fields are ignored): activation row
    ``m`` is in bank ``m % rows`` at word ``a_base + (m // rows) * a_stride + lane // cols``;
    output row ``m``, channel tile ``nt`` is written to bank ``m % rows``, word
    ``out_base + (m // rows) * out_stride + nt``.

    **Convolution windows** (``Mode.CONV``, on accelerators with ``conv``): every bank holds
    the whole input image, pixel by pixel, ``a_stride`` words per pixel (channel ``c`` in word
    ``c // cols``, lane ``c % cols``). Output row ``m`` is output pixel ``m`` (``oy = m //
    out_w``, ``ox = m % out_w``; rows past the image are computed too). Its pixel address
    ``pb(m)`` is a walk: ``pb(0) = origin``, ``pb(m + 1) = pb(m) + x_step`` when
    ``ox < out_w - 1``, else ``pb(m) + row_step`` (16-bit wrap-around); its window's corner is
    ``iy = oy * sh - ph``, ``ix = ox * sw - pw``. Beat ``s`` covers elements ``e = s * step``
    .. ``e + step - 1`` of the window, in the order ``(ky, kx, c)``: tap ``t = e // in_c``,
    ``ky = t // kw``, ``kx = t % kw``, ``c = e % in_c``. Row ``m`` reads bank ``m % rows``,
    word ``pb(m) + ky * tap_row + kx * a_stride + c // cols``, lanes from ``c % cols`` on,
    when ``0 <= iy + ky < in_h`` and ``0 <= ix + kx < in_w``; otherwise every lane of the
    beat is ``pad_code``. Output pixel ``m``, channel tile ``nt`` is written to word
    ``out_base + m * out_stride + nt`` of every bank.

    **Depthwise** (``Mode.CONV | Mode.DEPTHWISE``, on accelerators with ``depthwise``; dense
    beats, ``step`` 1, ``in_c`` 1): the walk above with one tap per beat (``t = s``), and
    channel tile ``nt`` reads word ``pb(m) + ky * tap_row + kx * a_stride + nt``, whose lane
    ``j`` goes to column ``j`` alone (each column multiplies its own channel; ``pad_code``
    in every lane outside the image).

    **Residual add tables** (``Mode.CONV | Mode.DEPTHWISE | Mode.ADD``, on accelerators with
    ``depthwise``; ``table`` below :data:`ADD_TABLES`): the depthwise walk's accumulator
    ``acc`` of every row and column becomes ``T[0][acc & 0xFF] + T[1][(acc >> 8) & 0xFF]``
    (a 32-bit two's complement sum) before it is requantized, ``T`` the ``table``'s two
    256-entry inputs of signed 32-bit entries (``Space.ADD_TABLE``). The host picks the
    weights that put one code into each byte of ``acc`` (``sw/runtime/residual.py``).
    """
    m_tiles: int
    n_tiles: int
    k_steps: int
    a_base: int
    a_stride: int
    step: int
    mode: int
    w_base: int
    out_base: int
    out_stride: int
    group_base: int
    in_h: int = 0
    in_w: int = 0
    in_c: int = 0
    out_w: int = 0
    origin: int = 0
    x_step: int = 0
    row_step: int = 0
    tap_row: int = 0
    kh: int = 0
    kw: int = 0
    sh: int = 0
    sw: int = 0
    ph: int = 0
    pw: int = 0
    pad_code: int = 0
    table: int = 0

    #: Each field's :mod:`struct` code, in order.
    FIELDS = {"m_tiles": "H", "n_tiles": "H", "k_steps": "H", "a_base": "H", "a_stride": "H",
              "step": "B", "mode": "B", "w_base": "H", "out_base": "H", "out_stride": "H",
              "group_base": "H", "in_h": "H", "in_w": "H", "in_c": "H", "out_w": "H",
              "origin": "H", "x_step": "H", "row_step": "H", "tap_row": "H", "kh": "B",
              "kw": "B", "sh": "B", "sw": "B", "ph": "B", "pw": "B", "pad_code": "B",
              "table": "B"}
    #: The geometry fields: only ``Mode.CONV`` RUNs read them.
    CONV_FIELDS = ("in_h", "in_w", "in_c", "out_w", "origin", "x_step", "row_step", "tap_row",
                   "kh", "kw", "sh", "sw", "ph", "pw", "pad_code")
    FORMAT = "<" + "".join(FIELDS.values())
    SIZE = struct.calcsize(FORMAT)

    @classmethod
    def convolution(cls, *, in_shape, kernel, stride, padding, pad_code, a_base, words,
                    **fields):
        """A ``Mode.CONV`` descriptor for an image ``in_shape = (h, w, c)`` at word ``a_base``
        of every bank, ``words`` words per pixel; ``kernel``, ``stride`` and ``padding`` are
        ``(y, x)`` pairs. The walk's fields are derived here; ``fields`` gives the rest."""
        (h, w, c), (kh, kw), (sh, sw), (ph, pw) = in_shape, kernel, stride, padding
        out_w = (w + 2 * pw - kw) // sw + 1
        wrap = 1 << 16
        return cls(a_base=a_base, a_stride=words, in_h=h, in_w=w, in_c=c, out_w=out_w,
                   origin=(a_base - (ph * w + pw) * words) % wrap,
                   x_step=sw * words % wrap,
                   row_step=(sh * w - (out_w - 1) * sw) * words % wrap,
                   tap_row=w * words % wrap, kh=kh, kw=kw, sh=sh, sw=sw, ph=ph, pw=pw,
                   pad_code=pad_code, **fields)

    MODE_SPARSE = Mode.SPARSE
    MODE_THRESHOLD = Mode.THRESHOLD
    MODE_ACT_TABLE = Mode.ACT_TABLE
    MODE_WEIGHT_TABLE = Mode.WEIGHT_TABLE

    @classmethod
    def offsets(cls):
        """``{name: (offset, size)}`` of every field in the body of a RUN request."""
        out, position = {}, FIELDS_OFFSET
        for name, code in cls.FIELDS.items():
            size = struct.calcsize("<" + code)
            out[name] = (position, size)
            position += size
        return out

    def pack(self):
        return struct.pack(self.FORMAT, *astuple(self))

    @classmethod
    def unpack(cls, data):
        return cls(*struct.unpack(cls.FORMAT, data))


assert [f.name for f in fields(RunDescriptor)] == list(RunDescriptor.FIELDS)
REQUESTS[Command.RUN] = Request(Command.RUN, RunDescriptor.FORMAT, tuple(RunDescriptor.FIELDS))

#: A RUN's reply data: the cycles the layer took.
RUN_REPLY = "<I"
#: A RUNS reply's data: the cycles its layers took (the sum of what each as a RUN would
#: report), then the cycles from the command's decoding to its last layer's end (the layers
#: and the fetching and checking of each descriptor).
RUNS_REPLY = "<II"

#: Leading body bytes a device keeps in registers: enough for every request's fixed fields,
#: so that a command is decoded without reading its frame buffer.
HEADER_BYTES = FIELDS_OFFSET + max(request.size for request in REQUESTS.values())


# ---- INFO -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DeviceInfo:
    """What an accelerator reports to INFO: the protocol version and its whole
    :class:`~sparqforge.config.AcceleratorConfig`, plus widths it derived from it (which the
    host checks against its own derivation, so that a device and a host that disagree on one
    stop instead of running).

    >>> info = DeviceInfo.of(AcceleratorConfig())
    >>> DeviceInfo.unpack(info.pack()) == info
    True
    """
    version: int
    config: AcceleratorConfig
    acc_bits: int
    weight_bytes: int

    #: ``(name, struct code)`` of every field of the reply, in order; config fields by name.
    FIELDS = (("version", "B"), ("rows", "B"), ("cols", "B"), ("a_bits", "B"), ("w_bits", "B"),
              ("n", "B"), ("m", "B"), ("tables", "B"), ("threshold_bits", "B"),
              ("product_stages", "B"), ("packed_products", "B"), ("conv", "B"),
              ("act_depth_bits", "B"),
              ("acc_bits", "B"), ("w_depth", "H"), ("groups", "H"), ("frame_bytes", "H"),
              ("weight_bytes", "H"), ("max_depth", "I"), ("program_depth", "H"))
    FORMAT = "<" + "".join(code for _, code in FIELDS)
    SIZE = struct.calcsize(FORMAT)

    @classmethod
    def of(cls, config):
        """What an accelerator with ``config`` reports."""
        return cls(PROTOCOL_VERSION, config, config.acc_bits, config.weight_bytes)

    def pack(self):
        c = self.config
        values = {"version": self.version, "n": c.n, "m": c.m, "tables": int(c.tables),
                  "packed_products": int(c.packed_products), "conv": int(c.conv),
                  "act_depth_bits": c.act_depth_bits,
                  "acc_bits": self.acc_bits, "weight_bytes": self.weight_bytes}
        return struct.pack(self.FORMAT, *(values[name] if name in values else getattr(c, name)
                                          for name, _ in self.FIELDS))

    @classmethod
    def unpack(cls, data):
        """The INFO reply ``data``.

        Raises
        ------
        FrameError
            When the reply has the wrong size, another protocol version, an impossible
            configuration, or widths that differ from the host's derivation.
        """
        if len(data) < 1 or data[0] != PROTOCOL_VERSION:
            version = data[0] if data else None
            raise FrameError(f"the device speaks protocol version {version}, this host "
                             f"{PROTOCOL_VERSION}: build the device from this sparqforge")
        if len(data) != cls.SIZE:
            raise FrameError(f"INFO reply of {len(data)} bytes, expected {cls.SIZE}")
        values = dict(zip((name for name, _ in cls.FIELDS), struct.unpack(cls.FORMAT, data)))
        # Config fields by name (flags as 0 or 1), the N:M pattern and the depth encoded.
        given = {name: values[name] for name, _ in cls.FIELDS if name in AcceleratorConfig.keys()}
        given.update(tables=bool(given["tables"]), packed_products=bool(given["packed_products"]),
                     conv=bool(given["conv"]),
                     sparsity=(values["n"], values["m"]) if values["m"] else None,
                     act_depth=1 << values["act_depth_bits"])
        try:
            config = AcceleratorConfig(**given)
        except ValueError as exc:
            raise FrameError(f"the device reports an impossible configuration ({exc})") \
                from None
        info = cls(values["version"], config, values["acc_bits"], values["weight_bytes"])
        if (info.acc_bits, info.weight_bytes) != (config.acc_bits, config.weight_bytes):
            raise FrameError(f"the device derives {info.acc_bits}-bit accumulators and "
                             f"{info.weight_bytes}-byte weight words from its configuration, "
                             f"this host {config.acc_bits} and {config.weight_bytes}: build "
                             f"the device from this sparqforge")
        return info
