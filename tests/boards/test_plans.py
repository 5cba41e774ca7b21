"""Build plans for every board (no tools run): pins, clocks, reset, and the fixed gaps of
Amaranth's open Xilinx (Xray) flow."""

import dataclasses
import functools
import json
import re
from pathlib import Path

import pytest
from amaranth.build import Resource
from amaranth.vendor import XilinxPlatform

from sparqforge.boards.build import (ICE40_BLOCK_RAM, LUT_MULTIPLIERS, _prepare,
                                     critical_path, default_router, late_registers, board_plan,
                                     resolve_config)
from sparqforge.boards.catalog import BOARDS, get_board
from sparqforge.boards.config import load_config, make_soc
from sparqforge.boards.xray import XrayPlatform
from sparqforge.config import PRESETS
from sparqforge.errors import ConfigError
from sparqforge.hw.clocking import ecp5_pll_params
from sparqforge.hw.replica import KEEP_REPLICAS

# A small accelerator keeps elaboration quick; the plan's pins and scripts do not depend on it.
SMALL = dict(rows=2, cols=2, act_depth=64, w_depth=64, groups=4, max_depth=256,
             frame_bytes=256)

# (UART rx pin into the FPGA, tx pin out of it, oscillator pin): from each board's
# schematic / master constraints.
PINS = {
    "arty-a7-35": ("A9", "D10", "E3"),
    "arty-a7-100": ("A9", "D10", "E3"),
    "nexys4ddr": ("C4", "D4", "E3"),
    "basys3": ("B18", "A18", "W5"),
    "ulx3s-85f": ("M1", "L4", "G2"),
    "orangecrab-25f": ("N17", "M18", "A9"),
    "orangecrab-85f": ("N17", "M18", "A9"),
    "icebreaker": ("6", "9", "35"),
}
XRAY = {  # board: (chip database, prjxray part)
    "arty-a7-35": ("xc7a35tcsg324", "xc7a35tcsg324-1"),
    "arty-a7-100": ("xc7a100tcsg324", "xc7a100tcsg324-1"),
    "nexys4ddr": ("xc7a100tcsg324", "xc7a100tcsg324-1"),
    "basys3": ("xc7a35tcpg236", "xc7a35tcpg236-1"),
}


def _text(plan, name):
    data = plan.files[name]
    return data if isinstance(data, str) else data.decode()


def _constraints(plan, family):
    name = {"xilinx": "top.xdc", "ecp5": "top.lpf", "ice40": "top.pcf"}[family]
    return _text(plan, name)


def _pin_of(constraints, family, port):
    if family == "xilinx":
        found = re.search(r"set_property LOC (\S+) \[get_ports \{" + re.escape(port) + r"\}\]",
                          constraints)
    elif family == "ecp5":
        found = re.search(r'LOCATE COMP "' + re.escape(port) + r'" SITE "(\S+)";', constraints)
    else:
        found = re.search(r"set_io " + re.escape(port) + r" (\S+)", constraints)
    return found and found[1]


@functools.cache
def _plan(name):
    plan, platform, _ = board_plan(name, SMALL)
    return BOARDS[name], plan, platform


@pytest.mark.parametrize("name", sorted(BOARDS))
def test_plan_has_pins_clock_and_script(name):
    board, plan, platform = _plan(name)
    rx, tx, clk = PINS[board.name]
    constraints = _constraints(plan, board.family)
    assert _pin_of(constraints, board.family, "uart_0__rx__io") == rx
    assert _pin_of(constraints, board.family, "uart_0__tx__io") == tx
    clock_port = f"{platform.default_clk}_0__io"
    assert _pin_of(constraints, board.family, clock_port) == clk
    script = _text(plan, "build_top.sh")
    assert "$YOSYS" in script
    # Each LED the Soc drives has a pin.
    for spec in board.leds:
        if spec is not None:
            port = "_".join(f"{part}_" if i == 1 else part
                            for i, part in enumerate(map(str, spec[:2])))
            assert any(port in line for line in constraints.splitlines()), port


