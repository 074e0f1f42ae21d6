"""MADD's config sections (config_sections.py): defaults read from conf/model/madd.yaml, checks and clear errors."""

from __future__ import annotations

import pytest

from madd.errors import MaddConfigError
from madd.models.backbones import Backbone


def test_pseudo_label_settings_are_checked():
    from madd.models.madd import config_sections

    with pytest.raises(MaddConfigError, match="model.joint.pseudo_label_view"):
        config_sections.resolve("joint", {"pseudo_label_view": "weak"})
    with pytest.raises(MaddConfigError, match="model.joint.attention_weighting"):
        config_sections.resolve("joint", {"attention_weighting": "mean"})


def test_settings_defaults_are_the_yaml_sections():
    """Every method section's defaults are conf/model/madd.yaml's, key for key; interpolations stay required."""
    from helpers import CONF
    from omegaconf import OmegaConf

    from madd.models.madd import config_sections

    yaml = OmegaConf.load(CONF / "model" / "madd.yaml")
    assert config_sections.config_file() == (CONF / "model" / "madd.yaml").resolve()
    for section in config_sections.SECTIONS:
        expected = OmegaConf.to_container(yaml[section], resolve=False)
        got = config_sections.defaults(section)
        if section == "views":  # ${data.modality}: only a composed config resolves it
            assert got.pop("modality") == config_sections.Required("${data.modality}")
            assert expected.pop("modality") == "${data.modality}"
            assert config_sections.resolve(section, {"modality": "ct"}) == {**expected, "modality": "ct"}
        else:
            assert config_sections.resolve(section, None) == expected, section
        assert got == expected, section


def test_settings_read_the_yaml_the_config_lookup_finds(tmp_path, monkeypatch):
    """A changed value in another config folder ($MADD_CONFIG_DIR, madd.console's lookup) is the new default."""
    from helpers import CONF

    from madd.models.madd import config_sections

    (tmp_path / "model").mkdir()
    (tmp_path / "train.yaml").write_text("{}\n")
    text = (CONF / "model" / "madd.yaml").read_text()
    assert "  ema_decay: 0.99\n" in text
    (tmp_path / "model" / "madd.yaml").write_text(text.replace("  ema_decay: 0.99\n", "  ema_decay: 0.5\n"))
    monkeypatch.setenv("MADD_CONFIG_DIR", str(tmp_path))
    assert config_sections.config_file() == (tmp_path / "model" / "madd.yaml").resolve()
    assert config_sections.resolve("teacher_sync", None)["ema_decay"] == 0.5
    monkeypatch.delenv("MADD_CONFIG_DIR")
    assert config_sections.resolve("teacher_sync", None)["ema_decay"] == 0.99


def test_settings_unknown_keys_and_sections_are_errors():
    from madd.models.madd import config_sections

    with pytest.raises(MaddConfigError, match=r"model\.rcsm\.mask_ration is not a MADD setting"):
        config_sections.resolve("rcsm", {"mask_ration": [0.1, 0.2]})
    with pytest.raises(MaddConfigError, match=r"model\.views\.strong\.degree is not a MADD setting"):
        config_sections.resolve("views", {"modality": "ct", "strong": {"degree": 3}})
    with pytest.raises(MaddConfigError, match="not a MADD config section"):
        config_sections.defaults("optimizer")  # top-level keys other than the 12 method sections are not read


def test_settings_omitted_interpolated_key_is_a_clear_error():
    """views.modality is ${data.modality} in the YAML: a Python caller must pass it, never gets an invented one."""
    from madd.models.madd import MADDModule, config_sections

    with pytest.raises(MaddConfigError, match=r"model\.views\.modality has no default outside Hydra.*"
                                              r"\$\{data\.modality\}.*views=\{'modality': 'ultrasonic'\}"):
        config_sections.resolve("views", None)
    with pytest.raises(MaddConfigError, match=r"model\.views\.modality"):
        config_sections.resolve("views", {"base_augment": "weak"})
    with pytest.raises(MaddConfigError, match=r"model\.views\.modality"):
        MADDModule(Backbone("mobilenet_v2", weights=None), num_classes=3, normal_index=0)
