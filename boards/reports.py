"""Reading the tools' reports: yosys' cell counts and nextpnr's JSON report (utilization,
achieved fmax, the critical path and the latest-arriving registers), for
:mod:`sparqforge.boards.build`. Every figure is read from a tool's output, none estimated.
"""

__all__ = ["cells_from_stat", "xilinx_utilization", "lattice_utilization",
           "lattice_synth_utilization", "summary", "critical_path", "late_registers", "fmax",
           "fmax_from_log"]

import json
import re
from pathlib import Path

#: Device capacities for the synthesis-only (Xilinx) reports, from the 7-series data
#: sheets: LUTs, flip-flops, DSP48E1 slices, RAMB36 blocks.
_XILINX_CAPACITY = {
    "xc7a35t": {"lut": 20800, "ff": 41600, "dsp": 90, "bram": 50},
    "xc7a100t": {"lut": 63400, "ff": 126800, "dsp": 240, "bram": 135},
}
def cells_from_stat(stat_path):
    stat = json.loads(Path(stat_path).read_text())
    design = stat.get("design", stat)
    return {name: int(count) for name, count in design.get("num_cells_by_type", {}).items()}


def _sum(cells, *prefixes):
    return sum(count for name, count in cells.items() if name.startswith(prefixes))


def xilinx_utilization(cells, device):
    device = device[:-1] if device.endswith("i") else device
    used = {"lut": _sum(cells, "LUT"), "ff": _sum(cells, "FDRE", "FDSE", "FDCE", "FDPE"),
            "dsp": _sum(cells, "DSP48E1"),
            # RAMB36 equivalents: two RAMB18 fill one RAMB36 site.
            "bram": _sum(cells, "RAMB36E1") + _sum(cells, "RAMB18E1") / 2,
            "lutram": _sum(cells, "RAM32M", "RAM64M", "RAM32X1", "RAM64X1", "RAM128X1",
                           "RAM256X1"),
            "carry4": _sum(cells, "CARRY4")}
    return used, _XILINX_CAPACITY.get(device, {})


def lattice_utilization(board, cells, report):
    util = report.get("utilization", {})

    def used(bel):
        return int(util.get(bel, {}).get("used", 0))

    def available(bel):
        return int(util.get(bel, {}).get("available", 0))

    if board.family == "ecp5":
        bels = {"lut": "TRELLIS_COMB", "ff": "TRELLIS_FF", "dsp": "MULT18X18D",
                "bram": "DP16KD"}
        result = {key: used(bel) for key, bel in bels.items()}
        capacity = {key: available(bel) for key, bel in bels.items()}
        # TRELLIS_COMB counts LUT4 sites, carry logic included; yosys' LUT4 count is the
        # logic alone.
        result["lut4_synth"] = _sum(cells, "LUT4")
    else:
        bels = {"lut": "ICESTORM_LC", "dsp": "ICESTORM_DSP", "bram": "ICESTORM_RAM",
                "spram": "ICESTORM_SPRAM"}
        result = {key: used(bel) for key, bel in bels.items()}
        capacity = {key: available(bel) for key, bel in bels.items()}
        # An iCE40 logic cell holds a LUT4 and a flip-flop; nextpnr counts cells.
        result["ff"] = _sum(cells, "SB_DFF")
        result["lut4_synth"] = _sum(cells, "SB_LUT4")
    return result, capacity


def lattice_synth_utilization(board, cells):
    """Cell counts of a Lattice netlist before placement, in the units nextpnr reports."""
    if board.family == "ecp5":
        # A CCU2C carry cell occupies two LUT4 sites (nextpnr's TRELLIS_COMB).
        return {"lut": _sum(cells, "LUT4") + 2 * _sum(cells, "CCU2C"),
                "ff": _sum(cells, "TRELLIS_FF"), "dsp": _sum(cells, "MULT18X18D"),
                "bram": _sum(cells, "DP16KD"), "lutram": _sum(cells, "TRELLIS_DPR16X4")}
    return {"lut": _sum(cells, "SB_LUT4"), "ff": _sum(cells, "SB_DFF"),
            "dsp": _sum(cells, "SB_MAC16"), "bram": _sum(cells, "SB_RAM40_4K"),
            "spram": _sum(cells, "SB_SPRAM256KA")}


