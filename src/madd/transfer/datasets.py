"""Datasets named like the rest of the project: a data config name (``conf/data/<name>.yaml``) or an inline entry.

The discrepancy matrix, ``data.source=auto`` and the transferability ranking compare *datasets*; each is the
``target`` entry of a data config (reader + arguments), its ``class_names`` and, optionally, a per-dataset
label alias table. Names are composed with Hydra's compose API against the project's ``conf/`` folder and
resolved with the caller's ``paths`` (so ``${paths.shared_data_dir}`` and ``${paths.data_dir}`` mean what they
mean in the running command).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

from madd.data.records import DatasetIndex
from madd.errors import MaddConfigError
from madd.utils.config_dir import find_config_dir


@dataclass
class DatasetEntry:
    """One dataset: ``spec`` is a reader entry (see :mod:`madd.data.sources`)."""

    name: str
    spec: dict
    class_names: list[str]
    aliases: dict[str, str] = field(default_factory=dict)  # class -> shared concept name
    label_mapping: dict[str, str | None] | None = None  # as a source of the current target (data.source=auto)

    def concept(self, cls: str) -> str:
        return self.aliases.get(cls, cls)


def conf_dir(root_dir: str | Path | None = None) -> Path:
    """The project's ``conf/`` folder: ``paths.root_dir``/conf, else the first of :mod:`madd.utils.config_dir`'s
    folders with a ``data/`` group."""
    if root_dir is not None and (Path(root_dir) / "conf" / "data").is_dir():
        return Path(root_dir) / "conf"
    found = find_config_dir("data")
    if found is not None:
        return found
    raise MaddConfigError(f"cannot find the conf/ folder under paths.root_dir={root_dir}; set PROJECT_ROOT")


def compose_data_config(name: str, paths: Mapping | DictConfig, seed: int = 0) -> dict:
    """``conf/data/<name>.yaml`` composed with Hydra and resolved against ``paths`` and ``seed``."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import MissingConfigException

    import madd.utils.resolvers  # noqa: F401

    def _compose():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # data configs list `default` without `_self_`
            return compose(config_name=f"data/{name}")

    plain = OmegaConf.to_container(paths, resolve=False) if isinstance(paths, DictConfig) else dict(paths)
    paths = OmegaConf.create(plain)
    try:
        if GlobalHydra.instance().is_initialized():
            composed = _compose()
        else:
            with initialize_config_dir(config_dir=str(conf_dir(paths.get("root_dir"))), version_base="1.3"):
                composed = _compose()
    except MissingConfigException:
        available = sorted(p.stem for p in conf_dir(paths.get("root_dir")).joinpath("data").glob("*.yaml"))
        raise MaddConfigError(f"no data config named {name!r}; available: {available}") from None
    full = OmegaConf.create({"paths": paths, "seed": seed, "data": composed.data})
    return OmegaConf.to_container(full.data, resolve=True)


def dataset_entry(
    item: str | Mapping, paths: Mapping | DictConfig, seed: int = 0, aliases: Mapping | None = None
) -> DatasetEntry:
    """A :class:`DatasetEntry` from a data config name or an inline mapping.

    An inline mapping has ``name``, ``target`` (reader entry) and ``class_names``, optionally ``label_mapping``
    (source class -> target class) and ``aliases``. ``aliases`` (dataset name -> {class: concept}) gives
    classes of differently named datasets a common name, e.g. NEU-DET ``scratches`` = X-SDD ``surface scratch``.
    """
    aliases = dict(aliases or {})
    if isinstance(item, str):
        cfg = compose_data_config(item, paths, seed)
        name, spec, classes, mapping, own = item, cfg["target"], cfg["class_names"], None, {}
    elif isinstance(item, Mapping):
        missing = [k for k in ("name", "target", "class_names") if k not in item]
        if missing:
            raise MaddConfigError(f"an inline dataset entry needs keys name, target, class_names; {dict(item)} "
                                  f"lacks {missing}")
        name, spec, classes = str(item["name"]), dict(item["target"]), list(item["class_names"])
        mapping, own = item.get("label_mapping"), dict(item.get("aliases") or {})
    else:
        raise MaddConfigError(f"a dataset must be a data config name or a mapping, got {item!r}")
    table = {**dict(aliases.get(name) or {}), **own}
    unknown = [c for c in table if c not in classes]
    if unknown:
        raise MaddConfigError(f"label_aliases.{name} names classes {unknown} that {name} does not have "
                              f"(its classes: {list(classes)})")
    return DatasetEntry(name, dict(spec), list(classes), {str(k): str(v) for k, v in table.items()},
                        dict(mapping) if mapping is not None else None)


def read_index(entry: DatasetEntry) -> DatasetIndex:
    """The dataset's records through the data layer (generates synthetic data on first use)."""
    from madd.data.sources import build_index

    return build_index(entry.spec, entry.class_names)


def class_counts(index: DatasetIndex) -> np.ndarray:
    return np.bincount([r.label for r in index.records], minlength=len(index.class_names)).astype(np.int64)


def label_mapping_between(source: DatasetEntry, target: DatasetEntry) -> dict[str, str | None]:
    """Source class -> target class (``None`` = not in the target label space).

    The source's explicit ``label_mapping`` wins; otherwise classes match when their concepts (alias or own
    name) are equal. A concept shared by two target classes is ambiguous and an error.
    """
    if source.label_mapping is not None:
        bad = [t for t in source.label_mapping.values() if t is not None and t not in target.class_names]
        if bad:
            raise MaddConfigError(f"label_mapping of {source.name} names target classes {bad} that {target.name} "
                                  f"does not have ({target.class_names})")
        return {c: source.label_mapping.get(c) for c in source.class_names}
    by_concept: dict[str, list[str]] = {}
    for c in target.class_names:
        by_concept.setdefault(target.concept(c), []).append(c)
    out = {}
    for c in source.class_names:
        hits = by_concept.get(source.concept(c), [])
        if len(hits) > 1:
            raise MaddConfigError(f"label_aliases.{target.name} gives classes {hits} the same name "
                                  f"{source.concept(c)!r}; a source class could map to either: give them distinct "
                                  "aliases")
        out[c] = hits[0] if hits else None
    return out


def data_config_name(default: str = "target") -> str:
    """The name of the running command's data config (``data=<name>``), else ``default``."""
    try:
        from hydra.core.hydra_config import HydraConfig

        return str(HydraConfig.get().runtime.choices.get("data") or default)
    except (ValueError, AttributeError):
        return default
