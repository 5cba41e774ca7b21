"""The ``sparqforge`` command line."""

__all__ = ["main"]

import argparse
import json
import sys
from pathlib import Path

from . import __version__
from .blocks import ArrayConfig, parse_shape, parse_sparsity
from .errors import ConfigError, SparqforgeError


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line and exit code 2."""

    def error(self, message):
        raise ConfigError(f"{self.prog}: {message} (see {self.prog} --help)")


def _add_array_options(parser):
    group = parser.add_argument_group("array")
    group.add_argument("--rows", type=int, default=8, help="array rows (default 8)")
    group.add_argument("--cols", type=int, default=8, help="array columns (default 8)")
    group.add_argument("--a-bits", type=int, default=8, help="activation width 2..8 (default 8)")
    group.add_argument("--w-bits", type=int, default=8, help="weight width 2..8 (default 8)")
    group.add_argument("--a-unsigned", action="store_true", help="unsigned activations")
    group.add_argument("--w-unsigned", action="store_true", help="unsigned weights")
    group.add_argument("--max-depth", type=int, default=4096,
                       help="longest reduction that must not overflow (default 4096)")
    group.add_argument("--out-bits", type=int, default=None,
                       help="output code width (default: the activation width)")
    group.add_argument("--out-unsigned", action="store_true",
                       help="unsigned output codes (default: like the activations)")
    group.add_argument("--groups", type=int, default=1,
                       help="requantization parameter groups per column (default 1)")
    group.add_argument("--sparsity", type=parse_sparsity_arg, default=None, metavar="N:M",
                       help="generate an N:M structured-sparse array (for example 2:4)")
    group.add_argument("--dequant", choices=["none", "power"], default="none",
                       help="power: add the power-exponent units (weight and activation "
                            "tables, threshold unit) around the array")
    group.add_argument("--code-bits", type=int, default=4,
                       help="with --dequant power: stored weight code width (default 4)")
    group.add_argument("--act-code-bits", type=int, default=4,
                       help="with --dequant power: stored activation code width (default 4)")
    group.add_argument("--out-code-bits", type=int, default=4,
                       help="with --dequant power: output code width (default 4)")


def parse_sparsity_arg(text):
    try:
        return parse_sparsity(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _config(args):
    out_signed = None
    if args.dequant == "power" and not args.a_unsigned:
        # Power-domain activations are non-negative table entries.
        args.a_unsigned = True
    if args.out_unsigned:
        out_signed = False
    elif args.out_bits is not None:
        out_signed = not args.a_unsigned
    return ArrayConfig(rows=args.rows, cols=args.cols, a_bits=args.a_bits,
                       a_signed=not args.a_unsigned, w_bits=args.w_bits,
                       w_signed=not args.w_unsigned, max_depth=args.max_depth,
                       groups=args.groups, out_bits=args.out_bits, out_signed=out_signed,
                       sparsity=args.sparsity, dequant=args.dequant,
                       act_code_bits=args.act_code_bits, w_code_bits=args.code_bits,
                       out_code_bits=args.out_code_bits)


def _print_report(report, as_json):
    if as_json:
        print(json.dumps(report, indent=2, sort_keys=True))
        return
    width = max(len(k) for k in report)
    for key, value in report.items():
        if isinstance(value, float):
            value = f"{value:.4g}"
        print(f"{key:<{width}}  {value}")


def cmd_generate(args):
    from .blocks import build_array
    from .hw.emit import description, to_rtlil, to_verilog

    config = _config(args)
    array = build_array(config)
    out = Path(args.output)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"Output {out} exists and is not a directory; choose another -o")
    name = config.name
    files = {f"{name}.v": to_verilog(array, name), f"{name}.il": to_rtlil(array, name),
             f"{name}.json": json.dumps(description(array, name), indent=2) + "\n"}
    out.mkdir(parents=True, exist_ok=True)
    for filename, text in files.items():
        (out / filename).write_text(text)
    print(f"wrote {', '.join(str(out / f) for f in files)}")
    return 0


def cmd_check(args):
    from .check import check_array

    config = _config(args)
    shape = parse_shape(args.shape)
    if not 0.0 <= args.stall < 1.0:
        raise ConfigError(f"--stall must be a probability in [0, 1), not {args.stall}")
    report = check_array(config, shape, seed=args.seed, stall=args.stall, quiet=args.json)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        summary = {k: report[k] for k in ("bit_exact", "mismatches", "cycles",
                                         "macs_per_cycle", "utilization")}
        if "speedup" in report:
            summary["dense_mode_cycles"] = report["dense_mode"]["cycles"]
            summary["speedup"] = report["speedup"]
        _print_report(summary, False)
    return 0 if report["bit_exact"] else 1


def cmd_bench(args):
    from .bench import run_benchmarks

    report = run_benchmarks(args.group, quiet=args.json)
    _print_report(report, args.json)
    return 0


def cmd_demo(args):
    from .check import check_array

    print("sparqforge demo: an 8x8 int8 MAC array runs a 64x256x64 integer matmul with "
          "requantization in Verilator and is compared with the golden model.")
    report = check_array(ArrayConfig(rows=8, cols=8, max_depth=256), (64, 256, 64), seed=0)
    _print_report({k: report[k] for k in ("bit_exact", "mismatches", "cycles",
                                          "macs_per_cycle", "utilization")}, False)
    return 0 if report["bit_exact"] else 1


def build_parser():
    parser = _Parser(prog="sparqforge",
                     description="Generate and verify low-bit, N:M-sparse and power-exponent "
                                 "neural-network accelerators for FPGAs.")
    parser.add_argument("--version", action="version", version=f"sparqforge {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    gen = sub.add_parser("generate", help="write the Verilog, RTLIL and JSON of a MAC array",
                         description="Write <name>.v, <name>.il and <name>.json (ports, "
                                     "parameters, latency, accumulator width) to a directory.")
    _add_array_options(gen)
    gen.add_argument("-o", "--output", required=True, metavar="DIR", help="output directory")
    gen.set_defaults(func=cmd_generate)

    chk = sub.add_parser("check", help="run a random layer through the array in Verilator",
                         description="Generate the array, run a random integer layer of the "
                                     "given shape (with requantization) through Verilator, "
                                     "compare with the golden model. Exit code 1 on any "
                                     "mismatch.")
    _add_array_options(chk)
    chk.add_argument("--shape", default="64x256x64", metavar="MxKxN",
                     help="layer shape: M rows, reduction depth K, N channels (default "
                          "64x256x64)")
    chk.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    chk.add_argument("--stall", type=float, default=0.3,
                     help="stall probability of the second, stalled run (default 0.3)")
    chk.add_argument("--json", action="store_true", help="print the report as JSON")
    chk.set_defaults(func=cmd_check)

    demo = sub.add_parser("demo", help="the main job on a built-in example",
                          description="Run sparqforge's main job on a built-in example.")
    demo.set_defaults(func=cmd_demo)

    bench = sub.add_parser("bench", help="run benchmarks (measured, never assumed)",
                           description="Run a benchmark group and print its measurements.")
    bench.add_argument("group", choices=["dense", "sparse", "power", "runtime", "all"],
                       help="benchmark group")
    bench.add_argument("--json", action="store_true", help="print one JSON object")
    bench.set_defaults(func=cmd_bench)
    return parser


def main(argv=None):
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        return args.func(args)
    except SparqforgeError as exc:
        print(f"sparqforge: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("sparqforge: interrupted", file=sys.stderr)
        return 130
