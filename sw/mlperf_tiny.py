"""The MLPerf Tiny reference architectures as PyTorch models, for benchmarks.

The layer lists follow the reference Keras models (mlcommons/tiny,
``benchmark/training/*/keras_model.py``; ResNet-8 as scored in v0.7), ``padding='same'``
throughout (for a stride-2 layer the output size Keras gives, ``ceil(in / 2)``). The data
sets are not available here, so the weights and BatchNorm statistics are fixed-seed random
values (:func:`make`): the models measure exactness, cycles and traffic, never accuracy.

==================  ===========  ===================================================
``resnet8``         32x32x3      image classification (CIFAR-10), 10 classes
``dscnn``           49x10x1      keyword spotting (MFCC), 12 classes
``mobilenet_vww``   96x96x3      visual wake words, 2 classes (MobileNetV1 0.25x)
``fc_autoencoder``  640          anomaly detection (128 mels x 5 frames), 640 outputs
==================  ===========  ===================================================
"""

__all__ = ["MODELS", "INPUT_SHAPES", "make", "parameter_count", "mac_count"]

import torch
from torch import nn


def _conv_bn_relu(cin, cout, kernel, stride=1, padding=None):
    padding = tuple(k // 2 for k in kernel) if padding is None else padding
    return [nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding), nn.BatchNorm2d(cout),
            nn.ReLU()]


class ResNet8(nn.Module):
    """ResNet-8: a 3x3 stem of 16 filters, three stacks of two 3x3 convolutions (16, 32, 64
    filters, strides 1, 2, 2; the last two with a 1x1 stride-2 shortcut convolution without
    BatchNorm), average pooling over the 8x8 map, a dense layer of 10."""

    def __init__(self, classes=10):
        super().__init__()
        self.stem = nn.Sequential(*_conv_bn_relu(3, 16, (3, 3)))
        self.stacks = nn.ModuleList()
        cin = 16
        for filters, stride in ((16, 1), (32, 2), (64, 2)):
            stack = nn.Module()
            stack.conv1 = nn.Conv2d(cin, filters, 3, stride=stride, padding=1)
            stack.bn1 = nn.BatchNorm2d(filters)
            stack.conv2 = nn.Conv2d(filters, filters, 3, padding=1)
            stack.bn2 = nn.BatchNorm2d(filters)
            stack.shortcut = (nn.Conv2d(cin, filters, 1, stride=stride) if stride != 1
                              else nn.Identity())
            self.stacks.append(stack)
            cin = filters
        self.pool = nn.AvgPool2d(8)
        self.fc = nn.Linear(64, classes)

    def forward(self, x):
        x = self.stem(x)
        for stack in self.stacks:
            y = torch.relu(stack.bn1(stack.conv1(x)))
            y = stack.bn2(stack.conv2(y))
            x = torch.relu(y + stack.shortcut(x))
        return self.fc(torch.flatten(self.pool(x), 1))


class DSCNN(nn.Module):
    """DS-CNN (keyword spotting): a 10x4 stride-2 convolution of 64 filters, four depthwise
    separable blocks (depthwise 3x3 + BN + ReLU, pointwise 64 + BN + ReLU), average pooling
    over 24x5 of the 25x5 map (as the reference's ``pool_size = (49 // 2, 10 // 2)``), a
    dense layer of 12. The reference's Dropout layers are the identity in inference."""

    def __init__(self, classes=12):
        super().__init__()
        # Keras 'same' for 49x10 at stride 2: a 25x5 output.
        self.stem = nn.Sequential(*_conv_bn_relu(1, 64, (10, 4), stride=2, padding=(5, 1)),
                                  nn.Dropout(0.2))
        layers = []
        for _ in range(4):
            layers += [nn.Conv2d(64, 64, 3, padding=1, groups=64), nn.BatchNorm2d(64),
                       nn.ReLU(), *_conv_bn_relu(64, 64, (1, 1))]
        self.blocks = nn.Sequential(*layers, nn.Dropout(0.4))
        self.pool = nn.AvgPool2d((24, 5))
        self.fc = nn.Linear(64, classes)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.blocks(self.stem(x))), 1))


