"""The MLPerf Tiny reference architectures: their sizes are the reference's, they compile
through the frontend, and they run on the golden device at batch 1 bit for bit. (Their runs
on the Verilated accelerator are ``sparqforge bench models`` and the slow test below.)"""

import numpy as np
import pytest

import sparqforge
from sparqforge.backends import open_device
from sparqforge.sw import golden, mlperf_tiny
from sparqforge.sw.runtime.runner import Runner

#: Parameters (as Keras counts them) and MACs of the reference models
#: (../shared/REFERENCE.md: 78,666 parameters and about 12.5 M MACs for ResNet-8, 24.9 k and
#: 2.66 M for DS-CNN, 222 k and 7.49 M for MobileNetV1 0.25x, 270 k and 264 k for the
#: autoencoder).
REFERENCE = {"resnet8": (78_666, 12.5e6), "dscnn": (24.9e3, 2.66e6),
             "mobilenet_vww": (222e3, 7.49e6), "fc_autoencoder": (270e3, 264e3)}


@pytest.mark.parametrize("name", sorted(mlperf_tiny.MODELS))
def test_sizes_are_the_references(name):
    parameters, macs = REFERENCE[name]
    model = mlperf_tiny.make(name)
    assert mlperf_tiny.parameter_count(model) == pytest.approx(parameters, rel=0.005)
    assert mlperf_tiny.mac_count(name) == pytest.approx(macs, rel=0.005)


@pytest.mark.parametrize("name", ["resnet8", "dscnn", "fc_autoencoder"])
def test_each_runs_on_the_golden_device_at_batch_1(name):
    model = mlperf_tiny.make(name)
    rng = np.random.default_rng(0)
    x = rng.random((3, *mlperf_tiny.INPUT_SHAPES[name])).astype(np.float32)
    bundle = sparqforge.compile(model, x, name=name)      # data-free: fast
    codes = bundle.quantize_input(x)
    device = open_device("golden", "ulx3s-85f")
    runner = Runner(bundle, device)
    runner.load()
    got = runner.infer(codes, batch=1)
    assert np.array_equal(got, golden.run_network(bundle.layers, codes))
    report = runner.report()
    macs = sum(row["macs"] for row in report)
    assert macs == mlperf_tiny.mac_count(name)
    if name == "fc_autoencoder":
        # 270 k parameters do not fit the reference's 2048 weight words: streamed.
        assert not runner.resident


@pytest.mark.slow
def test_the_models_bench_on_the_rtl():
    from sparqforge.cli.models_bench import bench_models

    report = bench_models(quiet=True, images=2)
    for name in mlperf_tiny.MODELS:
        assert report[f"models.{name}.rtl_equals_golden"], name
        assert report[f"models.{name}.macs"] == mlperf_tiny.mac_count(name)
        assert report[f"models.{name}.host_layers"] == 0, name


@pytest.mark.parametrize("name", ["resnet8", "dscnn"])
def test_whole_networks_on_the_networks_preset_golden_device(name):
    # With the window walk, depthwise columns and add tables every layer runs on the
    # device: ResNet-8's residual adds too (one segment; its first block, whose three
    # 2048-word images exceed the banks, in bands of rows).
    from sparqforge.cli.models_bench import run_bundle

    model = mlperf_tiny.make(name)
    x = np.random.default_rng(1).random((2, *mlperf_tiny.INPUT_SHAPES[name])).astype(
        np.float32)
    bundle = sparqforge.compile(model, x, name=name)
    codes = bundle.quantize_input(x)
    got, runner, link = run_bundle(bundle, codes, "networks", backend="golden", batch=1,
                                   warm_up=True)
    assert np.array_equal(got, golden.run_network(bundle.layers, codes))
    assert all(row["where"] == "device" for row in runner.report())
    assert len(runner.schedule) == 1 and runner.resident
    assert runner.spilled_words == 0
    assert runner.banded_blocks == (2 if name == "resnet8" else 0)
    # The weights and the lists of layers are resident: per inference the link carries
    # the input and the output, framing (SLIP, headers, CRCs) and one RUNS command.
    io_bytes = int(np.prod(bundle.input["shape"])) + bundle.output["classes"]
    assert io_bytes < link / len(codes) < 1.1 * io_bytes + 150
