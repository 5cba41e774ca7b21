"""cocotb bench of MacArray: random and corner-case layers against the golden model, with
random valid/ready stalls on every stream. Run from pytest through ``sim.cocotb_run``."""

import cocotb
import numpy as np

from sparqforge.sim.cocotb_run import bench_config
from sparqforge.sim.cocotb_streams import check_cases
from sparqforge.sim.mac_array.schedule import dense_schedule
from sparqforge.sw import golden


@cocotb.test()
async def mac_array_layers(dut):
    config = bench_config()
    params = config["params"]

    def make_case(case):
        a, w = np.array(case["a"]), np.array(case["w"])
        requant = {k: np.array(v) for k, v in case["requant"].items()}
        schedule = dense_schedule(params["rows"], params["cols"], a, w, requant)
        expected = golden.mac_array(a, w, **requant, out_bits=params["out_bits"],
                                    out_signed=params["out_signed"],
                                    acc_bits=params["acc_bits"])
        return schedule, expected

    await check_cases(dut, config, make_case)
