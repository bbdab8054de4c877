import pytest

from skillpack.config import ParamsError, load_params


def test_repo_params_load_and_overrides_apply(tmp_path):
    params = load_params("params.yaml", ["train.epochs=3", "data.max_train=2000", "train.augment.hflip=false"])
    assert params.train.epochs == 3
    assert params.data.max_train == 2000
    assert params.train.augment.hflip is False
    assert params.flat()["train.epochs"] == 3


def test_unknown_key_is_named(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("train:\n  epoch: 3\n")
    with pytest.raises(ParamsError, match=r"train\.epoch"):
        load_params(path)


def test_bad_value_is_named(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("train:\n  optimizer:\n    name: rmsprop_typo\n")
    with pytest.raises(ParamsError, match=r"train\.optimizer\.name"):
        load_params(path)


def test_override_syntax_error():
    with pytest.raises(ParamsError, match="key=value"):
        load_params("params.yaml", ["train.epochs"])


def test_mixup_with_a_hard_label_loss_is_rejected_by_name(tmp_path):
    with pytest.raises(ParamsError, match="center_weight"):
        load_params("params.yaml", ["train.augment.mixup_alpha=0.4", "train.loss.center_weight=0.1"])


def test_amp_off_survives_yaml_reading_off_as_false():
    assert load_params("params.yaml", ["train.amp=off"]).train.amp == "off"
    with pytest.raises(ParamsError, match=r"train\.amp"):
        load_params("params.yaml", ["train.amp=true"])