def summary(report):
    """Two lines for a person: the report's message, then the resources used (of the
    device's, where known) and the fmax."""
    lines = [report["message"]]
    used, capacity = report.get("utilization"), report.get("capacity") or {}
    if used:
        line = ", ".join(f"{key.upper()} {used[key]:g}"
                         + (f"/{capacity[key]:g}" if capacity.get(key) else "")
                         for key in ("lut", "ff", "dsp", "bram") if key in used)
        lines.append(f"  {line} ({report['utilization_source']})")
    path = report.get("critical_path")
    if path:
        lines.append(f"  critical path {path['delay_ns']} ns ({path['routing_ns']} ns routing, "
                     f"{path['levels']} logic levels): {path['from']} -> {path['to']}")
    late = report.get("late_registers")
    if late:
        lines.append("  latest register inputs: " + ", ".join(
            f"{entry['register']} {entry['arrival_ns']} ns" for entry in late[:3]))
    return "\n".join(lines)


def critical_path(report):
    """The slowest register-to-register path in a nextpnr report: its delay (ns), how much
    of it is routing, its logic levels and its first and last cells. ``None`` without one
    (no routing ran)."""
    paths = [p["path"] for p in report.get("critical_paths", [])
             if "<async>" not in (p.get("from"), p.get("to")) and p.get("path")]
    if not paths:
        return None
    steps = max(paths, key=lambda path: sum(step["delay"] for step in path))
    total = sum(step["delay"] for step in steps)
    routing = sum(step["delay"] for step in steps if step["type"] == "routing")
    # A logic step with no delay is a cell's internal hop (a carry chain's next bit).
    levels = sum(1 for step in steps if step["type"] == "logic" and step["delay"] > 0.1)
    return {"delay_ns": round(total, 2), "routing_ns": round(routing, 2), "levels": levels,
            "from": steps[0]["from"]["cell"], "to": steps[-1]["to"]["cell"]}


#: Suffixes nextpnr and yosys append to a register's name (the flip-flop cell, a bit index,
#: a block RAM's port or a LUT RAM slice), stripped to name the register itself.
_CELL_SUFFIX = re.compile(r"(_TRELLIS_|_DFF|\$|_DO[AB]\d|\.\d+\.\d+|\[\d+\]).*$")


def late_registers(report, period_ns, count=12):
    """The registers whose inputs are latest after routing, from nextpnr's detailed timing
    report: up to ``count`` of them, latest first, each with its latest arrival (ns after the
    clock edge), how many of its inputs arrive after ``period_ns`` (the clock period; the
    flip-flop's setup time comes on top), and the net that arrives last. ``None`` without a
    detailed report."""
    nets = report.get("detailed_net_timings")
    if not nets:
        return None
    registers = {}
    for net in nets:
        for end in net.get("endpoints", []):
            delay = end.get("delay")
            arrival = float(delay[-1] if isinstance(delay, list) else delay)
            name = _CELL_SUFFIX.sub("", end["cell"]) or end["cell"]
            entry = registers.setdefault(name, {"register": name, "arrival_ns": 0.0,
                                                "late_inputs": 0, "net": None})
            if arrival > period_ns:
                entry["late_inputs"] += 1
            if arrival > entry["arrival_ns"]:
                entry["arrival_ns"], entry["net"] = arrival, net["net"]
    latest = sorted(registers.values(), key=lambda e: -e["arrival_ns"])[:count]
    for entry in latest:
        entry["arrival_ns"] = round(entry["arrival_ns"], 2)
    return latest


def fmax(report):
    clocks = {name: {"achieved_mhz": round(float(v["achieved"]), 2),
                     "constraint_mhz": round(float(v["constraint"]), 2)}
              for name, v in report.get("fmax", {}).items()}
    if not clocks:
        return None, None, clocks
    worst = min(clocks.values(), key=lambda c: c["achieved_mhz"] / c["constraint_mhz"])
    met = all(c["achieved_mhz"] >= c["constraint_mhz"] for c in clocks.values())
    return worst["achieved_mhz"], met, clocks


def fmax_from_log(text):
    """Achieved fmax per clock from a nextpnr log (its last report: after routing)."""
    clocks = {}
    for name, achieved, target in re.findall(
            r"Max frequency for clock '([^']+)': ([\d.]+) MHz \((?:PASS|FAIL) at ([\d.]+) MHz\)",
            text):
        clocks[name] = {"achieved_mhz": float(achieved), "constraint_mhz": float(target)}
    return fmax({"fmax": {name: {"achieved": c["achieved_mhz"],
                                  "constraint": c["constraint_mhz"]}
                           for name, c in clocks.items()}})
