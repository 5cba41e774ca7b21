"""The exported model: one versioned ``.npz`` file (NumPy arrays plus JSON metadata).

A bundle holds everything an integer-only accelerator needs and nothing it cannot run:
the layer graph (matmul layers from Linear or Conv2d, max/avg pooling, flatten), integer
weight codes, operand tables, per-channel requantization parameters or thresholds, and the
input and output quantization. :func:`load` validates version, shapes, dtypes and ranges and
refuses anything else with a :class:`~sparqforge.errors.BundleError`.
"""

__all__ = ["FORMAT", "VERSION", "Bundle", "save", "load"]

import io
import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import BundleError
from .golden.numerics import round_half_away

FORMAT = "sparqforge-bundle"
VERSION = 1
INT32 = (-(1 << 31), (1 << 31) - 1)
#: Arrays a matmul layer carries, by output mode.
_ARRAYS = {"requant": ("bias", "multiplier", "shift", "zero_point", "relu"),
           "threshold": ("thresholds",)}


@dataclass
class Bundle:
    """A quantized network.

    ``layers`` are dicts: metadata (JSON-able) plus NumPy arrays (see ``docs/bundle.md``).
    ``input`` gives the input quantization (``shape``, ``scale``, ``zero_point``: codes are
    ``clip(round_half_away(x / scale) + zero_point, 0, 255)``), ``output`` the logits'
    (``scale``, ``zero_point``, ``classes``).
    """
    name: str
    input: dict
    output: dict
    layers: list = field(default_factory=list)
    info: dict = field(default_factory=dict)

    def quantize_input(self, x):
        """Float inputs ``[B, *shape]`` to input codes (channels-last for images)."""
        x = np.asarray(x, dtype=np.float64).reshape(-1, *self.input["shape"])
        scaled = x / self.input["scale"]
        codes = round_half_away(scaled) + self.input["zero_point"]
        codes = np.clip(codes, 0, 255).astype(np.int64)
        return codes.transpose(0, 2, 3, 1) if codes.ndim == 4 else codes

    def dequantize_output(self, codes):
        return (np.asarray(codes, dtype=np.float64) - self.output["zero_point"]) \
            * self.output["scale"]

    def matmul_layers(self):
        return [layer for layer in self.layers if layer["type"] == "matmul"]


def save(bundle, path):
    """Write ``bundle`` to ``path`` (an ``.npz``); written to a temporary name first, so a
    failure leaves nothing half written."""
    path = Path(path)
    arrays, layers = {}, []
    for index, layer in enumerate(bundle.layers):
        meta = {}
        for key, value in layer.items():
            if isinstance(value, np.ndarray):
                arrays[f"layer{index}.{key}"] = value
                meta[key] = {"array": f"layer{index}.{key}"}
            else:
                meta[key] = value
        layers.append(meta)
    meta = {"format": FORMAT, "version": VERSION, "name": bundle.name, "input": bundle.input,
            "output": bundle.output, "layers": layers, "info": bundle.info}
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(buffer.getvalue())
    tmp.replace(path)
    return path


def load(path):
    """Read and validate a bundle.

    Raises
    ------
    BundleError
        Naming the file and the problem: missing, truncated or corrupted, wrong format or
        version, missing arrays, wrong dtypes or shapes, values out of range, NaN scales,
        layers whose shapes do not chain.
    """
    path = Path(path)
    if not path.is_file():
        raise BundleError(f"Bundle {path} does not exist; export one with sparqforge export")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as exc:
        raise BundleError(f"Bundle {path} is not a readable sparqforge bundle (truncated or "
                          f"corrupted: {exc}); export it again") from None
    except Exception as exc:  # zlib and zipfile raise several types on damaged members
        raise BundleError(f"Bundle {path} is corrupted ({type(exc).__name__}: {exc}); export "
                          f"it again") from None
    if "meta" not in arrays:
        raise BundleError(f"Bundle {path} has no metadata; it is not a sparqforge bundle")
    try:
        meta = json.loads(arrays["meta"].tobytes().decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"Bundle {path} has corrupted metadata ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise BundleError(f"{path} is not a sparqforge bundle (format {meta.get('format')!r})"
                          if isinstance(meta, dict) else f"{path} has malformed metadata")
    if meta.get("version") != VERSION:
        raise BundleError(f"Bundle {path} has version {meta.get('version')!r}; this sparqforge "
                          f"reads version {VERSION}: export the model again")
    try:
        layers = []
        for index, layer in enumerate(meta["layers"]):
            resolved = {}
            for key, value in layer.items():
                if isinstance(value, dict) and set(value) == {"array"}:
                    if value["array"] not in arrays:
                        raise BundleError(f"Bundle {path}: layer {index} lacks array {key!r}")
                    resolved[key] = arrays[value["array"]]
                else:
                    resolved[key] = value
            layers.append(resolved)
        bundle = Bundle(name=meta["name"], input=meta["input"], output=meta["output"],
                        layers=layers, info=meta.get("info", {}))
    except (KeyError, TypeError) as exc:
        raise BundleError(f"Bundle {path} has malformed metadata (missing {exc})") from None
    validate(bundle, str(path))
    return bundle


