"""UART receiver and transmitter in Amaranth's simulator: exact bit timing, byte round trips
with random gaps, bit-rate tolerance, glitches, framing errors and overruns."""

import random

import pytest
from amaranth.hdl import Module
from amaranth.sim import Simulator

from sparqforge.hw.uart import UartRx, UartTx


def _frame_bits(byte):
    """The 8N1 levels of one character: start, eight data bits LSB first, stop."""
    return [0] + [(byte >> i) & 1 for i in range(8)] + [1]


def _line_segments(data, period, rng, *, gaps=True, stop=1):
    """(level, cycles) segments of the serial line carrying ``data`` at ``period`` cycles
    per bit (a float: bit edges fall at rounded multiples), with random idle gaps."""
    segments = []
    for byte in data:
        if gaps and rng.random() < 0.5:
            segments.append((1, rng.randrange(1, int(3 * period))))
        bits = _frame_bits(byte)
        bits[-1] = stop
        edges = [round(i * period) for i in range(len(bits) + 1)]
        segments += [(bit, edges[i + 1] - edges[i]) for i, bit in enumerate(bits)]
        if stop == 0:
            segments.append((1, int(2 * period)))
    segments.append((1, int(2 * period)))
    return segments


def _decode_line(levels, divisor):
    """Decode a recorded TX waveform (one level per cycle), checking that every bit lasts
    exactly ``divisor`` cycles (the stop bit at least that long); returns the bytes."""
    out = []
    i = 0
    while i < len(levels):
        if levels[i] == 1:
            i += 1
            continue
        bits = []
        for b in range(10):
            chunk = levels[i + b * divisor:i + (b + 1) * divisor]
            if len(chunk) < divisor or len(set(chunk)) != 1:
                raise AssertionError(f"bit {b} of the character at cycle {i} is not "
                                     f"{divisor} cycles of one level: {chunk}")
            bits.append(chunk[0])
        assert bits[0] == 0 and bits[9] == 1, bits
        out.append(sum(bit << k for k, bit in enumerate(bits[1:9])))
        i += 9 * divisor  # to the stop bit: the next start bit may follow it directly
    return bytes(out)


def _run_rx(divisor, segments, *, ready=lambda cycle: True, budget=None):
    rx = UartRx(divisor)
    got, errors, overruns = [], [], []

    async def drive(ctx):
        for level, cycles in segments:
            ctx.set(rx.rx, level)
            await ctx.tick().repeat(cycles)

    async def watch(ctx):
        cycle = 0
        async for clk_edge, rst, valid, payload, error, overrun in ctx.tick().sample(
                rx.o.valid, rx.o.payload, rx.error, rx.overrun):
            if valid and ready(cycle - 1):
                got.append(payload)
            errors.extend([cycle] if error else [])
            overruns.extend([cycle] if overrun else [])
            ctx.set(rx.o.ready, ready(cycle))
            cycle += 1

    sim = Simulator(rx)
    sim.add_clock(1e-8)
    sim.add_testbench(watch, background=True)
    sim.add_testbench(drive)
    sim.run()
    return bytes(got), errors, overruns


def _byte_source(tx, data, rng, *, gap_chance, max_gap):
    """A testbench offering ``data`` to ``tx.i`` one byte at a time, idle for a random
    1 .. max_gap - 1 cycles before a byte with probability ``gap_chance``."""
    async def source(ctx):
        for byte in data:
            if rng.random() < gap_chance:
                await ctx.tick().repeat(rng.randrange(1, max_gap))
            ctx.set(tx.i.valid, 1)
            ctx.set(tx.i.payload, byte)
            await ctx.tick().until(tx.i.ready)
            ctx.set(tx.i.valid, 0)
    return source


@pytest.mark.parametrize("divisor", [4, 5, 16, 17])
def test_tx_bit_timing_and_bytes(divisor):
    rng = random.Random(divisor)
    data = bytes([0x00, 0xFF, 0x55, 0xAA]) + bytes(rng.randrange(256) for _ in range(12))
    tx = UartTx(divisor)
    levels = []

    source = _byte_source(tx, data, rng, gap_chance=0.4, max_gap=3 * divisor)

    async def record(ctx):
        async for _, _, level in ctx.tick().sample(tx.tx):
            levels.append(level)

    sim = Simulator(tx)
    sim.add_clock(1e-8)
    sim.add_testbench(record, background=True)
    sim.add_testbench(source)
    sim.run_until(1e-8 * (len(data) * 13 * divisor + 20 * divisor))
    assert levels[0] == 1                    # idle high from reset
    assert _decode_line(levels, divisor) == data


