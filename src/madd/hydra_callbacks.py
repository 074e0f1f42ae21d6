"""Hydra callbacks (``hydra.callbacks``): checks Hydra's own steps would otherwise fail with a traceback.

* :class:`OutputFolderCheck` (every entry point, ``conf/hydra/default.yaml``): the run or sweep folder Hydra is
  about to create (``hydra.run.dir`` / ``hydra.sweep.dir``, under ``paths.log_dir``) can be written, before
  Hydra's own ``mkdir`` raises ``PermissionError``.
* :class:`SweepPreflight` (``train.py``, ``conf/train.yaml``): before the first job of a basic-sweeper multirun,
  composes every job's config exactly as the sweeper will (Hydra's override parser, ``split_arguments`` and
  ``load_sweep_config``), checks it against :class:`~madd.utils.schema.TrainSchema`, and builds once each
  distinct config node that names pretrained weights (``weights``, ``encoder_weights``) so a missing weight file
  shows up now, for all jobs, not one job at a time hours later. The jobs that cannot run are listed with the
  reason; ``on_error: fail`` (default) stops the sweep before it starts (exit status 2), ``warn`` runs it anyway.
  A sweeper that chooses its jobs as it goes (Optuna) cannot be listed up front; its search space is checked
  instead (:func:`search_space_jobs`: every categorical value and both ends of every range, one parameter
  varied at a time), so a value that cannot run is named before the first trial, not found by a failed one.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Mapping
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict

from madd.errors import MaddConfigError

log = logging.getLogger("madd")

BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"
OPTUNA_SWEEPER = "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper"
WEIGHT_KEYS = ("weights", "encoder_weights")


def _exit_with(message: str) -> None:
    print(f"\nmadd error: {message}", file=sys.stderr)
    raise SystemExit(2)


def check_hydra_folder(config: DictConfig, key: str) -> None:
    """Exit with status 2 and one message when Hydra's folder ``hydra.<key>.dir`` cannot be written."""
    from madd.utils.schema import writable_dir

    folder = OmegaConf.select(config, f"hydra.{key}.dir")
    try:
        writable_dir(folder)
    except ValueError as err:
        log_dir = OmegaConf.select(config, "paths.log_dir", default=None)
        _exit_with(f"hydra.{key}.dir={folder}: {err}; set paths.log_dir (now {log_dir}) or hydra.{key}.dir "
                   "to a folder this user can write")


class OutputFolderCheck(Callback):
    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        check_hydra_folder(config, "run")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        check_hydra_folder(config, "sweep")


