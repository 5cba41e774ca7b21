"""Bundle integrity: the content digest catches edits the zip's checksums do not, every
malformed structure is one BundleError naming the field, declared widths are checked against
the data, and a property-based fuzz of the loader: every mutation is refused cleanly or
changes nothing."""

import copy
import json
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sparqforge.errors import BundleError
from sparqforge.sw import bundle as bundle_io
from sparqforge.sw import golden


@pytest.fixture(scope="module")
def original(bundles):
    return bundles("cnn", "power-w4")


@pytest.fixture
def saved(original, tmp_path):
    return bundle_io.save(original, tmp_path / "cnn.npz")


def members(path):
    with np.load(path, allow_pickle=False) as npz:
        arrays = {name: npz[name] for name in npz.files}
    return json.loads(arrays.pop("meta").tobytes().decode()), arrays


def write(path, meta, arrays, *, digest):
    """Write a bundle's members (the zip's CRCs are recomputed by NumPy); with ``digest``
    also the content digest, as a deliberately crafted file would."""
    meta = copy.deepcopy(meta)
    if digest:
        meta["digest"] = bundle_io.content_digest(meta, arrays)
    np.savez(path, meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8), **arrays)


def equal(a, b):
    if a.name != b.name or a.input != b.input or a.output != b.output or a.info != b.info \
            or len(a.layers) != len(b.layers):
        return False
    for x, y in zip(a.layers, b.layers):
        if set(x) != set(y):
            return False
        for key in x:
            if isinstance(x[key], np.ndarray) or isinstance(y[key], np.ndarray):
                if not (isinstance(x[key], np.ndarray) and isinstance(y[key], np.ndarray)
                        and x[key].dtype == y[key].dtype and np.array_equal(x[key], y[key])):
                    return False
            elif x[key] != y[key]:
                return False
    return True


def test_the_digest_catches_an_edited_array_and_swapped_arrays(saved, original):
    meta, arrays = members(saved)
    assert equal(bundle_io.load(saved), original)
    edited = dict(arrays)
    name = meta["layers"][0]["weight"]["array"]
    edited[name] = edited[name].copy()
    edited[name][0, 0] ^= 1
    write(saved, meta, edited, digest=False)
    with pytest.raises(BundleError, match="content does not match its digest"):
        bundle_io.load(saved)
    # Two layers' arrays swapped: the same arrays, another network.
    swapped = dict(arrays)
    a, b = (meta["layers"][i]["weight"]["array"] for i in (0, 2))
    swapped[a], swapped[b] = arrays[b], arrays[a]
    write(saved, meta, swapped, digest=False)
    with pytest.raises(BundleError, match="content does not match its digest"):
        bundle_io.load(saved)


