"""The exported model: one versioned ``.npz`` file (NumPy arrays plus JSON metadata).

A bundle holds everything an integer-only accelerator needs and nothing it cannot run:
the layer graph (matmul layers from Linear, Conv2d and depthwise Conv2d, residual adds,
clamps, max/avg and global average pooling, flatten; ``docs/bundle.md``), integer
weight codes, operand tables, per-channel requantization parameters or thresholds, and the
input and output quantization. Version 2 carries a SHA-256 digest of its whole content
(metadata and every array, by name), so an edited array, arrays swapped between layers or a
changed field is refused even when the zip's own checksums were recomputed. :func:`load`
checks the digest, then every field (:func:`~sparqforge.sw.bundle_check.validate`), and
refuses anything else with one :class:`~sparqforge.errors.BundleError` naming the problem.
Version 1 bundles (no digest, no layer graph) still load, with every field checked: each
layer reads the one before it (:func:`~sparqforge.sw.golden.network.layer_graph`).
"""

__all__ = ["FORMAT", "VERSION", "Bundle", "content_digest", "save", "load"]

import contextlib
import hashlib
import io
import json
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import BundleError
from .bundle_check import validate
from .golden.network import layer_graph
from .golden.numerics import round_half_away

FORMAT = "sparqforge-bundle"
VERSION = 2
#: Versions :func:`load` reads.
READABLE = (1, 2)


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
        """Float inputs ``[B, *shape]`` (NumPy or anything array-like, any real dtype) to
        input codes (channels-last for images).

        Raises
        ------
        ValueError
            For inputs that are not real numbers (complex, strings, objects), not finite, or
            whose size is not a whole number of items.
        """
        x = np.asarray(x)
        if x.dtype.kind not in "iuf":
            raise ValueError(f"Inputs must be real numbers, not {x.dtype}")
        x = x.astype(np.float64)
        if not np.all(np.isfinite(x)):
            raise ValueError("Inputs must be finite numbers (NaN or infinity found)")
        per_item = int(np.prod(self.input["shape"]))
        if x.size == 0 or x.size % per_item:
            raise ValueError(f"Inputs have {x.size} values, not a positive multiple of the "
                             f"model's input size {per_item} ({self.input['shape']})")
        x = x.reshape(-1, *self.input["shape"])
        scaled = x / self.input["scale"]
        codes = round_half_away(scaled) + self.input["zero_point"]
        codes = np.clip(codes, 0, 255).astype(np.int64)
        return codes.transpose(0, 2, 3, 1) if codes.ndim == 4 else codes

    def dequantize_output(self, codes):
        return (np.asarray(codes, dtype=np.float64) - self.output["zero_point"]) \
            * self.output["scale"]

    def matmul_layers(self):
        return [layer for layer in self.layers if layer["type"] == "matmul"]


