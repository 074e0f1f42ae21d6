"""Time of one MADD training step (Lightning, every loss term, masks, meta-learner, memory bank, logging) against a
plain PyTorch loop that runs the same network passes (views, teacher, student A, student B, masked student A +
decoder) with a trivial loss, on the same in-memory batches. Prints both medians and their ratio.

    python bench/bench_madd_step.py                     # CPU, 96 px, batch 16 (the CPU preset)
    python bench/bench_madd_step.py --device cuda --image-size 256 --batch 32

The two sides alternate (``--repeats`` rounds) so that a machine shared with other jobs slows both alike;
the first ``--warmup`` steps of every round are not timed. The ratio, not the absolute time, is the result.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
import time
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

REPO = Path(__file__).resolve().parents[1]


class _StepTimer(L.Callback):
    def __init__(self) -> None:
        self.times: list[float] = []
        self._t0 = 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.strategy.root_device.type == "cuda":
            torch.cuda.synchronize()
        self._t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.strategy.root_device.type == "cuda":
            torch.cuda.synchronize()
        self.times.append(time.perf_counter() - self._t0)


def _config(args):
    import madd.utils.resolvers  # noqa: F401

    overrides = [
        # class weights need the data module inside the trainer; the bench feeds in-memory batches (same cost)
        "experiment=madd_awdd", "model.tim.enabled=false", "model.class_weights=null", f"data.image_size={args.image_size}",
        f"data.batch_size={args.batch}", f"data.target.num_images={args.images}",
        f"data.source.num_images={args.images}",
        f"paths.data_dir={args.data_dir}", "paths.output_dir=" + tempfile.mkdtemp(), "paths.log_dir=/tmp",
    ]
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose("train", overrides=overrides)


def _batches(cfg, model, n: int, device):
    dm = instantiate(cfg.data, _convert_="all")
    dm.train_splits = model.train_splits()
    dm.setup("fit")
    out = []
    while len(out) < n:
        for b in dm.train_dataloader():
            b = b[0] if isinstance(b, tuple) else b
            out.append({s: {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in part.items()}
                        for s, part in b.items()})
            if len(out) == n:
                break
    val = [{k: (v.to(device) if torch.is_tensor(v) else v) for k, v in b.items()} for b in dm.val_dataloader()]
    return out, val


def _madd_round(model, batches, val, device) -> list[float]:
    model = model.to(device)
    model.val_cache = model.meta_validation_cache(val)  # as on_train_start builds it
    model.train()
    timer = _StepTimer()
    trainer = L.Trainer(accelerator=device.type, devices=1, max_epochs=1, limit_val_batches=0, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        callbacks=[timer], log_every_n_steps=1, num_sanity_val_steps=0)
    trainer.fit(model, train_dataloaders=torch.utils.data.DataLoader(batches, batch_size=None, collate_fn=lambda b: b))
    return timer.times


def _plain_round(model, batches, device) -> list[float]:
    """The same network passes and backward as a MADD step, nothing else."""
    a = copy.deepcopy(model.student_a).to(device).train()
    teacher = copy.deepcopy(model.teacher).to(device).eval()
    decoder = copy.deepcopy(model.model.decoder).to(device).train()
    base, mild, strong = model.model.base_augment, model.model.mild_view, model.model.strong_view
    opt = torch.optim.AdamW([*a.parameters(), *decoder.parameters()], lr=1e-3)
    stage = model.model.decoder_stage
    times = []
    for batch in batches:
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        xl, yl = batch["target_labeled"]["image"], batch["target_labeled"]["label"]
        xu, xs = batch["target_unlabeled"]["image"], batch["source"]["image"]
        nl, nu = len(xl), len(xu)
        with torch.no_grad():
            xt = base(torch.cat([xl, xu]))
            va, vb = mild(torch.cat([xt, xs])), strong(xt[nl:])
            teacher(torch.cat([xt[nl:], xs]))
            # MADD reconstructs the labelled normal images and the unlabelled ones
            x_rec = torch.cat([xt[:nl][yl == model.normal_index], xt[nl:]])
            mask = (torch.rand(len(x_rec), 1, *xt.shape[-2:], device=device) < 0.25).float()
        out_a = a.forward_features(va)
        out_b = a.forward_features(vb)
        rec = decoder(a.forward_until(x_rec * (1 - mask), stage), tuple(xt.shape[-2:]))
        loss = (F.cross_entropy(out_a.logits[:nl], yl) + F.mse_loss(out_a.logits[nl:nl + nu], out_b.logits)
                + (rec - x_rec).abs().mean() + out_a.features.pow(2).mean())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return times


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--image-size", type=int, default=96)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--images", type=int, default=200)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--data-dir", default=str(REPO / "data"))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    L.seed_everything(0, verbose=False)
    cfg = _config(args)
    model = instantiate(cfg.model, _convert_="partial")
    batches, val = _batches(cfg, model, args.steps + args.warmup, device)
    madd_t, plain_t = [], []
    for r in range(args.repeats):
        fresh = copy.deepcopy(model)
        madd_t += _madd_round(fresh, batches, val, device)[args.warmup:]
        plain_t += _plain_round(model, batches, device)[args.warmup:]
        print(f"round {r + 1}/{args.repeats}: madd {statistics.median(madd_t):.3f} s/step, "
              f"plain {statistics.median(plain_t):.3f} s/step", file=sys.stderr)
    m, q = statistics.median(madd_t), statistics.median(plain_t)
    print(f"device={device} image={args.image_size}px batch={args.batch} (labelled + unlabelled + source each) "
          f"threads={args.threads} steps={len(madd_t)} per side")
    print(f"MADD step (Lightning, all terms): median {m * 1000:.0f} ms")
    print(f"plain PyTorch loop, same passes : median {q * 1000:.0f} ms")
    print(f"ratio MADD / plain = {m / q:.3f}  (overhead {100 * (m / q - 1):+.1f} %)")


if __name__ == "__main__":
    main()
