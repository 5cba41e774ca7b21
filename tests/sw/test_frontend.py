"""The frontend: users' own PyTorch models captured into the sparqforge graph.

A corpus of small user-style models (Conv-BN-ReLU, residual blocks, depthwise-separable
blocks, pooling heads, an MLP, functional code, nested containers) is captured; each capture
evaluated in float64 (:func:`sparqforge.sw.frontend.evaluate`) equals the model run in
float64, with and without the folding passes, and the graph has the nodes expected. Every
refusal is one line naming the operation, its ATen operator and this file's line.
"""

import copy
import functools
import operator
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sparqforge.errors import UnsupportedLayerError
from sparqforge.sw.frontend import (Graph, Node, capture, evaluate, fold_batchnorm, fuse_clamps,
                                    remove_identities, simplify)

HERE = Path(__file__)


def line(tag):
    """``test_frontend.py:N`` of the line of this file marked ``# line: tag``."""
    lines = HERE.read_text().splitlines()
    found = [i + 1 for i, text in enumerate(lines) if text.rstrip().endswith(f"# line: {tag}")]
    assert len(found) == 1, tag
    return f"{HERE.name}:{found[0]}"


def conv_bn(cin, cout, kernel=3, stride=1, padding=1, groups=1):
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, padding, groups=groups,
                                   bias=False), nn.BatchNorm2d(cout))


# The corpus.

def conv_bn_relu():
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8),
                         nn.ReLU(inplace=True), nn.Conv2d(8, 8, 3, stride=2, padding=1),
                         nn.BatchNorm2d(8), nn.ReLU())


class Residual(nn.Module):
    """``relu(x + f(x))`` with an identity shortcut (written as ``nn.Identity``)."""

    def __init__(self, channels=8):
        super().__init__()
        self.body = nn.Sequential(conv_bn(channels, channels), nn.ReLU(), conv_bn(channels,
                                                                                  channels))
        self.shortcut = nn.Identity()

    def forward(self, x):
        return F.relu(self.shortcut(x) + self.body(x))


class BasicBlock(nn.Module):
    """torchvision's BasicBlock: one ReLU module called twice, a strided 3x3 and a strided
    1x1 shortcut with BatchNorm."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                       nn.BatchNorm2d(cout))
                         if stride != 1 or cin != cout else nn.Identity())

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = conv_bn(3, 8)
        self.layer1 = nn.Sequential(BasicBlock(8, 8, 1), BasicBlock(8, 16, 2))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        x = F.relu(self.stem(x))
        x = self.pool(self.layer1(x))
        return self.fc(torch.flatten(x, 1))


class DepthwiseSeparable(nn.Module):
    """Depthwise 3x3 + BN + ReLU6, pointwise 1x1 + BN + ReLU; a mean head."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(*conv_bn(3, 8, stride=2), nn.ReLU())
        self.dw = nn.Conv2d(8, 8, 3, padding="same", groups=8)
        self.dw_bn = nn.BatchNorm2d(8)
        self.act = nn.ReLU6()
        self.pw = nn.Sequential(*conv_bn(8, 16, kernel=1, padding=0), nn.ReLU())
        self.fc = nn.Linear(16, 4)

    def forward(self, x):
        x = self.pw(self.act(self.dw_bn(self.dw(self.stem(x)))))
        return self.fc(x.mean(dim=(2, 3)))


class PoolHead(nn.Module):
    """AdaptiveAvgPool2d(1) + Flatten + Linear, and the other pools."""

    def __init__(self, keepdim_mean=False):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.maxpool = nn.MaxPool2d(2)
        self.avgpool = nn.AvgPool2d(3, stride=1)
        self.pool = nn.AdaptiveAvgPool2d((1, 1))
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(6, 5)
        self.keepdim_mean = keepdim_mean

    def forward(self, x):
        x = self.avgpool(self.maxpool(torch.clamp(self.conv(x), min=0)))
        if self.keepdim_mean:
            x = x.mean((-2, -1), keepdim=True).view(x.size(0), -1)
        else:
            x = self.flatten(self.pool(x))
        return self.fc(x)