CASES = {
    # The list of corrupted bundles that escaped as raw exceptions, and the like.
    "layers as a dict": (lambda m, a: m.__setitem__("layers", {"0": 1}), "layers must be a list"),
    "layers as a string": (lambda m, a: m.__setitem__("layers", "x"), "layers must be a list"),
    "a layer as a string": (lambda m, a: m["layers"].__setitem__(1, "relu"),
                            "layer 1 must be an object"),
    "a layer as null": (lambda m, a: m["layers"].__setitem__(1, None),
                        "layer 1 must be an object"),
    "sparsity [0, 4]": (lambda m, a: m["layers"][0].__setitem__("sparsity", [0, 4]),
                        r"sparsity\[0\] must be an integer in >= 1"),
    "sparsity [4, 2]": (lambda m, a: m["layers"][0].__setitem__("sparsity", [4, 2]),
                        "sparsity must be N:M with 0 < N <= M"),
    "sparsity '2:4'": (lambda m, a: m["layers"][0].__setitem__("sparsity", "2:4"),
                       "sparsity must be a list of two integers"),
    "sparsity {'n': 2}": (lambda m, a: m["layers"][0].__setitem__("sparsity", {"n": 2}),
                          "sparsity must be a list of two integers"),
    "conv without a kernel": (lambda m, a: m["layers"][0]["conv"].pop("kernel"),
                              "conv: kernel is missing"),
    "conv kernel not integers": (lambda m, a: m["layers"][0]["conv"].__setitem__(
        "kernel", [3.0, 3]), r"conv: kernel\[0\] must be an integer"),
    "conv out_height that lies": (lambda m, a: m["layers"][0]["conv"].__setitem__(
        "out_height", 9), "out_height and out_width must be 8 and 8"),
    "conv as a list": (lambda m, a: m["layers"][0].__setitem__("conv", [1, 2]),
                       "conv: must be an object"),
    "input as a list": (lambda m, a: m.__setitem__("input", [1, 8, 8]),
                        "input: must be an object"),
    "pooling stride [0, 0]": (lambda m, a: m["layers"][1].__setitem__("stride", [0, 0]),
                              r"stride\[0\] must be an integer in >= 1"),
    "pooling without a kernel": (lambda m, a: m["layers"][1].pop("kernel"),
                                 "kernel is missing"),
    "pooling kernel 2.5": (lambda m, a: m["layers"][1].__setitem__("kernel", [2.5, 2]),
                           r"kernel\[0\] must be an integer"),
    "input shape [true, 8, 8]": (lambda m, a: m["input"].__setitem__("shape", [True, 8, 8]),
                                 r"shape\[0\] must be an integer in >= 1, not True"),
    "a boolean scale": (lambda m, a: m["input"].__setitem__("scale", True),
                        "input: scale must be a finite positive number, not True"),
    "a boolean zero point": (lambda m, a: m["output"].__setitem__("zero_point", True),
                             "output: zero_point must be an integer in 0..255, not True"),
    "a boolean weight_bits": (lambda m, a: m["layers"][0].__setitem__("weight_bits", True),
                              "weight_bits must be an integer in 2..8, not True"),
    "an unknown layer field": (lambda m, a: m["layers"][0].__setitem__("sparsty", [2, 4]),
                               "sparsty is not a field of this object"),
    "an unknown layer type": (lambda m, a: m["layers"][1].__setitem__("type", "softmax"),
                              "type must be one of"),
    "a missing name": (lambda m, a: m.pop("name"), "metadata field 'name' is missing"),
    "a requant field on a threshold layer": (lambda m, a: (
        a.__setitem__("layer0.relu", np.zeros(8, np.int64)),
        m["layers"][0].__setitem__("relu", {"array": "layer0.relu"})),
        "relu does not belong to a threshold layer"),
    "one array for two fields": (lambda m, a: m["layers"][0].__setitem__(
        "act_table", m["layers"][0]["weight_table"]), "reuses array"),
    "an array no layer uses": (lambda m, a: a.__setitem__("extra", np.zeros(3, np.int64)),
                               "holds array 'extra' that no layer uses"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_malformed_structure_is_one_error_naming_the_field(saved, case):
    edit, message = CASES[case]
    meta, arrays = members(saved)
    edit(meta, arrays)
    write(saved, meta, arrays, digest=True)
    with pytest.raises(BundleError, match=message):
        bundle_io.load(saved)


def test_deeply_nested_metadata_is_refused(saved):
    meta, arrays = members(saved)
    text = json.dumps(meta)[:-1] + ', "x": ' + "[" * 100_000 + "]" * 100_000 + "}"
    np.savez(saved, meta=np.frombuffer(text.encode(), dtype=np.uint8), **arrays)
    with pytest.raises(BundleError, match="corrupted metadata"):
        bundle_io.load(saved)


def test_declared_widths_and_patterns_are_checked_against_the_data(bundles, tmp_path):
    saved = bundle_io.save(bundles("mlp", "uniform-w8a8"), tmp_path / "mlp.npz")
    meta, arrays = members(saved)
    # A uniform 8-bit layer whose weights claim 4 bits.
    layer = next(layer for layer in meta["layers"] if layer["type"] == "matmul"
                 and layer.get("weight_table") is None)
    layer["weight_bits"] = 4
    arrays[layer["weight"]["array"]] = np.full_like(arrays[layer["weight"]["array"]], 100)
    write(saved, meta, arrays, digest=True)
    with pytest.raises(BundleError, match=r"weight has values outside -8\.\.7"):
        bundle_io.load(saved)


def test_version_1_bundles_still_load(saved, original):
    meta, arrays = members(saved)
    meta["version"] = 1
    meta.pop("digest")
    write(saved, meta, arrays, digest=False)
    assert equal(bundle_io.load(saved), original)


def test_a_failed_save_leaves_nothing(original, tmp_path):
    target = tmp_path / "missing_folder" / "x.npz"
    with pytest.raises(OSError):
        bundle_io.save(original, target)
    broken = copy.deepcopy(original)
    broken.info = {"not json": object()}
    with pytest.raises(TypeError):
        bundle_io.save(broken, tmp_path / "y.npz")
    assert list(tmp_path.iterdir()) == []


# ---- property-based fuzzing of the loader ------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(1 << 40), 1 << 40)
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner,
                                                                 max_size=4),
    max_leaves=12)


