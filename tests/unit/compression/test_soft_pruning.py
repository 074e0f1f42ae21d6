"""SFP/ASFP as callbacks: per-epoch soft masks, the hard final mask, the report and the pruned checkpoint."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from helpers import TINY_DATA, compose_config

from madd.checkpoint import load_module
from madd.pruning.groups import find_groups
from madd.compression.masks import keep_count
from madd.compression.network_cost import count_params
from madd.compression.soft_pruning import SoftFilterPruning
from madd.errors import MaddConfigError
from madd.pipeline import train




class RecordMasks(SoftFilterPruning):
    """SFP that remembers, per epoch, which filters were zero right after masking and before the next mask."""

    last: RecordMasks | None = None

    def __init__(self, **kw):
        super().__init__(**kw)
        RecordMasks.last = self
        self.zero_after_mask: list[dict[str, torch.Tensor]] = []
        self.zero_before_next: list[dict[str, torch.Tensor]] = []

    def _zero_filters(self, pl_module):
        modules = dict(self.target(pl_module).named_modules())
        return {g.key: modules[g.producers[0]].weight.detach().flatten(1).abs().sum(1).cpu() == 0 for g in self.groups}

    def _end_of_epoch(self, trainer, pl_module):
        if self.masked_epoch != trainer.current_epoch:
            self.zero_before_next.append(self._zero_filters(pl_module))
        super()._end_of_epoch(trainer, pl_module)
        self.zero_after_mask.append(self._zero_filters(pl_module))


def test_sfp_masks_every_epoch_and_lets_filters_recover(tmp_path, data_dir):
    cfg = compose_config(["callbacks=[default,sfp]", *TINY_DATA, "trainer.max_epochs=2", "callbacks.sfp.latency=false",
                          "callbacks.sfp.rate=0.5", "callbacks.sfp.scope=inner"], tmp_path, data_dir)
    cfg.callbacks.sfp._target_ = f"{__name__}.RecordMasks"
    train(cfg)
    cb = RecordMasks.last
    # half of each group's filters zeroed after every epoch's mask
    for zeros in cb.zero_after_mask:
        assert all(z.float().mean() == pytest.approx(0.5, abs=0.02) for z in zeros.values())
    # soft: zeroed filters are trained again during the next epoch (those whose BatchNorm shift keeps the
    # ReLU closed get no gradient and stay zero, as in the official SFP code; the others recover)
    assert len(cb.zero_before_next) == 2
    masked = sum(int(z.sum()) for z in cb.zero_after_mask[0].values())
    still_zero = sum(int(z.sum()) for z in cb.zero_before_next[1].values())
    assert still_zero < 0.8 * masked
    report = pd.read_csv(tmp_path / "out" / "pruning" / "report.csv")
    assert report["stage"].tolist() == ["unpruned", "final"]
    assert pd.isna(report["accuracy"].iloc[0]) and report["accuracy"].iloc[1] >= 0
    small = load_module(tmp_path / "out" / "pruning" / "pruned.ckpt")
    assert count_params(small.net) == report["params"].iloc[1] < report["params"].iloc[0]


def test_asfp_ends_hard_masked_at_the_target_rate(tmp_path, data_dir):
    cfg = compose_config(["callbacks=[default,asfp]", *TINY_DATA, "trainer.max_epochs=2", "callbacks.asfp.latency=false",
                          "callbacks.asfp.rate=0.3"], tmp_path, data_dir)
    train(cfg)
    report = pd.read_csv(tmp_path / "out" / "pruning" / "report.csv")
    assert report["kept_channels"].iloc[-1] == pytest.approx(0.7, abs=0.02)
    # the last checkpoint is hard-masked: removing the channels changes nothing
    masked = load_module(tmp_path / "out" / "checkpoints" / "last.ckpt")
    small = load_module(tmp_path / "out" / "pruning" / "pruned.ckpt")
    images = torch.rand(3, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(small(images), masked(images), atol=1e-4, rtol=1e-4)
    groups = find_groups(masked.net, images[:1], "all")
    modules = dict(masked.net.named_modules())
    bn = modules[groups[0].norms[0]]
    assert int((bn.weight == 0).sum()) == groups[0].size - keep_count(groups[0].size, 0.3)


def test_bad_soft_pruning_settings_are_config_errors():
    with pytest.raises(MaddConfigError, match="schedule"):
        SoftFilterPruning(schedule="linear")
    with pytest.raises(MaddConfigError, match="rate"):
        SoftFilterPruning(rate=1.5)