def mlp():
    return nn.Sequential(nn.Flatten(), nn.Linear(20, 32), nn.BatchNorm1d(32), nn.ReLU(),
                         nn.Dropout(0.5), nn.Linear(32, 16, bias=False), nn.BatchNorm1d(16),
                         nn.Hardtanh(0, 4), nn.Dropout(0.2), nn.Linear(16, 3))


class Functional(nn.Module):
    """Plain functional code: F.relu, ``+``, torch.add, operator.add; ``y`` feeds two convs
    and two adds; a flatten by view; clone and contiguous."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.left = nn.Conv2d(4, 4, 3, padding=1)
        self.right = nn.Conv2d(4, 4, 1)
        self.fc = nn.Linear(4 * 6 * 6, 3)

    def forward(self, x):
        y = F.relu(self.conv(x))
        z = torch.add(self.left(y), y, alpha=1) + self.right(y)
        z = operator.add(torch.relu(z), y).clone().contiguous()
        return self.fc(F.relu6(z).view(z.shape[0], -1))


class Nested(nn.Module):
    """Sequentials in a Sequential in a Module, an unfoldable BatchNorm on the input and one
    after an add, a clamp after a pool."""

    def __init__(self):
        super().__init__()
        self.norm = nn.BatchNorm2d(3)
        self.features = nn.Sequential(nn.Sequential(*conv_bn(3, 4), nn.ReLU()),
                                      nn.Sequential(nn.Identity(), *conv_bn(4, 4), nn.ReLU()))
        self.post = nn.BatchNorm2d(4)
        self.head = nn.Sequential(nn.MaxPool2d(2), nn.ReLU(), nn.Flatten(), nn.Linear(36, 2))

    def forward(self, x):
        x = self.norm(x)
        y = self.features(x)
        return self.head(self.post(y + self.features[1](y)))


class InPlace(nn.Module):
    """In-place operators that change a tensor read later: ``y`` is ``relu(conv(x))`` by the
    time the add reads it, and ``+=`` changes ``out``."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        y = self.conv(x)
        out = self.relu(y) + y
        out += x
        return out


CORPUS = {
    "conv_bn_relu": (conv_bn_relu, (2, 3, 8, 8)),
    "residual": (Residual, (2, 8, 6, 6)),
    "resnet": (ResNet, (2, 3, 8, 8)),
    "depthwise_separable": (DepthwiseSeparable, (2, 3, 10, 10)),
    "pool_head": (PoolHead, (2, 3, 8, 8)),
    "mean_head": (lambda: PoolHead(keepdim_mean=True), (3, 3, 8, 8)),
    "mlp": (mlp, (4, 20)),
    "functional": (Functional, (2, 3, 6, 6)),
    "nested": (Nested, (2, 3, 6, 6)),
    "identity": (nn.Identity, (2, 5)),
    "in_place": (InPlace, (2, 3, 5, 5)),
}


def build(name, seed=0):
    """A corpus model in eval mode with non-trivial BatchNorm statistics, and an input."""
    factory, shape = CORPUS[name]
    torch.manual_seed(seed)
    model = factory()
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.25, 4)
            if module.affine:
                module.weight.data.uniform_(0.5, 2)
                module.bias.data.uniform_(-1, 1)
    return model.eval(), torch.randn(shape)


@functools.cache
def _captured(name, simplify):
    model, x = build(name)
    return model, x, capture(model, x, simplify=simplify)


def captured(name, simplify=True):
    """``build(name)`` and its capture (each model traced once per session)."""
    model, x, graph = _captured(name, simplify)
    return model, x, copy.deepcopy(graph)