def content_digest(meta, arrays):
    """SHA-256 (hex) of a bundle's content: its metadata without the digest, as canonical
    JSON, then every array by name in sorted order (name, dtype, shape, bytes)."""
    digest = hashlib.sha256()
    body = {key: value for key, value in meta.items() if key != "digest"}
    digest.update(json.dumps(body, sort_keys=True, separators=(",", ":")).encode())
    for name in sorted(arrays):
        array = np.ascontiguousarray(arrays[name])
        digest.update(json.dumps([name, array.dtype.str, list(array.shape)]).encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def save(bundle, path):
    """Write ``bundle`` to ``path`` (an ``.npz``); written to a temporary name first and
    renamed, so a failure leaves neither a half-written bundle nor the temporary file."""
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
    meta["digest"] = content_digest(meta, arrays)
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_bytes(buffer.getvalue())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise
    return path


def _read(path):
    """The npz members of ``path``; a :class:`BundleError` for anything unreadable."""
    if not path.is_file():
        raise BundleError(f"Bundle {path} does not exist; export one with sparqforge export")
    try:
        with np.load(path, allow_pickle=False) as npz:
            if not hasattr(npz, "files"):
                raise ValueError("a single array, not an archive")
            return {name: npz[name] for name in npz.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as exc:
        raise BundleError(f"Bundle {path} is not a readable sparqforge bundle (truncated or "
                          f"corrupted: {exc}); export it again") from None
    except Exception as exc:  # zlib and zipfile raise several types on damaged members
        raise BundleError(f"Bundle {path} is corrupted ({type(exc).__name__}: {exc}); export "
                          f"it again") from None


def _metadata(path, arrays):
    if "meta" not in arrays or arrays["meta"].dtype != np.uint8 or arrays["meta"].ndim != 1:
        raise BundleError(f"Bundle {path} has no metadata; it is not a sparqforge bundle")
    try:
        meta = json.loads(arrays["meta"].tobytes().decode())
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise BundleError(f"Bundle {path} has corrupted metadata ({type(exc).__name__}); "
                          f"export it again") from None
    if not isinstance(meta, dict):
        raise BundleError(f"Bundle {path} has malformed metadata: not an object")
    if meta.get("format") != FORMAT:
        raise BundleError(f"{path} is not a sparqforge bundle (format {meta.get('format')!r})")
    version = meta.get("version")
    if isinstance(version, bool) or version not in READABLE:
        raise BundleError(f"Bundle {path} has version {version!r}; this sparqforge reads "
                          f"versions {', '.join(map(str, READABLE))}: export the model again")
    return meta


def load(path):
    """Read and validate a bundle.

    Raises
    ------
    BundleError
        Naming the file and the problem: missing, truncated or corrupted, wrong format or
        version, content that does not match its digest, missing or unknown fields and
        arrays, values of the wrong type (a boolean is not a number), shape or range,
        declared widths or patterns the data do not have, layers whose shapes do not chain,
        a malformed layer graph (duplicate or undefined names, a cycle, an unread layer).
    """
    path = Path(path)
    arrays = _read(path)
    meta = _metadata(path, arrays)
    members = {name: value for name, value in arrays.items() if name != "meta"}
    if meta["version"] >= 2:
        digest = meta.get("digest")
        if digest != content_digest(meta, members):
            raise BundleError(f"Bundle {path}'s content does not match its digest (an array or "
                              f"field was changed after export): export it again")
    missing = sorted({"name", "input", "output", "layers"} - set(meta))
    if missing:
        raise BundleError(f"Bundle {path}: metadata field {missing[0]!r} is missing")
    layers_meta = meta["layers"]
    if not isinstance(layers_meta, list):
        raise BundleError(f"Bundle {path}: layers must be a list, not "
                          f"{type(layers_meta).__name__}")
    used, layers = set(), []
    for index, layer in enumerate(layers_meta):
        if not isinstance(layer, dict):
            raise BundleError(f"Bundle {path}: layer {index} must be an object, not "
                              f"{type(layer).__name__}")
        resolved = {}
        for key, value in layer.items():
            if isinstance(value, dict) and set(value) == {"array"}:
                name = value["array"]
                if not isinstance(name, str) or name not in members:
                    raise BundleError(f"Bundle {path}: layer {index} lacks array {key!r}")
                if name in used:
                    raise BundleError(f"Bundle {path}: layer {index}'s {key!r} reuses array "
                                      f"{name!r}")
                used.add(name)
                resolved[key] = members[name]
            else:
                resolved[key] = value
        layers.append(resolved)
    unused = sorted(set(members) - used)
    if unused:
        raise BundleError(f"Bundle {path} holds array {unused[0]!r} that no layer uses")
    if meta["version"] == 1:
        # A version-1 bundle is a chain: each layer reads the one before it.
        for layer, (name, inputs) in zip(layers, layer_graph(layers)):
            layer.setdefault("name", name)
            layer.setdefault("inputs", inputs)
    elif layers and not any("inputs" in layer for layer in layers):
        raise BundleError(f"Bundle {path} has no layer graph (its layers have no inputs), "
                          f"although it is version {meta['version']}: export it again")
    bundle = Bundle(name=meta["name"], input=meta["input"], output=meta["output"],
                    layers=layers, info=meta.get("info", {}))
    validate(bundle, str(path))
    # Validated integers in any integer dtype; computed on as int64 everywhere.
    for layer in bundle.layers:
        for key, value in layer.items():
            if isinstance(value, np.ndarray):
                layer[key] = value.astype(np.int64)
    return bundle
