"""MADD under DDP (``trainer=ddp_sim``: two CPU processes, gloo): the memory bank and the CORAL statistics see
every rank's samples, the banks stay identical across ranks, and the teacher is synced once per sync point."""

from __future__ import annotations

import json

import lightning as L
import pytest
import torch

from helpers import TINY_DATA, TINY_SOURCE, compose_config
from madd.pipeline import train


class RankRecorder(L.Callback):
    """Writes what each rank saw and holds at the end of fit to ``<dir>/rank<r>.json``."""

    def __init__(self, out_dir: str) -> None:
        self.out_dir = out_dir
        self.seen: dict[int, list[int]] = {}
        self.rows: dict = {}
        self.admitted_here = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.seen.setdefault(trainer.current_epoch, []).extend(batch["target_unlabeled"]["index"].tolist())
        self.rows = dict(pl_module.statistics_rows)
        self.admitted_here += self.rows.pop("bank_admitted_here")

    def on_train_end(self, trainer, pl_module) -> None:
        bank = pl_module.model.bank
        teacher = torch.cat([p.detach().flatten() for p in pl_module.teacher.parameters()])
        record = {"seen": self.seen, "rows": self.rows, "admitted_here": self.admitted_here,
                  "bank_index": bank.sample_index.tolist(),
                  "bank_added": int(bank.num_added), "bank_sum": float(bank.features.sum()),
                  "syncs": int(pl_module.model.teacher_syncs), "teacher_sum": float(teacher.double().sum()),
                  "prototype_sum": float(pl_module.model.prototype.prototype.sum())}
        with open(f"{self.out_dir}/rank{trainer.global_rank}.json", "w") as f:
            json.dump(record, f)




@pytest.mark.ddp
def test_ddp_gathers_bank_and_statistics_and_syncs_teacher_once(tmp_path, data_dir):
    # a fixed, permissive threshold so that pseudo-labels (and bank admissions) happen on both ranks
    cfg = compose_config(
        ["experiment=madd_awdd", "trainer=ddp_sim", *TINY_DATA, *TINY_SOURCE, "data.image_size=32",
         "data.source_batch_size=4", "model/backbone=mobilenet_v2", "model.tim.enabled=false", "trainer.max_epochs=2",
         "trainer.limit_train_batches=2", "+trainer.limit_val_batches=1", "test=false",
         "model.teacher_sync.mode=copy", "model.teacher_sync.every_n_epochs=1", "model.mapom.dynamic_threshold=false", "model.mapom.fixed_tau=0.01",
         "model.memory_bank.admission_margin=0.0", "~callbacks.model_summary",
         "+callbacks.recorder._target_=test_madd_ddp.RankRecorder", f"+callbacks.recorder.out_dir={tmp_path}"],
        tmp_path, data_dir)
    train(cfg)
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    for epoch in ("0", "1"):  # DistributedSampler: within an epoch each rank has its own images
        assert set(r0["seen"][epoch]).isdisjoint(r1["seen"][epoch])
    # the bank holds both ranks' admissions, identically on every rank
    assert r0["admitted_here"] > 0 and r1["admitted_here"] > 0
    assert r0["bank_added"] == r1["bank_added"] == r0["admitted_here"] + r1["admitted_here"]
    assert r0["bank_index"] == r1["bank_index"]
    assert r0["bank_sum"] == pytest.approx(r1["bank_sum"])
    assert r0["prototype_sum"] == pytest.approx(r1["prototype_sum"])  # source prototype from both ranks
    # CORAL saw both ranks' rows: 2 x (4 source) and 2 x (4 labelled + 4 unlabelled)
    assert r0["rows"] == r1["rows"] == {"da_source": 8, "da_target": 16}
    # one sync (at the start of epoch 1), the same teacher everywhere
    assert r0["syncs"] == r1["syncs"] == 1
    assert r0["teacher_sum"] == pytest.approx(r1["teacher_sum"], rel=1e-6)