def relative_error(graph, model, x):
    """``max |graph(x) - model(x)| / max |model(x)|``, both in float64."""
    expected = copy.deepcopy(model).double()(x.double()).detach().numpy()
    got = evaluate(graph, x.numpy())
    assert got.shape == expected.shape
    return np.abs(got - expected).max() / np.abs(expected).max()


def ops(graph):
    return [node.op for node in graph]


@pytest.mark.parametrize("simplify", [True, False], ids=["simplified", "as_captured"])
@pytest.mark.parametrize("name", CORPUS)
def test_capture_computes_what_the_model_computes(name, simplify):
    model, x, graph = captured(name, simplify)
    graph.check()
    assert graph.input.shape == tuple(x.shape[1:])
    for seed in range(3):
        x = torch.randn(x.shape, generator=torch.Generator().manual_seed(seed))
        assert relative_error(graph, model, x) < 1e-9
    if simplify:
        # No BatchNorm is left that had a weighted producer it alone read.
        for node in graph:
            if node.op == "batchnorm":
                producer = graph[node.inputs[0]]
                assert producer.op not in ("linear", "conv2d") \
                    or len(graph.consumers(producer.name)) > 1
    else:
        assert not any("clamp" in node.attrs for node in graph)
    assert all(isinstance(node.attrs[key], np.ndarray) and node.attrs[key].dtype == np.float64
               for node in graph for key in ("weight", "bias", "scale", "shift")
               if node.attrs.get(key) is not None)


def test_the_float_check_catches_a_perturbed_weight():
    model, x, graph = captured("resnet")
    graph["layer1.1.conv2"].attrs["weight"][0, 0, 0, 0] *= 1 + 1e-5
    assert relative_error(graph, model, x) > 1e-9


def test_conv_bn_relu_folds_and_fuses():
    raw = captured("conv_bn_relu", simplify=False)[2]
    assert ops(raw) == ["input", "conv2d", "batchnorm", "clamp", "conv2d", "batchnorm",
                        "clamp", "output"]
    assert [node.name for node in raw][1:4] == ["0", "1", "2"]
    graph = captured("conv_bn_relu")[2]
    assert ops(graph) == ["input", "conv2d", "conv2d", "output"]
    first, second = graph["0"], graph["3"]
    assert first.shape == (8, 8, 8) and second.shape == (8, 4, 4)
    assert second.attrs["stride"] == (2, 2) and second.attrs["padding"] == (1, 1)
    assert first.attrs["clamp"] == (0.0, None) and second.attrs["clamp"] == (0.0, None)
    assert first.attrs["bias"] is not None                 # created by the fold


def test_folding_is_what_torch_fusion_computes():
    model, _, graph = captured("conv_bn_relu")
    conv, bn = copy.deepcopy(model[0]).double(), copy.deepcopy(model[1]).double()
    fused = torch.nn.utils.fusion.fuse_conv_bn_eval(conv, bn)
    np.testing.assert_allclose(graph["0"].attrs["weight"], fused.weight.detach().numpy(),
                               rtol=1e-13, atol=0)
    np.testing.assert_allclose(graph["0"].attrs["bias"], fused.bias.detach().numpy(),
                               rtol=1e-13, atol=1e-15)
    model, _, graph = captured("mlp")
    linear, bn = copy.deepcopy(model[1]).double(), copy.deepcopy(model[2]).double()
    fused = torch.nn.utils.fusion.fuse_linear_bn_eval(linear, bn)
    np.testing.assert_allclose(graph["1"].attrs["weight"], fused.weight.detach().numpy(),
                               rtol=1e-13, atol=0)


