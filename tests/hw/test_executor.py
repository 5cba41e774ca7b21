"""The command executor in Amaranth's simulator, driven through the receiver's frame interface
with frames built from ``sparqforge.protocol``, its replies compared with the golden device
model's for the same frames: every command, every status, lengths one off each way."""

import random
import struct
import zlib

import numpy as np
import pytest
from amaranth.sim import Simulator

from sparqforge.config import AcceleratorConfig
from sparqforge.hw.array_core import ArrayCore
from sparqforge.hw.executor import Executor
from sparqforge.protocol import (CRC_BYTES, CRC_RESIDUE, HEADER_BYTES, REQUESTS, Command, DeviceInfo,
                                 Mode, PROGRAM_BYTE_BITS, RunDescriptor, Space, Status,
                                 encode_address, frame, max_payload)
from sparqforge.sw.runtime import layouts
from sparqforge.sw.runtime.device_model import DeviceModel

#: Cycles from the executor's host read address to the word (see ``Memories``).
READ_LATENCY = 3
#: Cycles the modelled layer takes from its start to ``finished``.
LAYER_CYCLES = 17


def core_for(config):
    return ArrayCore(rows=config.rows, cols=config.cols, a_bits=config.a_bits, a_signed=False,
                     w_bits=config.w_bits, w_signed=True, max_depth=config.max_depth,
                     groups=config.groups, sparsity=config.sparsity, tables=config.tables,
                     threshold_bits=config.threshold_bits if config.tables else None,
                     packed_products=config.packed_products, lane_operands=config.depthwise)


class Bench:
    """Runs frame bodies through an :class:`Executor` and records everything it does."""

    def __init__(self, config, *, stall=0.3, seed=0):
        self.config = config
        self.dut = Executor(config, core_signature=core_for(config).signature)
        self.stall = stall
        self.rng = random.Random(seed)
        self.act = np.zeros((config.rows, config.act_depth, config.cols), dtype=np.int64)
        self.commits = []      # ("act", bank, word, values) / ("weight", addr, value)
        self.cfg = []          # (name, payload fields)
        self.starts = 0
        self.started = []      # the descriptor fields of every layer started

    def run(self, bodies, *, overflow=()):
        """The executor's reply to each body (``overflow``: indices of bodies marked as
        longer than the buffer, which the receiver cuts)."""
        dut, config = self.dut, self.config
        replies = []
        state = {"done": False}

        async def receiver(ctx):
            for index, body in enumerate(bodies):
                cut = body[:config.frame_bytes]
                header = (bytes(cut[:HEADER_BYTES]) + bytes(HEADER_BYTES))[:HEADER_BYTES]
                ctx.set(dut.frame.header, list(header))
                ctx.set(dut.frame.length, len(cut))
                ctx.set(dut.frame.ok, int(zlib.crc32(body) == CRC_RESIDUE))
                ctx.set(dut.frame.overflow, int(index in overflow))
                ctx.set(dut.frame.done, 1)
                while True:
                    address = ctx.get(dut.frame.addr)
                    _, _, release = await ctx.tick().sample(dut.frame.release)
                    ctx.set(dut.frame.rdata, cut[address] if address < len(cut) else 0)
                    if release:
                        break
                ctx.set(dut.frame.done, 0)
                await ctx.tick()
            state["done"] = True

        async def transmitter(ctx):
            current = bytearray()
            while len(replies) < len(bodies):
                ready = self.rng.random() >= self.stall
                ctx.set(dut.reply.ready, ready)
                _, _, valid, payload = await ctx.tick().sample(dut.reply.valid,
                                                              dut.reply.payload)
                if valid and ready:
                    current.append(payload.data)
                    if payload.last:
                        replies.append(bytes(current))
                        current = bytearray()

        async def memories_and_layer(ctx):
            history = [(0, 0)] * READ_LATENCY
            countdown = None
            while not state["done"]:
                await ctx.tick()
                history.append((ctx.get(dut.host_read_addr), ctx.get(dut.host_reading)))
                address, _ = history[-1 - READ_LATENCY]
                ctx.set(dut.act_data, [[int(v) for v in self.act[r, address]]
                                       for r in range(config.rows)])
                self._record(ctx)
                ctx.set(dut.finished, 0)
                if ctx.get(dut.start_feed):
                    assert ctx.get(dut.start_write)
                    self.starts += 1
                    desc = ctx.get(dut.desc)
                    self.started.append(RunDescriptor(*(int(getattr(desc, name))
                                                        for name in RunDescriptor.FIELDS)))
                    countdown = LAYER_CYCLES
                    ctx.set(dut.running, 1)
                elif countdown is not None:
                    countdown -= 1
                    ctx.set(dut.cycles, LAYER_CYCLES - countdown)
                    if countdown == 0:
                        ctx.set(dut.finished, 1)
                        ctx.set(dut.running, 0)
                        countdown = None

        sim = Simulator(dut)
        sim.add_clock(1e-8)
        sim.add_testbench(receiver, background=True)
        sim.add_testbench(memories_and_layer, background=True)
        sim.add_testbench(transmitter)
        sim.run()
        return replies

    def _record(self, ctx):
        dut = self.dut
        en = ctx.get(dut.host_write.en)
        word = ctx.get(dut.host_write.addr)
        values = [int(v) for v in ctx.get(dut.host_write.data)]
        for bank in range(self.config.rows):
            if en >> bank & 1:
                self.act[bank, word] = values
                self.commits.append(("act", bank, word, values))
        if ctx.get(dut.weight_write.en):
            self.commits.append(("weight", ctx.get(dut.weight_write.addr),
                                 ctx.get(dut.weight_write.data)))
        for name in ("cfg_requant", "cfg_act", "cfg_weight", "cfg_threshold", "cfg_add"):
            port = getattr(dut, name, None)
            if port is not None and ctx.get(port.valid):
                self.cfg.append((name, ctx.get(port.payload)))


