"""Predict a folder of images: ``python predict.py model_file=<.ckpt|.onnx> input_dir=<folder>`` (see conf/predict.yaml)."""

import os
from pathlib import Path

import hydra
from omegaconf import DictConfig

os.environ.setdefault("PROJECT_ROOT", str(Path(__file__).resolve().parent))


def predict(cfg: DictConfig) -> dict:
    from madd.deploy.predict import predict_folder

    df = predict_folder(cfg.model_file, cfg.input_dir, cfg.output_dir, cfg.batch_size, cfg.device, cfg.overlays,
                        cfg.threshold, cfg.min_box_area)
    print(f"{len(df)} images, {int(df['defect'].sum())} flagged defective -> {Path(cfg.output_dir) / 'predictions.csv'}")
    return {"images": len(df)}


@hydra.main(version_base="1.3", config_path="conf", config_name="predict")
def main(cfg: DictConfig) -> None:
    from madd.cli import run_task
    from madd.utils.schema import PredictSchema

    run_task(predict, cfg, PredictSchema)


if __name__ == "__main__":
    from madd.cli import run_hydra

    run_hydra(main)  # a config Hydra cannot compose exits 2, as every bad input
