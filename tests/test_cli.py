import subprocess
import sys
from pathlib import Path

import pytest
import yaml


def test_models_lists_names_params_and_macs():
    out = subprocess.run([sys.executable, "-m", "skillpack.cli", "models", "sp_cnn_s", "sp_dwcnn_s", "resnet18"],
                         capture_output=True, text=True, check=True).stdout
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines()[1:]}
    assert set(rows) == {"sp_cnn_s", "sp_dwcnn_s", "resnet18"}
    params = {name: int(cols[0].replace(",", "")) for name, cols in rows.items()}
    macs = {name: float(cols[1]) for name, cols in rows.items()}
    from skillpack.train.models import build_model, count_macs, count_params

    for name in rows:  # what the CLI prints is what the registry builds
        model = build_model(name, num_classes=10, in_chans=1, img_size=28)
        assert params[name] == count_params(model)
        assert macs[name] == pytest.approx(count_macs(model, (1, 28, 28)) / 1e6, abs=0.05)
    assert macs["sp_dwcnn_s"] < macs["sp_cnn_s"]  # depthwise-separable blocks cut the MACs


def test_recipe_prints_dvc_exp_flags():
    out = subprocess.run([sys.executable, "-m", "skillpack.cli", "recipe", "long"], capture_output=True, text=True,
                         check=True).stdout
    for key, value in yaml.safe_load(Path("recipes.yaml").read_text())["long"].items():
        assert f"-S {key}={yaml.safe_dump(value, default_flow_style=True).strip().removesuffix('...').strip()}" in out
