"""Benchmark: CPU batch-1 latency of every method's deployed network, measured side by side in one run (issue 17).

    python bench/bench_method_latency.py                                   # AWDD presets, 1 thread, 5 repeats
    python bench/bench_method_latency.py --data-dir /work/exp/data         # the README's run (cached synthetic data)
    python bench/bench_method_latency.py --domain kolektorsdd              # the *_kolektorsdd presets
    python bench/bench_method_latency.py --image-size 64 --repeats 1 --max-fit-images 16 --min-run-time 0.2  # check
    python bench/bench_method_latency.py --methods supervised madd patchcore --threads 2

The ``latency_ms`` in each run's ``metrics.json`` (:func:`madd.deploy.cost.deploy_cost`) was measured at the end of
that run, on whatever else the machine was doing then: numbers of different runs do not compare. This script
measures every method's deployed graph in one process, interleaved, so they do:

1. for every experiment preset of ``--domain`` (``<method>_<domain>`` in ``conf/experiment/`` for method in
   linear_probe, supervised, fixmatch, mean_teacher, madd, patchcore, padim; ``--methods`` picks some), composes the
   config as ``train.py`` does (``experiment=<preset>``; the preset's own input size, ``--image-size`` sets
   ``data.image_size`` of all; ``--override`` adds any Hydra override to all) and builds the LightningModule with
   Hydra's ``instantiate`` after ``seed_everything(seed)``, as :func:`madd.pipeline.train` does. Nothing is trained:
   the cost of a graph does not depend on its weights;
2. PatchCore and PaDiM cannot run before they are fitted, and their cost grows with what they learn (PatchCore's
   memory bank is searched for every patch; PaDiM holds one Gaussian per feature position). They are fitted for real
   by their own Lightning path (:class:`madd.models.normal_only.NormalOnlyModule`): ``Trainer.fit`` on the preset's
   data module, with the preset's trainer settings (one epoch of one step) and no logger, checkpoint or callbacks;
   its first epoch reads every normal image of ``model.fit_splits`` (the training pool) and fits, its validation
   sets the calibration (thresholds) that the deployed graph carries. ``--max-fit-images N`` keeps only the first
   N normal images of the pool (for a quick check; printed; the README run uses the whole pool). The synthetic
   AWDD data is generated into ``--data-dir`` (a temporary folder by default; generation is cached by parameters,
   so ``/work/exp/data`` is reused); KolektorSDD is read from ``../shared/data`` and when it is absent the two
   fitted methods are skipped with a message (the others need no data);
3. measures every module's deployed graph, :func:`madd.deploy.export.deploy_model` (what ``export.py`` writes and
   :func:`madd.deploy.cost.deploy_cost` measures: images -> class probabilities, plus the anomaly map where the
   method has one): the parameters of the submodules that run (:func:`madd.deploy.cost.used_parameter_count`),
   FLOPs (:func:`madd.compression.network_cost.count_flops`, ``torch.utils.flop_counter``: the memory-bank distances and
   the Mahalanobis products are matmuls and count) and batch-1 CPU latency
   (:func:`madd.compression.network_cost.measure_latency`, ``torch.utils.benchmark``, ``--threads`` for all), the graphs
   alternating ``--repeats`` times with the order reversed every other repeat; the median of the repeats is kept
   (min-max beside it), images/s = 1000 / median ms, and the ratio against ``--reference`` (default
   ``supervised_<domain>``) is the median of the per-repeat ratios (the graphs of one repeat run back to back, so
   a load change between repeats moves the ratio least);
4. prints one Markdown table, and what each fitted method learnt (bank size, images, seconds).

Why four rows coincide: the linear probe, supervised fine-tuning, FixMatch and Mean Teacher all deploy one
:class:`madd.models.classifier.ImageClassifier` (normalise -> backbone -> pooled features -> linear head) on the
same backbone; they differ in how it is trained, not in what runs. Mean Teacher deploys its EMA teacher, a copy of
the student. The probe's head reads pooled stages 1-3 instead of the last stage alone (``model=linear_probe``'s
``head.pool_stages``): a few hundred more head parameters (760 with EfficientNet-Lite0 and 5 classes), the
same backbone pass. Their latencies should agree to within the noise; how far they spread is the measurement's
noise on that run. MADD deploys
student A's classification plus the RCSM anomaly map (mask -> student A up to ``rcsm.decoder_stage`` ->
reconstruction decoder), so it costs more FLOPs than the classifier; PatchCore and PaDiM run their feature
extractor and the search / Mahalanobis distance of every patch. Their feature extractor
(:class:`madd.models.patch_features.PatchFeatures`) runs the backbone only up to the last stage it reads
(stage 2 for both presets), so the deployed parameters and FLOPs leave the last stage out.

The ratios, not the absolute latencies, are the result when the machine is shared: all graphs are slowed alike.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import statistics
import sys
import tempfile
import warnings
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

METHODS = ("linear_probe", "supervised", "fixmatch", "mean_teacher", "madd", "patchcore", "padim")
FITTED = ("patchcore", "padim")  # NormalOnlyModule: fitted on the pool's normal images before they can run


def presets_of(domain: str, methods: list[str] | None) -> tuple[list[str], list[str]]:
    """The ``<method>_<domain>`` presets in conf/experiment/ (``methods``: method names or preset names) and the
    requested methods that have none."""
    wanted = [m.removesuffix(f"_{domain}") for m in (methods or METHODS)]
    unknown = [m for m in wanted if m not in METHODS]
    if unknown:
        raise SystemExit(f"--methods {unknown}: choose from {list(METHODS)} (or their <method>_{domain} presets)")
    found = [f"{m}_{domain}" for m in wanted if (REPO / "conf" / "experiment" / f"{m}_{domain}.yaml").is_file()]
    return found, [f"{m}_{domain}" for m in wanted if f"{m}_{domain}" not in found]


def compose(preset: str, image_size: int | None, overrides: list[str], data_dir: Path, out: Path):
    from helpers import compose_config  # the composition train.py does (tests/helpers)

    size = [f"data.image_size={image_size}"] if image_size else []
    return compose_config([f"experiment={preset}", *size, *overrides], out, data_dir)


def build_module(cfg):
    """The LightningModule of ``cfg`` as :func:`madd.pipeline.train` builds it (seeded, then instantiated)."""
    import lightning as L

    from madd.pipeline import run_config
    from madd.utils.instantiate import instantiate_clear

    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True, verbose=False)
    module = instantiate_clear(cfg.model, _convert_="partial")
    module.run_config = run_config(cfg)
    return module


def cap_fit_pool(module, datamodule, max_images: int) -> None:
    """Keep the first ``max_images`` normal images of ``module.fit_splits`` (in split order) and only those;
    a split left with none is no longer read."""
    from torch.utils.data import Subset

    left, kept = max_images, []
    for split in module.fit_splits:
        normal = [i for i, r in enumerate(datamodule.records[split]) if r.label == module.normal_index][:left]
        left -= len(normal)
        if normal:
            datamodule.datasets[split] = Subset(datamodule.datasets[split], normal)
            kept.append(split)
    module.fit_splits = kept


@contextlib.contextmanager
def quiet_lightning():
    """Lightning's banners and its warnings about a fit with no optimiser (expected here) off, then back."""
    loggers = [logging.getLogger(n) for n in ("lightning.pytorch", "lightning.fabric")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", module="lightning")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def fit_normal_only(module, cfg, max_images: int | None) -> str:
    """Fit a PatchCore/PaDiM module by its own Lightning path (``Trainer.fit``: the pool's normal images, then the
    validation calibration); returns what it learnt, in words."""
    from hydra.utils import instantiate

    from madd.utils.instantiate import instantiate_clear

    datamodule = instantiate_clear(cfg.data, _convert_="all")
    datamodule.prepare_data()
    datamodule.setup("fit")
    if max_images:
        cap_fit_pool(module, datamodule, max_images)
    datamodule.train_splits = list(module.train_splits())
    with quiet_lightning():
        trainer = instantiate(cfg.trainer, callbacks=[], logger=False, enable_checkpointing=False,
                              enable_progress_bar=False, enable_model_summary=False, max_epochs=1, min_epochs=1,
                              limit_train_batches=1, check_val_every_n_epoch=1)
        trainer.fit(module, datamodule=datamodule)
    module.cpu().eval()
    model = module.model
    if hasattr(model, "memory_bank"):
        bank = model.memory_bank
        learnt = f"memory bank {bank.shape[0]} x {bank.shape[1]} ({model.coreset_ratio:.0%} coreset)"
    else:
        learnt = (f"{model.inv_covariance.shape[0]} Gaussians of {model.mean.shape[0]} features")
    state_mb = sum(b.numel() * b.element_size() for b in model.buffers()) / 1e6
    cap = f", capped by --max-fit-images {max_images}" if max_images else " (the whole pool)"
    return (f"{learnt}, {state_mb:.1f} MB of buffers; fitted on {module.fit_images} normal images{cap} "
            f"in {module.fit_seconds:.1f} s; calibrated: {module.detector.calibration.calibrated}")


def graph_cost(module, shape) -> dict:
    """The deployed graph of ``module`` (``deploy_model``), its used parameters and its FLOPs at batch 1."""
    from madd.compression.network_cost import count_flops
    from madd.deploy.cost import used_parameter_count
    from madd.deploy.export import deploy_model

    net = deploy_model(module.cpu().eval(), shape)
    image = torch.rand(1, *shape)
    return {"net": net, "params": used_parameter_count(net, image), "flops": count_flops(net, image),
            "outputs": "probs + map" if net.has_map else "probs", "shape": tuple(shape)}


def interleaved_latency(nets: dict, shapes: dict, threads: int, repeats: int,
                        min_run_time: float) -> dict[str, list[float]]:
    """Batch-1 CPU seconds per image of every net, the nets alternating ``repeats`` times (the order reversed every
    other repeat, so that none always runs first)."""
    from madd.compression.network_cost import measure_latency

    times: dict[str, list[float]] = {name: [] for name in nets}
    for r in range(repeats):
        for name in (list(nets) if r % 2 == 0 else list(nets)[::-1]):
            times[name].append(measure_latency(nets[name], shapes[name], (1,), threads, min_run_time)[1])
        print(f"repeat {r + 1}/{repeats}: " + ", ".join(f"{n} {1e3 * t[-1]:.1f} ms" for n, t in times.items()),
              file=sys.stderr, flush=True)
    return times


def print_table(rows: dict[str, dict], reference: str | None, header: str) -> None:
    print(header)
    ref = f"vs {reference}" if reference else "vs reference"
    print(f"| method | input | deployed graph | params (M) | GFLOPs | latency ms (median) | min-max ms | images/s "
          f"| {ref} |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, r in rows.items():
        ratio = f"{r['ratio']:.2f}x" if r.get("ratio") is not None else "-"
        print(f"| {name} | {r['shape'][1]}x{r['shape'][2]} | {r['outputs']} | {r['params'] / 1e6:.2f} "
              f"| {r['flops'] / 1e9:.3f} | {r['latency_ms']:.2f} | {r['min_ms']:.2f}-{r['max_ms']:.2f} "
              f"| {1e3 / r['latency_ms']:.1f} | {ratio} |")


def main(argv=None) -> dict[str, dict]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--domain", default="awdd", help="presets <method>_<domain> of conf/experiment/ (awdd, kolektorsdd)")
    p.add_argument("--methods", nargs="+", help=f"a subset of {list(METHODS)} (default: all with a preset)")
    p.add_argument("--reference", help="the preset the ratios are against (default: supervised_<domain>)")
    p.add_argument("--image-size", type=int, help="data.image_size of every preset (default: each preset's own)")
    p.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                   help="a Hydra override for every preset (repeatable), e.g. data.target.num_images=80")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--min-run-time", type=float, default=1.0, help="seconds of timed runs per repeat and graph")
    p.add_argument("--max-fit-images", type=int, help="fit PatchCore/PaDiM on at most this many normal images")
    p.add_argument("--data-dir", help="where synthetic data is generated (default: a temporary folder)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    data_dir = Path(args.data_dir) if args.data_dir else Path(tempfile.mkdtemp(prefix="madd_data_"))
    presets, missing = presets_of(args.domain, args.methods)
    if not presets:
        raise SystemExit(f"no preset <method>_{args.domain} in {REPO / 'conf' / 'experiment'}")
    reference = args.reference or f"supervised_{args.domain}"
    if not reference.endswith(f"_{args.domain}"):
        reference = f"{reference}_{args.domain}"

    from helpers import SHARED_DATA

    from madd.data.dataset import input_shape
    from madd.errors import DataError
    from madd.pipeline import run_config

    rows, nets, notes = {}, {}, []
    for preset in presets:
        print(f"building {preset}", file=sys.stderr, flush=True)
        cfg = compose(preset, args.image_size, args.override, data_dir, Path(tempfile.mkdtemp(prefix="madd_bench_")))
        shape = input_shape(run_config(cfg)["data"])
        module = build_module(cfg)
        if preset.split(f"_{args.domain}")[0] in FITTED:
            try:
                notes.append(f"{preset}: {fit_normal_only(module, cfg, args.max_fit_images)}")
            except (FileNotFoundError, DataError) as err:  # absent data (KolektorSDD outside ../shared/data)
                notes.append(f"{preset}: SKIPPED, its data could not be read ({type(err).__name__}: {err}); "
                             f"the real datasets live in {SHARED_DATA} (../shared/data)")
                print(notes[-1], file=sys.stderr, flush=True)
                continue
        row = graph_cost(module, shape)
        nets[preset] = row.pop("net")
        rows[preset] = row
    times = interleaved_latency(nets, {n: r["shape"] for n, r in rows.items()}, args.threads, args.repeats,
                                args.min_run_time)
    for name, row in rows.items():
        row.update(latency_ms=1e3 * statistics.median(times[name]), min_ms=1e3 * min(times[name]),
                   max_ms=1e3 * max(times[name]), times=times[name])
        if reference in times:  # median of the per-repeat ratios (one repeat's graphs ran back to back)
            row["ratio"] = statistics.median(t / r for t, r in zip(times[name], times[reference]))
    if reference not in rows:
        notes.append(f"reference {reference} was not measured: no ratios")
    for m in missing:
        notes.append(f"{m}: no such preset in conf/experiment/")
    print_table(rows, reference if reference in rows else None,
                f"deployed networks of the {args.domain} presets, batch 1, CPU, {args.threads} thread(s), median of "
                f"{args.repeats} interleaved repeat(s) of >= {args.min_run_time:g} s each; ratio = latency / "
                f"{reference}'s (median of per-repeat ratios)")
    for note in notes:
        print(f"- {note}")
    return rows


if __name__ == "__main__":
    main()
