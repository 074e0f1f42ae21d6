"""Config checks run before any work: required values, interpolations, and the typed schema of an entry point.

Cheap: only OmegaConf and pydantic (``train.py`` runs them before torch is imported).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException
from pydantic import BaseModel, ValidationError

from madd.errors import MaddConfigError


def resolved(cfg: DictConfig) -> dict:
    """The config as plain containers, every ``???`` and interpolation checked; a problem names its key.

    The ``hydra`` node is skipped: a config composed with ``return_hydra_config=True`` (the tests) holds keys
    there that only Hydra's runtime fills in.
    """
    try:
        return OmegaConf.to_container(
            OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]), resolve=True, throw_on_missing=True
        )
    except MissingMandatoryValue as err:
        raise MaddConfigError(f"{err.full_key} is required but not set (???); give it on the command line, "
                              f"e.g. {err.full_key}=<value>") from None
    except OmegaConfBaseException as err:  # an interpolation that does not resolve, an unknown resolver
        key = getattr(err, "full_key", None) or "the config"
        raise MaddConfigError(f"{key}: {str(err).splitlines()[0]}; fix or override that value") from None


def check_required(cfg: DictConfig) -> None:
    """Fail before any work when a required value (``???``) is unset or an interpolation does not resolve."""
    resolved(cfg)


def _field_path(schema: type[BaseModel], loc: tuple) -> tuple[str, str | None, bool]:
    """The dotted config key a pydantic error location points at, that field's description (the fix), and
    whether the key is a whole section (a section validator's message names its keys itself).

    Locations also hold union-member tags (``int``, ``tuple[int,int]``) and list indices; the walk stops at the
    first part that is not a field of the current section.
    """
    keys, description, model = [], None, schema
    for part in loc:
        fields = getattr(model, "model_fields", None) if isinstance(model, type) else None
        if not fields or part not in fields:
            break
        keys.append(str(part))
        info = fields[part]
        description = info.description
        model = next((a for a in _types_in(info.annotation) if isinstance(a, type) and issubclass(a, BaseModel)),
                     None)
    return ".".join(keys), description, not keys or model is not None


def _types_in(annotation: Any) -> list:
    args = getattr(annotation, "__args__", None)
    return [annotation] if not args else [t for a in args for t in _types_in(a)]


def _value_at(plain: Mapping, key: str) -> Any:
    node: Any = plain
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def schema_errors(err: ValidationError, schema: type[BaseModel], plain: Mapping) -> list[str]:
    """One line per offending key: ``key=value: what is wrong; expected: what to set``."""
    problems: dict[str, list[str]] = {}
    fixes: dict[str, str | None] = {}
    missing = set()
    for e in err.errors(include_url=False):
        key, fix, section = _field_path(schema, e["loc"])
        msg = e["msg"].removeprefix("Value error, ")
        if section and e["type"] in ("value_error", "assertion_error"):
            key, fix = f"#{msg}", None
        problems.setdefault(key, [])
        if msg not in problems[key]:
            problems[key].append(msg)
        fixes[key] = fix
        if e["type"] == "missing":
            missing.add(key)
    lines = []
    for key, msgs in problems.items():
        if key.startswith("#"):
            lines.append(key[1:])
            continue
        value = _value_at(plain, key)
        head = f"{key} is not set" if key in missing else f"{key}={value!r}"
        lines.append(f"{head}: {' or '.join(m[0].lower() + m[1:] for m in msgs)}"
                     + (f"; expected {fixes[key]}" if fixes[key] else ""))
    return lines


def check_config(cfg: DictConfig, schema: type[BaseModel]) -> dict:
    """Validate ``cfg`` against ``schema`` (see :mod:`madd.utils.schema`); every problem in one
    :class:`MaddConfigError`, one line per key. Returns the resolved plain config."""
    plain = resolved(cfg)
    try:
        schema.model_validate(plain)
    except ValidationError as err:
        lines = schema_errors(err, schema, plain)
        head = "invalid config value" if len(lines) == 1 else f"{len(lines)} invalid config values"
        raise MaddConfigError(f"{head}:\n  " + "\n  ".join(lines)) from None
    return plain
