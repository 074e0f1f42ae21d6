"""OmegaConf resolvers used by the configs (registered once, on import)."""

from __future__ import annotations

from omegaconf import OmegaConf


def _index_of(items, item):
    # the normal class may be null (every class is a defect type): then there is no normal index
    return None if item is None else list(items).index(item)


def register_resolvers() -> None:
    for name, fn in {"len": lambda x: len(x), "index_of": _index_of}.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)


register_resolvers()
