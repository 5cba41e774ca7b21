"""``sparqforge explore`` and ``sparqforge build --seeds``: sweeps on Dask
(:mod:`sparqforge.explore`, ``docs/explore.md``)."""

__all__ = ["cmd_explore", "build_seeds", "add_explore_parser"]

import json
import shutil
from pathlib import Path

from ..errors import ConfigError


def add_explore_parser(sub):
    explore = sub.add_parser(
        "explore", help="design-space exploration: a sweep of builds on Dask",
        description="Build every point of SPEC (board configurations x clocks x placement "
                    "seeds; JSON or TOML, see docs/explore.md) on a Dask cluster, record "
                    "each in DIR/results.sqlite (a second run redoes nothing) and report "
                    "the Pareto front (DIR/report/: table, PNG, HTML).")
    explore.add_argument("spec", help="sweep spec (.json or .toml)")
    explore.add_argument("-o", "--out", required=True, metavar="DIR",
                         help="sweep folder (results store, report, kept outputs)")
    explore.add_argument("--workers", type=int, help="local Dask workers (default: one per "
                                                     "core)")
    explore.add_argument("--scheduler", metavar="ADDRESS",
                         help="an existing Dask scheduler (tcp://host:8786) instead of a "
                              "local cluster")
    explore.add_argument("--keep", action="append", default=[], metavar="WHAT",
                         choices=["bitstreams", "builds"],
                         help="bitstreams: copy them into DIR/bitstreams; builds: keep the "
                              "build folders on the workers (repeatable)")
    explore.add_argument("--retry-failed", action="store_true",
                         help="re-run the points recorded as failed")
    explore.add_argument("--report", action="store_true",
                         help="only report on what DIR holds (build nothing)")
    explore.add_argument("--budget", metavar="RES=N,...",
                         help="also name the best configuration within these resources "
                              "(lut, ff, dsp, bram), e.g. lut=20000,dsp=40")
    explore.add_argument("--model", help="the spec's model to rank by (default its first)")
    explore.add_argument("--json", action="store_true", help="print one JSON object")
    explore.set_defaults(func=cmd_explore)
    return explore


def _report(spec, out, args, result=None):
    from ..explore.report import choose, pareto, parse_budget, summarize, write_report
    from ..explore.store import Store

    store = result.store if result is not None else Store(out)
    budget = parse_budget(args.budget) if args.budget else None
    entries = summarize(store, spec, args.model)
    front = pareto(entries)
    choice = choose(entries, budget) if budget else None
    paths = write_report(out, entries, front, title=f"sparqforge explore: {spec.source}",
                         choice=choice, budget=budget) if entries else {}
    builds = store.rows("builds", {p.key for p in spec.builds})
    summary = {
        "points": len(spec.builds),
        "finished": sum(r["status"] == "ok" for r in builds),
        "failed": sum(r["status"] == "failed" for r in builds),
        "pareto": front,
        "report": {k: str(v) for k, v in paths.items()},
        "store": str(store.path),
        "errors": [{"label": p.label, "error": r["error"]} for p in spec.builds
                   for r in builds if r["key"] == p.key and r["status"] == "failed"],
    }
    if result is not None:
        summary.update(ran=result.ran, skipped=result.skipped,
                       latency_points=result.latency_points,
                       latency_finished=result.latency_finished,
                       latency_failed=result.latency_failed, seconds=result.seconds)
    if budget is not None:
        summary["choice"] = choice
    return summary, entries, front


