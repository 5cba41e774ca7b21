"""Bundle export and loading: round trip, malformed files refused with a clear error, each of
export's own refusals named (the layer checks shared with quantize are in test_layers.py),
input codes and biases rounded half away from zero."""

import json
import zipfile

import numpy as np
import pytest
import torch
from torch import nn

from sparqforge.errors import BundleError, UnsupportedLayerError
from sparqforge.sw import bundle as bundle_io
from sparqforge.sw import digits, golden
from sparqforge.sw.export import export_model
from sparqforge.sw.quantize import ActivationQuantizer, quantize_model


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


def rewrite(path, edit, *, digest=True):
    """Load the npz members, let ``edit`` change meta/arrays, write them back with the
    digest recomputed (a crafted bundle: the digest alone would catch any edit) unless
    ``digest`` is false."""
    with np.load(path, allow_pickle=False) as npz:
        arrays = {name: npz[name] for name in npz.files}
    meta = json.loads(arrays["meta"].tobytes().decode())
    edit(meta, arrays)
    if digest:
        meta["digest"] = bundle_io.content_digest(
            meta, {name: value for name, value in arrays.items() if name != "meta"})
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    np.savez(path, **arrays)


@pytest.mark.parametrize("damage,message", [
    ("truncate", "not a readable sparqforge bundle"),
    ("flip", "corrupted"),
    ("version", "has version 99; this sparqforge reads versions 1, 2"),
    ("format", "is not a sparqforge bundle"),
    ("nan_scale", "input: scale must be a finite positive number"),
    ("weight_shape", "weight has shape"),
    ("multiplier_range", "multiplier has values outside"),
    ("float_weights", "weight must be an integer array"),
    ("missing_array", "lacks array"),
    ("chain", "in_features is 65, but the layer's input has 64 values"),
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


def test_export_rejects_asymmetric_weights(trained):
    model = trained[0]["mlp"]
    x = trained[1][0][:64]
    qmodel = quantize_model(model, bits=8, method="uniform", act_bits=8, calib=x)
    for layer in qmodel.layers.values():
        layer.weight.symmetric = False
    with pytest.raises(UnsupportedLayerError, match="asymmetric weights are not supported"):
        export_model(qmodel, x, name="asym")


# ------------------------------------------------------------------------------------------
# Export's own refusals: quantizations (not layers) the integer pipeline cannot express. Each
# model passes check_model, so these messages come from export_model itself.
# ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def images():
    return torch.rand(32, 1, 8, 8, generator=torch.Generator().manual_seed(1))


def mlp():
    return digits.make_model("mlp")


def refused(qmodel, images, message, **options):
    with pytest.raises(UnsupportedLayerError, match=message):
        export_model(qmodel, images, name="bad", **options)


def test_export_refuses_narrow_uniform_inputs(images):
    qmodel = quantize_model(mlp(), bits=8, method="uniform", act_bits=6, act_calib=images)
    refused(qmodel, images, r"The input activations of layer '1' are 6-bit uniform codes, but "
                            r"uniform activations must be 8-bit: quantize them with act_bits=8")


def test_export_refuses_narrow_uniform_outputs(images):
    qmodel = quantize_model(mlp(), bits=8, method="uniform", act_bits=[8, 6, 8],
                            act_calib=images)
    refused(qmodel, images, r"The activations after layer '1' are 6-bit uniform codes")


def test_export_refuses_a_model_without_matmuls(images):
    qmodel = quantize_model(nn.Sequential(nn.MaxPool2d(2), nn.Flatten()), act_calib=images)
    refused(qmodel, images, r"The model has no Linear or Conv2d layer to export; sparqforge "
                            r"runs matmul layers, so add at least one")


def test_export_refuses_float_inputs(images):
    qmodel = quantize_model(mlp(), bits=8, method="uniform", act_bits=None)
    refused(qmodel, images, r"Layer '1' has float inputs; quantize its activations")


def test_export_refuses_power_codes_into_the_first_layer(images):
    qmodel = quantize_model(mlp(), bits=4, act_bits=4, act_method="power", act_calib=images)
    refused(qmodel, images, r"Layer '1' has power input codes, but the first layer's input "
                            r"must be uniform 8-bit .*: use act_method='uniform' for it")


def test_export_refuses_pooling_a_non_image(images):
    # Images without a channel axis: torch pools [B, 8, 8] as one unbatched [C, H, W] image,
    # the accelerator cannot.
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                          nn.Linear(16, 10))
    flat = images[:, 0]
    qmodel = quantize_model(model, bits=8, method="uniform", act_bits=8, act_calib=flat)
    refused(qmodel, flat, r"Layer '2' \(MaxPool2d\) pools a 2-D input, not an image; pool only "
                          r"\[channels, height, width\] inputs")


def power_mlp(images):
    return quantize_model(mlp(), bits=4, act_bits=[8, 4, 4],
                          act_method=["uniform", "power", "power"], act_calib=images)


def test_export_refuses_power_tables_narrower_than_8_bits(images):
    qmodel = power_mlp(images)
    export_model(qmodel, images, name="fine")
    # quantize_model always builds 8-bit tables; a hand-made quantizer can be narrower.
    layer = qmodel.layers["3"]
    upstream = nn.Sequential(*list(qmodel.fake_quant_model())[:3])(images)
    layer.input_quantizer = ActivationQuantizer(4, "power", mac_bits=6).calibrate(upstream)
    refused(qmodel, images, r"Layer '3': power activations need 8-bit table entries, not "
                            r"mac_bits=6: calibrate them with mac_bits=8")


def test_export_refuses_power_codes_wider_than_the_threshold_unit(images):
    qmodel = power_mlp(images)
    export_model(qmodel, images, name="fine", threshold_bits=4)
    refused(qmodel, images, r"Layer '1': 4-bit power activations need a 4-bit threshold unit, "
                            r"the target has 3-bit: quantize them with act_bits <= 3",
            threshold_bits=3)
