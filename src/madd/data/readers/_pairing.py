"""Pairing an image with its companion files (mask, reference image, box file) by a name rule, and the
checks that turn a wrong pairing into an error instead of a silent misread.

A **name rule** is a path template (or a list of them, tried in order) with these placeholders:

* ``{stem}``, ``{ext}`` (with the dot), ``{name}``: the image file's stem, extension and name;
* ``{dir}``: the image's folder; ``{parent}``: that folder's name; ``{rel_dir}``: that folder relative
  to the dataset root (``.`` when it is the root); ``{root}``: the dataset root;
* ``{class}``: the image's class name, when the reader knows it from the folder or the file name;
* every named group of the reader's file-name regex (``(?P<id>\\d+)_test`` gives ``{id}``).

A relative template is resolved against the image's folder, so ``"{stem}.png"`` is a file beside the
image and ``"../{parent}_not/{id}.txt"`` a file in a sibling folder. Hand-written because no maintained
library pairs dataset files by a configurable rule (torchvision/anomalib hard-code their layouts).
"""

from __future__ import annotations

import logging
import os
import string
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

from madd.data.readers._common import listing
from madd.data.records import ReadReport
from madd.errors import DataError

log = logging.getLogger(__name__)

BASE_FIELDS = ("stem", "ext", "name", "dir", "parent", "rel_dir", "root", "class")


def norm(path: Path) -> Path:
    """Absolute and without ``..`` / ``.`` components, so one file always compares equal to itself."""
    return Path(os.path.normpath(Path(path).expanduser().absolute()))


def image_fields(image: Path, root: Path, class_name: str | None = None,
                 groups: Mapping[str, str] | None = None) -> dict[str, str]:
    """The placeholder values of ``image`` (see the module docstring)."""
    rel = os.path.relpath(image.parent, root)
    return {"stem": image.stem, "ext": image.suffix, "name": image.name, "dir": str(image.parent),
            "parent": image.parent.name, "rel_dir": rel, "root": str(root),
            "class": class_name or "", **(groups or {})}


class NameRule:
    """Where an image's companion file is, as one or more path templates (tried in order).

    Args:
        templates: a template or a list of templates (see the module docstring).
        key: the config key the templates come from (named in every error).
        extra_fields: placeholder names the reader provides besides :data:`BASE_FIELDS` (regex groups).
    """

    def __init__(self, templates: str | Sequence[str], key: str, extra_fields: Iterable[str] = ()) -> None:
        self.templates = [templates] if isinstance(templates, str) else [str(t) for t in templates]
        self.key = key
        if not self.templates or not all(self.templates):
            raise DataError(f"{key} is empty: give a path template such as '{{stem}}_mask.png'.")
        known = set(BASE_FIELDS) | set(extra_fields)
        for t in self.templates:
            try:
                used = {f for _, f, _, _ in string.Formatter().parse(t) if f is not None}
            except ValueError as exc:
                raise DataError(f"{key}: template '{t}' is malformed ({exc}): balance its braces.") from None
            unknown = sorted(used - known)
            if unknown:
                raise DataError(f"{key}: template '{t}' uses unknown placeholder(s) {unknown}: use {sorted(known)} "
                                "(named groups of the file-name regex count too).")

    def candidates(self, fields: Mapping[str, str]) -> list[Path]:
        out = []
        for t in self.templates:
            p = Path(t.format(**fields))
            out.append(norm(p if p.is_absolute() else Path(fields["dir"]) / p))
        return out


def pair_companions(
    images: Sequence[Path],
    candidates: Callable[[Path], Sequence[Sequence[Path]]],
    what: str,
    key: str,
    listed: Iterable[Path],
) -> dict[Path, Path]:
    """Find each image's companion file and refuse every ambiguous pairing.

    Args:
        images: the images to pair.
        candidates: image -> groups of candidate paths in priority order. The first group with an existing
            file gives the companion; two existing files in that group are ambiguous (an error).
        what: what the companion is ("mask", "reference image", "box file"), for messages.
        key: the config key(s) that set the rule, named in the fix.
        listed: every file the reader reads as an image (of any class or split).

    Raises:
        DataError: an image would be its own companion, a companion is also read as an image, two images
            share one companion, or a candidate group holds several existing files.
    """
    listed_set = {norm(p) for p in listed}
    pairs: dict[Path, Path] = {}
    owner: dict[Path, Path] = {}
    own, both, shared, ambiguous = [], [], [], []
    for img in images:
        for group in candidates(img):
            found = sorted({p for p in group if p.is_file()})
            if norm(img) in found:
                own.append(str(img))
            others = [p for p in found if p != norm(img)]
            if len(others) > 1:
                ambiguous.append(f"{img}: {[str(p) for p in others]}")
            elif others:
                comp = others[0]
                if comp in listed_set:
                    both.append(f"{comp} (the {what} of {img.name})")
                elif comp in owner:
                    shared.append(f"{comp}: {owner[comp].name} and {img}")
                else:
                    owner[comp] = img
                    pairs[img] = comp
            if found:
                break
    if both:
        raise DataError(f"{len(both)} file(s) are read both as an image and as a {what}:{listing(both)}\n"
                        f"Restrict `extensions` (or the pattern) to the images and give the {what}s their own "
                        f"extensions or suffix ({key}).")
    if own:
        raise DataError(f"{len(own)} image(s) would be their own {what} under {key}:{listing(own)}\n"
                        f"Set a {what} suffix or {what} extensions that differ from the image ones.")
    if shared:
        raise DataError(f"{len(shared)} {what} file(s) pair with more than one image under {key}:{listing(shared)}\n"
                        f"A {what} belongs to exactly one image: make the rule more specific (e.g. keep the "
                        "class or split folder in the path) or rename the images.")
    if ambiguous:
        raise DataError(f"{len(ambiguous)} image(s) match several {what} files under {key}:{listing(ambiguous)}\n"
                        f"Keep one {what} per image or narrow the {what} extensions.")
    return pairs


