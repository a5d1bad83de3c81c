"""The networks by backbone name, as mammoth registers them: ``mlp`` (784-100-100-out, the MNIST
family), ``resnet18`` (64 base filters, the DER, mammoth, CLS-ER and SYNERgy image rows) and
``reduced-resnet18`` (GEM's 20 base filters)."""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

from raycl.errors import RayclError, unknown


class MLP(nn.Module):
    """Two hidden ReLU layers of ``hidden`` units, Xavier-uniform weights, zero biases."""

    def __init__(self, in_features: int, n_outputs: int, hidden: int = 100):
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.classifier = nn.Linear(hidden, n_outputs)
        for layer in (self.fc1, self.fc2, self.classifier):
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        # Inputs are flat (the MLP benchmarks store 784 pixels); any leading dimensions pass
        # through, so the same module serves a population's [P, n, 784] once stacked.
        return F.relu(self.fc2(F.relu(self.fc1(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride, bias=False),
                                          nn.BatchNorm2d(planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet18(nn.Module):
    """ResNet-18 with a 3x3 stem and no max pooling (CIFAR-sized inputs): ``nf`` base filters,
    64 for mammoth's ``resnet18``, 20 for GEM's ``reduced-resnet18``."""

    def __init__(self, n_outputs: int, nf: int = 64, in_channels: int = 3):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, nf, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(nf)
        stages, in_planes = [], nf
        for i, stride in enumerate((1, 2, 2, 2)):
            planes = nf * 2 ** i
            stages += [BasicBlock(in_planes, planes, stride), BasicBlock(planes, planes, 1)]
            in_planes = planes
        self.stages = nn.Sequential(*stages)
        self.classifier = nn.Linear(in_planes, n_outputs)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        out = self.stages(F.relu(self.bn1(self.conv1(x))))
        # Global average pooling as a mean over the spatial dimensions: the same numbers as
        # adaptive_avg_pool2d(out, 1), whose CUDA backward has no deterministic implementation.
        return out.mean((2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


MODEL_NAMES = ("mlp", "resnet18", "reduced-resnet18")
BASE_FILTERS = {"resnet18": 64, "reduced-resnet18": 20}


def frozen_copy(net: nn.Module, state: dict | None = None) -> nn.Module:
    """An eval-mode copy of ``net`` (loaded with ``state`` if given) whose parameters take no
    gradient: a teacher, target or moving average that backpropagation never changes."""
    frozen = copy.deepcopy(net).eval()
    if state is not None:
        frozen.load_state_dict(state)
    return frozen.requires_grad_(False)


def check_backbone(backbone: str, input_shape: tuple[int, ...], dataset: str) -> None:
    """RayclError unless ``backbone`` takes ``dataset``'s inputs: the MLP flat vectors, the ResNets
    images (channels, height, width)."""
    if backbone not in MODEL_NAMES:
        raise unknown("backbone", backbone, MODEL_NAMES)
    fits = {name: len(input_shape) == (1 if name == "mlp" else 3) for name in MODEL_NAMES}
    if not fits[backbone]:
        kind = "flat inputs" if backbone == "mlp" else "images (channels, height, width)"
        allowed = ", ".join(name for name in MODEL_NAMES if fits[name])
        raise RayclError(f"backbone {backbone!r} takes {kind}; {dataset}'s inputs are shaped {tuple(input_shape)}: "
                         f"allowed for {dataset}: {allowed}")


def build_model(benchmark) -> nn.Module:
    """The network of ``benchmark`` (a :class:`raycl.data.Benchmark`; its ``model`` is a backbone name)
    with one output per class. The data package names backbones from here, so this module does not
    import it back."""
    if benchmark.model == "mlp":
        return MLP(math.prod(benchmark.input_shape), benchmark.n_classes)
    if benchmark.model in BASE_FILTERS:
        return ResNet18(benchmark.n_classes, nf=BASE_FILTERS[benchmark.model], in_channels=benchmark.input_shape[0])
    raise unknown("backbone", benchmark.model, MODEL_NAMES)
