"""cocotb bench of PowerMacArray: codes, tables and thresholds (some exactly on the
accumulators the layer produces) against the golden model; each case runs two layers with
every table and threshold reloaded in between, with random valid/ready stalls."""

import cocotb
import numpy as np

from sparqforge.sim.cocotb_run import bench_config
from sparqforge.sim.cocotb_streams import check_cases
from sparqforge.sim.power_mac_array.schedule import power_expected, power_schedule


@cocotb.test()
async def power_mac_array_layers(dut):
    config = bench_config()
    params = config["params"]

    def make_case(case):
        layer = [np.array(case[key]) for key in ("a", "w", "act_table", "w_tables",
                                                  "thresholds")]
        schedule = power_schedule(params, *layer, mode=case["mode"])
        return schedule, power_expected(params, *layer)

    await check_cases(dut, config, make_case)