def unmatched_files(folders: Iterable[Path], extensions: Sequence[str], matched: Iterable[Path],
                    listed: Iterable[Path]) -> list[Path]:
    """Files in ``folders`` (directly) with a companion's extension that pair with no image and are not images
    themselves."""
    taken = {norm(p) for p in matched} | {norm(p) for p in listed}
    exts = {e.lower() for e in extensions}
    out = set()
    for folder in {norm(f) for f in folders}:
        if not folder.is_dir():
            continue
        for p in folder.iterdir():
            if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in exts and norm(p) not in taken:
                out.add(norm(p))
    return sorted(out)


def check_matches(what: str, key: str, images: Sequence[Path], pairs: Mapping[Path, Path],
                  unmatched: Sequence[Path], example: Sequence[Path], report: ReadReport,
                  required: bool = True) -> None:
    """Report companions that match no image: an error when none match at all, a warning with the count
    otherwise.

    Args:
        required: the user configured this rule, so zero matches is an error even when no candidate file
            exists at all (the rule points at nothing).
        example: where the rule looked for the first image's companion (shown in the error).
    """
    report.forget([*pairs.values(), *unmatched])  # companions are not "ignored" files
    if not pairs and images and (required or unmatched):
        found = f"; {len(unmatched)} {what}(s) there match no image:{listing(unmatched, 5)}" if unmatched else ""
        shown = [str(p) for p in example[:4]] + (["..."] if len(example) > 4 else [])
        raise DataError(
            f"No {what} matches any of the {len(images)} images under {key}: for '{images[0]}' it looks for "
            f"{shown}{found}\nFix {key} (or remove it if the dataset has no {what}s)."
        )
    if unmatched:
        log.warning("%d %s(s) match no image and are ignored (rule %s), e.g. %s",
                    len(unmatched), what, key, unmatched[0])
        report.unmatched[f"{what}s"].extend(str(p) for p in unmatched)


def mask_candidates(image: Path, root: Path, mask_root: Path, class_name: str | None, suffix: str,
                    extensions: Sequence[str]) -> list[list[Path]]:
    """Where the mask of ``image`` may be, in priority order: the mirror of the image's folder under
    ``mask_root`` (beside the image when ``mask_root`` is the dataset root), then ``mask_root/<class>/``,
    then ``mask_root/`` itself; each with ``<stem><suffix><ext>`` for every mask extension."""
    rel = os.path.relpath(image.parent, root)
    folders = [mask_root / rel] + ([mask_root / class_name] if class_name else []) + [mask_root]
    groups, seen = [], set()
    for folder in folders:
        folder = norm(folder)
        if folder not in seen:
            seen.add(folder)
            groups.append([folder / f"{image.stem}{suffix}{e}" for e in extensions])
    return groups


def attach_masks(images: Sequence[tuple[Path, str | None]], root: Path, mask_root: Path, suffix: str,
                 extensions: Sequence[str], listed: Iterable[Path], report: ReadReport,
                 key: str = "mask_root / mask_suffix / mask_extensions") -> dict[Path, Path]:
    """Pair ``(image, class name)`` items with their masks (:func:`mask_candidates`) under every rule of
    :func:`pair_companions`, and report mask files that match no image (:func:`check_matches`)."""
    listed = list(listed)
    groups = {img: mask_candidates(img, root, mask_root, cls, suffix, extensions) for img, cls in images}
    pairs = pair_companions([img for img, _ in images], groups.__getitem__, "mask", key, listed)
    folders = {c.parent for gs in groups.values() for g in gs for c in g}
    unmatched = unmatched_files(folders, extensions, pairs.values(), listed)
    first = [c for g in groups[images[0][0]] for c in g] if images else []
    check_matches("mask", key, [img for img, _ in images], pairs, unmatched, first, report)
    return pairs


def is_mask_file(path: Path, mask_root: Path, suffix: str, extensions: Sequence[str]) -> bool:
    """A file under ``mask_root`` whose stem ends in the (non-empty) mask suffix with a mask extension: when
    masks are stored among the images, such files are masks, never images."""
    return (bool(suffix) and path.stem.endswith(suffix) and path.suffix.lower() in extensions
            and norm(path).is_relative_to(norm(mask_root)))