def sweep_jobs(config: DictConfig) -> list[list[str]]:
    """The override list of every job the basic sweeper will launch, in its order."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser

    params = OmegaConf.select(config, "hydra.sweeper.params")
    sweeper = BasicSweeper(max_batch_size=None, params=OmegaConf.to_container(params) if params else None)
    arguments = sweeper._parse_config() + list(OmegaConf.to_container(config.hydra.overrides.task))
    parser = OverridesParser.create(config_loader=GlobalHydra.instance().config_loader())
    batches = BasicSweeper.split_arguments(parser.parse_overrides(arguments), None)
    return [list(job) for batch in batches for job in batch]


def _sweep_values(override) -> list[str]:
    """The values of one search-space override worth checking: all choices, the ends of a range or interval."""
    from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, RangeSweep

    sweep = override.value()
    if isinstance(sweep, ChoiceSweep):
        return list(override.sweep_string_iterator())
    if isinstance(sweep, RangeSweep):
        values = list(override.sweep_string_iterator())
        return values[:1] + values[-1:] if len(values) > 1 else values
    if isinstance(sweep, IntervalSweep):  # int(interval(a, b)) has int ends
        return [str(sweep.start), str(sweep.end)]
    return [override.get_value_element_as_str()]


def search_space_jobs(config: DictConfig) -> list[list[str]]:
    """Jobs covering an Optuna search space (``hydra.sweeper.params`` and sweeps on the command line).

    The first job takes every parameter's first value; each further job changes one parameter to one of its
    other values (every choice, both ends of a range or interval), so ``1 + sum(n_i - 1)`` jobs, not the product.
    """
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser

    params = OmegaConf.to_container(OmegaConf.select(config, "hydra.sweeper.params") or {})
    arguments = [f"{k}={v}" for k, v in params.items()] + list(OmegaConf.to_container(config.hydra.overrides.task))
    parser = OverridesParser.create(config_loader=GlobalHydra.instance().config_loader())
    overrides = parser.parse_overrides(arguments)
    keys = [o.get_key_element() for o in overrides]
    values = [_sweep_values(o) if o.is_sweep_override() else [o.get_value_element_as_str()] for o in overrides]
    first = [f"{k}={v[0]}" for k, v in zip(keys, values)]
    jobs = [first]
    for i, (key, options) in enumerate(zip(keys, values)):
        for value in options[1:]:
            jobs.append(first[:i] + [f"{key}={value}"] + first[i + 1:])
    return jobs


def weight_nodes(node: Any, path: str = "") -> list[tuple[str, dict]]:
    """Config nodes (resolved, plain) with a ``_target_`` and a pretrained-weight key that is set."""
    found = []
    if isinstance(node, Mapping):
        if "_target_" in node and any(node.get(k) for k in WEIGHT_KEYS):
            found.append((path, dict(node)))
        else:
            for k, v in node.items():
                found += weight_nodes(v, f"{path}.{k}" if path else str(k))
    return found


def _build_error(node: dict) -> str | None:
    """Why ``node`` cannot be built (``None`` when it can); the object is dropped at once."""
    import gc

    from madd.utils.instantiate import instantiate_clear

    try:
        instantiate_clear(node, _convert_="partial")
    except MaddConfigError as err:
        return str(err)
    except Exception as err:  # noqa: BLE001 - any constructor: the job would fail the same way
        return f"{type(err).__name__}: {err}"
    finally:
        gc.collect()
    return None


class SweepPreflight(Callback):
    """Args:
        on_error: ``fail`` (stop before the first job, exit status 2) or ``warn`` (list them, run the sweep).
        build_weights: also build each distinct node naming pretrained weights (see the module docstring).
    """

    def __init__(self, on_error: str = "fail", build_weights: bool = True) -> None:
        if on_error not in ("fail", "warn"):
            raise MaddConfigError(f"hydra.callbacks.sweep_preflight.on_error={on_error!r}: choose fail or warn")
        self.on_error, self.build_weights = on_error, build_weights

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        check_hydra_folder(config, "sweep")
        sweeper = OmegaConf.select(config, "hydra.sweeper._target_")
        list_jobs = {BASIC_SWEEPER: sweep_jobs, OPTUNA_SWEEPER: search_space_jobs}.get(sweeper)
        if list_jobs is None:
            return
        try:
            jobs = list_jobs(config)
        except Exception as err:  # noqa: BLE001 - Hydra's sweeper reports its own parse errors next
            log.warning("pre-flight check skipped: %s", err)
            return
        problems = self.check(config, jobs)
        what = "sweep jobs" if sweeper == BASIC_SWEEPER else "corners of the search space (trials)"
        if not problems:
            log.info("pre-flight: all %d %s pass the config checks", len(jobs), what)
            return
        by_reason: dict[str, list[int]] = {}
        for idx, reason in problems.items():
            by_reason.setdefault(reason, []).append(idx)
        lines = [f"{len(problems)} of {len(jobs)} {what} cannot run:"]
        swept = [i for i in range(len(jobs[0])) if len({tuple(j)[i] for j in jobs}) > 1]
        for reason, idxs in by_reason.items():
            example = " ".join(jobs[idxs[0]][i] for i in swept)
            lines.append(f"- jobs {_ranges(idxs)} (e.g. #{idxs[0]}: {example}):\n    {reason}")
        lines.append("fix them or leave those values out of the sweep; "
                     "hydra.callbacks.sweep_preflight.on_error=warn runs the sweep anyway")
        message = "\n".join(lines)
        if self.on_error == "fail":
            _exit_with(message)
        log.warning("%s", message)

    def check(self, config: DictConfig, jobs: list[list[str]]) -> dict[int, str]:
        """``{job number: why it cannot run}``."""
        from hydra.core.global_hydra import GlobalHydra
        from hydra.core.hydra_config import HydraConfig

        from madd.utils.config import check_config
        from madd.utils.schema import TrainSchema

        loader = GlobalHydra.instance().config_loader()
        master = HydraConfig.instance().cfg
        problems: dict[int, str] = {}
        built: dict[str, str | None] = {}
        try:
            for idx, overrides in enumerate(jobs):
                try:
                    job = loader.load_sweep_config(config, list(overrides))
                    HydraConfig.instance().set_config(job)  # ${hydra:...} resolves against this job
                    with open_dict(job):  # each job's own folder does not exist yet; they all live in this one
                        job.paths.output_dir = str(config.hydra.sweep.dir)
                    plain = check_config(job, TrainSchema)
                    if self.build_weights:
                        for _, node in weight_nodes(plain.get("model") or {}, "model"):
                            key = json.dumps(node, sort_keys=True, default=str)
                            if key not in built:
                                built[key] = _build_error(node)
                            if built[key]:
                                raise MaddConfigError(built[key])
                except MaddConfigError as err:
                    problems[idx] = str(err)
                except Exception as err:  # noqa: BLE001 - a composition error: the job fails the same way
                    problems[idx] = f"{type(err).__name__}: {err}"
        finally:
            HydraConfig.instance().cfg = master
        return problems


def _ranges(idxs: list[int]) -> str:
    """``[0, 1, 2, 5]`` -> ``#0-2, #5``."""
    out, start = [], idxs[0]
    for prev, cur in zip(idxs, idxs[1:] + [None]):
        if cur != prev + 1:
            out.append(f"#{start}" if start == prev else f"#{start}-{prev}")
            start = cur
    return ", ".join(out)