def test_residual_blocks():
    graph = captured("residual")[2]
    assert ops(graph) == ["input", "conv2d", "conv2d", "add", "output"]
    add = graph["add"]
    assert add.inputs == ["input", "body.2.0"] and add.attrs["clamp"] == (0.0, None)
    assert [n.name for n in graph.consumers("input")] == ["body.0.0", "add"]

    graph = captured("resnet")[2]
    names = [node.name for node in graph]
    assert names == ["input", "stem.0", "layer1.0.conv1", "layer1.0.conv2", "layer1.0.add",
                     "layer1.1.conv1", "layer1.1.conv2", "layer1.1.shortcut.0",
                     "layer1.1.add", "pool", "fc", "output"]
    block = "layer1.1"
    assert graph[f"{block}.conv1"].attrs["stride"] == (2, 2)
    assert graph[f"{block}.conv1"].shape == (16, 4, 4)
    shortcut = graph[f"{block}.shortcut.0"]
    assert shortcut.attrs["stride"] == (2, 2) and shortcut.attrs["padding"] == (0, 0)
    assert shortcut.attrs["weight"].shape == (16, 8, 1, 1) and shortcut.attrs["bias"] is not None
    assert graph[f"{block}.add"].inputs == [f"{block}.conv2", f"{block}.shortcut.0"]
    assert graph["layer1.0.add"].inputs == ["layer1.0.conv2", "stem.0"]
    assert graph["pool"].op == "global_avgpool" and graph["pool"].shape == (16,)
    assert graph["fc"].inputs == ["pool"]                   # the flatten of [B, 16, 1, 1] went
    # The block's one ReLU module, called twice, names two nodes before fusion.
    raw = captured("resnet", simplify=False)[2]
    assert {"layer1.0.relu", "layer1.0.relu_1"} <= {node.name for node in raw}


def test_depthwise_separable():
    graph = captured("depthwise_separable")[2]
    assert ops(graph) == ["input", "conv2d", "conv2d", "conv2d", "global_avgpool", "linear",
                          "output"]
    dw = graph["dw"]
    assert dw.attrs["groups"] == 8 and dw.attrs["weight"].shape == (8, 1, 3, 3)
    assert dw.attrs["padding"] == (1, 1) and dw.attrs["clamp"] == (0.0, 6.0)
    assert graph["pw.0"].attrs["clamp"] == (0.0, None)
    assert graph["mean"].inputs == ["pw.0"] and graph["mean"].shape == (16,)


@pytest.mark.parametrize("name", ["pool_head", "mean_head"])
def test_pooling_heads(name):
    graph = captured(name)[2]
    assert ops(graph) == ["input", "conv2d", "maxpool", "avgpool", "global_avgpool", "linear",
                          "output"]
    assert graph["conv"].attrs["clamp"] == (0.0, None)
    assert graph["maxpool"].attrs == {"kernel": (2, 2), "stride": (2, 2)}
    assert graph["avgpool"].attrs == {"kernel": (3, 3), "stride": (1, 1)}
    assert graph["avgpool"].shape == (6, 2, 2)
    assert graph["fc"].inputs == [node.name for node in graph][4:5]


def test_mlp():
    graph = captured("mlp")[2]
    assert ops(graph) == ["input", "linear", "linear", "linear", "output"]
    assert graph["1"].attrs["clamp"] == (0.0, None)
    assert graph["5"].attrs["clamp"] == (0.0, 4.0) and graph["5"].attrs["bias"] is not None
    raw = captured("mlp", simplify=False)[2]
    assert ops(raw) == ["input", "linear", "batchnorm", "clamp", "linear", "batchnorm", "clamp",
                        "linear", "output"]                # Flatten, Dropout: gone


def test_functional_code_and_fan_out():
    graph = captured("functional")[2]
    assert ops(graph) == ["input", "conv2d", "conv2d", "add", "conv2d", "add", "add", "flatten",
                          "linear", "output"]
    assert [node.name for node in graph.consumers("conv")] == ["left", "add", "right", "add_2"]
    assert graph["add_1"].attrs["clamp"] == (0.0, None)
    assert graph["add_2"].attrs["clamp"] == (0.0, 6.0)
    assert graph["flatten"].shape == (4 * 6 * 6,)


