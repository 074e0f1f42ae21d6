"""Config checks that need only OmegaConf (cheap: ``train.py`` runs them before importing torch)."""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf


def check_required(cfg: DictConfig) -> None:
    """Fail before any work when a required value (``???``) is unset or an interpolation does not resolve.

    OmegaConf's own error names the key (``Missing mandatory value ... full_key: data.target``) and Hydra
    prints it. The ``hydra`` node is skipped: a config composed with ``return_hydra_config=True`` (the tests)
    holds keys there that only Hydra's runtime fills in.
    """
    OmegaConf.to_container(
        OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]), resolve=True, throw_on_missing=True
    )
