"""Where madd's config folder is: the one home of the search order the ``madd`` command, the MADD defaults
(:mod:`madd.models.madd.config_sections`) and the source-selection data configs use.

``$MADD_CONFIG_DIR``, ``./conf`` (a project of one's own, laid out as this repository), then the ``conf/`` of the
checkout madd is installed from (``pip install -e .``).
"""

from __future__ import annotations

import os
from pathlib import Path

CHECKOUT_CONF = Path(__file__).resolve().parents[3] / "conf"


def config_dir_candidates() -> list[Path]:
    """The folders :func:`find_config_dir` tries, in order."""
    candidates = [Path(os.environ["MADD_CONFIG_DIR"])] if os.environ.get("MADD_CONFIG_DIR") else []
    return candidates + [Path.cwd() / "conf", CHECKOUT_CONF]


def find_config_dir(marker: str = "train.yaml") -> Path | None:
    """The first candidate folder holding ``marker`` (a file or folder inside it); ``None`` when none does."""
    for folder in config_dir_candidates():
        if (folder / marker).exists():
            return folder.resolve()
    return None