def paths(value, prefix=()):
    """Every path into a JSON value."""
    yield prefix
    if isinstance(value, dict):
        for key, child in value.items():
            yield from paths(child, prefix + (key,))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield from paths(child, prefix + (index,))


def mutate(meta, data):
    """One random edit of the metadata: a value replaced, a key or item removed, or a key
    added, at a random place."""
    meta = copy.deepcopy(meta)
    where = data.draw(st.sampled_from(list(paths(meta))[1:]))
    parent = meta
    for step in where[:-1]:
        parent = parent[step]
    action = data.draw(st.sampled_from(["replace", "remove", "add"]))
    if action == "replace":
        parent[where[-1]] = data.draw(json_values)
    elif action == "remove":
        del parent[where[-1]]
    elif isinstance(parent, dict):
        parent[data.draw(st.text(max_size=6))] = data.draw(json_values)
    else:
        parent.append(data.draw(json_values))
    return meta


def mutate_arrays(arrays, data):
    arrays = dict(arrays)
    name = data.draw(st.sampled_from(sorted(arrays)))
    action = data.draw(st.sampled_from(["value", "dtype", "shape", "drop"]))
    value = arrays[name].copy()
    if action == "value" and value.size:
        index = data.draw(st.integers(0, value.size - 1))
        value.flat[index] = data.draw(st.integers(-(1 << 31), (1 << 31) - 1)) \
            if value.dtype.itemsize >= 4 else data.draw(st.integers(-128, 127))
    elif action == "dtype":
        value = value.astype(data.draw(st.sampled_from(["float32", "int8", "uint8", "bool",
                                                         "int16"])))
    elif action == "shape":
        value = value.reshape(-1)[:max(0, value.size - 1)]
    else:
        del arrays[name]
        return arrays
    arrays[name] = value
    return arrays


def loads_cleanly(path):
    """``None`` (refused with a BundleError) or the loaded bundle; anything else fails."""
    try:
        return bundle_io.load(path)
    except BundleError:
        return None


@settings(max_examples=150, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzz_every_corruption_is_refused_or_changes_nothing(saved, original, data):
    # Edits after export, as corruption or a careless edit would make them (the zip's own
    # checksums recomputed, the digest not).
    meta, arrays = members(saved)
    target = saved.with_name("fuzz.npz")
    kind = data.draw(st.sampled_from(["meta", "arrays", "bytes"]))
    if kind == "meta":
        write(target, mutate(meta, data), arrays, digest=False)
    elif kind == "arrays":
        write(target, meta, mutate_arrays(arrays, data), digest=False)
    else:
        raw = bytearray(saved.read_bytes())
        for _ in range(data.draw(st.integers(1, 4))):
            raw[data.draw(st.integers(0, len(raw) - 1))] ^= data.draw(st.integers(1, 255))
        target.write_bytes(bytes(raw))
    loaded = loads_cleanly(target)
    assert loaded is None or equal(loaded, original)


@settings(max_examples=200, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzz_crafted_bundles_are_refused_or_run(saved, data):
    # Edits with the digest recomputed (a crafted file): the field checks alone must refuse
    # every bundle the golden network cannot run, always with a BundleError.
    meta, arrays = members(saved)
    target = saved.with_name("crafted.npz")
    if data.draw(st.booleans()):
        write(target, mutate(meta, data), arrays, digest=True)
    else:
        write(target, meta, mutate_arrays(arrays, data), digest=True)
    loaded = loads_cleanly(target)
    if loaded is not None:
        codes = np.random.default_rng(0).integers(0, 256, (2, *loaded.input["shape"]))
        codes = codes.transpose(0, 2, 3, 1) if codes.ndim == 4 else codes
        out = golden.run_network(loaded.layers, codes)
        assert out.shape == (2, loaded.output["classes"])


def test_the_fuzz_checker_is_not_vacuous(saved, original, tmp_path):
    # A valid bundle that differs from the original is neither refused nor equal.
    meta, arrays = members(saved)
    meta["name"] = "other"
    write(tmp_path / "other.npz", meta, arrays, digest=True)
    other = loads_cleanly(tmp_path / "other.npz")
    assert other is not None and not equal(other, original)
    with zipfile.ZipFile(saved) as archive:
        assert "meta.npy" in archive.namelist()