def test_nested_modules_and_unfoldable_batchnorm():
    graph = captured("nested")[2]
    names = [node.name for node in graph]
    assert names == ["input", "norm", "features.0.0", "features.1.1", "features.1.1_1", "add",
                     "post", "head.0", "head.1", "head.2", "head.3", "output"]
    # BatchNorm on the input and after an add stays; the ReLU after a pool stays a clamp.
    assert graph["norm"].op == "batchnorm" and graph["post"].op == "batchnorm"
    assert graph["head.1"].op == "clamp" and graph["head.2"].op == "flatten"
    # features.1 runs twice: two nodes, the second named apart.
    assert graph["features.1.1_1"].inputs == ["features.1.1"]


def test_identity_model_and_single_items():
    assert ops(captured("identity")[2]) == ["input", "output"]
    _, x, graph = captured("resnet")
    np.testing.assert_allclose(evaluate(graph, x[0].numpy()), evaluate(graph, x.numpy())[0],
                               rtol=1e-13)
    with pytest.raises(ValueError, match=r"takes \[B, 3, 8, 8\]"):
        evaluate(graph, np.zeros((2, 3, 8, 9)))


def test_in_place_operators_are_functionalized():
    graph = captured("in_place")[2]
    assert ops(graph) == ["input", "conv2d", "add", "add", "output"]
    assert graph["conv"].attrs["clamp"] == (0.0, None)      # both adds read relu(conv(x))
    assert graph["add"].inputs == ["conv", "conv"]


def test_batchnorm_and_relu_whose_producer_has_other_readers_stay():
    class Branch(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 3, padding=1)
            self.bn = nn.BatchNorm2d(3)

        def forward(self, x):
            y = self.conv(x)
            return self.bn(y) + y

    class Shared(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 3, padding=1)

        def forward(self, x):
            y = self.conv(x)
            return F.relu(y) + y

    model = Branch().eval()
    model.bn.running_var.fill_(2.0)
    x = torch.randn(2, 3, 5, 5)
    graph = capture(model, x)
    assert ops(graph) == ["input", "conv2d", "batchnorm", "add", "output"]
    assert relative_error(graph, model, x) < 1e-9
    # Likewise a ReLU whose producer has other readers stays a clamp.
    model = Shared().eval()
    graph = capture(model, x)
    assert ops(graph) == ["input", "conv2d", "clamp", "add", "output"]
    assert "clamp" not in graph["conv"].attrs and "clamp" not in graph["add"].attrs
    assert relative_error(graph, model, x) < 1e-9


def test_passes_one_by_one():
    def node(name, op, inputs, shape, **attrs):
        return Node(name, op, inputs, shape, attrs)

    weight = np.arange(6.0).reshape(3, 2)
    graph = Graph([node("input", "input", [], (2,)),
                   node("fc", "linear", ["input"], (3,), weight=weight, bias=None),
                   node("bn", "batchnorm", ["fc"], (3,), scale=np.array([1.0, 2.0, 3.0]),
                        shift=np.array([0.5, 0.0, -1.0])),
                   node("relu", "clamp", ["bn"], (3,), low=0.0, high=None),
                   node("relu6", "clamp", ["relu"], (3,), low=0.0, high=6.0),
                   node("again", "clamp", ["relu6"], (3,), low=0.0, high=None),
                   node("flat", "flatten", ["again"], (3,)),
                   node("unused", "clamp", ["input"], (2,), low=0.0, high=None),
                   node("output", "output", ["flat"], (3,))])
    x = np.array([[1.0, -2.0], [0.5, 3.0]])
    expected = evaluate(graph, x)
    fold_batchnorm(graph)
    assert "bn" not in graph and graph["fc"].attrs["bias"].tolist() == [0.5, 0.0, -1.0]
    fuse_clamps(graph)
    assert graph["fc"].attrs["clamp"] == (0.0, 6.0) and "again" not in graph
    remove_identities(graph)
    assert [n.name for n in graph] == ["input", "fc", "output"]
    np.testing.assert_allclose(evaluate(simplify(graph), x), expected, rtol=1e-15)


