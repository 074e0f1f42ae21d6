"""Safe checkpoint loading: rebuild a model from the config stored in its checkpoint, never by unpickling.

Every checkpoint written by ``train.py`` holds the resolved run config as ``madd_config``. Loading is:

1. ``torch.load(path, weights_only=True)``: only tensors and plain containers are accepted;
2. ``hydra.utils.instantiate(madd_config["model"])`` builds the module (pretrained-weight files are not
   needed: backbone ``weights`` are switched off since the checkpoint holds every weight);
3. physically pruned sub-networks are shrunk to the tensor shapes found in the state dict
   (:func:`madd.pruning.physical.apply_architecture`);
4. ``load_state_dict(strict=True)``.

Shared helpers: :func:`load_module` (a whole ``DefectModule``), :func:`load_network` (one of its
networks, e.g. as a distillation teacher), :func:`save_module` (a ``weights_only``-loadable file in the
same format as Lightning's checkpoints).
"""

from __future__ import annotations

import copy
import os
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from torch import nn

from madd.data.dataset import input_shape
from madd.errors import MaddConfigError
from madd.pruning.physical import apply_architecture, conv_widths

BACKBONE_TARGET = "madd.models.backbones.Backbone"


def load_file(path: str | os.PathLike, key: str | None = None) -> Any:
    """The one reader of checkpoint and weight files (``.ckpt``, ``.pth``): ``torch.load(..., weights_only=True)``
    on the CPU, with one clear error for a missing, unreadable or unsafe file.

    ``key``: the config key the path came from (``ckpt_path``), named in the error instead of "checkpoint".
    """
    path = Path(path).expanduser()
    name = f"{key}={path}" if key else f"checkpoint {path}"
    if not path.is_file():
        raise MaddConfigError(f"{name} does not exist; give the path of a .ckpt or .pth file "
                              "(e.g. <run dir>/checkpoints/last.ckpt)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:  # arbitrary objects inside: unpickling them could run code
        raise MaddConfigError(
            f"{name} cannot be loaded safely (weights_only=True): it holds objects other than tensors and plain "
            f"containers ({str(exc).splitlines()[0]}); re-save it from a trusted environment with "
            "madd.checkpoint.save_module, or only its state_dict (torch.save(model.state_dict(), path))"
        ) from None
    except Exception as exc:  # truncated zip, not a torch file
        raise MaddConfigError(
            f"{name} cannot be loaded safely (weights_only=True): {type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else 'truncated'}; the file is corrupt, truncated or not a "
            "PyTorch checkpoint: re-export it"
        ) from None


def read_checkpoint(path: str | os.PathLike, key: str | None = None) -> dict[str, Any]:
    """A checkpoint written by ``train.py``/``save_module`` (:func:`load_file`), which must hold a ``state_dict``."""
    name = f"{key}={Path(path).expanduser()}" if key else f"checkpoint {Path(path).expanduser()}"
    ckpt = load_file(path, key)
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise MaddConfigError(f"{name} has no `state_dict`; it was not written by train.py/save_module")
    return ckpt


def check_resume_checkpoint(path: str | os.PathLike, model_config: Mapping[str, Any], train: bool = True) -> dict[str, Any]:
    """``ckpt_path`` of ``train.py``, before any work: read safely (:func:`read_checkpoint`), written by
    ``train.py`` for the same model class, and, to resume training, holding the optimiser and loop state.
    Returns the checkpoint (for :func:`check_checkpoint_fits`)."""
    ckpt = read_checkpoint(path, "ckpt_path")
    stored = ((ckpt.get("madd_config") or {}).get("model") or {}).get("_target_")
    wanted = model_config.get("_target_")
    if stored is None:
        raise MaddConfigError(f"ckpt_path={path} has no `madd_config` (the run config train.py stores), so it "
                              "cannot be checked against this run's model; give a checkpoint written by train.py")
    if stored != wanted:
        raise MaddConfigError(f"ckpt_path={path} holds a {stored} but this run builds a {wanted}; pick the model "
                              f"config the checkpoint was trained with (model=...) or a checkpoint of {wanted}")
    if train and not {"optimizer_states", "loops"} <= set(ckpt):
        raise MaddConfigError(f"ckpt_path={path} holds weights only (no optimiser/loop state) and cannot resume "
                              "training; evaluate it with train=false, or start from its weights with transfer_from")
    return ckpt


def check_checkpoint_fits(path: str | os.PathLike, ckpt: Mapping[str, Any], module: nn.Module) -> None:
    """Every tensor of ``ckpt['state_dict']`` has its place, with the same shape, in the built ``module``."""
    own = module.state_dict()
    state = current_layout(module, ckpt["state_dict"])
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    resized = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in own
               if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or resized:
        raise MaddConfigError(
            f"ckpt_path={path} does not fit the model this config builds (another backbone, class count or "
            f"pruned widths?): missing {missing[:4]}, unexpected {unexpected[:4]}, other shapes {resized[:4]}; "
            "use the model and data settings the checkpoint was trained with")


def _without_pretrained(node: Any) -> Any:
    """A copy of a config tree with backbone/encoder pretrained weights switched off."""
    if isinstance(node, Mapping):
        out = {k: _without_pretrained(v) for k, v in node.items()}
        if out.get("_target_") == BACKBONE_TARGET and "weights" in out:
            out["weights"] = None
        if "encoder_weights" in out:
            out["encoder_weights"] = None
        return out
    if isinstance(node, list):
        return [_without_pretrained(v) for v in node]
    return node


def build_module(config: Mapping[str, Any]) -> nn.Module:
    """Instantiate ``config["model"]`` (a resolved run config) without loading any pretrained file."""
    if "model" not in config:
        raise MaddConfigError("the stored run config has no `model` section; the checkpoint is not from train.py")
    try:
        return instantiate(_without_pretrained(config["model"]), _convert_="partial")
    except MaddConfigError:
        raise
    except Exception as exc:
        raise MaddConfigError(
            f"cannot rebuild the model {config['model'].get('_target_')} from the checkpoint's config: {exc}"
        ) from exc


def example_input(config: Mapping[str, Any] | None, batch: int = 1) -> torch.Tensor:
    """A random ``(batch, C, H, W)`` image batch shaped like the run's data (``data.channels``/``image_size``)."""
    return torch.rand(batch, *input_shape((config or {}).get("data")))


def current_layout(module: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> Mapping[str, torch.Tensor]:
    """``state_dict`` in ``module``'s key layout: a module whose layout changed renames the keys of its earlier
    checkpoints (``upgrade_state_dict``, e.g. MADD's networks moved under ``model.``); others keep them."""
    upgrade = getattr(module, "upgrade_state_dict", None)
    return upgrade(state_dict) if callable(upgrade) else state_dict


def fit_pruned_shapes(module: nn.Module, state_dict: Mapping[str, torch.Tensor], image: torch.Tensor,
                      prefix: str = "") -> None:
    """Shrink each top-level network of ``module`` whose convolutions are narrower in ``state_dict`` (inside a child
    that ``holds_networks``, e.g. MADD's torch model, each of its networks)."""
    for name, child in module.named_children():
        widths = conv_widths(state_dict, prefix=f"{prefix}{name}.")
        current = conv_widths(child)
        if not widths or all(current.get(k) == v for k, v in widths.items()):
            continue
        if getattr(child, "holds_networks", False):
            fit_pruned_shapes(child, state_dict, image, f"{prefix}{name}.")
            continue
        try:
            apply_architecture(child, image, widths)
        except MaddConfigError:
            raise
        except Exception as exc:
            raise MaddConfigError(
                f"the checkpoint holds a pruned `{name}`, but it cannot be traced with an image batch "
                f"{tuple(image.shape)} to rebuild its shapes ({type(exc).__name__}: {exc})"
            ) from exc


PIXEL_THRESHOLD_KEY = "madd_pixel_threshold"


def store_pixel_threshold(path: str | os.PathLike, value: float, rule: str) -> None:
    """Write the anomaly-map threshold chosen after training into checkpoint ``path`` (atomically).

    :func:`load_module` then gives the module that threshold, so ``predict.py`` and ``export.py`` use the value
    that was tested, not the configured ``model.pixel_threshold``.
    """
    path = Path(path)
    ckpt = read_checkpoint(path)
    ckpt[PIXEL_THRESHOLD_KEY] = {"value": float(value), "rule": str(rule)}
    tmp = path.with_name(path.name + ".tmp")
    torch.save(ckpt, tmp)
    os.replace(tmp, path)


def load_module(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> nn.Module:
    """The ``DefectModule`` saved in ``path`` (pruned or not), in eval mode, with ``run_config`` restored
    (and the anomaly-map threshold :func:`store_pixel_threshold` wrote, if any)."""
    ckpt = read_checkpoint(path)
    config = ckpt.get("madd_config")
    if not config:
        raise MaddConfigError(
            f"checkpoint {path} has no `madd_config` (the run config train.py stores); it cannot be rebuilt safely"
        )
    module = build_module(config)
    state = current_layout(module, ckpt["state_dict"])
    fit_pruned_shapes(module, state, example_input(config))
    missing, unexpected = module.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise MaddConfigError(
            f"checkpoint {path} does not match the model its config builds: missing {list(missing)[:8]}, "
            f"unexpected {list(unexpected)[:8]}"
        )
    module.run_config = dict(config)
    if PIXEL_THRESHOLD_KEY in ckpt:
        module.pixel_threshold = float(ckpt[PIXEL_THRESHOLD_KEY]["value"])
    return module.to(map_location).eval()


def load_network(path: str | os.PathLike, attr: str | None = "net") -> nn.Module:
    """One network of a saved module (``attr``, default ``net``; the whole module when it has none).

    The network remembers where it came from (``madd_source``: the model config, data shape and
    attribute) so a module holding it can store a self-contained config (see :func:`build_network`).
    """
    module = load_module(path)
    if attr and hasattr(module, attr):
        net = getattr(module, attr)
    elif attr and attr != "net":
        raise MaddConfigError(f"{type(module).__name__} from {path} has no network `{attr}`; set attr to one of "
                              f"{[n for n, _ in module.named_children()]}")
    else:
        attr, net = None, module
    config = module.run_config
    net.madd_source = {"model": config["model"], "data": _data_shape(config), "attr": attr}
    return net


def build_network(model: Mapping[str, Any], attr: str | None = "net", data: Mapping[str, Any] | None = None) -> nn.Module:
    """The architecture of a network recorded by :func:`load_network` (weights come from a state dict)."""
    model, data = _plain(model), _plain(data or {})
    module = build_module({"model": model, "data": data})
    net = getattr(module, attr) if attr else module
    net.madd_source = {"model": model, "data": data, "attr": attr}
    return net


def network_spec(net: nn.Module) -> dict[str, Any] | None:
    """The ``build_network`` config node of a network loaded with :func:`load_network`, if any."""
    source = getattr(net, "madd_source", None)
    if source is None:
        return None
    # _recursive_: false, so Hydra hands the source model config to build_network instead of instantiating it
    return {"_target_": "madd.checkpoint.build_network", "_recursive_": False, **copy.deepcopy(source)}


def _plain(node: Any) -> Any:
    """Plain dicts/lists (checkpoints must not hold OmegaConf objects: they do not load with weights_only)."""
    from omegaconf import DictConfig, ListConfig, OmegaConf

    if isinstance(node, (DictConfig, ListConfig)):
        return OmegaConf.to_container(node, resolve=True)
    if isinstance(node, Mapping):
        return {k: _plain(v) for k, v in node.items()}
    if isinstance(node, (list, tuple)):
        return [_plain(v) for v in node]
    return node


def _data_shape(config: Mapping[str, Any]) -> dict[str, Any]:
    data = config.get("data") or {}
    return {k: data[k] for k in ("image_size", "channels") if k in data}


def save_module(module: nn.Module, path: str | os.PathLike, config: Mapping[str, Any] | None = None,
                extra: Mapping[str, Any] | None = None) -> Path:
    """Write ``{"state_dict", "madd_config", **extra}``: loadable by :func:`load_module` with weights_only."""
    config = config if config is not None else getattr(module, "run_config", None)
    if not config:
        raise MaddConfigError(f"cannot save {type(module).__name__} to {path}: it has no run config (madd_config)")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in module.state_dict().items()}
    torch.save({"state_dict": state, "madd_config": dict(config), **dict(extra or {})}, path)
    return path
