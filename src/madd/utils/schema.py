"""Typed schemas of the entry points' configs (pydantic), checked before any work.

Each schema names the keys a mistake in which would otherwise surface as a library traceback deep inside a run
(``data.image_size=abc``: "too many values to unpack"; ``data.batch_size=0``: a DataLoader error; an output
folder that cannot be written: a ``PermissionError`` at the end of a run). Sections allow extra keys: the code
that uses them (constructors raising :class:`~madd.errors.MaddConfigError`) checks the rest. Every field's
``description`` says what to set, and is repeated in the error message.

Integers are strict (``data.batch_size=2.5`` or ``true`` is refused, not rounded); floats accept integers.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, FilePath, model_validator

from madd.data.datamodule import IMAGING_MODALITIES
from madd.errors import MaddConfigError

PositiveInt = Annotated[int, Field(strict=True, gt=0)]
NonNegativeInt = Annotated[int, Field(strict=True, ge=0)]
Fraction = Annotated[float, Field(ge=0.0, le=1.0)]


def writable_dir(path: Path) -> Path:
    """``path`` exists as a folder (created when missing) and a file can be created in it."""
    path = Path(path).expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".madd_write_check_"):
            pass
    except OSError as exc:
        raise ValueError(f"cannot write there ({type(exc).__name__}: {exc.strerror or exc})") from None
    return path


WritableDir = Annotated[Path, AfterValidator(writable_dir)]


def require_writable_dir(key: str, path: str | Path) -> Path:
    """:func:`writable_dir` for a folder computed in code (not a config value of its own)."""
    try:
        return writable_dir(Path(path))
    except ValueError as err:
        raise MaddConfigError(f"{key}={path}: {err}; give a folder this user can write") from None


class Section(BaseModel):
    """A config node: the keys below are checked, other keys pass through untouched."""

    model_config = ConfigDict(extra="allow")


class LabelBudget(Section):
    per_class: PositiveInt | None = Field(None, description="labelled images per class (>= 1), or null")
    total: PositiveInt | None = Field(None, description="labelled images in all (>= 1), or null for all labelled")

    @model_validator(mode="after")
    def _one_of(self) -> LabelBudget:
        if self.per_class is not None and self.total is not None:
            raise ValueError("set only one of data.label_budget.per_class and data.label_budget.total (the other null)")
        return self


class DataSchema(Section):
    image_size: PositiveInt | tuple[PositiveInt, PositiveInt] = Field(
        128, description="the decoded image size in pixels: one integer (square) or [height, width], e.g. 128")
    channels: Literal[1, 3] = Field(3, description="1 (grey) or 3 (RGB)")
    modality: Literal[IMAGING_MODALITIES] = Field(
        "visual", description="how the images were acquired: visual (camera), ultrasonic or ct")
    batch_size: PositiveInt = Field(16, description="labelled images per training batch, an integer >= 1, e.g. 16")
    unlabeled_batch_size: PositiveInt | None = Field(None, description="an integer >= 1, or null for data.batch_size")
    source_batch_size: PositiveInt | None = Field(None, description="an integer >= 1, or null for data.batch_size")
    eval_batch_size: PositiveInt = Field(64, description="images per validation/test batch, an integer >= 1")
    num_workers: NonNegativeInt = Field(0, description="DataLoader worker processes, an integer >= 0")
    splits: dict[Literal["train", "val", "test"], Fraction] | Literal["predefined"] | None = Field(
        None, description="fractions in [0, 1] of train/val/test, e.g. {train: 0.7, val: 0.1, test: 0.2}, or "
                          "predefined (the dataset's own split folders)")
    label_budget: LabelBudget | None = Field(None, description="{per_class: n} or {total: n} or both null")
    num_folds: PositiveInt = Field(1, description="an integer >= 1 (1: no cross-validation)")
    fold: NonNegativeInt = Field(0, description="an integer in [0, data.num_folds)")
    max_source_images: PositiveInt | None = Field(None, description="an integer >= 1, or null for no cap")

    @model_validator(mode="after")
    def _fold_and_splits(self) -> DataSchema:
        if self.fold >= self.num_folds:
            raise ValueError(f"data.fold={self.fold} must be < data.num_folds={self.num_folds} "
                             f"(folds are numbered 0..{self.num_folds - 1})")
        if isinstance(self.splits, dict) and sum(self.splits.values()) > 1.0 + 1e-6:
            raise ValueError(f"data.splits {dict(self.splits)} add up to more than 1; make them sum to 1")
        return self


class TrainerSchema(Section):
    max_epochs: Annotated[int, Field(strict=True, ge=-1)] | None = Field(
        None, description="an integer >= 1 (-1: until max_steps or another stop)")
    min_epochs: NonNegativeInt | None = Field(None, description="an integer >= 0, or null")
    max_steps: Annotated[int, Field(strict=True, ge=-1)] = Field(-1, description="an integer >= 1, or -1 for no limit")
    check_val_every_n_epoch: PositiveInt | None = Field(1, description="an integer >= 1, or null")
    log_every_n_steps: PositiveInt = Field(50, description="an integer >= 1")
    accumulate_grad_batches: PositiveInt = Field(1, description="an integer >= 1")
    fast_dev_run: bool | NonNegativeInt = Field(False, description="true/false, or a number of batches >= 0")
    limit_train_batches: Fraction | NonNegativeInt | None = Field(
        None, description="a fraction in [0, 1] or a number of batches >= 0")
    limit_val_batches: Fraction | NonNegativeInt | None = Field(
        None, description="a fraction in [0, 1] or a number of batches >= 0")
    limit_test_batches: Fraction | NonNegativeInt | None = Field(
        None, description="a fraction in [0, 1] or a number of batches >= 0")
    gradient_clip_val: Annotated[float, Field(ge=0.0)] | None = Field(None, description="a number >= 0, or null")

    @model_validator(mode="after")
    def _epochs(self) -> TrainerSchema:
        if self.max_epochs == 0:
            raise ValueError("trainer.max_epochs=0 trains nothing; set an integer >= 1 (or train=false to only test)")
        return self


class OptimizerSchema(Section):
    lr: Annotated[float, Field(gt=0.0)] | None = Field(None, description="the learning rate, a number > 0, e.g. 1e-3")


class ModelSchema(Section):
    optimizer: OptimizerSchema | None = None


class PathsSchema(Section):
    output_dir: WritableDir = Field(description="a folder this user can write (default: the run folder Hydra makes)")


class TrainSchema(Section):
    """``conf/train.yaml`` after composition."""

    seed: Annotated[int, Field(strict=True)] | None = Field(None, description="an integer, or null")
    train: bool = Field(True, description="true or false")
    test: bool = Field(True, description="true or false")
    ckpt_path: FilePath | None = Field(
        None, description="a .ckpt written by train.py, e.g. ckpt_path=<run>/checkpoints/last.ckpt, or null")
    transfer_freeze_stages: NonNegativeInt = Field(0, description="an integer >= 0")
    data: DataSchema
    trainer: TrainerSchema
    model: ModelSchema
    paths: PathsSchema


class PredictSchema(Section):
    """``conf/predict.yaml``."""

    model_file: FilePath = Field(description="a .ckpt written by train.py or an .onnx written by export.py")
    input_dir: Annotated[Path, Field()] = Field(description="the folder of images to predict")
    output_dir: WritableDir = Field(description="a folder this user can write (default: the run folder)")
    batch_size: PositiveInt = Field(16, description="images per batch, an integer >= 1")
    min_box_area: NonNegativeInt = Field(4, description="pixels, an integer >= 0")
    threshold: Fraction | None = Field(None, description="a number in [0, 1], or null for the model's own")


class ExportSchema(Section):
    """``conf/export.yaml``."""

    ckpt: FilePath = Field(description="a .ckpt written by train.py")
    output_dir: WritableDir = Field(description="a folder this user can write (default: the run folder)")
    opset: PositiveInt = Field(18, description="an ONNX opset number, e.g. 18")
    tolerance: Annotated[float, Field(gt=0.0)] = Field(1e-4, description="a number > 0")
    parity_batch: PositiveInt = Field(4, description="an integer >= 1")


class ReportSchema(Section):
    """``conf/report.yaml`` (its default ``out``, ``<dir>/report``, is checked where it is computed)."""

    out: WritableDir | None = Field(None, description="a folder this user can write, or null for <dir>/report")


class OutputDirSchema(Section):
    """Any entry point that writes into its run folder (``select_source.py``, ``rank_checkpoints.py``)."""

    paths: PathsSchema
