"""What a sweep found: each configuration's best placement seed, the Pareto front of
performance against LUTs, DSP blocks and block RAMs, a table, plots (PNG and a
self-contained HTML page) and the configuration to build for a budget.

Performance is, per configuration, its best seed's:

* with models: inferences per second of the chosen model, device cycles per inference (from
  the Verilated accelerator) at the achieved fmax (``build``) or the target clock
  (``synth``, no fmax);
* without: peak GMAC/s, the array's MACs per cycle at that clock.

Nothing here is estimated beyond that product: every resource count and fmax is a tool's
report, every cycle count a run.
"""

__all__ = ["summarize", "pareto", "choose", "write_report", "table", "parse_budget"]

import base64
import html
import io
import json
from pathlib import Path

from ..config import AcceleratorConfig
from ..errors import ConfigError

RESOURCES = ("lut", "dsp", "bram")


def _macs_per_cycle(config):
    acc = AcceleratorConfig.from_json({k: config[k] for k in AcceleratorConfig.keys()})
    return acc.rows * acc.cols * acc.kept


def summarize(store, spec, model=None):
    """One entry per configuration (its best seed) that finished: ``key``, ``label``,
    ``config``, ``seed``, ``seeds`` (how many finished), ``fmax_mhz``, ``timing_met``,
    ``clock_mhz`` (what performance is computed at), resources, ``macs_per_cycle``,
    ``gmacs`` and, with models, ``cycles``, ``latency_ms``, ``inferences_per_s`` of
    ``model`` (default the spec's first) and ``rtl_equals_golden``; plus ``perf`` and
    ``perf_name``."""
    if model is not None and model not in spec.models:
        raise ConfigError(f"--model {model} is not one of the spec's models "
                          f"({', '.join(spec.models) or 'none'})")
    model = model or (spec.models[0] if spec.models else None)
    latencies = {}
    for row in store.rows("latencies", {p.key for p in spec.latencies}):
        if row["status"] == "ok" and row["model"] == model:
            latencies[row["config_key"]] = row
    points = {p.key: p for p in spec.builds}
    best = {}
    for row in store.rows("builds", set(points)):
        if row["status"] != "ok":
            continue
        point = points[row["key"]]
        group = json.dumps({k: v for k, v in point.config.items()}, sort_keys=True)
        entry = best.get(group)
        score = (bool(row["timing_met"]), row["fmax_mhz"] or 0.0)
        seeds = (entry["seeds"] if entry else 0) + 1
        if entry is None or score > entry["_score"]:
            entry = _entry(point, row, latencies.get(point.config_key), model)
            entry["_score"] = score
        entry["seeds"] = seeds
        best[group] = entry
    out = list(best.values())
    for entry in out:
        entry.pop("_score")
    return out


def _entry(point, row, latency, model):
    clock = row["fmax_mhz"] if row["fmax_mhz"] else point.config["clk_freq"] / 1e6
    macs = _macs_per_cycle(point.config)
    entry = {"key": row["key"], "label": point.label.rsplit(" seed", 1)[0],
             "config": point.config, "seed": point.seed, "fmax_mhz": row["fmax_mhz"],
             "timing_met": None if row["timing_met"] is None else bool(row["timing_met"]),
             "clock_mhz": round(clock, 2),
             "clock_source": "achieved fmax" if row["fmax_mhz"] else "target clock",
             **{k: row[k] for k in ("lut", "ff", "dsp", "bram")},
             "macs_per_cycle": macs, "gmacs": round(macs * clock / 1e3, 3),
             "perf": round(macs * clock / 1e3, 3), "perf_name": "peak GMAC/s"}
    if model is not None:
        entry["model"] = model
        if latency is not None:
            cycles = latency["cycles"]
            entry.update(cycles=cycles, latency_ms=round(cycles / clock / 1e3, 4),
                         inferences_per_s=round(clock * 1e6 / cycles, 1),
                         rtl_equals_golden=bool(latency["rtl_equals_golden"]),
                         perf=round(clock * 1e6 / cycles, 1),
                         perf_name=f"{Path(model).name} inferences/s")
        else:
            entry.update(perf=None, perf_name=f"{Path(model).name} inferences/s")
    return entry


def _dominates(a, b):
    no_worse = a["perf"] >= b["perf"] and all(a[k] <= b[k] for k in RESOURCES)
    better = a["perf"] > b["perf"] or any(a[k] < b[k] for k in RESOURCES)
    return no_worse and better


def pareto(entries):
    """The entries no other entry beats on performance and every resource at once, in
    order of performance."""
    usable = [e for e in entries if e["perf"] is not None
              and all(e[k] is not None for k in RESOURCES)]
    front = [e for e in usable if not any(_dominates(o, e) for o in usable if o is not e)]
    return sorted(front, key=lambda e: (e["perf"], -e["lut"]))