# Refusals: one line, the operation's name, its ATen operator and this file's line.

class Sigmoid(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        return torch.sigmoid(self.fc(x))  # line: sigmoid


class Head(nn.Module):
    def __init__(self, layer):
        super().__init__()
        self.layer = layer

    def forward(self, x):
        return self.layer(x)  # line: layer


class Wrapped(nn.Module):
    def __init__(self, layer):
        super().__init__()
        self.head = Head(layer)

    def forward(self, x):
        return self.head(x)


class Cat(nn.Module):
    def forward(self, x):
        return torch.cat([x, x], dim=1)  # line: cat


class Pair(nn.Module):
    def forward(self, x):  # line: pair
        return x.relu(), x


class PoolOut(nn.Module):
    def __init__(self):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)

    def forward(self, x):  # line: pool-out
        return self.pool(x)


class Branching(nn.Module):
    def forward(self, x):
        if x.sum() > 0:  # line: branch
            return x
        return -x


class Dropout(nn.Module):
    def forward(self, x):
        return F.dropout(x, 0.5)  # line: dropout


class Alpha(nn.Module):
    def forward(self, x):
        return torch.add(x, x, alpha=2)  # line: alpha


class Constant(nn.Module):
    def forward(self, x):
        return x + 1  # line: constant


class BatchMixing(nn.Module):
    def forward(self, x):
        return x.view(-1)  # line: batch


class Squeeze(nn.Module):
    def forward(self, x):
        return x.squeeze().relu()  # line: squeeze


class KeepDim(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 1)

    def forward(self, x):
        return self.conv(x.mean((2, 3), keepdim=True))  # line: keep


class PartialFlatten(nn.Module):
    def forward(self, x):
        return x.flatten(2).relu()  # line: flatten2


IMAGE = (2, 4, 6, 6)

