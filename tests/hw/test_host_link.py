"""Host link framing in Amaranth's simulator against the Python protocol implementation."""

import random
import zlib

from amaranth.sim import Simulator

from sparqforge.hw.host_link import FrameReceiver, FrameTransmitter, ReplyQueue
from sparqforge.protocol import CRC_RESIDUE, SlipDecoder, frame, slip_encode


def test_receiver_decodes_frames_and_checks_crc():
    rx = FrameReceiver(size=64, header_bytes=12)
    good = frame(7, 2, bytes([0xC0, 0xDB, 1, 2, 0xC0]))
    bad = bytearray(good)
    bad[3] ^= 0x10
    short = frame(9, 1, b"")
    stream = (slip_encode(good) + b"\xc0\xc0" + slip_encode(bytes(bad))
              + slip_encode(bytes(range(100))) + slip_encode(short))
    seen = []

    async def feed(ctx):
        for byte in stream:
            ctx.set(rx.rx.valid, 1)
            ctx.set(rx.rx.payload, byte)
            await ctx.tick().until(rx.rx.ready)
        ctx.set(rx.rx.valid, 0)

    async def executor(ctx):
        for _ in range(4):
            await ctx.tick().until(rx.frame.done)
            length, ok, overflow = ctx.get(rx.frame.length), ctx.get(rx.frame.ok), ctx.get(rx.frame.overflow)
            header = bytes(ctx.get(rx.frame.header))
            content = []
            for addr in range(64):
                ctx.set(rx.frame.addr, addr)
                await ctx.tick()
                content.append(ctx.get(rx.frame.rdata))
            # The header registers hold what the buffer holds, past a short frame's end too.
            assert header == bytes(content[:12])
            seen.append((bytes(content[:min(length, 64)]), ok, overflow))
            ctx.set(rx.frame.release, 1)
            await ctx.tick()
            ctx.set(rx.frame.release, 0)

    sim = Simulator(rx)
    sim.add_clock(1e-8)
    sim.add_testbench(feed, background=True)
    sim.add_testbench(executor)
    sim.run()
    assert seen[0] == (good, 1, 0)
    assert seen[1][0] == bytes(bad) and seen[1][1] == 0
    assert seen[2][2] == 1 and seen[2][0] == bytes(range(64))
    assert seen[3] == (short, 1, 0) and len(short) < 12


def test_transmitter_frames_bytes_with_crc_and_escapes():
    tx = FrameTransmitter()
    rng = random.Random(3)
    payloads = [bytes([5, 0, 0xC0, 0xDB]), bytes(rng.randrange(256) for _ in range(40)),
                bytes([1, 0xDB])]
    received = bytearray()

    async def source(ctx):
        for payload in payloads:
            for index, byte in enumerate(payload):
                ctx.set(tx.i.valid, 1)
                ctx.set(tx.i.payload, {"data": byte, "last": int(index == len(payload) - 1)})
                await ctx.tick().until(tx.i.ready)
            ctx.set(tx.i.valid, 0)

    async def monitor(ctx):
        decoder = SlipDecoder()
        count = 0
        while count < len(payloads):
            ready = rng.random() < 0.7
            ctx.set(tx.tx.ready, ready)
            _, _, byte, valid = await ctx.tick().sample(tx.tx.payload, tx.tx.valid)
            if valid and ready:
                received.append(byte)
                count += len(decoder.feed(bytes([byte])))

    sim = Simulator(tx)
    sim.add_clock(1e-8)
    sim.add_testbench(source, background=True)
    sim.add_testbench(monitor)
    sim.run()
    frames = SlipDecoder().feed(bytes(received))
    assert [f[:-4] for f in frames] == payloads
    assert all(zlib.crc32(f) == CRC_RESIDUE for f in frames)
    assert received[0] == 0xC0 and received[-1] == 0xC0


def test_reply_queue_keeps_every_byte_in_order_under_stalls():
    queue = ReplyQueue()
    rng = random.Random(7)
    sent = [(rng.randrange(256), int(rng.random() < 0.2)) for _ in range(300)]
    received = []

    async def source(ctx):
        for byte, last in sent:
            while rng.random() < 0.3:
                await ctx.tick()
            ctx.set(queue.i.valid, 1)
            ctx.set(queue.i.payload, {"data": byte, "last": last})
            await ctx.tick().until(queue.i.ready)
            ctx.set(queue.i.valid, 0)

    async def sink(ctx):
        while len(received) < len(sent):
            ready = rng.random() < 0.5
            ctx.set(queue.o.ready, ready)
            _, _, valid, payload = await ctx.tick().sample(queue.o.valid, queue.o.payload)
            if valid and ready:
                received.append((payload.data, payload.last))
        ctx.set(queue.o.ready, 0)
        await ctx.tick().repeat(3)
        assert ctx.get(queue.empty) and not ctx.get(queue.o.valid)

    sim = Simulator(queue)
    sim.add_clock(1e-8)
    sim.add_testbench(source, background=True)
    sim.add_testbench(sink)
    sim.run()
    assert received == sent
