"""Built-in synthetic industrial-defect generator: the embedded default dataset (no download needed).

Three procedural imaging domains share defect semantics (``crack`` exists in all of them) but differ in
distribution, which makes them a cheap stand-in for a cross-domain transfer problem:

============  ======================================================  =========================================
domain        look                                                    classes (``good`` is always index 0)
============  ======================================================  =========================================
``awdd``      ultrasonic weld scans: grey, tilted seam band, gamma    good, crack, pore, edge_burn,
              speckle, salt-and-pepper, background gradient           incomplete_weld
``bdd``       bearing surfaces: concentric machining rings / arcs,    good, pitting, crack, wear
              specular highlight, mild colour cast
``metal``     brushed steel, grain, steel tint (the labelled source)  good, crack, pore, scratch
============  ======================================================  =========================================

Every image comes with a pixel mask (boxes follow from its connected components). Defect size,
position, orientation and contrast vary; sizes are log-uniform so small defects (< 1 % of the image)
are common. Default normal fraction: 0.6 for ``awdd``/``bdd`` (a production line's unlabelled pool is
normal-dominant), 0.25 for ``metal``; override with ``class_proportions`` or ``normal_fraction``.

Determinism: image ``i`` is rendered from ``SeedSequence(seed, spawn_key=(crc32(domain), 0, i))``, so
the same parameters give byte-identical files whether generated serially, in parallel or resumed.

Presets (:data:`PRESETS`, :func:`preset`) -- keyword arguments for :func:`generate_synthetic`:

* ``awdd_paper``: awdd, 3000 images, 256 px (the AWDD setting; the 50-labelled-image budget and the
  7:1:2 split are applied by the data module, not here);
* ``bdd_paper``: bdd, 2000 images, 256 px;
* ``metal_paper``: metal, 3000 images, 256 px (source domain for the paper-scale transfer runs);
* ``awdd_cpu`` / ``bdd_cpu`` / ``metal_cpu``: 600 / 500 / 400 images at 128 px (what
  ``conf/data/synthetic_*.yaml`` use). Sized so a ResNet-18
  trains for a handful of epochs in a few minutes on 2 CPU cores (about 420 training images per epoch
  at 128 px) while the smallest defects still span a few pixels.

Cost (render + PNG, single thread): ~4-5 ms per 128 px image and ~12-15 ms per 256 px image, i.e.
~2.5-3 s CPU for 600 @ 128 and ~36-44 s CPU for 3000 @ 256; ``generate_synthetic`` spreads this over up
to 4 threads. The result is cached, so later runs only list the files (~30 ms for 600, ~0.2 s for 3000).

Usage::

    from madd.data import synthetic
    index = synthetic.generate_synthetic(root="data/synthetic", **synthetic.preset("awdd_cpu"))
    synthetic.class_names("awdd")   # ['good', 'crack', 'pore', 'edge_burn', 'incomplete_weld']
"""

from __future__ import annotations

from madd.errors import MaddConfigError

from .domains import DOMAINS, GOOD, DomainSpec, class_names, get_domain, image_seed, render_sample
from .generate import (
    GENERATOR_VERSION,
    assign_labels,
    class_counts,
    dataset_dir,
    generate_synthetic,
    param_hash,
    resolve_proportions,
    synthetic_params,
)

PRESETS: dict[str, dict] = {
    "awdd_paper": {"domain": "awdd", "num_images": 3000, "image_size": 256},
    "bdd_paper": {"domain": "bdd", "num_images": 2000, "image_size": 256},
    "metal_paper": {"domain": "metal", "num_images": 3000, "image_size": 256},
    "awdd_cpu": {"domain": "awdd", "num_images": 600, "image_size": 128},
    "bdd_cpu": {"domain": "bdd", "num_images": 500, "image_size": 128},
    "metal_cpu": {"domain": "metal", "num_images": 400, "image_size": 128},
}


def preset(name: str) -> dict:
    """A copy of the preset's keyword arguments for :func:`generate_synthetic` (add ``root``, ``seed``)."""
    try:
        return dict(PRESETS[name])
    except (KeyError, TypeError):
        raise MaddConfigError(
            f"unknown synthetic preset {name!r}; valid presets: {', '.join(sorted(PRESETS))}"
        ) from None


__all__ = [
    "DOMAINS",
    "GENERATOR_VERSION",
    "GOOD",
    "PRESETS",
    "DomainSpec",
    "assign_labels",
    "class_counts",
    "class_names",
    "dataset_dir",
    "generate_synthetic",
    "get_domain",
    "image_seed",
    "param_hash",
    "preset",
    "render_sample",
    "resolve_proportions",
    "synthetic_params",
]