@pytest.mark.parametrize("name", sorted(XRAY))
def test_xilinx_plan_fixes_the_xray_gaps(name):
    board, plan, platform = _plan(name)
    chipdb, part = XRAY[board.name]
    script = _text(plan, "build_top.sh")
    xdc = _text(plan, "top.xdc")
    assert "-nobram" not in script
    assert "synth_xilinx -flatten -abc9 -family xc7" in script
    # Replica registers are kept apart; ``$`` is escaped inside the shell's double quotes.
    assert f"proc; {KEEP_REPLICAS.replace('$', chr(92) + '$')}; synth_xilinx" in script
    assert f"--chipdb $CHIPDB_DIR/{chipdb}.bin" in script
    assert f"--part {part} --db-root $DB_DIR/artix7" in script
    assert f"$DB_DIR/artix7/{part}/part.yaml" in script
    assert "\\[" not in xdc and "\\]" not in xdc
    # Every constrained port has a LOC, also those without other attributes.
    ports = set(re.findall(r"\[get_ports \{([^}]*)\}\]", xdc))
    located = set(re.findall(r"set_property LOC \S+ \[get_ports \{([^}]*)\}\]", xdc))
    assert ports and ports == located
    clock = f"{platform.default_clk}_0__io"
    assert f"create_clock -period 10.000 [get_ports {{{clock}}}]" in xdc


@pytest.mark.parametrize("name", sorted(set(BOARDS) - set(XRAY)))
def test_lattice_plans_report_and_skip_unavailable_steps(name):
    board, plan, platform = _plan(name)
    script = _text(plan, "build_top.sh")
    assert "--report top.report.json --detailed-timing-report" in script
    if board.family == "ecp5":
        assert f"--router {default_router(board)}" in script and "--tmg-ripup" not in script
    else:
        assert ICE40_BLOCK_RAM in _text(plan, "top.ys")
    assert "dfu-suffix" not in script          # OrangeCrab: not installable here
    assert "tee -q -o top.stat.json stat -json" in _text(plan, "top.ys")
    assert KEEP_REPLICAS in _text(plan, "top.ys")


def test_basys3_resources_follow_the_master_xdc():
    platform = get_board("basys3").platform()
    assert (platform.device, platform.package, platform.speed) == ("xc7a35t", "cpg236", "1")
    pins = {(r.name, r.number): r.ios[0].names for r in platform.resources.values()
            if isinstance(r, Resource) and r.ios and hasattr(r.ios[0], "names")}
    assert [pins[("led", i)][0] for i in range(4)] == ["U16", "E19", "U19", "V19"]
    assert pins[("clk100", 0)] == ["W5"]


def test_xray_family_map_and_part_names():
    class Spartan7(XrayPlatform, XilinxPlatform):
        device, package, speed = "xc7s50", "csga324", "1"
        resources, connectors = [], []

    class Kintex7(XrayPlatform, XilinxPlatform):
        device, package, speed = "xc7k325t", "ffg900", "2"
        resources, connectors = [], []

    assert (Spartan7()._xray_family, Spartan7()._xray_device) == ("spartan7", "xc7s50csga324")
    assert (Kintex7()._xray_family, Kintex7()._xray_part) == ("kintex7", "xc7k325tffg900-2")


@pytest.mark.parametrize("name, router", [("ulx3s-85f", "router1"), ("ulx3s-85f", "router2"),
                                          ("icebreaker", "router2")])
def test_router_choice_reaches_nextpnr_and_the_report(name, router, tmp_path):
    board = get_board(name)
    _, default, _ = _plan(name)
    # Without a choice: router1 on the ULX3S, nextpnr's own (router1, not named) on iCE40.
    script = _text(default, "build_top.sh")
    assert script.count("--router router1") == (name == "ulx3s-85f")
    assert "--router router2" not in script
    plan, _, _ = board_plan(name, SMALL, seed=5, router=router)
    line = next(l for l in _text(plan, "build_top.sh").splitlines() if "--log top.tim" in l)
    assert line.count("--router") == 1 and f"--router {router} --seed 5" in line
    *_, report = _prepare(name, SMALL, tmp_path / "plan", router=router)
    assert report["router"] == router
    *_, report = _prepare(name, SMALL, tmp_path / "plan")
    assert report["router"] == "router1"
    # The other ECP5 boards keep router2.
    _, default, _ = _plan("orangecrab-85f")
    assert _text(default, "build_top.sh").count("--router router2") == 1


def test_ulx3s_pll_makes_the_requested_clock():
    plan, platform, top = board_plan("ulx3s-85f", {**SMALL, "clk_freq": 100e6})
    rtlil = _text(plan, "top.il")
    assert "EHXPLLL" in rtlil
    for name, value in (("CLKI_DIV", 1), ("CLKFB_DIV", 4), ("CLKOP_DIV", 6)):
        assert re.search(rf"parameter \\{name} {value}\b", rtlil), name
    assert 'attribute \\FREQUENCY_PIN_CLKOP "100.000000"' in rtlil
    # nextpnr derives the PLL output's constraint from the oscillator's.
    assert 'FREQUENCY PORT "clk25_0__io" 25000000.0 HZ;' in _text(plan, "top.lpf")
    assert top.soc.clk_freq == 100e6 and top.soc.divisor == 868


