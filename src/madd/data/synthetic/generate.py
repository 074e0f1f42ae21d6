"""Label assignment, on-disk caching and the :func:`generate_synthetic` entry point.

Cache layout (one folder per parameter set)::

    root/<domain>-<paramhash>/
        params.json                  # exactly the parameters hashed into the folder name
        images/<class>/<index>.png   # uint8 L (1-channel domains) or RGB
        masks/<class>/<index>.png    # uint8 L, 0/255, written for every image (good = all zero)
        .complete                    # written last; a folder without it is never trusted

A run renders into ``root/.<domain>-<paramhash>.tmp-<host>-<pid>-<rand>/`` and renames it into place, so
an interrupted run never leaves a half-written cache and concurrent runs (DDP ranks) cannot corrupt each
other: the loser of the rename race discards its copy and uses the winner's. A temp dir left by a killed
run (no ``finally`` on SIGKILL) is removed by the next run on the same host once its pid is gone.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import uuid
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from madd.data.records import DatasetIndex, Record
from madd.errors import MaddConfigError

from .domains import GOOD, _domain_key, get_domain, render_sample

#: Bump when rendering changes, so old caches are not reused for images that would now look different.
GENERATOR_VERSION = 2
COMPLETE_MARKER = ".complete"
MIN_IMAGE_SIZE = 32


# ----------------------------------------------------------------------------------- proportions


def resolve_proportions(
    domain: str,
    class_proportions: Mapping[str, float] | Sequence[float] | None = None,
    normal_fraction: float | None = None,
) -> list[float]:
    """Normalised per-class proportions, in ``class_names(domain)`` order.

    ``class_proportions`` is a mapping ``{class: weight}`` (unlisted classes get 0) or a sequence
    aligned with the class names; weights are normalised to sum to 1. ``normal_fraction`` instead
    sets the ``good`` share and splits the rest evenly over the defect classes. Neither: the domain
    default (normal-dominant for the target domains, defect-rich for the labelled source).
    """
    spec = get_domain(domain)
    names = list(spec.class_names)
    if class_proportions is not None and normal_fraction is not None:
        raise MaddConfigError("give either class_proportions or normal_fraction, not both")
    if normal_fraction is not None:
        f = float(normal_fraction)
        if not 0.0 <= f <= 1.0:
            raise MaddConfigError(f"normal_fraction must be in [0, 1], got {normal_fraction}")
        k = len(names) - 1
        return [f] + [(1.0 - f) / k] * k
    if class_proportions is None:
        return spec.default_proportions()
    if isinstance(class_proportions, Mapping) or hasattr(class_proportions, "items"):
        props = {str(k): float(v) for k, v in class_proportions.items()}
        unknown = sorted(set(props) - set(names))
        if unknown:
            raise MaddConfigError(
                f"class_proportions for domain {domain!r} names unknown classes {unknown}; "
                f"valid classes: {names}"
            )
        weights = [props.get(c, 0.0) for c in names]
    else:
        weights = [float(v) for v in class_proportions]
        if len(weights) != len(names):
            raise MaddConfigError(
                f"class_proportions for domain {domain!r} has {len(weights)} entries; "
                f"expected {len(names)} aligned with {names}"
            )
    if any(w < 0 or not np.isfinite(w) for w in weights) or sum(weights) <= 0:
        raise MaddConfigError(f"class_proportions must be finite, >= 0 and not all 0; got {weights}")
    total = sum(weights)
    return [w / total for w in weights]


def class_counts(num_images: int, proportions: Sequence[float]) -> list[int]:
    """Exact integer counts summing to ``num_images`` (largest-remainder rounding)."""
    raw = np.asarray(proportions, dtype=np.float64) * num_images
    counts = np.floor(raw).astype(int)
    # stable order: ties in the remainder go to the lower class index
    order = sorted(range(len(raw)), key=lambda i: (-(raw[i] - counts[i]), i))
    for i in order[: num_images - int(counts.sum())]:
        counts[i] += 1
    return counts.tolist()


def assign_labels(domain: str, num_images: int, seed: int, proportions: Sequence[float]) -> np.ndarray:
    """Label of every image index: exact class counts, shuffled by a seed-derived permutation."""
    counts = class_counts(num_images, proportions)
    labels = np.repeat(np.arange(len(counts)), counts)
    rng = np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(_domain_key(domain), 1)))
    return rng.permutation(labels)


# ----------------------------------------------------------------------------------------- cache


def synthetic_params(
    domain: str,
    num_images: int,
    image_size: int,
    seed: int,
    class_proportions: Mapping[str, float] | Sequence[float] | None = None,
    normal_fraction: float | None = None,
) -> dict:
    """The validated, canonical parameter dict that is hashed and stored as ``params.json``."""
    spec = get_domain(domain)
    if isinstance(num_images, bool) or int(num_images) != num_images or num_images < 1:
        raise MaddConfigError(f"num_images must be a positive integer, got {num_images!r}")
    if isinstance(image_size, bool) or int(image_size) != image_size or image_size < MIN_IMAGE_SIZE:
        raise MaddConfigError(f"image_size must be an integer >= {MIN_IMAGE_SIZE}, got {image_size!r}")
    if isinstance(seed, bool) or int(seed) != seed or seed < 0:
        raise MaddConfigError(f"seed must be a non-negative integer, got {seed!r}")
    props = resolve_proportions(domain, class_proportions, normal_fraction)
    return {
        "generator_version": GENERATOR_VERSION,
        "domain": spec.name,
        "num_images": int(num_images),
        "image_size": int(image_size),
        "seed": int(seed),
        "class_names": list(spec.class_names),
        "class_proportions": [float(p) for p in props],
    }


def param_hash(params: Mapping) -> str:
    blob = json.dumps(params, sort_keys=True, separators=(",", ":")).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()[:12]


def dataset_dir(root: str | os.PathLike, params: Mapping) -> Path:
    return Path(root) / f"{params['domain']}-{param_hash(params)}"


def _file_name(index: int, num_images: int) -> str:
    # zero-padded *global* index: the file name is also the RNG key of the image
    return f"{index:0{max(5, len(str(num_images - 1)))}d}.png"


def _build_index(folder: Path, params: Mapping, labels: np.ndarray) -> DatasetIndex:
    names = params["class_names"]
    records = []
    for i, lab in enumerate(labels.tolist()):
        fname = _file_name(i, params["num_images"])
        records.append(
            Record(
                path=str(folder / "images" / names[lab] / fname),
                label=int(lab),
                mask_path=str(folder / "masks" / names[lab] / fname),
            )
        )
    return DatasetIndex(records=records, class_names=list(names), root=str(folder))


def _is_complete(folder: Path, params: Mapping, index: DatasetIndex) -> bool:
    try:
        with open(folder / "params.json", encoding="utf-8") as f:
            stored = json.load(f)
    except (OSError, ValueError):
        return False
    if stored != dict(params) or not (folder / COMPLETE_MARKER).is_file():
        return False
    # cheap guard against a cache someone pruned by hand
    return all(os.path.isfile(r.path) and os.path.isfile(r.mask_path) for r in index.records)


def _default_workers() -> int:
    try:
        cores = len(os.sched_getaffinity(0))  # respects taskset / container CPU pinning
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(4, cores))


def _render_one(folder: Path, params: Mapping, index: int, label: int) -> None:
    img, mask = render_sample(params["domain"], params["image_size"], params["seed"], index, label)
    fname = _file_name(index, params["num_images"])
    cls = params["class_names"][label]
    # compress_level=1: 2-4x faster than the default and these noisy textures barely compress further
    Image.fromarray(img).save(folder / "images" / cls / fname, compress_level=1)
    Image.fromarray(mask.astype(np.uint8) * 255).save(folder / "masks" / cls / fname, compress_level=1)


def _write_dataset(folder: Path, params: Mapping, labels: np.ndarray, workers: int | None) -> None:
    """Render every image into ``folder`` (a fresh temp dir), then write params and the marker."""
    names = params["class_names"]
    for lab in sorted(set(labels.tolist())):  # only non-empty class folders: folder readers reject empty ones
        (folder / "images" / names[lab]).mkdir(parents=True, exist_ok=True)
        (folder / "masks" / names[lab]).mkdir(parents=True, exist_ok=True)
    n_workers = _default_workers() if workers is None else max(int(workers), 1)
    jobs = list(enumerate(labels.tolist()))
    if n_workers > 1 and len(jobs) > 1:
        # Threads, not processes: numpy/scipy/zlib release the GIL for the per-pixel work, and threads
        # are safe inside Lightning/DDP ranks and DataLoader workers (no fork of a threaded process,
        # no re-import of __main__). Every image has its own seed, so scheduling cannot change bytes.
        pool = ThreadPoolExecutor(max_workers=n_workers)
        try:
            for fut in [pool.submit(_render_one, folder, params, i, lab) for i, lab in jobs]:
                fut.result()  # re-raise the first failure (or a Ctrl-C caught while waiting)
        finally:
            # on failure drop the queued images instead of rendering them all before giving up
            pool.shutdown(wait=True, cancel_futures=True)
    else:
        for i, lab in jobs:
            _render_one(folder, params, i, lab)
    with open(folder / "params.json", "w", encoding="utf-8") as f:
        json.dump(dict(params), f, indent=2, sort_keys=True)
    counts = {names[i]: c for i, c in enumerate(np.bincount(labels, minlength=len(names)).tolist())}
    with open(folder / COMPLETE_MARKER, "w", encoding="utf-8") as f:
        json.dump({"counts": counts}, f, sort_keys=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # exists but not ours, or cannot tell: keep its files
    return True


def _remove_stale_tmp(root: Path, name: str, host: str) -> None:
    """Delete temp dirs of ``name`` left by dead processes on this host (other hosts' are left alone:
    their pids mean nothing here, e.g. on a shared filesystem)."""
    prefix = f".{name}.tmp-{host}-"
    for p in root.glob(f".{name}.tmp-*"):
        rest = p.name[len(prefix) :] if p.name.startswith(prefix) else ""
        pid = rest.split("-", 1)[0]
        if pid.isdigit() and not _pid_alive(int(pid)):
            shutil.rmtree(p, ignore_errors=True)


def generate_synthetic(
    domain: str,
    root: str | os.PathLike,
    num_images: int,
    image_size: int,
    seed: int = 0,
    class_proportions: Mapping[str, float] | Sequence[float] | None = None,
    normal_fraction: float | None = None,
    workers: int | None = None,
) -> DatasetIndex:
    """Generate (or reuse from ``root``) a synthetic defect dataset and return its index.

    Args:
        domain: a key of :data:`DOMAINS` (``awdd``, ``bdd``, ``metal``).
        root: cache root; the dataset lives in ``root/<domain>-<paramhash>/``.
        num_images: total images (normal + defect).
        image_size: square side in pixels (>= 32).
        seed: non-negative integer; with the other params it fully determines every byte.
        class_proportions: ``{class: weight}`` or a list aligned with ``class_names(domain)``.
        normal_fraction: shorthand for the ``good`` share (defects split the rest evenly).
        workers: render threads; ``None`` = auto (up to 4, bounded by the usable cores), 0/1 =
            serial. Output bytes do not depend on it.

    Returns:
        A :class:`DatasetIndex` whose records carry ``path``, ``label`` and ``mask_path`` (boxes are
        left empty: the dataset derives them from the masks), in image-index order.
    """
    params = synthetic_params(domain, num_images, image_size, seed, class_proportions, normal_fraction)
    labels = assign_labels(params["domain"], params["num_images"], params["seed"], params["class_proportions"])
    final = dataset_dir(root, params)
    index = _build_index(final, params, labels)
    if _is_complete(final, params, index):
        return index

    root_path = Path(root)
    root_path.mkdir(parents=True, exist_ok=True)
    host = "".join(c if c.isalnum() else "_" for c in socket.gethostname()) or "host"
    _remove_stale_tmp(root_path, final.name, host)
    tmp = root_path / f".{final.name}.tmp-{host}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        tmp.mkdir()
        _write_dataset(tmp, params, labels, workers)
        if final.exists() and not _is_complete(final, params, index):
            shutil.rmtree(final, ignore_errors=True)  # a stale or foreign folder under our name
        try:
            os.rename(tmp, final)
        except OSError:
            # another process finished first (rename onto a non-empty dir fails): use its copy
            if not _is_complete(final, params, index):
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return index


__all__ = [
    "GENERATOR_VERSION",
    "GOOD",
    "assign_labels",
    "class_counts",
    "dataset_dir",
    "generate_synthetic",
    "param_hash",
    "resolve_proportions",
    "synthetic_params",
]
