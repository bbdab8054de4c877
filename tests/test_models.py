import pytest
import timm
import torch

from skillpack.train.models import build_model, count_macs, count_params


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


# -- CondConv variants: ~4x the conv parameters at the MACs of sp_cnn -------------------------

def _static_and_cond(size="s", chans=1, classes=10):
    torch.manual_seed(0)
    return (timm.create_model(f"sp_cnn_{size}", num_classes=classes, in_chans=chans),
            timm.create_model(f"sp_condcnn_{size}", num_classes=classes, in_chans=chans))


@pytest.mark.parametrize("chans, size, classes", [(1, 28, 10), (3, 32, 100)])
def test_condconv_cnns_build_and_train_a_step(chans, size, classes):
    from skillpack.train.models import OUR_MODELS

    assert {"sp_condcnn_s", "sp_condcnn_m", "sp_condcnn_l"} <= set(OUR_MODELS) & set(timm.list_models())
    _, model = _static_and_cond("s", chans, classes)
    x, y = torch.randn(4, chans, size, size), torch.randint(0, classes, (4,))
    assert model(x).shape == (4, classes)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    routing = [m for m in model.modules() if hasattr(m, "routing_weights")]
    assert len(routing) == 4 and all(m.routing.weight.grad.abs().sum() > 0 for m in routing)  # routing learns
    optimizer.step()
    after = model.state_dict()
    assert all(not torch.equal(before[k], after[k]) for k in after if k.endswith("conv.weight"))
    assert build_model("sp_condcnn_s", 10, 1)(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


def test_condconv_has_four_times_the_conv_weights_at_the_macs_of_the_static_cnn():
    from timm.layers import CondConv2d

    static, cond = _static_and_cond("s")
    static_convs = [m for m in static.features[2:].modules() if isinstance(m, torch.nn.Conv2d)]
    cond_convs = [m for m in cond.modules() if isinstance(m, CondConv2d)]
    assert [m.weight.numel() for m in cond_convs] == [4 * m.weight.numel() for m in static_convs]
    routing = sum(count_params(m.routing) for m in cond.modules() if hasattr(m, "routing_weights"))
    assert count_params(cond) == count_params(static) + 3 * sum(m.weight.numel() for m in static_convs) + routing
    assert 3.5 < count_params(cond) / count_params(static) < 4.1
    # per image: each CondConv2d runs one grouped conv of the static conv's MACs, plus the
    # kernel mixing (4 x the kernel's size) and the routing linear; count_macs counts all three
    for size in (28, 32):
        static_macs, cond_macs = count_macs(static, (1, size, size)), count_macs(cond, (1, size, size))
        mixing = sum(m.weight.numel() for m in cond_convs)
        assert cond_macs == static_macs + mixing + routing - 4 * len(cond_convs)   # linear biases: no MACs
        assert 1.0 < cond_macs / static_macs < 1.055                # +5.0 % at 28 px, +3.9 % at 32 px


def test_condconv_routing_mixes_the_experts_per_sample():
    """Two different images get different mixing weights, and each image's output is the one
    of a static conv with its own mixed kernel (not the batch's)."""
    _, model = _static_and_cond("s")
    model.eval()
    block = model.features[2]
    x = torch.randn(2, 16, 14, 14)
    weights = block.routing_weights(x)
    assert weights.shape == (2, 4) and ((weights > 0) & (weights < 1)).all()
    assert not torch.allclose(weights[0], weights[1])
    conv = block.conv
    for i in range(2):
        kernel = (weights[i] @ conv.weight).view(conv.weight_shape)
        alone = torch.nn.functional.conv2d(x[i:i + 1], kernel, padding=1)
        assert torch.allclose(conv(x, weights)[i:i + 1], alone, atol=1e-5)
    with torch.no_grad():
        swapped = conv(x, weights.flip(0))          # the other sample's routing: another output
    assert not torch.allclose(swapped, conv(x, weights), atol=1e-3)
    with torch.no_grad():                           # the whole model: a sample's output does not depend on its batch
        pair = model(torch.randn(2, 1, 28, 28, generator=torch.Generator().manual_seed(1)))
        first = model(torch.randn(2, 1, 28, 28, generator=torch.Generator().manual_seed(1))[:1])
    assert torch.allclose(pair[:1], first, atol=1e-5)


def test_the_condconv_arm_model_has_under_seventy_percent_of_the_static_models_parameters():
    """frontier.condconv claims equal accuracy at 30% fewer parameters: its arm needs a model that small."""
    condconv = count_params(build_model("sp_condcnn_xs", num_classes=10, in_chans=1))
    static = count_params(build_model("sp_cnn_s", num_classes=10, in_chans=1))
    assert condconv <= 0.7 * static
