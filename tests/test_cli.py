import subprocess
import sys
from pathlib import Path

import yaml


def test_models_lists_names_params_and_macs():
    out = subprocess.run([sys.executable, "-m", "skillpack.cli", "models", "sp_cnn_s", "sp_dwcnn_s", "resnet18"],
                         capture_output=True, text=True, check=True).stdout
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines()[1:]}
    assert set(rows) == {"sp_cnn_s", "sp_dwcnn_s", "resnet18"}
    params = {name: int(cols[0].replace(",", "")) for name, cols in rows.items()}
    macs = {name: float(cols[1]) for name, cols in rows.items()}
    assert params["sp_cnn_s"] == 70330 and macs["sp_cnn_s"] == 5.5
    assert macs["sp_dwcnn_s"] < macs["sp_cnn_s"]  # depthwise-separable blocks cut the MACs


def test_recipe_prints_dvc_exp_flags():
    out = subprocess.run([sys.executable, "-m", "skillpack.cli", "recipe", "long"], capture_output=True, text=True,
                         check=True).stdout
    for key, value in yaml.safe_load(Path("recipes.yaml").read_text())["long"].items():
        assert f"-S {key}={yaml.safe_dump(value, default_flow_style=True).strip().removesuffix('...').strip()}" in out
