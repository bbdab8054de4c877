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


def test_unknown_model_names_are_rejected_when_params_are_read():
    with pytest.raises(ParamsError, match=r"train\.model: .*unknown model 'sp_cnn_typo'"):
        load_params("params.yaml", ["train.model=sp_cnn_typo"])
    with pytest.raises(ParamsError, match=r"clean\.oof\.model: .*resnet_nope"):
        load_params("params.yaml", ["clean.oof.model=resnet_nope"])
    assert load_params("params.yaml", ["train.model=resnet18"]).train.model == "resnet18"


def test_policy_options_are_checked_against_the_policy():
    ok = load_params("params.yaml", ["train.augment.policy=randaugment",
                                     "train.augment.policy_options={num_ops: 1, magnitude: 5}"])
    assert ok.train.augment.policy_options == {"num_ops": 1, "magnitude": 5}
    with pytest.raises(ParamsError, match=r"policy_options: unknown \['magnitud'\] for randaugment"):
        load_params("params.yaml", ["train.augment.policy=randaugment", "train.augment.policy_options={magnitud: 5}"])
    with pytest.raises(ParamsError, match="policy is null"):
        load_params("params.yaml", ["train.augment.policy_options={num_ops: 1}"])


def test_one_set_of_defaults_the_models_defaults_are_params_yaml():
    from skillpack.config import Params

    assert Params().model_dump() == load_params("params.yaml").model_dump()


def test_ablation_regimes_and_arms_are_validated_before_any_run(tmp_path):
    import yaml

    from skillpack import ablation as ab

    spec = yaml.safe_load(open("ablations/default.yaml"))
    spec["regimes"]["small"]["max_trian"] = 100
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    with pytest.raises(ParamsError, match=r"regimes\.small: max_trian: Extra inputs"):
        ab.load_spec(path)
    spec["regimes"]["small"].pop("max_trian")
    spec["arms"][-1]["overrides"] = {"train.model": "nope_net"}
    path.write_text(yaml.safe_dump(spec))
    with pytest.raises(ParamsError, match=rf"arm {spec['arms'][-1]['name']}: .*unknown model 'nope_net'"):
        ab.load_spec(path)
