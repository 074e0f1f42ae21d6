"""The one input-size rule (madd.data.dataset.image_hw / input_shape) that export, predict, cost, checkpoint
rebuilding and the pruning reports share."""

from __future__ import annotations

from madd.data.dataset import image_hw, input_shape


def test_image_size_is_square_or_height_width():
    assert image_hw(96) == (96, 96)
    assert image_hw([512, 224]) == (512, 224) and image_hw((64, 32)) == (64, 32)


def test_input_shape_reads_the_data_config_with_the_data_modules_defaults():
    assert input_shape({"image_size": [512, 224], "channels": 1}) == (1, 512, 224)
    assert input_shape({"image_size": 64}) == (3, 64, 64)
    # absent keys: the data module's own defaults (conf/data/default.yaml), whoever asks
    assert input_shape({}) == input_shape(None) == (3, 128, 128)