def write(space, addr, words, seq=1):
    return frame(seq, Command.WRITE, REQUESTS[Command.WRITE].pack(space, addr)
                 + np.asarray(words, dtype=np.uint8).tobytes())


def read(addr, count, seq=1, space=Space.ACT):
    return frame(seq, Command.READ, REQUESTS[Command.READ].pack(space, addr, count))


def descriptor(**fields):
    desc = dict(m_tiles=1, n_tiles=1, k_steps=1, a_base=0, a_stride=1, step=1, mode=0,
                w_base=0, out_base=8, out_stride=1, group_base=0)
    desc.update(fields)
    return RunDescriptor(**desc)


def run(seq=1, **fields):
    return frame(seq, Command.RUN, descriptor(**fields).pack())


def runs(first, count, seq=1):
    return frame(seq, Command.RUNS, REQUESTS[Command.RUNS].pack(first, count))


def store(slot, desc, seq=1):
    """A WRITE of ``desc`` into program slot ``slot``."""
    return write(Space.PROGRAM, slot << PROGRAM_BYTE_BITS,
                 np.frombuffer(desc.pack(), dtype=np.uint8).reshape(-1, 1), seq)


DENSE = AcceleratorConfig(rows=2, cols=4, act_depth=16, w_depth=32, groups=4, frame_bytes=64)
#: With four slots of stored descriptors.
PROGRAM = DENSE.replace(program_depth=4, frame_bytes=128)
TABLES = AcceleratorConfig(rows=3, cols=3, sparsity=(1, 3), tables=True, act_depth=16,
                           w_depth=32, groups=4, frame_bytes=128)
TABLES_4 = AcceleratorConfig(rows=2, cols=4, sparsity=(2, 4), tables=True, act_depth=16,
                             w_depth=32, groups=4, frame_bytes=128)


def renumber(bodies, first=1):
    """The same requests with sequence numbers ``first``, ``first + 1``, ... (a damaged body
    stays as it is)."""
    out = []
    for offset, body in enumerate(bodies):
        if zlib.crc32(body) != CRC_RESIDUE:
            out.append(body)
            continue
        out.append(frame(first + offset, body[4], body[5:-CRC_BYTES]))
    return out


def open_frame(session=0x5EED, seq=1):
    return frame(seq, Command.OPEN, REQUESTS[Command.OPEN].pack(session))


