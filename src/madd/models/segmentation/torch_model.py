"""Segmentation networks from ``segmentation_models_pytorch`` (smp), with offline-safe encoder weights.

:class:`SegmentationNet` is ``Normalize -> smp model``: it takes raw ``[0, 1]`` images (grey or RGB) and
returns mask logits ``(B, classes, H, W)``, so exported models need no preprocessing.

Encoder weights (``encoder_weights``):

* ``null``: random initialisation, chosen explicitly;
* an smp weight name such as ``imagenet``: read from the local Hugging Face cache (smp >= 0.5 keeps its
  weights on the Hub as ``smp-hub/<encoder>.<name>``); nothing is downloaded, a missing file stops the run
  with the command that fetches it;
* a file (``.pth``/``.pt``/``.bin``/``.ckpt``/``.safetensors``): an encoder state dict, a whole smp model's
  state dict (``encoder.*`` keys) or the torchvision/timm classification weights the encoder derives from
  (classifier keys are dropped). Every encoder weight must be present in the file, else the run stops.

smp would otherwise call ``hf_hub_download`` with retries and fail with a network error; it is always
built with ``encoder_weights=None`` here and the weights are loaded afterwards.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import segmentation_models_pytorch as smp
import torch
from segmentation_models_pytorch.encoders import encoders as SMP_ENCODERS
from torch import nn

from madd.errors import MaddConfigError
from madd.models.backbones import IMAGENET_MEAN, IMAGENET_STD, Normalize
from madd.utils.optional import require

log = logging.getLogger(__name__)

WEIGHT_FILE_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt", ".safetensors")


def output_channels(mode: str, num_classes: int, normal_index: int | None) -> int:
    """Mask channels: 1 for binary masks; multi-class: one per class, plus a background channel when the
    dataset has no normal class to play that role."""
    if mode == "binary":
        return 1
    if mode == "multiclass":
        return num_classes if normal_index is not None else num_classes + 1
    raise MaddConfigError(f"model.mode={mode!r} must be binary or multiclass")


def available_architectures() -> list[str]:
    """smp's architecture names (``Unet``, ``UnetPlusPlus``, ``FPN``, ``DeepLabV3Plus`` ...)."""
    return sorted({cls.__name__ for cls in smp.MODEL_ARCHITECTURES_MAPPING.values()})


def available_encoders() -> list[str]:
    """smp's native encoder names; any timm model is also accepted as ``tu-<timm name>``."""
    return sorted(SMP_ENCODERS)


