"""Turn a multirun folder into the paper's tables: ``python report.py dir=logs/<task>/multiruns/<date>``.

Options (see conf/report.yaml): rows=[model] columns=[data] reference=<row> metrics=[test/mAP,...]
delta={metric:test/mAP,reference:<row>} small_defect_fraction=0.01 rare_below=5 out=<folder>.
"""

import hydra
from omegaconf import DictConfig, OmegaConf


@hydra.main(version_base="1.3", config_path="conf", config_name="report")
def main(cfg: DictConfig) -> None:
    from madd.cli import run_task
    from madd.utils.schema import ReportSchema
    from madd.reporting.report import main as report

    run_task(lambda c: report(OmegaConf.to_container(c, resolve=True)), cfg, ReportSchema)


if __name__ == "__main__":
    from madd.cli import run_hydra

    run_hydra(main)  # a config Hydra cannot compose exits 2, as every bad input
