"""The model names params validation knows without importing torch or timm: the cached timm
list (made, reused, remade for another timm version) and skillpack's own names."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from skillpack import model_names
from skillpack.config import ParamsError, load_params

ROOT = Path(__file__).resolve().parent.parent


def timm_names_from_timm() -> set[str]:
    """What timm.is_model accepts without a tag: its listed names and its deprecated aliases
    (skillpack's own, registered when skillpack.train.models is imported, left out)."""
    import timm
    from timm.models import get_deprecated_models

    return {n for n in timm.list_models() if not n.startswith("sp_")} | set(get_deprecated_models())


def test_missing_list_is_made_and_records_timms_version(tmp_path):
    version = model_names.installed_timm_version()
    path = model_names.cache_file(version, tmp_path)
    assert not path.exists()
    names = model_names.timm_model_names(tmp_path)
    assert names == timm_names_from_timm()
    cached = json.loads(path.read_text())
    assert cached["timm"] == version
    assert set(cached["models"]) == names


def test_a_list_for_this_timm_version_is_read_not_remade(tmp_path):
    version = model_names.installed_timm_version()
    model_names.write_cached_names(model_names.cache_file(version, tmp_path), version, ["made_up_net"])
    assert model_names.timm_model_names(tmp_path) == {"made_up_net"}


def test_a_list_made_for_another_timm_version_is_remade(tmp_path):
    version = model_names.installed_timm_version()
    path = model_names.cache_file(version, tmp_path)
    model_names.write_cached_names(path, "0.0.1", ["made_up_net"])
    names = model_names.timm_model_names(tmp_path)
    assert "made_up_net" not in names and "resnet18" in names
    assert json.loads(path.read_text())["timm"] == version


@pytest.mark.parametrize("content", ['{"timm": "0.0.1", "models": ["a"]}', '{"models": ["a"]}', "not json {",
                                     '["a"]', '{"timm": "1.0", "models": "a"}', '{"timm": "1.0", "models": [1]}'])
def test_a_stale_or_broken_list_is_not_used(tmp_path, content):
    path = tmp_path / "names.json"
    path.write_text(content)
    assert model_names.read_cached_names(path, "1.0") is None
    path.write_text('{"timm": "1.0", "models": ["a"]}')
    assert model_names.read_cached_names(path, "1.0") == ["a"]


def test_each_timm_version_has_its_own_list(tmp_path):
    assert model_names.cache_file("1.0.31", tmp_path) != model_names.cache_file("1.0.32", tmp_path)


def test_known_names_agree_with_timm_is_model():
    import timm

    import skillpack.train.models  # noqa: F401  (registers our models into timm)

    listed = sorted(timm_names_from_timm())
    candidates = listed[::40] + ["adv_inception_v3", "resnet18.a1_in1k", "sp_cnn_m", "sp_vit_micro_p4.x",
                                 "resnet_nope", "sp_cnn_typo", "", ".resnet18", "RESNET18"]
    assert [model_names.is_known_model(n) for n in candidates] == [timm.is_model(n) for n in candidates]


def test_timm_and_our_names_pass_params_validation_unknown_ones_fail():
    params = load_params(ROOT / "params.yaml", ["train.model=resnet18", "clean.oof.train.model=sp_vit_micro_p4",
                                                "compress.student.model=efficientnet_b0"])
    assert params.train.model == "resnet18"
    named = {"train.model": "train.model: ", "compress.student.model": "compress.student: model: "}
    for key, where in named.items():
        with pytest.raises(ParamsError) as err:
            load_params(ROOT / "params.yaml", [f"{key}=resnet_nope"])
        message = str(err.value)
        assert "\n" not in message
        assert f"{where}unknown model 'resnet_nope'" in message


def test_our_names_are_the_registrys():
    import timm

    from skillpack.train.models import OUR_MODELS

    assert sorted(model_names.OUR_MODEL_NAMES) == sorted(OUR_MODELS) == sorted(timm.list_models("sp_*"))


def test_the_install_step_writes_the_list(tmp_path):
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-m", "skillpack.model_names"], cwd=ROOT, env=env,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    path = model_names.cache_file(model_names.installed_timm_version(), tmp_path / "skillpack")
    assert str(path) in proc.stdout
    assert set(json.loads(path.read_text())["models"]) == timm_names_from_timm()