def test_ecp5_reset_reaches_the_registers_through_a_global_buffer():
    # The synchronized reset drives a DCCA whose output is the clocking block's reset port
    # (the ``sync`` domain's reset). iCE40 boards keep Amaranth's reset synchronizer.
    plan, _, _ = board_plan("ulx3s-85f", {**SMALL, "clk_freq": 100e6})
    rtlil = _text(plan, "top.il")
    assert len(re.findall(r"cell \\DCCA ", rtlil)) == 1
    module = rtlil[rtlil.rindex("\nmodule ", 0, rtlil.index("cell \\DCCA ")):]
    assert module.startswith("\nmodule \\top.clock\n")
    cell = re.search(r"cell \\DCCA .*?\n  end", module, re.S).group(0)
    assert "connect \\CLKO \\rst\n" in cell and "connect \\CLKI \\reset" in cell
    plan, _, _ = board_plan("icebreaker", {"rows": 1, "cols": 1})
    assert "DCCA" not in _text(plan, "top.il")


def test_ecp5_pll_parameters():
    p = ecp5_pll_params(48e6, 96e6)
    assert p.f_out == 96e6 and 400e6 <= p.f_vco <= 800e6
    with pytest.raises(ValueError, match="The ECP5 PLL cannot make 0.001 MHz"):
        ecp5_pll_params(25e6, 1e3)


@pytest.mark.parametrize("name", sorted(BOARDS))
def test_reference_configuration_is_valid(name):
    board = BOARDS[name]
    config = resolve_config(name)
    soc = make_soc(config, clk_freq=config.clk_freq)
    assert soc.clk_freq == board.config.clk_freq
    assert abs(soc.clk_freq / soc.divisor / soc.baud - 1) < 0.02


EXAMPLES = Path(__file__).parents[2] / "examples" / "boards"
# docs/boards.md builds these with `sparqforge build --board ulx3s-85f --config FILE`.
EXAMPLE_FIELDS = {
    **{f"ulx3s-85f-packed-{n}x{n}.json": dict(rows=n, cols=n, packed_products=True, conv=True)
       for n in (8, 10, 12, 14)},
    # The board's reference (the convolution walk on), as the walk builds were made, and
    # the reference before it held the walk.
    "ulx3s-85f-walk.json": dict(rows=8, cols=8, packed_products=False, conv=True),
    "ulx3s-85f-no-walk.json": dict(rows=8, cols=8, packed_products=False, conv=False),
    # The networks preset's accelerator (the models bench's) as a board system at 75 MHz.
    "ulx3s-85f-networks-75mhz.json": dict(rows=8, cols=8, act_depth=4096, w_depth=10752,
                                          program_depth=64, conv=True),
}


def test_example_board_configurations_resolve():
    assert {path.name for path in EXAMPLES.glob("*.json")} == set(EXAMPLE_FIELDS)
    reference = resolve_config("ulx3s-85f")
    for name, fields in EXAMPLE_FIELDS.items():
        config = resolve_config("ulx3s-85f", EXAMPLES / name)
        accel = config.accelerator
        assert {key: getattr(accel, key) for key in fields} == fields, name
        assert config.mac_multipliers == "lut", name
        assert config.clk_freq == (75e6 if "75mhz" in name else 100e6), name
    walk = resolve_config("ulx3s-85f", EXAMPLES / "ulx3s-85f-walk.json")
    assert walk == reference
    networks = resolve_config("ulx3s-85f", EXAMPLES / "ulx3s-85f-networks-75mhz.json")
    assert networks.accelerator == PRESETS["networks"] and networks.baud == reference.baud
    before = resolve_config("ulx3s-85f", EXAMPLES / "ulx3s-85f-no-walk.json")
    assert before == dataclasses.replace(
        reference, accelerator=dataclasses.replace(reference.accelerator, conv=False))


def test_config_files_and_their_errors(tmp_path):
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"rows": 4, "cols": 4, "sparsity": [2, 4], "clk_freq": 50e6,
                                "baud": 115200}))
    assert load_config(good).accelerator.sparsity == (2, 4)
    bad_key = tmp_path / "bad_key.json"
    bad_key.write_text(json.dumps({"rows": 4, "colums": 4}))
    with pytest.raises(ConfigError, match=r"unknown keys \['colums'\]"):
        load_config(bad_key)
    broken = tmp_path / "broken.json"
    broken.write_text("{rows: 4")
    with pytest.raises(ConfigError, match="is not JSON"):
        load_config(broken)
    with pytest.raises(ConfigError, match="Cannot read the configuration"):
        load_config(tmp_path / "missing.json")
    with pytest.raises(ConfigError, match="set clk_freq to 1.2e\\+07, not 2.4e\\+07"):
        board_plan("icebreaker", {**SMALL, "clk_freq": 24e6})
    with pytest.raises(ConfigError, match="act_depth .words per activation bank. must be a "
                                           "power of two, not 100"):
        resolve_config("icebreaker", {"act_depth": 100})
    with pytest.raises(ConfigError, match="Unknown board 'arty'; choose one of"):
        get_board("arty")


