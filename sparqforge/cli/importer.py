"""``sparqforge import``: a QONNX file (what Brevitas' ``export_qonnx`` writes) to a bundle."""

__all__ = ["add_parser", "cmd_import"]

from pathlib import Path

from ..errors import ConfigError
from .outputs import check_output_file, save_bundle


def add_parser(sub):
    """The ``import`` command's parser on the ``sub`` parsers."""
    parser = sub.add_parser(
        "import", help="import a QONNX model (Brevitas export_qonnx) as a bundle",
        description="Translate a QONNX graph (Quant nodes on weights and activations, Conv, "
                    "Gemm/MatMul, Add, Relu, pooling, BatchNormalization, Flatten/Reshape) "
                    "into an integer-only bundle; anything else is refused in one line. "
                    "Needs the qonnx extra: pip install 'sparqforge[qonnx]' (see "
                    "docs/qonnx.md).")
    parser.add_argument("model", help="the QONNX file (.onnx)")
    parser.add_argument("-o", "--output", metavar="FILE",
                        help="bundle file (default: the model's name with .npz, here)")
    parser.add_argument("--name", help="the bundle's name (default: the file's stem)")
    parser.add_argument("--calibration", metavar="FILE.npy",
                        help="float inputs [N, ...] that fix the output's range when the graph "
                             "ends without a Quant (else the range the last layer can reach)")
    parser.set_defaults(func=cmd_import)
    return parser


def cmd_import(args):
    from ..sw.qonnx import import_qonnx

    source = Path(args.model)
    if not source.is_file():
        raise ConfigError(f"QONNX file {source} does not exist; export one with Brevitas' "
                          f"export_qonnx")
    out = check_output_file(args.output or f"{source.stem}.npz", "-o", "model.npz")
    calibration = None
    if args.calibration is not None:
        from .user_models import load_calib

        calibration = load_calib(args.calibration)
    bundle = import_qonnx(source, name=args.name, calibration=calibration)
    notes = bundle.info.get("qonnx", {})
    kinds = {}
    for layer in bundle.layers:
        kinds[layer["type"]] = kinds.get(layer["type"], 0) + 1
    print(f"imported {source} (QONNX): {len(bundle.layers)} layers ("
          + ", ".join(f"{count} {kind}" for kind, count in kinds.items())
          + f"), input {bundle.input['shape']}, {bundle.output['classes']} outputs")
    if notes.get("requantizations"):
        print(f"  requantization layers: {', '.join(notes['requantizations'])}")
    if notes.get("output"):
        print(f"  output range: from {notes['output']}")
    save_bundle(bundle, out, "-o")
    print(f"wrote {out}")
    return 0