REFUSALS = [
    (Sigmoid(), (2, 4), r"'sigmoid' \(aten\.sigmoid\) at {sigmoid} is not supported; "
                        r"sparqforge supports Linear, Conv2d"),
    (Wrapped(nn.Conv2d(4, 4, 3, dilation=2)), IMAGE,
     r"'head\.layer' \(aten\.conv2d\) at {layer} has dilation=\(2, 2\); .*use dilation=1"),
    (Wrapped(nn.Conv2d(4, 4, 3, groups=2)), IMAGE,
     r"'head\.layer' \(aten\.conv2d\) at {layer} has groups=2 for 4 input channels; "
     r"sparqforge supports groups=1 and depthwise"),
    (Wrapped(nn.Conv2d(4, 8, 3, groups=4)), IMAGE,
     r"'head\.layer' \(aten\.conv2d\) at {layer} is depthwise with 8 output channels for 4 "
     r"inputs \(channel multiplier 2\); sparqforge supports a channel multiplier of 1"),
    (Wrapped(nn.MaxPool2d(2, padding=1)), IMAGE,
     r"'head\.layer' \(aten\.max_pool2d\) at {layer} has padding=\(1, 1\): use padding=0"),
    (Wrapped(nn.Conv2d(4, 4, 2, padding="same")), IMAGE,
     r"'head\.layer' \(aten\.conv2d\) at {layer} has padding='same' with kernel \(2, 2\), "
     r"which needs asymmetric padding"),
    (Wrapped(nn.Hardtanh()), IMAGE,
     r"'head\.layer' \(aten\.hardtanh\) at {layer} clamps to \[-1\.0, 1\.0\]"),
    (Wrapped(nn.BatchNorm2d(4, track_running_stats=False).eval()), IMAGE,
     r"'head\.layer' \(aten\.batch_norm\) at {layer} normalises with the "
     r"batch's statistics"),
    (Wrapped(nn.Linear(6, 3)), IMAGE,
     r"'head\.layer' \(aten\.linear\) at {layer} applies to the last axis of a "
     r"\[B, 4, 6, 6\] tensor; .*flatten first"),
    (Cat(), IMAGE, r"'cat' \(aten\.cat\) at {cat} is not supported"),
    (Pair(), IMAGE, r"Pair\.forward at {pair} returns a tuple of 2 values; sparqforge "
                    r"captures models that return one tensor"),
    (PoolOut(), IMAGE, r"PoolOut\.forward at {pool-out} returns the \[B, 4, 1, 1\] result of "
                       r"the global average pool 'pool'; .*return x\.flatten\(1\)"),
    (Branching(), IMAGE, r"torch\.export cannot trace Branching at {branch} "
                         r"\(GuardOnDataDependentSymNode: .*\); forward\(\) branches on or "
                         r"indexes with tensor values \(data-dependent control flow\)"),
    (Dropout(), IMAGE, r"'dropout' \(aten\.dropout\) at {dropout} is dropout in "
                       r"training mode; .*training=self\.training"),
    (Alpha(), IMAGE, r"'add' \(aten\.add\) at {alpha} has alpha=2; .*use alpha=1"),
    (Constant(), IMAGE, r"'add' \(aten\.add\) at {constant} adds the constant 1"),
    (BatchMixing(), IMAGE, r"'view' \(aten\.view\) at {batch} produces a tensor of shape "
                           r"\[288\] from an example batch of 2; .*first axis is the batch"),
    (Squeeze(), (1, 4, 1, 1), r"'squeeze' \(aten\.squeeze\) at {squeeze} produces a tensor "
                              r"of shape \[4\] from an example batch of 1"),
    (KeepDim(), IMAGE, r"'conv' \(aten\.conv2d\) at {keep} reads the \[B, 4, 1, 1\] result "
                       r"of the global average pool 'mean'; sparqforge supports it only "
                       r"flattened"),
    (PartialFlatten(), IMAGE, r"'relu' \(aten\.relu\) at {flatten2} reads 'input' reshaped "
                              r"to \[B, 4, 36\]"),
]


@pytest.mark.parametrize("model,shape,pattern", REFUSALS,
                         ids=[re.sub(r"\W+", "_", p[2][:40]) for p in REFUSALS])
def test_refusals_name_the_operation_and_the_line(model, shape, pattern):
    tags = re.findall(r"{([\w-]+)}", pattern)
    for tag in tags:
        pattern = pattern.replace(f"{{{tag}}}", re.escape(line(tag)))
    with pytest.raises(UnsupportedLayerError) as info:
        capture(model.eval(), torch.randn(shape))
    message = str(info.value)
    assert "\n" not in message
    assert re.search(pattern, message), message


def test_refusals_of_the_call():
    model = nn.Sequential(nn.Linear(4, 4), nn.Dropout())
    with pytest.raises(UnsupportedLayerError, match=r"training mode \(Sequential has "
                                                    r"training=True\); call model\.eval\(\)"):
        capture(model, torch.randn(2, 4))
    with pytest.raises(UnsupportedLayerError, match=r"got tuple as the example input"):
        capture(model.eval(), (torch.randn(2, 4),))

    class Two(nn.Module):
        def forward(self, x, y):
            return x + y

    with pytest.raises(UnsupportedLayerError, match=r"Two\.forward\(x, y\) cannot be called "
                                                    r"with one tensor"):
        capture(Two(), torch.randn(2, 4))
    with pytest.raises(UnsupportedLayerError, match=r"has shape \[2, 4, 5\]; sparqforge models "
                                                    r"take one tensor of shape"):
        capture(nn.Identity(), torch.randn(2, 4, 5))
    with pytest.raises(TypeError, match="needs a torch.nn.Module"):
        capture(lambda x: x, torch.randn(2, 4))
