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
    with pytest.raises(ParamsError, match=r"clean\.oof\.train: model: unknown model 'resnet_nope'"):
        load_params("params.yaml", ["clean.oof.train.model=resnet_nope"])
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

    from skillpack.evidence import ablation as ab
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


def test_derived_trainings_are_train_with_only_their_own_keys_changed():
    from skillpack.config import derive

    params = load_params("params.yaml", ["train.optimizer.momentum=0.8", "compress.finetune.epochs=3"])
    finetune = derive(params.train, params.compress.finetune)
    assert finetune.epochs == 3 and finetune.optimizer.momentum == 0.8   # the rest is train's
    assert finetune.model == params.train.model and finetune.optimizer.lr != params.train.optimizer.lr
    fold = params.clean.oof.train_params(threads=1, device="cpu")
    assert fold.optimizer.momentum == 0.9   # the fold models start from the defaults, not from train
    with pytest.raises(ParamsError, match=r"compress\.student: epochs: .*greater than or equal to 1"):
        load_params("params.yaml", ["compress.student.epochs=0"])
    with pytest.raises(ParamsError, match=r"compress\.finetune: optimizer\.lrr: Extra inputs"):
        load_params("params.yaml", ["compress.finetune.optimizer.lrr=0.1"])


def test_runtime_settings_live_in_the_runtime_section_and_reach_the_engine():
    params = load_params("params.yaml", ["runtime.device=cpu", "runtime.resident=true"])
    assert params.train.device == "cpu" and params.train.resident is True
    with pytest.raises(ParamsError, match=r"train\.device is a runtime setting: set runtime\.device"):
        load_params("params.yaml", ["train.device=cpu"])


# -- malformed params files: one line naming the place and the problem ----------------------

def _params_file(tmp_path, text: str):
    path = tmp_path / "params.yaml"
    path.write_text(text)
    return path


@pytest.mark.fault('a YAML syntax error in params: one line with file, line and column', guards=('traceback',))
def test_a_yaml_syntax_error_is_one_line_with_line_and_column(tmp_path):
    path = _params_file(tmp_path, "train:\n  epochs: 3\n  optimizer: {lr: 0.1\n")
    with pytest.raises(ParamsError) as err:
        load_params(path)
    message = str(err.value)
    assert "\n" not in message and str(path) in message
    assert ":4:" in message or ":3:" in message   # the line YAML stopped at


@pytest.mark.fault('a params key given twice: refused, naming the key and both lines', guards=('traceback',))
def test_a_key_given_twice_is_an_error_naming_the_key_and_both_lines(tmp_path):
    path = _params_file(tmp_path, "train:\n  epochs: 3\n  batch_size: 64\n  epochs: 5\n")
    with pytest.raises(ParamsError, match=r"epochs.*line 2.*line 4") as err:
        load_params(path)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("override, key", [
    ("train.optimizer.momentum=-5", "train.optimizer.momentum"),
    ("train.optimizer.weight_decay=-1", "train.optimizer.weight_decay"),
    ("train.optimizer.lr=.inf", "train.optimizer.lr"),
    ("train.optimizer.lr=.nan", "train.optimizer.lr"),
    ("train.epochs=true", "train.epochs"),
    ("train.batch_size=2.5", "train.batch_size"),
    ("train.schedule.gamma=-0.1", "train.schedule.gamma"),
    ("clean.oof.folds=true", "clean.oof.folds"),
    ("train.loss.label_smoothing=.inf", "train.loss.label_smoothing"),
])
@pytest.mark.fault('nonsense params (negative momentum, inf lr, epochs: true, ...): refused by key', guards=('traceback',))
def test_nonsense_values_are_refused_by_key(override, key):
    with pytest.raises(ParamsError, match=key.replace(".", r"\.")):
        load_params("params.yaml", [override])


@pytest.mark.fault('the CLI on a broken params file: one line, exit 1', guards=('traceback',))
def test_the_cli_says_a_params_error_in_one_line_not_a_traceback(tmp_path, capsys):
    from skillpack.cli import main

    path = _params_file(tmp_path, "monitor:\n  job: a\n  job: b\n")
    assert main(["alerts", "--params", str(path), "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err.strip()
    assert err == f"error: {path}:3:3: key 'job' given twice (line 2 and line 3)"
