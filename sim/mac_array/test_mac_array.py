"""cocotb bench of MacArray: random and corner-case layers against the golden model, with
random valid/ready stalls on every stream. Run from pytest through ``sim.cocotb_run``."""

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles

from sparqforge.sim.check import compare
from sparqforge.sim.cocotb_run import bench_config
from sparqforge.sim.cocotb_streams import StreamBench
from sparqforge.sim.mac_array.schedule import dense_schedule
from sparqforge.sim.ports import beats_to_ints, ints_to_beats, pack, unpack
from sparqforge.sw import golden


async def reset(dut):
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    dut.rst.value = 1
    await ClockCycles(dut.clk, 3)
    dut.rst.value = 0


def expected_layer(params, case):
    a, w = np.array(case["a"]), np.array(case["w"])
    return golden.mac_array(a, w, **{k: np.array(v) for k, v in case["requant"].items()},
                            out_bits=params["out_bits"], out_signed=params["out_signed"],
                            acc_bits=params["acc_bits"])


@cocotb.test()
async def mac_array_layers(dut):
    config = bench_config()
    desc, params = config["desc"], config["params"]
    await reset(dut)
    failures = []
    for number, case in enumerate(config["cases"]):
        a, w = np.array(case["a"]), np.array(case["w"])
        schedule = dense_schedule(params["rows"], params["cols"], a, w,
                                  {k: np.array(v) for k, v in case["requant"].items()})
        inputs = {name: beats_to_ints(pack(desc["ports"][name], fields, schedule.counts[name]))
                  for name, fields in schedule.inputs.items()}
        bench = StreamBench(dut, desc, inputs, {"o": schedule.out_beats},
                            stall=config["stall"], phases=schedule.phases, seed=number + 1)
        outputs = await bench.run()
        words = ints_to_beats(outputs["o"], desc["ports"]["o"]["width"])
        got = schedule.assemble(unpack(desc["ports"]["o"], words))
        if config.get("perturb"):
            got[0, 0] += 1
        result = compare(expected_layer(params, case), got)
        dut._log.info(f"{case['name']}: {result} in {bench.cycles} cycles")
        if result:
            failures.append(f"{case['name']}: {result}")
    assert not failures, "; ".join(failures)