def parse_budget(text):
    """``"lut=20000,dsp=40"`` -> ``{"lut": 20000, "dsp": 40}``."""
    budget = {}
    for part in (text or "").split(","):
        name, _, value = part.partition("=")
        name = name.strip().lower()
        if name not in RESOURCES + ("ff",) or not value.strip().isdigit():
            raise ConfigError(f"--budget takes RESOURCE=COUNT pairs separated by commas "
                              f"(resources: lut, ff, dsp, bram), not {text!r}")
        budget[name] = int(value)
    return budget


def choose(entries, budget):
    """The best-performing entry within ``budget`` (resource -> most allowed), or
    ``None``; among equals the one with fewer LUTs."""
    fits = [e for e in entries if e["perf"] is not None
            and all(e.get(k) is not None and e[k] <= v for k, v in budget.items())]
    return max(fits, key=lambda e: (e["perf"], -e["lut"]), default=None)


def table(entries, front):
    """A text table of ``entries`` (Pareto members marked ``*``)."""
    keys = {e["key"] for e in front}
    perf_name = entries[0]["perf_name"] if entries else "performance"
    head = ["", "configuration", "seed", "fmax MHz", "met", "LUT", "FF", "DSP", "BRAM",
            "MACs/cycle", perf_name]
    rows = [head]
    for e in sorted(entries, key=lambda e: (e["perf"] is None, -(e["perf"] or 0))):
        rows.append(["*" if e["key"] in keys else "", e["label"], str(e["seed"] or "-"),
                     f"{e['fmax_mhz']:.2f}" if e["fmax_mhz"] else "-",
                     {True: "yes", False: "no", None: "-"}[e["timing_met"]],
                     *(f"{e[k]:,}" if e[k] is not None else "-"
                       for k in ("lut", "ff", "dsp", "bram")),
                     str(e["macs_per_cycle"]),
                     f"{e['perf']:,}" if e["perf"] is not None else "-"])
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def _plot(entries, front, title):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    usable = [e for e in entries if e["perf"] is not None]
    fig, axes = plt.subplots(1, 3, figsize=(13, 4), constrained_layout=True)
    keys = {e["key"] for e in front}
    perf_name = usable[0]["perf_name"] if usable else "performance"
    for ax, resource in zip(axes, RESOURCES):
        pts = [e for e in usable if e[resource] is not None]
        ax.scatter([e[resource] for e in pts if e["key"] not in keys],
                   [e["perf"] for e in pts if e["key"] not in keys], color="0.6",
                   label="dominated")
        on = sorted((e for e in pts if e["key"] in keys), key=lambda e: e[resource])
        ax.scatter([e[resource] for e in on], [e["perf"] for e in on], color="C3",
                   label="Pareto front", zorder=3)
        for e in on:
            ax.annotate(e["label"].split(" ")[0], (e[resource], e["perf"]), fontsize=7,
                        xytext=(3, 3), textcoords="offset points")
        ax.set_xlabel(resource.upper())
        ax.set_ylabel(perf_name)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return buffer.getvalue()


def write_report(out_dir, entries, front, *, title, choice=None, budget=None):
    """Write ``report/pareto.png``, ``report/report.html`` (the plot inlined) and
    ``report/pareto.json`` into the sweep folder; with a ``choice``, ``report/choice.json``
    (its configuration, for ``--config``). Returns the paths written."""
    folder = Path(out_dir) / "report"
    folder.mkdir(parents=True, exist_ok=True)
    png = _plot(entries, front, title)
    paths = {"png": folder / "pareto.png", "html": folder / "report.html",
             "json": folder / "pareto.json"}
    paths["png"].write_bytes(png)
    paths["json"].write_text(json.dumps({"pareto": front, "points": entries}, indent=1))
    text = table(entries, front)
    chosen = ""
    if choice is not None:
        paths["choice"] = folder / "choice.json"
        paths["choice"].write_text(json.dumps(choice["config"], indent=1))
        chosen = (f"<h2>For the budget {html.escape(json.dumps(budget))}</h2><p>"
                  f"{html.escape(choice['label'])}, seed {choice['seed']}: "
                  f"{choice['perf']:,} {html.escape(choice['perf_name'])}; configuration in "
                  f"choice.json</p>")
    page = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>"
            f"{html.escape(title)}</title></head><body><h1>{html.escape(title)}</h1>"
            f"<img alt='Pareto front' src='data:image/png;base64,"
            f"{base64.b64encode(png).decode()}'>{chosen}<h2>Every configuration (best seed; "
            f"* Pareto)</h2><pre>{html.escape(text)}</pre></body></html>\n")
    paths["html"].write_text(page)
    return paths
