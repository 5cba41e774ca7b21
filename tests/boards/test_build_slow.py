"""One complete open-tool build: a small accelerator on the ULX3S (ECP5) from RTL to a
bitstream with YoWASP yosys, nextpnr-ecp5 and ecppack (a few minutes on two cores).

    .venv/bin/python -m pytest tests/boards/test_build_slow.py -m slow
"""

from pathlib import Path

import pytest

from sparqforge.boards.build import build_board

pytestmark = pytest.mark.slow

# (64-word activation banks instead of 256 make YoWASP yosys 0.70 double-drive a
# flip-flop output in this configuration; see boards/build.py.)
SMALL = dict(rows=2, cols=2, act_depth=256, w_depth=256, groups=4, max_depth=256,
             frame_bytes=256, clk_freq=25e6, baud=115200)


@pytest.mark.parametrize("router", [None, "router2"])
def test_ulx3s_small_configuration_builds_to_a_bitstream(tmp_path, router):
    report = build_board("ulx3s-85f", SMALL, tmp_path / "ulx3s", router=router)
    assert report["stage"] == "bitstream"
    # The router nextpnr ran is the one asked for (router1 by default on the ULX3S).
    log = (tmp_path / "ulx3s" / "top.tim").read_text()
    if router == "router2":
        assert report["router"] == "router2" and "Running router2" in log
    else:
        assert report["router"] == "router1" and "Router1 time" in log
        assert "Running router2" not in log
    bitstream = Path(report["bitstream"])
    assert bitstream.is_file() and bitstream.stat().st_size > 100_000
    used, capacity = report["utilization"], report["capacity"]
    assert 0 < used["lut"] < capacity["lut"] and 0 < used["ff"] < capacity["ff"]
    assert 0 < used["dsp"] <= capacity["dsp"] and 0 < used["bram"] <= capacity["bram"]
    # 25 MHz straight from the oscillator: nextpnr's achieved fmax must clear it.
    assert report["timing_met"] and report["fmax_mhz"] >= 25
    assert report["utilization_source"] == "nextpnr-ecp5 (placed)"
