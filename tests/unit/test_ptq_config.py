"""PTQConfig: presets, YAML / JSON round trips, overrides, validation errors."""
import pytest

from pytorch_quantization.ptq import PTQConfig, PRESETS


def test_presets_describe_what_they_say():
    assert PTQConfig.preset("fp32").weight is None and PTQConfig.preset("fp32").input is None
    w8 = PTQConfig.preset("w8")
    assert w8.weight["num_bits"] == 8 and w8.weight["axis"] == 0 and w8.input is None
    w8a8 = PTQConfig.preset("w8a8")
    assert w8a8.input["num_bits"] == 8 and "axis" not in w8a8.input
    assert PTQConfig.preset("w4").weight["num_bits"] == 4
    fp8 = PTQConfig.preset("fp8")
    assert fp8.weight["num_bits"] == (4, 3) and fp8.input["num_bits"] == (4, 3)
    assert set(PRESETS) == {"fp32", "w8", "w8a8", "w4", "fp8", "w4a8", "w4a16"}


def test_unknown_preset_names_choices():
    with pytest.raises(ValueError, match="unknown preset 'int3'.*w8a8"):
        PTQConfig.coerce("int3")


@pytest.mark.parametrize("ext", ["yaml", "json"])
def test_file_round_trip(tmp_path, ext):
    cfg = PTQConfig.preset("fp8", skip=["head.*"],
                           overrides={"backbone.0.*": {"input": None, "weight": {"num_bits": 8, "axis": 0}}},
                           calibration={"method": "percentile", "percentile": 99.9, "skip_zeros": True})
    path = tmp_path / f"cfg.{ext}"
    cfg.save(path)
    back = PTQConfig.load(path)
    assert back == cfg
    assert back.weight["num_bits"] == (4, 3)  # tuples survive formats that only know lists
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp_")]


def test_preset_key_in_yaml_and_unknown_keys():
    cfg = PTQConfig.from_yaml("preset: w8\nskip: ['a.*']\n")
    assert cfg.weight["num_bits"] == 8 and cfg.input is None and cfg.skip == ["a.*"]
    with pytest.raises(ValueError, match=r"unknown PTQConfig keys \['activations', 'wieght'\]"):
        PTQConfig.from_yaml("wieght: {num_bits: 8}\nactivations: null\n")
    with pytest.raises(ValueError, match=r"calibration has unknown keys \['bins'\]"):
        PTQConfig(calibration={"bins": 10})
    with pytest.raises(ValueError, match=r"overrides\['x'\] has unknown keys \['bias'\]"):
        PTQConfig(overrides={"x": {"bias": None}})


def test_invalid_descriptor_settings_name_the_field():
    with pytest.raises(ValueError, match="weight: invalid descriptor settings.*num_bits"):
        PTQConfig(weight={"num_bits": 33})
    with pytest.raises(ValueError, match="input: invalid descriptor settings.*Unused keys"):
        PTQConfig(input={"num_bits": 8, "per_channel": True})
    with pytest.raises(ValueError, match="calibration method"):
        PTQConfig(calibration={"method": "kl"})
    with pytest.raises(ValueError, match=r"must end in \.json, \.yaml or \.yml"):
        PTQConfig().save("cfg.txt")


def test_overrides_merge_in_order():
    cfg = PTQConfig.preset("w8a8", overrides={
        "head.*": {"weight": {"num_bits": 4}},
        "head.cls": {"input": None},
    })
    assert cfg.settings_for("backbone.0") == (cfg.weight, cfg.input)
    weight, inp = cfg.settings_for("head.reg")
    assert weight == {"num_bits": 4, "axis": 0, "narrow_range": True} and inp == cfg.input
    weight, inp = cfg.settings_for("head.cls")
    assert weight["num_bits"] == 4 and inp is None
    # an override can add input quantization to a weight-only preset
    w8 = PTQConfig.preset("w8", overrides={"x": {"input": {"num_bits": 8}}})
    assert w8.settings_for("x")[1] == {"num_bits": 8}
