"""The ``madd`` command: one console script, a subcommand per task (``madd --help`` lists them).

    madd train experiment=madd_awdd                 # = python train.py experiment=madd_awdd
    madd train -m experiment=madd_awdd seed=0,1,2   # Hydra's multirun, --help, --cfg job ... as train.py
    madd predict model_file=<.ckpt|.onnx> input_dir=<folder>
    madd export ckpt=<.ckpt>
    madd report dir=logs/<task>/multiruns/<date>
    madd select-source target=synthetic_awdd
    madd rank-checkpoints data=synthetic_awdd 'checkpoints=[...]'
    madd cost <run dir> ...                         # = python -m madd.deploy.cost
    madd evaluate-tim <run dir> ...                 # = python -m madd.models.madd.evaluate_tim
    madd kfold-summary ...                          # = python -m madd.reporting.kfold
    madd segmentation-report ...                    # = python -m madd.reporting.segmentation

The Hydra subcommands run :mod:`madd.tasks`, as the root scripts do, on the config folder found first among:
``$MADD_CONFIG_DIR``, ``./conf`` (a project of one's own, laid out as this repository), and the ``conf/`` of the
checkout madd is installed from (``pip install -e .``). ``paths.root_dir`` is that folder's parent unless
``PROJECT_ROOT`` says otherwise, so runs write to the same ``logs/`` as the root scripts.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from madd.utils.config_dir import config_dir_candidates, find_config_dir

#: subcommand -> (the :mod:`madd.tasks` function, its primary config in conf/)
HYDRA_COMMANDS = {
    "train": ("train", "train"),
    "predict": ("predict", "predict"),
    "export": ("export", "export"),
    "report": ("report", "report"),
    "select-source": ("select_source", "select_source"),
    "rank-checkpoints": ("rank_checkpoints", "rank_checkpoints"),
}
#: subcommand -> the module whose ``main(argv)`` it runs (each also runs as ``python -m <module>``)
MODULE_COMMANDS = {
    "cost": "madd.deploy.cost",
    "evaluate-tim": "madd.models.madd.evaluate_tim",
    "kfold-summary": "madd.reporting.kfold",
    "segmentation-report": "madd.reporting.segmentation",
}


def config_dir() -> Path:
    """The config folder of the Hydra subcommands (see the module docstring); exit 2 when there is none."""
    found = find_config_dir()
    if found is not None:
        return found
    tried = ", ".join(str(c) for c in config_dir_candidates())
    print(f"madd error: no config folder (conf/ with train.yaml) found; tried {tried}. Run madd from the "
          "repository's folder, install it with `pip install -e .`, or set MADD_CONFIG_DIR", file=sys.stderr)
    raise SystemExit(2)


def _usage() -> str:
    width = max(map(len, [*HYDRA_COMMANDS, *MODULE_COMMANDS]))
    lines = ["usage: madd <command> [arguments]", "", "commands (Hydra overrides; --help for each):"]
    lines += [f"  {name:<{width}}  python {script}.py" for name, (script, _) in HYDRA_COMMANDS.items()]
    lines += ["", "commands (their own arguments, as the module takes them):"]
    lines += [f"  {name:<{width}}  python -m {module}" for name, module in MODULE_COMMANDS.items()]
    return "\n".join(lines)


def _hydra_command(name: str, argv: Sequence[str], conf: Path, prog: str) -> None:
    """``@hydra.main`` over :mod:`madd.tasks`' function of ``name`` with ``conf``, run on ``argv``."""
    import hydra

    from madd import tasks
    from madd.cli import run_hydra

    task_name, config_name = HYDRA_COMMANDS[name]
    os.environ.setdefault("PROJECT_ROOT", str(conf.parent))
    task: Callable = getattr(tasks, task_name)
    sys.argv = [prog, *argv]  # Hydra reads its overrides and flags from sys.argv
    run_hydra(hydra.main(version_base="1.3", config_path=str(conf), config_name=config_name)(task))


def run_script(name: str, root: Path) -> None:
    """A root script (``python train.py ...``): the Hydra command ``name`` on ``root/conf``, runs rooted at ``root``."""
    _hydra_command(name, sys.argv[1:], root / "conf", sys.argv[0])


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(_usage())
        return
    name, rest = args[0], args[1:]
    if name in HYDRA_COMMANDS:
        _hydra_command(name, rest, config_dir(), f"madd {name}")
    elif name in MODULE_COMMANDS:
        from madd.errors import config_error_cause

        try:
            result = importlib.import_module(MODULE_COMMANDS[name]).main(rest)
        except Exception as err:  # bad input: one message and exit 2, as every entry point (madd.cli)
            cause = config_error_cause(err)
            if cause is None or os.environ.get("HYDRA_FULL_ERROR") == "1":
                raise
            print(f"madd error: {cause}", file=sys.stderr)
            raise SystemExit(2) from None
        if isinstance(result, int) and result:
            raise SystemExit(result)
    else:
        print(f"madd error: unknown command {name!r}; choose from {[*HYDRA_COMMANDS, *MODULE_COMMANDS]} "
              "(madd --help)", file=sys.stderr)
        raise SystemExit(2)


if __name__ == "__main__":
    main()
