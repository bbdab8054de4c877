import pytest
import timm
import torch

from skillpack.models import build_model, count_macs, count_params


@pytest.mark.parametrize("name", ["sp_cnn_s", "sp_cnn_m", "sp_cnn_l"])
@pytest.mark.parametrize("chans, size, classes", [(1, 28, 10), (3, 32, 100)])
def test_compact_cnns_are_timm_models_built_for_the_data(name, chans, size, classes):
    assert name in timm.list_models()
    model = timm.create_model(name, num_classes=classes, in_chans=chans)
    assert model(torch.zeros(2, chans, size, size)).shape == (2, classes)


def test_any_timm_name_builds_for_grayscale():
    model = build_model("resnet18", num_classes=10, in_chans=1)
    assert model.conv1.in_channels == 1
    assert model.eval()(torch.zeros(1, 1, 28, 28)).shape == (1, 10)


def test_unknown_model_is_a_clear_error():
    with pytest.raises(ValueError, match="train.model"):
        build_model("resnet_typo", 10, 1)


def test_counts_match_a_hand_computed_layer():
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1, bias=False))
    assert count_params(model) == 36
    assert count_macs(model, (1, 8, 8)) == 8 * 8 * 4 * 9
