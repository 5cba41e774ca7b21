"""The one supported-layer check (sparqforge.sw.layers.check_model): quantize_model and
export_model refuse exactly the same models, with the same message, before any work."""

import re

import pytest
import torch
from torch import nn

from sparqforge.errors import UnsupportedLayerError
from sparqforge.sw import layers
from sparqforge.sw.export import SUPPORTED_LAYERS, export_model
from sparqforge.sw.quantize import QuantizedModel, quantize_model

# (model, message): every refusal of check_model. The first group used to pass quantize_model
# and fail only at export (or, for the last two, at neither: they exported wrong numbers).
REFUSED = [
    (nn.Sequential(nn.Conv2d(1, 4, 3, padding="valid"), nn.Flatten(), nn.Linear(144, 10)),
     r"Layer '0' \(Conv2d\) uses padding='valid'; give the padding as integers "
     r"\(padding='valid' is padding=0\)"),
    (nn.Sequential(nn.Conv2d(1, 4, 3, dilation=2), nn.Flatten(), nn.Linear(64, 10)),
     r"Layer '0' \(Conv2d\) has dilation=\(2, 2\); .* use dilation=1"),
    (nn.Sequential(nn.Conv2d(1, 4, 3), nn.MaxPool2d(2), nn.ReLU(), nn.Flatten(),
                   nn.Linear(36, 10)),
     r"Layer '2' \(ReLU\) follows '1' \(MaxPool2d\), but it must directly follow a Linear or "
     r"Conv2d layer, whose requantizer applies it: move it there"),
    (nn.Sequential(nn.Conv2d(1, 4, 3), nn.AvgPool2d(2, divisor_override=3), nn.Flatten(),
                   nn.Linear(36, 10)),
     r"Layer '1' \(AvgPool2d\) has divisor_override=3; .* leave divisor_override=None"),
    (nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(start_dim=2), nn.Linear(36, 10)),
     r"Layer '1' \(Flatten\) has start_dim=2, end_dim=-1; .* use nn.Flatten\(\)"),
    # Refused by both before as well.
    (nn.Linear(64, 10), r"sparqforge needs an nn.Sequential, not Linear; put the layers in an "
                        r"nn.Sequential"),
    (nn.Sequential(nn.Flatten(), nn.Linear(64, 10), nn.Sigmoid()),
     r"Layer '2' \(Sigmoid\) is not supported; sparqforge quantizes and exports Linear, "
     r"Conv2d, ReLU \(after Linear/Conv2d\), MaxPool2d, AvgPool2d, Flatten: remove or "
     r"replace it"),
    (nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(144, 10)),
     r"Layer '1' \(BatchNorm2d\) is not supported; .*fold a BatchNorm into the layer before"),
    (nn.Sequential(nn.ReLU(), nn.Flatten(), nn.Linear(64, 10)),
     r"Layer '0' \(ReLU\) is the first layer, but it must directly follow a Linear"),
    (nn.Sequential(nn.Flatten(), nn.ReLU(), nn.Linear(64, 10)),
     r"Layer '1' \(ReLU\) follows '0' \(Flatten\), but it must directly follow a Linear"),
    (nn.Sequential(nn.Conv2d(1, 4, 3, groups=1, dilation=(1, 2)), nn.Flatten(),
                   nn.Linear(96, 10)),
     r"Layer '0' \(Conv2d\) has dilation=\(1, 2\)"),
    (nn.Sequential(nn.Conv2d(2, 4, 3, groups=2), nn.Flatten(), nn.Linear(144, 10)),
     r"Layer '0' \(Conv2d\) has groups=2; sparqforge runs only groups=1 convolutions: use "
     r"groups=1"),
    (nn.Sequential(nn.Conv2d(1, 4, 3, padding=1, padding_mode="reflect"), nn.Flatten(),
                   nn.Linear(256, 10)),
     r"Layer '0' \(Conv2d\) uses padding_mode='reflect'; .* use padding_mode='zeros'"),
    (nn.Sequential(nn.Conv2d(1, 4, 3, padding="same"), nn.Flatten(), nn.Linear(256, 10)),
     r"Layer '0' \(Conv2d\) uses padding='same'; give the padding as integers"),
    (nn.Sequential(nn.Conv2d(1, 4, 3), nn.MaxPool2d(2, padding=1), nn.Flatten(),
                   nn.Linear(64, 10)),
     r"Layer '1' \(MaxPool2d\) uses padding=1; sparqforge pools without padding: use "
     r"padding=0"),
    (nn.Sequential(nn.Conv2d(1, 4, 3), nn.AvgPool2d(2, ceil_mode=True), nn.Flatten(),
                   nn.Linear(36, 10)),
     r"Layer '1' \(AvgPool2d\) uses ceil_mode=True; .* use ceil_mode=False"),
    (nn.Sequential(nn.Conv2d(1, 4, 3), nn.MaxPool2d(2, dilation=2), nn.Flatten(),
                   nn.Linear(16, 10)),
     r"Layer '1' \(MaxPool2d\) has dilation=2; use dilation=1"),
]


@pytest.fixture(scope="module")
def images():
    return torch.rand(16, 1, 8, 8, generator=torch.Generator().manual_seed(0))


def raised(call):
    with pytest.raises(UnsupportedLayerError) as info:
        call()
    assert isinstance(info.value, TypeError)
    return str(info.value)


@pytest.mark.parametrize("model,message", REFUSED)
def test_quantize_and_export_refuse_alike(model, message, images):
    direct = raised(lambda: layers.check_model(model))
    quantized = raised(lambda: quantize_model(model, bits=8, method="uniform", act_bits=8,
                                              act_calib=images))
    # Export checks the model first, so a QuantizedModel without layers reaches the check.
    exported = raised(lambda: export_model(QuantizedModel(model, {}), images, name="bad"))
    assert direct == quantized == exported
    assert re.search(message, direct), direct


def test_the_message_lists_what_is_supported():
    assert SUPPORTED_LAYERS is layers.SUPPORTED_LAYERS
    for name in ("Linear", "Conv2d", "ReLU", "MaxPool2d", "AvgPool2d", "Flatten"):
        assert name in SUPPORTED_LAYERS


@pytest.mark.parametrize("model", [
    nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10)),
    nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                  nn.Conv2d(4, 4, (3, 1), stride=(1, 2), padding=(1, 0)), nn.ReLU(),
                  nn.AvgPool2d(2), nn.Flatten(), nn.Linear(8, 10), nn.ReLU()),
    nn.Sequential(nn.Conv2d(1, 4, 3, padding=0, dilation=1, groups=1), nn.Flatten(),
                  nn.Linear(144, 10)),
])
def test_supported_models_pass_both(model, images):
    layers.check_model(model)
    qmodel = quantize_model(model, bits=8, method="uniform", act_bits=8, act_calib=images)
    bundle = export_model(qmodel, images, name="ok")
    assert len(bundle.matmul_layers()) == len(qmodel.layers)
