"""The accelerator's memories in Amaranth's simulator: host and layer writes, both read ports
(the layer's an address per bank), the documented read latency, and who owns the write
ports."""

import random

import numpy as np
from amaranth.sim import Simulator

from sparqforge.config import AcceleratorConfig
from sparqforge.hw.memories import Memories

#: Cycles from an address to its word (address register, block RAM, data register).
READ_LATENCY = 3


def test_writes_from_both_owners_and_reads_from_both_ports():
    config = AcceleratorConfig(rows=3, cols=4, act_depth=16, w_depth=32, groups=4,
                               sparsity=(2, 4))
    dut = Memories(config)
    rng = random.Random(1)
    act = np.zeros((config.rows, config.act_depth, config.cols), dtype=np.int64)
    weights = np.zeros(config.w_depth, dtype=object)
    seen = {}

    async def bench(ctx):
        # Host writes: one word, one bank, per cycle; the weight memory beside them.
        for _ in range(40):
            bank, word = rng.randrange(config.rows), rng.randrange(config.act_depth)
            value = [rng.randrange(256) for _ in range(config.cols)]
            w_addr, w_value = rng.randrange(config.w_depth), rng.getrandbits(config.weight_bits)
            ctx.set(dut.host_write.addr, word)
            ctx.set(dut.host_write.data, value)
            ctx.set(dut.host_write.en, 1 << bank)
            ctx.set(dut.weight_write.addr, w_addr)
            ctx.set(dut.weight_write.data, w_value)
            ctx.set(dut.weight_write.en, 1)
            act[bank, word] = value
            weights[w_addr] = w_value
            await ctx.tick()
        ctx.set(dut.host_write.en, 0)
        ctx.set(dut.weight_write.en, 0)
        # The layer owns the banks' write ports while ``layer_writing``: a host write offered
        # at the same time is ignored.
        ctx.set(dut.layer_writing, 1)
        for word in range(config.act_depth):
            value = [rng.randrange(256) for _ in range(config.cols)]
            ctx.set(dut.layer_write.addr, word)
            ctx.set(dut.layer_write.data, value)
            ctx.set(dut.layer_write.en, 0b101)
            ctx.set(dut.host_write.en, 0b010)
            ctx.set(dut.host_write.data, [0xEE] * config.cols)
            act[0, word] = act[2, word] = value
            await ctx.tick()
        ctx.set(dut.layer_writing, 0)
        ctx.set(dut.layer_write.en, 0)
        ctx.set(dut.host_write.en, 0)
        # A write takes effect a cycle after it is offered (registered write port).
        await ctx.tick()
        # Reads through the layer's port (each bank its own address) and, while
        # ``host_reading``, the host's; each word READ_LATENCY cycles after its address.
        addresses = [([rng.randrange(config.act_depth) for _ in range(config.rows)],
                      rng.randrange(config.act_depth), rng.randrange(2),
                      rng.randrange(config.w_depth)) for _ in range(30)]
        got = []
        for cycle in range(len(addresses) + READ_LATENCY):
            if cycle < len(addresses):
                layer, host, use_host, w_addr = addresses[cycle]
                ctx.set(dut.act_addr, layer)
                ctx.set(dut.host_read_addr, host)
                ctx.set(dut.host_reading, use_host)
                ctx.set(dut.weight_addr, w_addr)
            await ctx.tick()
            got.append(([[int(v) for v in bank] for bank in ctx.get(dut.act_data)],
                        ctx.get(dut.weight_data)))
        seen["reads"] = [([act[r, host if use_host else layer[r]].tolist()
                           for r in range(config.rows)], weights[w_addr])
                         for layer, host, use_host, w_addr in addresses]
        seen["got"] = got[READ_LATENCY - 1:READ_LATENCY - 1 + len(addresses)]

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert seen["got"] == seen["reads"]