def cmd_explore(args):
    from ..explore import load_spec, run_sweep
    from ..explore.engine import first_line
    from ..explore.report import table
    from .main import _emit
    from .outputs import check_output_dir

    spec = load_spec(args.spec)
    out = check_output_dir(args.out, "-o")
    if args.report:
        if not (out / "results.sqlite").is_file():
            raise ConfigError(f"{out} holds no sweep results; run sparqforge explore "
                              f"{args.spec} -o {out} first")
        result = None
    else:
        result = run_sweep(spec, out, workers=args.workers, scheduler=args.scheduler,
                           keep=args.keep, retry_failed=args.retry_failed, quiet=args.json)
    summary, entries, front = _report(spec, out, args, result)
    if args.json:
        _emit(json.dumps(summary, indent=1))
        return 0
    counts = (f"{summary['points']} points: {summary['finished']} finished, "
              f"{summary['failed']} failed")
    if result is not None:
        counts += f" ({result.ran} built now, {result.skipped} from the store)"
    _emit(counts)
    for error in summary["errors"]:
        _emit(f"  failed: {error['label']}: {first_line(error['error'])}")
    if entries:
        _emit(table(entries, front))
        _emit(f"report: {summary['report']['html']}")
    if args.budget:
        choice = summary["choice"]
        if choice is None:
            _emit(f"nothing fits the budget {args.budget}")
        else:
            seed = f", seed {choice['seed']}" if choice["seed"] is not None else ""
            _emit(f"within {args.budget}: {choice['label']}{seed} -> "
                  f"{choice['perf']:,} {choice['perf_name']}; build it with: sparqforge "
                  f"build --board {spec.board} --config {summary['report']['choice']}"
                  + (f" --seed {choice['seed']}" if choice["seed"] is not None else ""))
    return 0


def build_seeds(args, build_dir):
    """``sparqforge build --seeds N``: N placements of one configuration on the sweep engine;
    the best-timed build is copied into ``build_dir``, every result stays in
    ``build_dir/seeds/results.sqlite``."""
    from ..config import read_json
    from ..explore import make_spec, run_sweep
    from ..explore.report import summarize
    from .main import _emit

    if args.seeds < 1:
        raise ConfigError(f"--seeds must be a positive integer, not {args.seeds}")
    obj = {"board": args.board, "mode": "build", "seeds": args.seeds}
    if args.router is not None:
        obj["router"] = args.router
    if args.config:
        config = read_json(args.config, "configuration")
        if not isinstance(config, dict):
            raise ConfigError(f"The configuration {args.config} must be a JSON object")
        obj["points"] = [config]
    spec = make_spec(obj, where="build --seeds")
    sweep_dir = build_dir / "seeds"
    result = run_sweep(spec, sweep_dir, workers=args.workers, keep=("builds",),
                       quiet=args.json)
    rows = result.store.rows("builds", {p.key for p in spec.builds})
    entries = summarize(result.store, spec)
    if not entries:
        errors = "; ".join(sorted({r["error"] for r in rows if r["error"]}))
        raise ConfigError(f"No placement of the {args.seeds} finished: {errors}")
    best = max(entries, key=lambda e: ((e["timing_met"] or False), e["fmax_mhz"] or 0))
    source = Path(result.store.rows("builds", {best["key"]})[0]["build_dir"] or "")
    if not source.is_dir():
        raise ConfigError(f"The best build's folder {source} is gone (a previous run of "
                          f"--seeds removed it); remove {sweep_dir} and run again")
    shutil.copytree(source, build_dir, dirs_exist_ok=True)
    for row in rows:
        if row["key"] != best["key"] and row["build_dir"]:
            shutil.rmtree(Path(row["build_dir"]).parent, ignore_errors=True)
    seeds = sorted(({"seed": r["seed"], "status": r["status"], "fmax_mhz": r["fmax_mhz"],
                     "timing_met": None if r["timing_met"] is None else bool(r["timing_met"]),
                     "error": r["error"]} for r in rows),
                   key=lambda r: r["seed"])
    summary = {"board": spec.board, "seeds": seeds, "best_seed": best["seed"],
               "fmax_mhz": best["fmax_mhz"], "timing_met": best["timing_met"],
               "utilization": {k: best[k] for k in ("lut", "ff", "dsp", "bram")},
               "build_dir": str(build_dir), "store": str(result.store.path)}
    if args.json:
        _emit(json.dumps(summary, indent=1))
    else:
        for s in seeds:
            text = (f"{s['fmax_mhz']:.2f} MHz, timing {'met' if s['timing_met'] else 'missed'}"
                    if s["status"] == "ok" else f"failed: {s['error']}")
            _emit(f"seed {s['seed']}: {text}")
        _emit(f"kept seed {best['seed']} ({best['fmax_mhz']:.2f} MHz) in {build_dir}")
    return 0