def test_tx_back_to_back_leaves_no_gap():
    divisor = 6
    tx = UartTx(divisor)
    levels = []

    async def source(ctx):
        ctx.set(tx.i.valid, 1)
        for byte in (0x00, 0x00):
            ctx.set(tx.i.payload, byte)
            await ctx.tick().until(tx.i.ready)
        ctx.set(tx.i.valid, 0)

    async def record(ctx):
        async for _, _, level in ctx.tick().sample(tx.tx):
            levels.append(level)

    sim = Simulator(tx)
    sim.add_clock(1e-8)
    sim.add_testbench(record, background=True)
    sim.add_testbench(source)
    sim.run_until(1e-8 * 30 * divisor)
    start = levels.index(0)
    # 0x00: nine low bits, one high stop bit, then the next start bit at once.
    character = [0] * 9 * divisor + [1] * divisor
    assert levels[start:start + 20 * divisor] == character * 2


def test_line_decoder_catches_a_perturbed_waveform():
    divisor = 4
    levels = [1] * 3 + sum(([b] * divisor for b in _frame_bits(0x5A)), []) + [1] * 8
    assert _decode_line(levels, divisor) == b"\x5a"
    levels[3 + 2 * divisor + 1] ^= 1           # one cycle of bit 1 flipped
    with pytest.raises(AssertionError):
        _decode_line(levels, divisor)


# (33, 100 / 3 / 33): an FTDI bridge's exact 3 Mbaud seen by a 100 MHz board (the ULX3S and
# Xilinx references); (12, 1.0): 1 Mbaud at the iCEBreaker's 12 MHz.
@pytest.mark.parametrize("divisor,skew", [(4, 1.0), (16, 1.0), (16, 0.96), (16, 1.04),
                                          (7, 1.03), (33, 100 / 3 / 33), (12, 1.0)])
def test_rx_receives_bytes_with_random_gaps_and_rate_error(divisor, skew):
    rng = random.Random(divisor * 100 + int(skew * 100))
    data = bytes([0x00, 0xFF, 0xC0, 0xDB]) + bytes(rng.randrange(256) for _ in range(20))
    got, errors, overruns = _run_rx(divisor, _line_segments(data, divisor * skew, rng))
    assert got == data and not errors and not overruns


def test_rx_ignores_glitches_and_reports_framing_errors():
    divisor = 16
    rng = random.Random(1)
    segments = [(1, 20), (0, 5), (1, 40)]                    # shorter than half a bit
    segments += _line_segments(b"\x31", divisor, rng, gaps=False)
    segments += _line_segments(b"\x77", divisor, rng, gaps=False, stop=0)   # low stop bit
    segments += [(0, 12 * divisor), (1, 3 * divisor)]        # a break
    segments += _line_segments(b"\x42", divisor, rng, gaps=False)
    got, errors, overruns = _run_rx(divisor, segments)
    assert got == b"\x31\x42"
    assert len(errors) == 2 and not overruns


def test_rx_holds_a_byte_while_not_ready_and_drops_the_next():
    divisor = 8
    rng = random.Random(2)
    segments = _line_segments(b"\x11\x22", divisor, rng, gaps=False)
    stall_until = 25 * divisor
    got, errors, overruns = _run_rx(divisor, segments + [(1, 10 * divisor)],
                                    ready=lambda cycle: cycle >= stall_until)
    assert got == b"\x11" and len(overruns) == 1 and not errors


def test_tx_to_rx_round_trip_with_random_gaps_and_stalls():
    divisor = 5
    rng = random.Random(7)
    data = bytes(rng.randrange(256) for _ in range(40))
    m = Module()
    m.submodules.tx = tx = UartTx(divisor)
    m.submodules.rx = rx = UartRx(divisor)
    m.d.comb += rx.rx.eq(tx.tx)
    got = []

    source = _byte_source(tx, data, rng, gap_chance=0.5, max_gap=4 * divisor)

    async def sink(ctx):
        while len(got) < len(data):
            # Stalls shorter than a character never lose a byte.
            ctx.set(rx.o.ready, rng.random() < 0.3)
            _, _, valid, ready, payload, overrun = await ctx.tick().sample(
                rx.o.valid, rx.o.ready, rx.o.payload, rx.overrun)
            assert not overrun
            if valid and ready:
                got.append(payload)

    sim = Simulator(m)
    sim.add_clock(1e-8)
    sim.add_testbench(source, background=True)
    sim.add_testbench(sink)
    sim.run()
    assert bytes(got) == data


@pytest.mark.parametrize("block", [UartRx, UartTx])
@pytest.mark.parametrize("divisor", [3, 0, 8.0, True])
def test_divisor_is_checked(block, divisor):
    with pytest.raises(TypeError, match=r"UART divisor must be an integer of at least 4 "
                                        r"clock cycles per bit, not"):
        block(divisor)
