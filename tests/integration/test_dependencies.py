"""Every third-party package the code imports (or a config names as ``_target_``) is declared in pyproject.toml.

A fresh ``pip install -e ".[dev]"`` has only what pyproject declares (and what those packages pull in): a module
that works here only because it was installed by hand, or arrives as someone else's dependency, fails there.
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
from pathlib import Path

import pytest
import torch
from helpers import CONF, REPO

from madd.errors import MissingDependencyError
from madd.utils.optional import first_installed, require

RUNTIME_CODE = [REPO / "src", *REPO.glob("*.py")]
DEV_CODE = [REPO / "tests", REPO / "bench"]


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _declared(group: str | None = None) -> set[str]:
    tomllib = pytest.importorskip("tomllib" if sys.version_info >= (3, 11) else "tomli")  # Python 3.10: tomli
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    specs = project["dependencies"] if group is None else project["optional-dependencies"][group]
    return {_normalise(re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", spec).group()) for spec in specs}


def _local_modules() -> set[str]:
    """madd itself and the repository's own scripts and test modules (``conftest``, ``helpers``, ``train`` ...)."""
    files = [*REPO.glob("*.py"), *(REPO / "tests").rglob("*.py"), *(REPO / "bench").glob("*.py")]
    return {"madd"} | {f.parent.name if f.name == "__init__.py" else f.stem for f in files}


def _imports(paths: list[Path]) -> dict[str, str]:
    """Top-level third-party module -> the first file that imports it (absolute imports, lazy ones included)."""
    found: dict[str, str] = {}
    local = _local_modules()
    for path in paths:
        for file in sorted(path.rglob("*.py") if path.is_dir() else [path]):
            for node in ast.walk(ast.parse(file.read_text(), str(file))):
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    top = name.split(".")[0]
                    if top not in sys.stdlib_module_names and top not in local:
                        found.setdefault(top, str(file.relative_to(REPO)))
    return found


def _config_targets() -> dict[str, str]:
    """Top-level module of every ``_target_`` in conf/ -> the first config naming it."""
    found: dict[str, str] = {}
    for file in sorted(CONF.rglob("*.yaml")):
        for target in re.findall(r"_target_:\s*([A-Za-z_][\w.]*)", file.read_text()):
            top = target.split(".")[0]
            if top != "madd":
                found.setdefault(top, str(file.relative_to(REPO)))
    return found


def _undeclared(modules: dict[str, str], declared: set[str]) -> list[str]:
    providers = importlib.metadata.packages_distributions()
    problems = []
    for module, where in sorted(modules.items()):
        dists = {_normalise(d) for d in providers.get(module, [])}
        if not dists:
            problems.append(f"{module} (imported by {where}) is not installed; declare its package in pyproject.toml")
        elif not dists & declared:
            problems.append(f"{module} (imported by {where}) comes from {sorted(dists)}, none of which pyproject.toml "
                            "declares")
    return problems


def test_every_runtime_import_and_config_target_is_a_declared_dependency():
    modules = {**_imports(RUNTIME_CODE), **_config_targets()}
    assert {"torch", "lightning", "hydra", "torchmetrics"} <= set(modules)  # the scan sees the code
    assert _undeclared(modules, _declared()) == []


def test_every_test_and_bench_import_is_declared_with_the_dev_extra():
    modules = _imports(DEV_CODE)
    assert "pytest" in modules
    assert _undeclared(modules, _declared() | _declared("dev")) == []


def test_box_ap_backend_is_declared_and_used():
    """torchmetrics' MeanAveragePrecision defaults to pycocotools; madd declares faster-coco-eval and uses it."""
    from madd.models.madd.box_localization import BoxAP

    assert "faster-coco-eval" in _declared()
    assert BoxAP().metric._coco_backend.backend == "faster_coco_eval"


def test_box_ap_hand_values():
    """One image, one ground-truth box; AP@0.5 with 101-point interpolation (COCO)."""
    from madd.models.madd.box_localization import BoxAP

    truth = [{"boxes": torch.tensor([[0.0, 0, 4, 4]]), "labels": torch.tensor([1])}]
    hit = torch.tensor([[0.0, 0, 4, 4]])
    miss = torch.tensor([[10.0, 10, 14, 14]])
    metric = BoxAP()
    # the hit scored above a false alarm: precision 1 up to recall 1 -> AP 1
    metric.update([{"boxes": torch.cat([hit, miss]), "scores": torch.tensor([0.9, 0.5]),
                    "labels": torch.tensor([1, 1])}], truth)
    assert metric.compute() == {"box_mAP50": pytest.approx(1.0)}
    metric.reset()
    # the false alarm ranked first: precision 1/2 at recall 1 -> AP 0.5
    metric.update([{"boxes": torch.cat([hit, miss]), "scores": torch.tensor([0.5, 0.9]),
                    "labels": torch.tensor([1, 1])}], truth)
    assert metric.compute() == {"box_mAP50": pytest.approx(0.5)}


def test_missing_optional_package_is_one_clear_error(monkeypatch):
    from madd.models.madd.box_localization import BoxAP

    for module in ("faster_coco_eval", "pycocotools"):
        monkeypatch.setitem(sys.modules, module, None)  # `import` of a None entry raises ImportError
    with pytest.raises(MissingDependencyError, match=r"box AP@0.5 .* needs the package 'faster-coco-eval'") as err:
        BoxAP()
    assert 'pip install -e ".[dev]"' in str(err.value)
    with pytest.raises(MissingDependencyError, match="pip install faster-coco-eval"):
        first_installed(["faster_coco_eval"], "faster-coco-eval", "box AP")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(MissingDependencyError, match="the ONNX parity check needs the package 'onnxruntime'"):
        require("onnxruntime", "onnxruntime", "the ONNX parity check")