def _int_array(where, name, value, shape, lo, hi):
    if not isinstance(value, np.ndarray) or value.dtype.kind not in "iu":
        raise BundleError(f"{where}: {name} must be an integer array, not "
                          f"{getattr(value, 'dtype', type(value).__name__)}")
    if tuple(value.shape) != tuple(shape):
        raise BundleError(f"{where}: {name} has shape {tuple(value.shape)}, expected "
                          f"{tuple(shape)}")
    if value.size and (value.min() < lo or value.max() > hi):
        raise BundleError(f"{where}: {name} has values outside {lo}..{hi}")


def _scale(where, name, value):
    if not isinstance(value, (int, float)) or not np.isfinite(value) or value <= 0:
        raise BundleError(f"{where}: {name} must be a finite positive number, not {value!r}")


def validate(bundle, where="bundle"):
    """Check a bundle's internal consistency (see :func:`load`)."""
    inp = bundle.input
    _scale(where, "input scale", inp.get("scale"))
    _scale(where, "output scale", bundle.output.get("scale"))
    for key, obj in (("input zero point", inp), ("output zero point", bundle.output)):
        z = obj.get("zero_point")
        if not isinstance(z, int) or not 0 <= z <= 255:
            raise BundleError(f"{where}: {key} must be an integer in 0..255, not {z!r}")
    shape = inp.get("shape")
    if not isinstance(shape, list) or not all(isinstance(v, int) and v > 0 for v in shape):
        raise BundleError(f"{where}: input shape must be a list of positive integers")
    # Shape walk: images are (channels, height, width); vectors are (features,).
    current = tuple(shape)
    for index, layer in enumerate(bundle.layers):
        at = f"{where}: layer {index} ({layer.get('type')})"
        kind = layer.get("type")
        if kind == "matmul":
            n, k = layer.get("out_features"), layer.get("in_features")
            if not isinstance(n, int) or not isinstance(k, int) or n < 1 or k < 1:
                raise BundleError(f"{at}: in/out features must be positive integers")
            conv = layer.get("conv")
            if conv:
                c, h, w = current if len(current) == 3 else (None, None, None)
                if (c, h, w) != (conv["in_channels"], conv["in_height"], conv["in_width"]):
                    raise BundleError(f"{at}: expects input {conv['in_channels']}x"
                                      f"{conv['in_height']}x{conv['in_width']}, gets {current}")
                kh, kw = conv["kernel"]
                if k != kh * kw * c:
                    raise BundleError(f"{at}: in_features {k} != kernel {kh}x{kw} x {c}")
                current = (n, conv["out_height"], conv["out_width"])
            else:
                if int(np.prod(current)) != k:
                    raise BundleError(f"{at}: expects {k} inputs, gets {int(np.prod(current))}")
                current = (n,)
            bits = layer.get("weight_bits")
            if not isinstance(bits, int) or not 2 <= bits <= 8:
                raise BundleError(f"{at}: weight_bits must be 2..8, not {bits!r}")
            _int_array(at, "weight", layer.get("weight"), (n, k), -128, 127)
            for table, (lo, hi) in (("act_table", (0, 255)), ("weight_table", (-128, 127))):
                if layer.get(table) is not None:
                    _int_array(at, table, layer[table], (256,), lo, hi)
            sparsity = layer.get("sparsity")
            if sparsity is not None:
                from .nm_format import find_violation
                bad = find_violation(layer["weight"], *sparsity)
                if bad is not None:
                    raise BundleError(f"{at}: weights are not {sparsity[0]}:{sparsity[1]} "
                                      f"sparse (row {bad[0]}, group {bad[1]})")
            mode = layer.get("output")
            if mode not in _ARRAYS:
                raise BundleError(f"{at}: output must be 'requant' or 'threshold', not {mode!r}")
            if mode == "requant":
                _int_array(at, "bias", layer.get("bias"), (n,), *INT32)
                _int_array(at, "multiplier", layer.get("multiplier"), (n,), 0, (1 << 31) - 1)
                _int_array(at, "shift", layer.get("shift"), (n,), -31, 30)
                _int_array(at, "zero_point", layer.get("zero_point"), (n,), 0, 255)
                _int_array(at, "relu", layer.get("relu"), (n,), 0, 1)
            else:
                t = layer.get("thresholds")
                count = t.shape[1] if isinstance(t, np.ndarray) and t.ndim == 2 else -1
                if count not in (1, 3, 7, 15, 31, 63, 127, 255):
                    raise BundleError(f"{at}: thresholds must be [out, 2**bits - 1]")
                _int_array(at, "thresholds", t, (n, count), *INT32)
                if np.any(np.diff(t, axis=1) < 0):
                    raise BundleError(f"{at}: thresholds are not sorted")
        elif kind in ("maxpool", "avgpool"):
            if len(current) != 3:
                raise BundleError(f"{at}: pooling needs an image input, gets {current}")
            (kh, kw), (sh, sw) = layer["kernel"], layer["stride"]
            current = (current[0], (current[1] - kh) // sh + 1, (current[2] - kw) // sw + 1)
        elif kind == "flatten":
            current = (int(np.prod(current)),)
        else:
            raise BundleError(f"{at}: unknown layer type {kind!r}")
    classes = bundle.output.get("classes")
    if current != (classes,):
        raise BundleError(f"{where}: the network produces {current}, the bundle declares "
                          f"{classes} classes")
