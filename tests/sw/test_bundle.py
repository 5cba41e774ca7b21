"""Bundle export and loading: round trip, malformed files refused with a clear error,
unsupported layers named."""

import json
import zipfile

import numpy as np
import pytest
from torch import nn

from sparqforge.errors import BundleError, UnsupportedLayerError
from sparqforge.sw import bundle as bundle_io
from sparqforge.sw import golden
from sparqforge.sw.export import export_model
from sparqforge.sw.quantize import quantize_model


@pytest.fixture
def saved(bundles, tmp_path):
    path = bundle_io.save(bundles("mlp", "uniform-w8a8"), tmp_path / "mlp.npz")
    return path


def test_round_trip_keeps_arrays_metadata_and_results(bundles, tmp_path, trained):
    for kind, scheme in (("mlp", "power-w4"), ("cnn", "uniform-w8a8")):
        original = bundles(kind, scheme)
        loaded = bundle_io.load(bundle_io.save(original, tmp_path / f"{kind}.npz"))
        assert loaded.input == original.input and loaded.output == original.output
        assert len(loaded.layers) == len(original.layers)
        for a, b in zip(original.layers, loaded.layers):
            assert set(a) == set(b)
            for key in a:
                if isinstance(a[key], np.ndarray):
                    assert np.array_equal(a[key], b[key]) and a[key].dtype.kind == "i"
                else:
                    assert a[key] == b[key] or (a[key], b[key]) == (None, None)
        codes = original.quantize_input(trained[1][2][:50].numpy())
        assert np.array_equal(golden.run_network(original.layers, codes),
                              golden.run_network(loaded.layers, codes))


def rewrite(path, edit):
    """Load the npz members, let ``edit`` change meta/arrays, write them back."""
    with np.load(path, allow_pickle=False) as npz:
        arrays = {name: npz[name] for name in npz.files}
    meta = json.loads(arrays["meta"].tobytes().decode())
    edit(meta, arrays)
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    np.savez(path, **arrays)


@pytest.mark.parametrize("damage,message", [
    ("truncate", "not a readable sparqforge bundle"),
    ("flip", "corrupted"),
    ("version", "has version 99; this sparqforge reads version 1"),
    ("format", "is not a sparqforge bundle"),
    ("nan_scale", "input scale must be a finite positive number"),
    ("weight_shape", "weight has shape"),
    ("multiplier_range", "multiplier has values outside"),
    ("float_weights", "weight must be an integer array"),
    ("missing_array", "lacks array"),
    ("chain", "expects 65 inputs, gets 64"),
])
def test_malformed_bundles_are_refused(saved, damage, message):
    data = saved.read_bytes()
    if damage == "truncate":
        saved.write_bytes(data[:len(data) // 2])
    elif damage == "flip":
        # Flip bytes inside the first member's compressed data (after its local header).
        with zipfile.ZipFile(saved) as archive:
            info = archive.infolist()[0]
        offset = info.header_offset + 30 + len(info.filename) + 8
        corrupted = bytearray(data)
        for i in range(offset, offset + 16):
            corrupted[i] ^= 0xFF
        saved.write_bytes(bytes(corrupted))
    else:
        def edit(meta, arrays):
            weight = meta["layers"][1]["weight"]["array"]
            if damage == "version":
                meta["version"] = 99
            elif damage == "format":
                meta["format"] = "something-else"
            elif damage == "nan_scale":
                meta["input"]["scale"] = float("nan")
            elif damage == "weight_shape":
                arrays[weight] = arrays[weight][:, :-1]
            elif damage == "multiplier_range":
                key = meta["layers"][1]["multiplier"]["array"]
                arrays[key] = arrays[key] * 0 + (1 << 31)
            elif damage == "float_weights":
                arrays[weight] = arrays[weight].astype(np.float32)
            elif damage == "missing_array":
                del arrays[weight]
            elif damage == "chain":
                meta["layers"][1]["in_features"] = 65
                arrays[weight] = np.zeros((64, 65), dtype=np.int64)
        rewrite(saved, edit)
    with pytest.raises(BundleError, match=message):
        bundle_io.load(saved)


def test_missing_file_says_how_to_make_one(tmp_path):
    with pytest.raises(BundleError, match="does not exist; export one"):
        bundle_io.load(tmp_path / "nothing.npz")


@pytest.mark.parametrize("model,message", [
    (nn.Sequential(nn.Linear(64, 10), nn.Sigmoid()),
     r"Layer '1' \(Sigmoid\) is not supported"),
    (nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(144, 10)),
     r"Layer '1' \(BatchNorm2d\) is not supported"),
    (nn.Sequential(nn.Flatten(), nn.ReLU(), nn.Linear(64, 10)),
     r"Layer '1' \(ReLU\) must directly follow a Linear or Conv2d"),
    (nn.Sequential(nn.Conv2d(1, 4, 3, groups=1, dilation=2), nn.Flatten(), nn.Linear(64, 10)),
     r"Layer '0' \(Conv2d\) uses groups, dilation"),
])
def test_unsupported_layers_are_named(model, message, trained):
    x = trained[1][0][:32]
    with pytest.raises(UnsupportedLayerError, match=message):
        qmodel = quantize_model(model, bits=8, method="uniform", act_bits=8, calib=x)
        export_model(qmodel, x, name="bad")


def test_export_rejects_asymmetric_weights(trained):
    model = trained[0]["mlp"]
    x = trained[1][0][:64]
    qmodel = quantize_model(model, bits=8, method="uniform", act_bits=8, calib=x)
    for layer in qmodel.layers.values():
        layer.weight.symmetric = False
    with pytest.raises(UnsupportedLayerError, match="asymmetric weights are not supported"):
        export_model(qmodel, x, name="asym")