class MobileNetV1(nn.Module):
    """MobileNetV1 at width 0.25 for visual wake words: a 3x3 stride-2 convolution of 8
    filters, thirteen depthwise-separable blocks, average pooling over the 3x3 map, a dense
    layer of 2. Plain ReLU, as in the reference."""

    WIDTHS = (16, 32, 32, 64, 64, 128, 128, 128, 128, 128, 128, 256, 256)
    STRIDES = (1, 2, 1, 2, 1, 2, 1, 1, 1, 1, 1, 2, 1)

    def __init__(self, classes=2):
        super().__init__()
        layers = _conv_bn_relu(3, 8, (3, 3), stride=2)
        cin = 8
        for width, stride in zip(self.WIDTHS, self.STRIDES):
            layers += [nn.Conv2d(cin, cin, 3, stride=stride, padding=1, groups=cin),
                       nn.BatchNorm2d(cin), nn.ReLU(), *_conv_bn_relu(cin, width, (1, 1))]
            cin = width
        self.features = nn.Sequential(*layers)
        self.pool = nn.AvgPool2d(3)
        self.fc = nn.Linear(256, classes)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


class FCAutoencoder(nn.Module):
    """The anomaly-detection autoencoder: 640 inputs, four dense layers of 128, one of 8,
    four of 128 (each with BatchNorm and ReLU), a linear dense layer of 640."""

    def __init__(self, features=640):
        super().__init__()
        widths = [128] * 4 + [8] + [128] * 4
        layers, cin = [], features
        for width in widths:
            layers += [nn.Linear(cin, width), nn.BatchNorm1d(width), nn.ReLU()]
            cin = width
        layers.append(nn.Linear(cin, features))
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x)


#: Each model's factory.
MODELS = {"resnet8": ResNet8, "dscnn": DSCNN, "mobilenet_vww": MobileNetV1,
          "fc_autoencoder": FCAutoencoder}
#: Each model's input, per item.
INPUT_SHAPES = {"resnet8": (3, 32, 32), "dscnn": (1, 49, 10), "mobilenet_vww": (3, 96, 96),
                "fc_autoencoder": (640,)}


def make(name, *, seed=0):
    """Model ``name`` in eval mode with fixed-seed weights and BatchNorm statistics (running
    means and variances random too, so that folding them changes the weights)."""
    if name not in MODELS:
        raise ValueError(f"Model must be one of {sorted(MODELS)}, not {name!r}")
    torch.manual_seed(seed)
    model = MODELS[name]()
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
                count = module.num_features
                module.weight.copy_(1 + 0.1 * torch.randn(count, generator=generator))
                module.bias.copy_(0.1 * torch.randn(count, generator=generator))
                module.running_mean.copy_(0.1 * torch.randn(count, generator=generator))
                module.running_var.copy_(0.5 + torch.rand(count, generator=generator))
    return model.eval()


def parameter_count(model):
    """Parameters as Keras counts them: weights, biases, and four per BatchNorm channel
    (gamma, beta, moving mean, moving variance)."""
    count = sum(p.numel() for p in model.parameters())
    count += sum(2 * m.num_features for m in model.modules()
                 if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)))
    return count


def mac_count(name):
    """Multiply-accumulates of one inference of model ``name`` (convolutions and dense
    layers; pooling and BatchNorm not counted), from the layers' shapes."""
    model = make(name)
    total = [0]

    def hook(module, inputs, output):
        if isinstance(module, nn.Conv2d):
            kh, kw = module.kernel_size
            total[0] += output.numel() * (module.in_channels // module.groups) * kh * kw
        elif isinstance(module, nn.Linear):
            total[0] += output.numel() * module.in_features

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        model(torch.zeros(1, *INPUT_SHAPES[name]))
    for handle in handles:
        handle.remove()
    return total[0]
