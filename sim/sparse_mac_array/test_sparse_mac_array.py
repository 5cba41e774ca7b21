"""cocotb bench of SparseMacArray: each case runs an N:M layer in sparse mode and a dense
layer in dense mode back to back on the same instance, against the golden model, with
random valid/ready stalls on every stream."""

import cocotb
import numpy as np

from sparqforge.sim.cocotb_run import bench_config
from sparqforge.sim.cocotb_streams import check_cases
from sparqforge.sim.mac_array.schedule import chain, sparse_dense_schedule, sparse_schedule
from sparqforge.sw import golden, nm_format


@cocotb.test()
async def sparse_mac_array_layers(dut):
    config = bench_config()
    p = config["params"]
    n, m, rows, cols = p["n"], p["m"], p["rows"], p["cols"]
    types = dict(out_bits=p["out_bits"], out_signed=p["out_signed"], acc_bits=p["acc_bits"])

    def make_case(case):
        a, w = np.array(case["a"]), np.array(case["w"])
        requant = {k: np.array(v) for k, v in case["requant"].items()}
        a2, w2 = np.array(case["dense_a"]), np.array(case["dense_w"])
        requant2 = {k: np.array(v) for k, v in case["dense_requant"].items()}
        values, indices = nm_format.compress(w.T, n, m)
        offset = -(-w.shape[1] // cols)
        schedule = chain(
            sparse_schedule(rows, cols, n, m, a, values, indices, requant),
            sparse_dense_schedule(rows, cols, n, m, a2, w2, requant2, tag_offset=offset,
                                  filler=np.random.default_rng(len(case["name"]))))
        expected = [golden.sparse_mac_array(a, values, indices, n=n, m=m, **requant, **types),
                    golden.mac_array(a2, w2, **requant2, **types)]
        return schedule, expected

    await check_cases(dut, config, make_case)
