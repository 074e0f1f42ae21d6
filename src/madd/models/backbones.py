"""torchvision backbones with explicit, offline-safe ImageNet weight loading.

Weights come from torchvision's weights API (``ResNet18_Weights.IMAGENET1K_V1`` ...), read from the local
torch hub cache (``$TORCH_HOME/hub/checkpoints``) or from an explicit file path. Nothing is downloaded:
when weights are asked for and the file is missing, the run stops at start with the path to place the
file at. It never falls back to random initialisation silently.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlparse

import torch
import torchvision
from torch import nn

from madd.errors import MaddConfigError

SUPPORTED = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "mobilenet_v2")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def weights_cache_path(url: str) -> Path:
    """Where torchvision looks for a downloaded weight file (``$TORCH_HOME/hub/checkpoints/<file>``)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)


def load_pretrained_state(name: str, weights: str) -> dict[str, torch.Tensor]:
    """State dict for ``weights``: a file path, or a torchvision enum name such as ``IMAGENET1K_V1``/``DEFAULT``."""
    if Path(weights).suffix in (".pth", ".pt", ".bin", ".ckpt"):
        path = Path(weights).expanduser()
        if not path.is_file():
            raise MaddConfigError(f"model.backbone.weights={weights}: file not found; give an existing .pth path")
        state = torch.load(path, map_location="cpu", weights_only=True)
        return state.get("state_dict", state)
    try:
        enum = torchvision.models.get_model_weights(name)[weights]
    except KeyError:
        valid = [w.name for w in torchvision.models.get_model_weights(name)] + ["DEFAULT"]
        raise MaddConfigError(f"model.backbone.weights={weights!r} is not a {name} weight; valid: {valid}") from None
    file = weights_cache_path(enum.url)
    if not file.is_file():
        raise MaddConfigError(
            f"model.backbone.weights={weights} needs {file.name}, which is not in the local cache and cannot be "
            f"downloaded here. Copy it from {enum.url} (on a machine with internet) to {file} "
            f"(set TORCH_HOME to move the cache), or set model.backbone.weights=null to train from scratch."
        )
    return torch.load(file, map_location="cpu", weights_only=True)


class Backbone(nn.Module):
    """A torchvision network cut before its pooling/classifier, exposed as ``stem`` + ``stages``.

    ``forward`` returns the last feature map ``(B, C, h, w)``; ``forward_stages`` every stage's output (the
    MADD adapter, reconstruction masks and transferability scores tap intermediate stages).
    ``stage_channels[i]`` is the channel count of stage ``i``; ``out_channels`` of the last.
    """

    def __init__(self, name: str = "resnet18", weights: str | None = None, freeze_stages: int = 0) -> None:
        super().__init__()
        if name not in SUPPORTED:
            raise MaddConfigError(f"model.backbone.name={name!r} is not supported; choose from {list(SUPPORTED)}")
        self.name = name
        net = torchvision.models.get_model(name, weights=None)
        if weights:
            net.load_state_dict(load_pretrained_state(name, str(weights)))
        if name.startswith("resnet"):
            self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
            self.stages = nn.ModuleList([net.layer1, net.layer2, net.layer3, net.layer4])
            last = lambda layer: layer[-1].conv3.out_channels if hasattr(layer[-1], "conv3") else layer[-1].conv2.out_channels  # noqa: E731
            self.stage_channels = [last(s) for s in self.stages]
        else:  # mobilenet_v2: split its feature blocks at the strides 4, 8, 16, 32
            f = net.features
            self.stem = nn.Sequential(f[0], f[1])
            self.stages = nn.ModuleList([f[2:4], f[4:7], f[7:14], f[14:]])
            self.stage_channels = [24, 32, 96, 1280]
        self.out_channels = self.stage_channels[-1]
        self.freeze(freeze_stages)

    def freeze(self, num_stages: int) -> None:
        """Freeze the stem and the first ``num_stages - 1`` stages (``num_stages=0``: nothing frozen)."""
        modules = [self.stem, *self.stages][:num_stages]
        for m in modules:
            for p in m.parameters():
                p.requires_grad_(False)

    def forward_stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        outs = []
        for stage in self.stages:
            x = stage(x)
            outs.append(x)
        return outs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        return x


class Normalize(nn.Module):
    """ImageNet normalisation inside the model, so exported models take raw [0, 1] pixels."""

    def __init__(self, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 1:  # grey input: replicate to the 3 channels ImageNet backbones expect
            x = x.expand(-1, 3, -1, -1)
        return (x - self.mean) / self.std