def _read_state_file(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        load_file = require("safetensors.torch", "safetensors", f"model.encoder_weights={path}").load_file
        return load_file(str(path), device="cpu")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling errors come in many types; name the file either way
        raise MaddConfigError(f"model.encoder_weights={path}: cannot read it as a state dict ({exc})") from None
    for key in ("state_dict", "model"):  # Lightning checkpoints and common training scripts wrap it
        if isinstance(state, Mapping) and isinstance(state.get(key), Mapping):
            state = state[key]
    if not isinstance(state, Mapping):
        raise MaddConfigError(f"model.encoder_weights={path} holds a {type(state).__name__}, not a state dict")
    return dict(state)


def _hub_file(encoder_name: str, weights: str, filename: str) -> Path:
    """A file of smp's Hub weights from the local Hugging Face cache only (never the network)."""
    hub = require("huggingface_hub", "huggingface_hub", f"model.encoder_weights={weights}")
    settings = SMP_ENCODERS[encoder_name]["pretrained_settings"][weights]
    try:
        return Path(hub.hf_hub_download(settings["repo_id"], filename=filename, revision=settings["revision"],
                                        local_files_only=True))
    except Exception:  # LocalEntryNotFoundError and friends: the file is not cached
        from huggingface_hub import constants

        raise MaddConfigError(
            f"model.encoder_weights={weights} for encoder {encoder_name} is not in the local Hugging Face cache "
            f"({constants.HF_HUB_CACHE}) and cannot be downloaded here. On a machine with internet run "
            f"`huggingface-cli download {settings['repo_id']} --revision {settings['revision']}` and copy the "
            f"cache folder over (or set HF_HUB_CACHE), or give a weight file path in model.encoder_weights, "
            f"or set model.encoder_weights=null to train from random initialisation."
        ) from None


def resolve_encoder_weights(encoder_name: str, weights: str) -> tuple[dict[str, torch.Tensor], dict | None]:
    """The state dict named by ``weights`` and, for smp Hub weights, their preprocessing config."""
    if Path(weights).suffix in WEIGHT_FILE_SUFFIXES:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise MaddConfigError(f"model.encoder_weights={weights}: file not found; give an existing weight file")
        return _read_state_file(path), None
    if encoder_name.startswith("tu-"):
        raise MaddConfigError(
            f"model.encoder_weights={weights!r}: timm encoders ({encoder_name}) take a weight file path here "
            "(timm would download by name); give a .pth/.safetensors file or null"
        )
    options = list(SMP_ENCODERS[encoder_name]["pretrained_settings"])
    if weights not in options:
        raise MaddConfigError(
            f"model.encoder_weights={weights!r} is not a weight of {encoder_name}; choose from {options}, "
            "a weight file path, or null"
        )
    load_file = require("safetensors.torch", "safetensors", f"model.encoder_weights={weights}").load_file
    state = load_file(str(_hub_file(encoder_name, weights, "model.safetensors")), device="cpu")
    config = json.loads(_hub_file(encoder_name, weights, "config.json").read_text())
    return state, config


def load_encoder_state(encoder: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """Load ``state`` into ``encoder``; every encoder weight must be present, extra keys (a classifier head)
    are dropped. smp's own ``load_state_dict`` overrides run first (they drop the known heads and rename
    legacy keys); only when that strict load fails are the keys matched here."""
    from segmentation_models_pytorch.encoders.timm_universal import TimmUniversalEncoder

    state = dict(state)
    if any(k.startswith("encoder.") for k in state):  # a whole smp model: keep its encoder part
        state = {k[len("encoder."):]: v for k, v in state.items() if k.startswith("encoder.")}
    target = encoder.model if isinstance(encoder, TimmUniversalEncoder) else encoder  # timm: the wrapped model
    try:
        target.load_state_dict(dict(state))  # strict; smp's overrides mutate their argument, hence the copy
        return
    except RuntimeError:
        pass
    own = target.state_dict()
    missing = [k for k in own if k not in state]
    if missing:
        raise MaddConfigError(
            f"model.encoder_weights={source} lacks {len(missing)} of the {len(own)} encoder weights "
            f"(e.g. {missing[:3]}); it is not a state dict of this encoder"
        )
    try:
        nn.Module.load_state_dict(target, {k: state[k] for k in own}, strict=True)
    except RuntimeError as exc:  # shape mismatch: weights of another variant
        raise MaddConfigError(f"model.encoder_weights={source} does not fit this encoder: {exc}") from None
    extra = sorted(set(state) - set(own))
    log.info("encoder weights %s: ignored %d extra keys (e.g. %s)", source, len(extra), extra[:3])


class SegmentationNet(nn.Module):
    """``Normalize -> smp.create_model(arch, encoder_name, classes=...)``; forward gives mask logits.

    Args:
        arch: smp architecture name (case-insensitive): ``Unet``, ``UnetPlusPlus``, ``FPN``, ``DeepLabV3Plus``...
        encoder_name: smp encoder (``mobilenet_v2``, ``resnet152``, ``inceptionv4``, ``vgg16`` ...) or ``tu-<timm>``.
        encoder_weights: ``None``, an smp weight name (local cache only) or a weight file, see the module doc.
        classes: output channels (1 for binary masks).
        encoder_depth: number of encoder stages (smp's default 5 -> inputs divisible by 32).
        normalization: ``{mean, std}`` for the input; default: the weights' own (smp Hub config), else ImageNet.
        arch_options: further keyword arguments of the smp architecture (``decoder_channels`` ...).
    """

    def __init__(
        self,
        arch: str = "Unet",
        encoder_name: str = "resnet34",
        encoder_weights: str | None = None,
        classes: int = 1,
        encoder_depth: int = 5,
        normalization: Mapping[str, Sequence[float]] | None = None,
        arch_options: Mapping | None = None,
    ) -> None:
        super().__init__()
        if arch.lower() not in smp.MODEL_ARCHITECTURES_MAPPING:
            raise MaddConfigError(f"model.arch={arch!r} is not an smp architecture; choose from "
                                  f"{available_architectures()}")
        if not encoder_name.startswith("tu-") and encoder_name not in SMP_ENCODERS:
            raise MaddConfigError(f"model.encoder_name={encoder_name!r} is not an smp encoder; choose from "
                                  f"{available_encoders()} or a timm model as tu-<name>")
        try:
            self.model = smp.create_model(arch, encoder_name=encoder_name, encoder_weights=None, in_channels=3,
                                          classes=classes, encoder_depth=encoder_depth, **dict(arch_options or {}))
        except (KeyError, ValueError, TypeError) as exc:  # smp's own checks (depth, options, timm names)
            raise MaddConfigError(f"model: smp cannot build {arch} with encoder {encoder_name}: {exc}") from None
        hub_config = None
        if encoder_weights is not None:
            state, hub_config = resolve_encoder_weights(encoder_name, str(encoder_weights))
            load_encoder_state(self.model.encoder, state, str(encoder_weights))
        norm = dict(normalization or {})
        if not norm and hub_config and "mean" in hub_config:
            norm = {"mean": hub_config["mean"], "std": hub_config["std"]}
        self.normalize = Normalize(norm.get("mean", IMAGENET_MEAN), norm.get("std", IMAGENET_STD))
        self.arch, self.encoder_name, self.classes = arch, encoder_name, classes

    @property
    def size_divisor(self) -> int:
        """Input height and width must be multiples of this (the encoder's output stride)."""
        if not getattr(self.model, "requires_divisible_input_shape", True):
            return 1
        return int(self.model.encoder.output_stride)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(self.normalize(images))