def request_set(config, rng):
    """Frames exercising every command and every status, sequence numbers in order."""
    cols = config.cols
    wb = config.weight_bytes
    bodies = [
        write(Space.ACT, 0, rng.integers(0, 256, (1, cols))),   # before any OPEN: SESSION
        frame(1, Command.INFO),
        frame(1, Command.OPEN, b"\1\2\3"),                      # OPEN's length one off
        open_frame(session=0),                                   # a zero nonce: RANGE
        open_frame(),
        write(Space.ACT, encode_address(Space.ACT, config, bank=1, word=3),
              rng.integers(0, 256, (2, cols))),
        write(Space.WEIGHT, 5, rng.integers(0, 256, (2, wb))),
        write(Space.REQUANT, encode_address(Space.REQUANT, config, group=2, lane=1),
              layouts.pack_requant([-77, 9], [1 << 30, 12345], [-3, 2], [5, 7], [1, 0])),
        read(encode_address(Space.ACT, config, bank=1, word=3), 2),
        run(),
        # Lengths one off each way, derived from the request definitions.
        frame(7, Command.WRITE, REQUESTS[Command.WRITE].pack(Space.ACT, 0)[:-1]),
        frame(8, Command.WRITE, REQUESTS[Command.WRITE].pack(Space.ACT, 0)),  # no words: OK
        frame(2, Command.READ, REQUESTS[Command.READ].pack(Space.ACT, 0, 1) + b"\0"),
        frame(3, Command.READ, REQUESTS[Command.READ].pack(Space.ACT, 0, 1)[:-1]),
        frame(4, Command.RUN, RunDescriptor(1, 1, 1, 0, 1, 1, 0, 0, 8, 1, 0).pack() + b"\0"),
        frame(5, Command.RUN, RunDescriptor(1, 1, 1, 0, 1, 1, 0, 0, 8, 1, 0).pack()[:-1]),
        write(Space.ACT, 0, np.zeros((1, cols + 1))),        # not whole words
        frame(6, 0x7E),                                      # unknown command
        write(0x7F, 0, [[1]]),                               # unknown space
        read(0, 1, space=Space.WEIGHT),                      # READ of another space
        read(0, 0),                                          # nothing to read
        read(0, max_payload(config) // cols),                # the most one reply carries
        read(0, max_payload(config) // cols + 1),            # one word more: RANGE
        read(config.rows * config.act_depth - 1, 2),         # past the banks
        write(Space.WEIGHT, config.w_depth - 1, np.zeros((2, wb))),   # second word too far
        write(Space.REQUANT, config.groups << config.lane_bits, np.zeros((1, 10))),
        # Every bank at once: whole words, then the low lanes (the rest written 0; a READ
        # shows them), a lane count the array lacks, a word past the banks, a partial word.
        write(Space.ACT_ALL, 2, rng.integers(1, 256, (3, cols))),
        write(Space.ACT_LANES, encode_address(Space.ACT_LANES, config, lanes=1, word=2),
              rng.integers(0, 256, (2, 2))),
        read(encode_address(Space.ACT, config, bank=config.rows - 1, word=2), 3),
        write(Space.ACT_LANES, encode_address(Space.ACT_LANES, config, lanes=cols),
              np.ones((1, cols))),
        write(Space.ACT_LANES, encode_address(Space.ACT_LANES, config, lanes=0,
                                              word=config.act_depth - 1), [[7], [8]]),
        write(Space.ACT_LANES, encode_address(Space.ACT_LANES, config, lanes=2, word=4),
              np.full(4, 9)),
        read(encode_address(Space.ACT, config, word=config.act_depth - 1), 1),
        read(4, 1),
        run(step=3),                                         # a step the array lacks
        run(group_base=config.groups),                       # groups out of range
        run(w_base=config.w_depth),                          # weights out of range
        run(k_steps=0),                                      # an empty layer
        run(mode=2),                                         # thresholds without tables
        run(mode=0x10),                                      # a mode bit no mode has
    ]
    if config.tables:
        count = config.thresholds
        bodies += [
            write(Space.ACT_TABLE, 3, [[9], [8]]),
            write(Space.WEIGHT_TABLE, encode_address(Space.WEIGHT_TABLE, config, all=1, code=7),
                  [[5]]),
            write(Space.WEIGHT_TABLE, encode_address(Space.WEIGHT_TABLE, config, lane=2,
                                                     code=1), [[6]]),
            write(Space.WEIGHT_TABLE, encode_address(Space.WEIGHT_TABLE, config, lane=3,
                                                     code=1), [[6]]),   # no such lane
            write(Space.WEIGHT_TABLE, encode_address(Space.WEIGHT_TABLE, config, lane=5,
                                                     code=1), [[6]]),   # nor this one
            write(Space.THRESHOLD, encode_address(Space.THRESHOLD, config, group=1, lane=2),
                  np.arange(count * 4).reshape(count, 4)),
            write(Space.THRESHOLD, encode_address(Space.THRESHOLD, config, group=1, lane=2,
                                                  index=count), np.zeros((1, 4))),
            # Lane fields that name no lane (3 columns, 2 lane bits).
            write(Space.THRESHOLD, encode_address(Space.THRESHOLD, config, group=1, lane=3),
                  np.zeros((1, 4))),
            write(Space.REQUANT, encode_address(Space.REQUANT, config, group=1, lane=3),
                  np.zeros((1, 10))),
            run(step=3, mode=3),
        ]
    # Residual add tables: on accelerators with the depthwise walk, a space and a mode.
    add = Mode.CONV | Mode.DEPTHWISE | Mode.ADD
    walk = dict(in_h=1, in_w=1, in_c=1, out_w=1, kh=1, kw=1, sh=1, sw=1)
    if config.depthwise:
        bodies += [
            write(Space.ADD_TABLE, encode_address(Space.ADD_TABLE, config, table=1, input=1,
                                                  code=7), rng.integers(0, 256, (3, 4))),
            # The last entries, then one past them: two words written, then RANGE.
            write(Space.ADD_TABLE, encode_address(Space.ADD_TABLE, config, table=3, input=1,
                                                  code=254), rng.integers(0, 256, (3, 4))),
            write(Space.ADD_TABLE, 4 << 9, np.zeros((1, 4))),
            write(Space.ADD_TABLE, 5, np.zeros(6)),                  # not whole words
            run(mode=add, table=1, **walk),
            run(mode=add, table=3, **walk),
            run(mode=Mode.CONV | Mode.DEPTHWISE, table=9, **walk),   # no ADD: table unused
            run(mode=add, table=4, **walk),                          # no such table
            run(mode=add, table=255, **walk),
            run(mode=Mode.DEPTHWISE | Mode.ADD, table=1, **walk),    # not a convolution
            run(mode=Mode.CONV | Mode.ADD, table=1, **walk),         # not depthwise
            run(mode=Mode.ADD, table=1),
            run(mode=add | 0x80, table=1, **walk),                   # a mode bit no mode has
        ]
    else:
        bodies += [
            write(Space.ADD_TABLE, 0, np.zeros((1, 4))),             # no add tables: SPACE
            run(mode=add, table=1, **walk),
            run(mode=Mode.ADD),
        ]
    # Stored descriptors: slots written, run in ranges (every field different from a RUN's
    # so a descriptor taken from the wrong place shows), refused mid-way, ranges and
    # lengths one off, a plain RUN after RUNS (its descriptor from its own frame again).
    stored = [descriptor(m_tiles=2, n_tiles=2, k_steps=3, a_base=1, a_stride=2, mode=0,
                         w_base=4, out_base=9, out_stride=3, group_base=1),
              descriptor(k_steps=5, w_base=20, out_base=3, group_base=3, a_base=7),
              descriptor(k_steps=0)]                         # refused: an empty layer
    if config.program_depth:
        depth = config.program_depth
        bodies += [
            store(1, stored[0]), store(2, stored[1]), store(3, stored[2]),
            runs(1, 2),
            runs(2, 1),
            run(k_steps=2, w_base=7),
            runs(1, 3),                                      # slot 3 refused: RANGE
            runs(0, 0),                                      # nothing to run
            runs(depth - 1, 2),                              # past the slots
            frame(9, Command.RUNS, REQUESTS[Command.RUNS].pack(1, 1) + b"\0"),
            frame(9, Command.RUNS, REQUESTS[Command.RUNS].pack(1, 1)[:-1]),
            write(Space.PROGRAM, depth << PROGRAM_BYTE_BITS, [[1]]),   # past the slots
            write(Space.PROGRAM, (depth << PROGRAM_BYTE_BITS) - 1, [[1], [2]]),
            runs(1, 1),
        ]
    else:
        # RUNS is unknown (COMMAND, nothing executed), the space too (SPACE).
        bodies += [runs(0, 1), store(0, stored[0])]
    return renumber(bodies)


class _CountingModel(DeviceModel):
    """The golden device, recording the descriptors of the layers it ran."""

    def __init__(self, config):
        super().__init__(config)
        self.started = []

    def run(self, d):
        out = super().run(d)
        self.started.append(d)
        return out


@pytest.mark.parametrize("config", [DENSE, TABLES, TABLES_4, PROGRAM],
                         ids=["dense", "tables", "tables_4", "program"])
def test_replies_equal_the_golden_device(config):
    rng = np.random.default_rng(3)
    bodies = request_set(config, rng)
    damaged = bytearray(frame(900, Command.INFO))
    damaged[5] ^= 1
    last = int.from_bytes(bodies[-1][:4], "little")
    bodies += [bytes(damaged),
               # A replay of an old request and a request reusing the last number: STALE.
               bodies[6], frame(last, Command.READ, REQUESTS[Command.READ].pack(0, 0, 1)),
               # Another host opens the device; the session in later replies is its.
               open_frame(session=0xABCDEF01, seq=2), read(0, 1, seq=last + 5)]
    bench = Bench(config)
    replies = bench.run(bodies)
    golden = _CountingModel(config)
    for body, reply in zip(bodies, replies):
        want = golden.handle(body)
        if reply[4] == Status.OK and body[4] == Command.RUN:
            # The golden model does not count cycles.
            assert reply[:9] == want[:9] and reply[9:] == struct.pack("<I", LAYER_CYCLES), body
        elif reply[4] == Status.OK and body[4] == Command.RUNS:
            # The layers' cycles, and the whole command's: each layer and its descriptor's
            # fetch and checks.
            assert reply[:9] == want[:9], body
            layers, elapsed = struct.unpack("<II", reply[9:])
            count = struct.unpack_from("<H", body, 7)[0]
            assert layers == count * LAYER_CYCLES
            assert count * (LAYER_CYCLES + 44) < elapsed < count * (LAYER_CYCLES + 60)
        else:
            assert reply == want[:-CRC_BYTES], (body.hex(), reply.hex(), want.hex())
    # The hardware started exactly the layers the golden device ran, with their fields.
    assert bench.started == golden.started
    if config.program_depth:
        assert sum(1 for body in bodies if body[4] == Command.RUNS) == 8
        # Slot 1 ran in RUNS (1, 2), (1, 3) and (1, 1); slot 2 in the first three.
        assert [sum(1 for d in golden.started if d.k_steps == k) for k in (3, 5)] == [3, 3]
    statuses = [reply[4] for reply in replies]
    assert replies[1][9:] == DeviceInfo.of(config).pack()
    assert statuses[:5] == [Status.SESSION, Status.OK, Status.LENGTH, Status.RANGE, Status.OK]
    assert statuses[-5:] == [Status.CRC, Status.STALE, Status.STALE, Status.OK, Status.OK]
    assert replies[-1][5:9] == (0xABCDEF01).to_bytes(4, "little")


def test_a_frame_longer_than_the_buffer_gets_length():
    bench = Bench(DENSE)
    long_write = write(Space.ACT, 0, np.zeros((40, DENSE.cols)), seq=2)
    replies = bench.run([open_frame(), long_write, frame(3, Command.INFO)], overflow={1})
    assert [reply[4] for reply in replies] == [Status.OK, Status.LENGTH, Status.OK]
    assert bench.commits == []


def test_commits_reach_memories_and_tables():
    bench = Bench(TABLES, stall=0.0)
    rng = np.random.default_rng(5)
    words = rng.integers(0, 256, (3, TABLES.cols))
    records = layouts.pack_requant([1, -2, 3], [100, 200, 300], [0, -1, 1], [4, 5, 6], [1, 0, 1])
    bench.run(renumber([
        open_frame(),
        write(Space.ACT, encode_address(Space.ACT, TABLES, bank=2, word=5), words),
        write(Space.REQUANT, encode_address(Space.REQUANT, TABLES, group=3), records),
        write(Space.THRESHOLD, encode_address(Space.THRESHOLD, TABLES, group=1, lane=1,
                                              index=2), np.array([[0xFE, 0xFF, 0xFF, 0xFF]]))]))
    assert bench.commits == [("act", 2, 5 + i, words[i].tolist()) for i in range(3)]
    requant = [p for name, p in bench.cfg if name == "cfg_requant"]
    fields = layouts.unpack_requant(records)
    assert [(p.group, p.lane) for p in requant] == [(3, 0), (3, 1), (3, 2)]
    assert [p.param.bias for p in requant] == fields["bias"].tolist()
    assert [p.param.shift for p in requant] == fields["shift"].tolist()
    threshold = [p for name, p in bench.cfg if name == "cfg_threshold"]
    assert [(p.group, p.lane, p.index, p.value) for p in threshold] == [(1, 1, 2, -2)]


def test_add_table_entries_reach_the_core():
    assert DENSE.depthwise
    bench = Bench(DENSE, stall=0.0)
    entries = np.array([[0xFE, 0xFF, 0xFF, 0xFF], [0x78, 0x56, 0x34, 0x12]])
    address = encode_address(Space.ADD_TABLE, DENSE, table=2, input=1, code=255)
    replies = bench.run(renumber([open_frame(), write(Space.ADD_TABLE, address, entries)]))
    assert [reply[4] for reply in replies] == [Status.OK, Status.OK]
    add = [p for name, p in bench.cfg if name == "cfg_add"]
    # Entry 1535, then 1536: the next table's first.
    assert [(p.table, p.input, p.code, p.value) for p in add] == [(2, 1, 255, -2),
                                                                  (3, 0, 0, 0x12345678)]
    assert all(name == "cfg_add" for name, _ in bench.cfg)