def test_lut_multipliers_option():
    dsp, _, _ = board_plan("ulx3s-85f", SMALL)
    lut, _, _ = board_plan("ulx3s-85f", {**SMALL, "mac_multipliers": "lut"})
    assert "booth" not in _text(dsp, "top.ys")
    assert f"{LUT_MULTIPLIERS}; {KEEP_REPLICAS}" in _text(lut, "top.ys")
    with pytest.raises(ConfigError, match="mac_multipliers must be \"dsp\" or \"lut\", not "
                                           "'dsps'"):
        resolve_config("ulx3s-85f", {"mac_multipliers": "dsps"})
    with pytest.raises(ConfigError, match="mac_multipliers \"lut\" is for the ECP5 and iCE40"):
        resolve_config("arty-a7-35", {"mac_multipliers": "lut"})


def test_lut_multipliers_command_maps_only_small_multipliers():
    # yosys: the MAC array's 8 x 8 products leave the DSP blocks, the requantizer's 16 x 16
    # ones stay; a product by a power of two becomes a shift, not a Booth multiplier.
    from sparqforge.boards.synth import ECP5_GROUPS, count_cells, run_yosys
    from sparqforge.hw.emit import to_rtlil
    from sparqforge.hw.mac_array import MacArray

    # Unsigned activations: 9 x 8-bit signed products.
    rtlil = to_rtlil(MacArray(rows=2, cols=2, a_signed=False, max_depth=64), "t")
    counts = {}
    for name, before in (("dsp", ""), ("lut", f"{LUT_MULTIPLIERS}; ")):
        out = run_yosys(f"read_rtlil t.il; {before}synth_ecp5 -noiopad -top t; "
                        f"tee -q -o stat.json stat -json", {"t.il": rtlil})
        counts[name] = count_cells(json.loads(out["stat.json"]), ECP5_GROUPS)
    assert counts["dsp"]["mult18"] == 4 + 2 * 4
    assert counts["lut"]["mult18"] == 2 * 4
    assert counts["lut"]["lut4"] > counts["dsp"]["lut4"] + 4 * 100


def test_critical_path_summary_from_a_nextpnr_report():
    def step(kind, delay, src, dst):
        return {"type": kind, "delay": delay, "from": {"cell": src}, "to": {"cell": dst}}

    report = {"critical_paths": [
        {"from": "<async>", "to": "posedge clk", "path": [step("routing", 30.0, "pin", "ff")]},
        {"from": "posedge clk", "to": "posedge clk", "path": [
            step("clk-to-q", 0.5, "a", "a"), step("routing", 2.0, "a", "lut"),
            step("logic", 0.4, "lut", "lut"), step("logic", 0.07, "lut", "lut"),
            step("routing", 1.5, "lut", "b"), step("setup", 0.3, "b", "b")]},
    ]}
    assert critical_path(report) == {"delay_ns": 4.77, "routing_ns": 3.5, "levels": 1,
                                      "from": "a", "to": "b"}
    assert critical_path({"critical_paths": []}) is None


def test_late_registers_group_a_registers_inputs_and_count_the_late_ones():
    def net(name, *ends):
        return {"net": name, "endpoints": [{"cell": cell, "port": "DI", "delay": [0.1, t]}
                                           for cell, t in ends]}

    report = {"detailed_net_timings": [
        net("a_n0", ("soc.acc_3_TRELLIS_FF_Q", 9.0), ("soc.acc_3_TRELLIS_FF_Q_7", 10.5)),
        net("a_n1", ("soc.acc_3_TRELLIS_FF_Q_8", 10.2)),
        net("b_n", ("soc.bank.0.1$RAMW_SLICE", 11.0)),
        net("c_n", ("soc.flag_TRELLIS_FF_Q", 2.0)),
    ]}
    late = late_registers(report, 10.0, count=2)
    assert late == [
        {"register": "soc.bank", "arrival_ns": 11.0, "late_inputs": 1, "net": "b_n"},
        {"register": "soc.acc_3", "arrival_ns": 10.5, "late_inputs": 2, "net": "a_n0"},
    ]
    assert late_registers({"critical_paths": []}, 10.0) is None
