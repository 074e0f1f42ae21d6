"""Pick a source dataset for a target (``data.source=auto`` and ``select_source.py``).

``data.source=auto`` in a training config is resolved by :func:`resolve_auto_source` (called by
``madd.pipeline.train`` before the data module is built): the target and every entry of
``data.source_candidates`` are signed, scored (:mod:`madd.transfer.discrepancy`) and the paper's rule picks one;
``data.source``, ``data.source_class_names`` and ``data.label_mapping`` are then set in the run config, so the
checkpoint's stored config names the source that was used.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict

from madd.errors import DataError, MaddConfigError
from madd.transfer.datasets import DatasetEntry, data_config_name, dataset_entry, label_mapping_between
from madd.transfer.discrepancy import (
    DatasetProfile,
    PairScore,
    Selection,
    check_no_nan,
    discrepancy_matrix,
    pair_score,
    profile_dataset,
    profiles_by_name,
    select_source,
)
from madd.transfer.discrepancy_report import print_matrix, save_heatmap, write_csv
from madd.transfer.signatures import signature_summary

log = logging.getLogger(__name__)

SIGNATURE_KEYS = ("num_clusters", "k_range", "elbow_images", "pixels", "max_images", "batch_size", "device", "workers")


def plain(value):
    """A config value as resolved plain Python containers (``None`` -> ``{}``). Config nodes are resolved in
    place, so interpolations such as ``${paths.data_dir}`` see the whole run config."""
    if value is None:
        return {}
    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value, resolve=True)
    if isinstance(value, Mapping):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def set_threads(threads: int | None) -> None:
    """The commands' ``threads`` key: torch's and the BLAS libraries' thread counts (``None``: their defaults)."""
    if threads is not None:
        import torch
        from threadpoolctl import threadpool_limits

        if int(threads) < 1:
            raise MaddConfigError(f"threads must be >= 1 or null, got {threads}")
        torch.set_num_threads(int(threads))
        threadpool_limits(int(threads))  # numpy's SVDs (transferability scores) too


def signature_options(options: Mapping | None, seed: int) -> dict:
    """The ``sign_dataset`` keyword arguments among ``options`` (unknown keys are an error)."""
    options = dict(options or {})
    unknown = [k for k in options if k not in SIGNATURE_KEYS]
    if unknown:
        raise MaddConfigError(f"unknown signature option(s) {unknown}; valid: {list(SIGNATURE_KEYS)}")
    if "k_range" in options:
        options["k_range"] = tuple(options["k_range"])
    return {**options, "seed": seed}


def selection_settings(node: Mapping | DictConfig | None) -> tuple[dict, float, int, dict]:
    """``(signature settings, eps, top_k, label_aliases)`` of a ``conf/source_selection`` node: the top level of
    ``select_source.py``'s config, or ``data.source_selection`` for ``data.source=auto``."""
    node = plain(node) or {}
    unknown = sorted(set(node) - {"signature", "score", "label_aliases"})
    if unknown:
        raise MaddConfigError(f"source selection settings {unknown} are not known; valid: signature.*, score.eps, "
                              "score.top_k, label_aliases (conf/source_selection/default.yaml)")
    score = node.get("score") or {}
    return (dict(node.get("signature") or {}), float(score.get("eps", 1e-6)),
            int(score.get("top_k", 3)), node.get("label_aliases") or {})


def select_source_for(
    target: DatasetEntry,
    candidates: Sequence[DatasetEntry],
    signature: Mapping | None = None,
    eps: float = 1e-6,
    top_k: int = 3,
    seed: int = 0,
) -> tuple[Selection, list[PairScore], dict[str, DatasetProfile]]:
    """Score every candidate as a source for ``target`` and apply the selection rule.

    Candidates with the same reader entry as the target (the target itself) are dropped: a dataset is never
    its own source.
    """
    kept = [c for c in candidates if c.spec != target.spec and c.name != target.name]
    if len(kept) < len(candidates):
        log.info("source candidates identical to the target dropped: %s",
                 [c.name for c in candidates if c not in kept])
    if not kept:
        raise MaddConfigError("data.source_candidates holds no dataset other than the target; add candidates")
    opts = signature_options(signature, seed)
    profiles = {e.name: profile_dataset(e, **opts) for e in [target, *kept]}
    pairs = [pair_score(profiles[target.name], profiles[c.name], eps) for c in kept]
    check_no_nan(pairs)
    return select_source(pairs, target.name, top_k), pairs, profiles


