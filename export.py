"""Export a checkpoint to ONNX/TorchScript and check parity: ``python export.py ckpt=<path>`` (see conf/export.yaml)."""

import os
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

os.environ.setdefault("PROJECT_ROOT", str(Path(__file__).resolve().parent))


def export(cfg: DictConfig) -> dict:
    from madd.deploy.export import export_checkpoint

    return export_checkpoint(cfg.ckpt, cfg.output_dir, list(cfg.formats), cfg.exporter, cfg.opset, cfg.tolerance,
                             cfg.parity_batch, cfg.parity_images, cfg.name, cfg.seed)


@hydra.main(version_base="1.3", config_path="conf", config_name="export")
def main(cfg: DictConfig) -> None:
    from madd.cli import run_task
    from madd.utils.schema import ExportSchema

    result = run_task(export, cfg, ExportSchema)
    print(OmegaConf.to_yaml({k: v for k, v in result.items() if k != "parity"}))


if __name__ == "__main__":
    from madd.cli import run_hydra

    run_hydra(main)  # a config Hydra cannot compose exits 2, as every bad input
