"""The ``sparqforge`` command line."""

__all__ = ["main"]

import argparse
import json
import os
import re
import sys

from .. import __version__
from ..backends import BACKENDS
from .bench import GROUPS
from .boards import add_board_parsers
from .explore import add_explore_parser
from .blocks import ArrayConfig, parse_shape, parse_sparsity
from ..errors import ConfigError, SparqforgeError
from .inputs import check_input_options, load_inputs
from .outputs import check_output_dir, check_output_file, save_bundle, write_files
from ..sw.schemes import SCHEMES

#: Exit status when the reader of stdout goes away before the output is complete
#: (``sparqforge infer --json | head``): 128 + SIGPIPE, what a shell reports for a program
#: killed by SIGPIPE such as ``cat`` or ``grep`` in the same place. Not 0, because the output
#: was cut short and a ``set -o pipefail`` script should see that; not 2, because the command
#: line was fine. No message either: the reader chose to stop reading.
EXIT_BROKEN_PIPE = 141

#: What argparse takes for a negative number rather than an option.
_NUMBER = re.compile(r"-(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line and exit code 2, and which names an
    unknown option even when a required argument is missing too (argparse reports only the
    missing argument, ``the following arguments are required: COMMAND``, for
    ``sparqforge --bogus``)."""

    #: The command parsers (name -> parser), on the top-level parser.
    commands = {}
    #: Unknown options given before the command, on a command's parser.
    outer_unknown = ()

    def parse_known_args(self, args=None, namespace=None):
        args = list(sys.argv[1:] if args is None else args)
        self._arg_strings = args
        if self.commands:
            # Everything from the command name on is the command parser's.
            first = next((i for i, arg in enumerate(args) if not arg.startswith("-")),
                         len(args))
            self._arg_strings = args[:first]
            for parser in self.commands.values():
                parser.outer_unknown = tuple(self._unknown_options())
        return super().parse_known_args(args, namespace)

    def _unknown_options(self):
        known = self._option_string_actions
        unknown = []
        for arg in getattr(self, "_arg_strings", ()):
            if arg == "--":
                break
            if not arg.startswith("-") or arg == "-" or _NUMBER.fullmatch(arg):
                continue
            name = arg.split("=", 1)[0]
            if name in known:
                continue
            if arg.startswith("--"):
                if any(option.startswith(name) for option in known):  # an abbreviation
                    continue
            elif arg[:2] in known:  # a short option with its value attached: -oDIR
                continue
            unknown.append(arg)
        return unknown

    def error(self, message):
        unknown = [*self.outer_unknown, *self._unknown_options()]
        if unknown and message.startswith("the following arguments are required"):
            message = f"unrecognized arguments: {' '.join(unknown)}"
        raise ConfigError(f"{self.prog}: {message} (see {self.prog} --help)")


class _StdoutClosed(Exception):
    """The reader of stdout went away (a ``BrokenPipeError`` writing to it)."""


def _emit(text=""):
    """Print ``text`` to stdout; a closed pipe becomes :class:`_StdoutClosed`, so that it is
    told apart from a broken pipe to a device or a tool, which is an error."""
    try:
        print(text)
    except BrokenPipeError:
        raise _StdoutClosed from None


def _flush_stdout():
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        raise _StdoutClosed from None


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
        _emit(json.dumps(report, indent=2, sort_keys=True))
        return
    width = max(len(k) for k in report)
    for key, value in report.items():
        if isinstance(value, float):
            value = f"{value:.4g}"
        _emit(f"{key:<{width}}  {value}")


def cmd_generate(args):
    from .blocks import build_array
    from ..hw.emit import description, to_rtlil, to_verilog

    config = _config(args)
    out = check_output_dir(args.output, "-o")
    array = build_array(config)
    name = config.name
    files = {f"{name}.v": to_verilog(array, name), f"{name}.il": to_rtlil(array, name),
             f"{name}.json": json.dumps(description(array, name), indent=2) + "\n"}
    written = write_files(out, files, "-o")
    _emit(f"wrote {', '.join(map(str, written))}")
    return 0


def cmd_check(args):
    from .check import check_array

    config = _config(args)
    shape = parse_shape(args.shape)
    if not 0.0 <= args.stall < 1.0:
        raise ConfigError(f"--stall must be a probability in [0, 1), not {args.stall}")
    if args.seed < 0:
        raise ConfigError(f"--seed must be a non-negative integer, not {args.seed}")
    report = check_array(config, shape, seed=args.seed, stall=args.stall, quiet=args.json)
    if args.json:
        _emit(json.dumps(report, indent=2))
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

    options = {}
    if args.model or args.layers or args.accel:
        if args.group != "models":
            raise ConfigError("--model, --layers and --accel belong to the models group: "
                              "sparqforge bench models [--model M] [--layers] [--accel A]")
        options = {"models": [args.model] if args.model else None, "layers": args.layers}
        if args.accel:
            options["config"] = args.accel
    report = run_benchmarks(args.group, quiet=args.json, **options)
    _print_report(report, args.json)
    return 0


def cmd_demo(args):
    from .demo import format_table, run_demo

    rows = run_demo(out_dir=args.out, backend=args.backend, clock_mhz=args.clock_mhz,
                    quiet=args.json)
    if args.json:
        _emit(json.dumps(rows, indent=2))
    else:
        _emit(format_table(rows))
        _emit(f"cycles/inf: accelerator cycles per image spent in RUN commands (host link "
              f"transfers excluded); inf/s: at {args.clock_mhz:g} MHz from those cycles. "
              f"Bundles and Verilog in {args.out}/.")
    return 0 if all(r["bit_exact"] for r in rows) else 1


def cmd_export(args):
    from .user_models import load_calib, load_model, parse_model

    spec = parse_model(args.model)
    if spec.kind == "builtin":
        if args.calib is not None:
            raise ConfigError(f"--calib is for your own models; the built-in {args.model} "
                              f"calibrates on the digits training split: leave --calib out")
        out = check_output_file(args.output, "-o", f"{args.model}.npz")
        from ..sw.digits import quantize_and_export, train_example

        model, data = train_example(args.model)
        bundle, accuracy = quantize_and_export(args.model, model, data, args.quant)
        save_bundle(bundle, out, "-o")
        _emit(f"wrote {out} ({args.model}, {args.quant}; quantized test accuracy "
              f"{100 * accuracy:.2f} %)")
        return 0
    if args.calib is None:
        raise ConfigError(f"--model {args.model} needs --calib FILE.npy: float inputs [N, ...] "
                          f"of the model (a few hundred training items); the first one is the "
                          f"example input that fixes the shapes")
    out = check_output_file(args.output, "-o", "model.npz")
    calib = load_calib(args.calib)
    model = load_model(spec)
    from ..api import compile as compile_model

    name = spec.path.stem if spec.kind == "program" else None  # a module: its class name
    bundle = compile_model(model, calib[:1], quant=args.quant, calib=calib, name=name)
    save_bundle(bundle, out, "-o")
    _emit(f"wrote {out} ({args.model}, {args.quant}; {len(bundle.matmul_layers())} matmul "
          f"layers, calibrated on {len(calib)} inputs)")
    return 0


def cmd_infer(args):
    import numpy as np

    from ..backends import open_device, resolve_config
    from ..sw import bundle as bundle_io
    from ..sw.runtime.runner import Runner
    from .outputs import progress_bar

    check_input_options(args)
    bundle = bundle_io.load(args.bundle)
    x, y = load_inputs(args, bundle)
    config = resolve_config(args.accel)
    device = open_device(args.backend, config, quiet=args.json,
                         log=lambda m: print(m, file=sys.stderr))
    try:
        runner = Runner(bundle, device)
        runner.load()
        codes = bundle.quantize_input(x)
        out = runner.infer(codes, batch=64,
                           progress=None if args.json else progress_bar("infer"))
    finally:
        device.close()
    predictions = out.argmax(axis=1)
    report = {"bundle": str(args.bundle), "backend": args.backend, "images": len(codes),
              "predictions": predictions.tolist(), "logit_codes": out.tolist(),
              "logits": bundle.dequantize_output(out).tolist(),
              "cycles_per_inference": runner.cycles / len(codes) if runner.cycles else None}
    if y is not None:
        report["accuracy"] = float((predictions == np.asarray(y)).mean())
    if args.json:
        _emit(json.dumps(report))
    else:
        summary = {"images": report["images"], "predictions": " ".join(
            map(str, predictions[:20])) + (" ..." if len(predictions) > 20 else "")}
        for key in ("accuracy", "cycles_per_inference"):
            if report.get(key) is not None:
                summary[key] = report[key]
        _print_report(summary, False)
    return 0


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
                          description="Train digits classifiers (MLP, CNN), quantize each "
                                      "three ways, export bundles, generate the accelerator "
                                      "and run the test split on the RTL and the golden "
                                      "model; print a table.")
    demo.add_argument("--out", default="build/demo", help="output directory (build/demo)")
    demo.add_argument("--backend", default="verilator", help=f"backend: {BACKENDS}")
    demo.add_argument("--clock-mhz", type=float, default=100.0,
                      help="clock for the inferences/s column (default 100)")
    demo.add_argument("--json", action="store_true", help="print the rows as JSON")
    demo.set_defaults(func=cmd_demo)

    export = sub.add_parser(
        "export", help="quantize a PyTorch model (yours or a built-in one) into a bundle",
        description="Quantize a model and write a bundle: your own PyTorch model with "
                    "calibration inputs (--model FILE.py:FUNCTION, FILE.pt or FILE.pt2 with "
                    "--calib), or a built-in digits classifier trained here (--model mlp|cnn). "
                    "Python: sparqforge.compile(model, example_input, quant=..., calib=...).",
        epilog="quantizations: " + "; ".join(f"{name}: {text}"
                                              for name, text in sorted(SCHEMES.items())))
    export.add_argument("--model", default="mlp", metavar="MODEL",
                        help="mlp or cnn (a built-in digits model, default mlp); or your own: "
                             "FILE.py:FUNCTION (FUNCTION() is called with no arguments and "
                             "returns the model with its trained weights, in eval mode), "
                             "FILE.pt (a whole model saved with torch.save(model, path); "
                             "loading it runs pickled code, so only load files you trust) or "
                             "FILE.pt2 (a program saved with torch.export.save)")
    export.add_argument("--quant", choices=sorted(SCHEMES), default="uniform-w8a8",
                        help="quantization (default uniform-w8a8; sparse24-w4 needs a model "
                             "that is already 2:4 pruned)")
    export.add_argument("--calib", metavar="FILE.npy",
                        help="your model's calibration inputs, float [N, ...] saved with "
                             "numpy.save (required with your own model); the first item is "
                             "the example input")
    export.add_argument("-o", "--output", required=True, metavar="FILE", help="bundle file")
    export.set_defaults(func=cmd_export)

    from .importer import add_parser as add_import
    add_import(sub)

    infer = sub.add_parser("infer", help="run a bundle on a backend",
                           description="Run a bundle on the golden model, the Verilated "
                                       "accelerator or a board, on a file of inputs.")
    infer.add_argument("bundle", help="bundle file (.npz)")
    infer.add_argument("--backend", default="golden", help=f"{BACKENDS} (default golden)")
    infer.add_argument("--accel", default="demo",
                       help="accelerator for the golden and verilator backends: a preset "
                            "(demo, int8, networks), a board name (its reference configuration) "
                            "or a "
                            "JSON file (default demo); a board reports its own")
    infer.add_argument("--inputs", help="float inputs (.npy), one item per row or image")
    infer.add_argument("--labels", help="integer labels (.npy) to report accuracy")
    infer.add_argument("--digits", action="store_true",
                       help="use the digits test split as inputs and labels")
    infer.add_argument("--json", action="store_true", help="print the report as JSON")
    infer.set_defaults(func=cmd_infer)

    add_board_parsers(sub)
    add_explore_parser(sub)

    bench = sub.add_parser("bench", help="run benchmarks (measured, never assumed)",
                           description="Run a benchmark group and print its measurements.")
    bench.add_argument("group", choices=[*GROUPS, "all"], help="benchmark group")
    bench.add_argument("--json", action="store_true", help="print one JSON object")
    bench.add_argument("--model", choices=["resnet8", "dscnn", "mobilenet_vww",
                                           "fc_autoencoder"],
                       help="models group: only this MLPerf Tiny model")
    bench.add_argument("--layers", action="store_true",
                       help="models group: the per-layer report too")
    bench.add_argument("--accel",
                       help="models group: the accelerator, a preset (networks, int8, demo), "
                            "a board name or a JSON file (default networks)")
    bench.set_defaults(func=cmd_bench)
    parser.commands = dict(sub.choices)
    return parser


def main(argv=None):
    """Run the command line; returns the exit status: 0, 1 (a result is not bit-exact), 2 (a
    user error: one line on stderr), 130 (interrupted) or :data:`EXIT_BROKEN_PIPE`."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        code = args.func(args)
        _flush_stdout()
        return code
    except SparqforgeError as exc:
        print(f"sparqforge: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("sparqforge: interrupted", file=sys.stderr)
        return 130
    except _StdoutClosed:
        # Whatever is still buffered goes nowhere, instead of failing again (with a
        # traceback) when the interpreter flushes stdout on exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return EXIT_BROKEN_PIPE