def resolve_auto_source(cfg: DictConfig) -> Selection:
    """Replace ``data.source=auto`` in ``cfg`` by the selected candidate; return the selection.

    Reads ``data.source_candidates`` (data config names or inline entries with ``name``, ``target``,
    ``class_names`` and optionally ``label_mapping``) and ``data.source_selection`` (``signature.*``,
    ``score.eps``, ``score.top_k``, ``label_aliases``: :func:`selection_settings`).
    """
    data = cfg.data
    candidates = list(data.get("source_candidates") or [])
    if not candidates:
        raise MaddConfigError("data.source=auto needs data.source_candidates: a list of data config names "
                              "(e.g. [synthetic_metal, neu_det]) or inline dataset entries")
    seed = int(cfg.get("seed") or 0)
    options, eps, top_k, aliases = selection_settings(data.get("source_selection"))
    items = plain(candidates)
    entries = [dataset_entry(item, cfg.paths, seed, aliases) for item in items]
    target_name = data_config_name("target")
    target = dataset_entry({"name": target_name, "target": plain(data.target),
                            "class_names": list(data.class_names)}, cfg.paths, seed, aliases)
    selection, pairs, _ = select_source_for(target, entries, options, eps, top_k, seed)
    chosen = next(e for e in entries if e.name == selection.chosen.source)
    mapping = label_mapping_between(chosen, target)
    if data.get("label_mapping"):
        log.warning("data.label_mapping is replaced by the mapping of the selected source %s", chosen.name)
    with open_dict(cfg):
        cfg.data.source = dict(chosen.spec)
        cfg.data.source_class_names = list(chosen.class_names)
        cfg.data.label_mapping = dict(mapping)
    for p in sorted(pairs, key=lambda p: p.score):
        log.info("source candidate %-20s score=%s emd=%.3f gini=%s shared=%s usable=%d", p.source,
                 "inf (no shared label)" if p.status == "no shared label" else f"{p.score:.4f}", p.emd,
                 "-" if p.gini is None else f"{p.gini:.3f}", p.shared, p.usable)
    log.info("%s", selection.explain())
    print(selection.explain())
    return selection


def run_matrix(cfg: DictConfig) -> dict:
    """``select_source.py``: the full matrix (every dataset as target against every other as source), its CSV
    and heatmap in the run's output folder, and the source chosen for ``cfg.target``."""
    seed = int(cfg.get("seed") or 0)
    set_threads(cfg.get("threads"))
    signature, eps, top_k, aliases = selection_settings({k: cfg.get(k) for k in ("signature", "score", "label_aliases")})
    opts = signature_options(signature, seed)
    items = [cfg.target, *[s for s in (cfg.get("sources") or []) if s != cfg.target]]
    items = plain(items)
    profiles = []
    for k, item in enumerate(items):
        entry = dataset_entry(item, cfg.paths, seed, aliases)
        try:
            profiles.append(profile_dataset(entry, **opts))
        except DataError as err:
            if k == 0 or not cfg.get("skip_unreadable", True):
                raise
            log.warning("dataset %s skipped (skip_unreadable=true): %s", entry.name, err)
            print(f"skipped {entry.name}: {err}")
        else:
            p = profiles[-1]
            log.info("%s: %d images, K=%d, signature %s", p.name, p.num_images, p.signature.k,
                     signature_summary(p.signature))
    if len(profiles) < 2:
        raise MaddConfigError(f"need the target and at least one readable source; got {[p.name for p in profiles]}")
    profiles_by_name(profiles)
    pairs = discrepancy_matrix(profiles, eps)
    check_no_nan(pairs)
    selections = []
    for p in profiles:
        try:
            selections.append(select_source(pairs, p.name, top_k))
        except MaddConfigError as err:
            log.warning("%s", err)
    out_dir = Path(cfg.paths.output_dir)
    print_matrix(pairs, selections)
    matrix_csv, pairs_csv = write_csv(pairs, out_dir)
    heatmap = save_heatmap(pairs, out_dir / "discrepancy_heatmap.png", selections)
    print(f"matrix: {matrix_csv}\npairs:  {pairs_csv}\nheatmap: {heatmap}")
    main_target = profiles[0].name
    chosen = next((s for s in selections if s.target == main_target), None)
    if chosen is None:
        raise MaddConfigError(f"no source shares a label with target {main_target}; add sources or label_aliases")
    print(chosen.explain())
    print(f"chosen source for {main_target}: {chosen.chosen.source}")
    return {"chosen": chosen.chosen.source, "matrix_csv": str(matrix_csv), "pairs_csv": str(pairs_csv),
            "heatmap": str(heatmap), "selection": chosen}
