"""Optimizers, schedules and EMA against closed forms."""
import pytest
import torch

from skillpack.config import EmaParams, LookaheadParams, OptimizerParams, ScheduleParams
from skillpack.train.optim import build_ema, build_optimizer, build_scheduler


def _lrs(schedule: ScheduleParams, lr=0.4, epochs=4, steps=10, optimizer="sgd"):
    model = torch.nn.Linear(2, 2)
    opt = build_optimizer(model, OptimizerParams(name=optimizer, lr=lr))
    sched = build_scheduler(opt, schedule, lr, epochs, steps)
    out = []
    for _ in range(epochs * steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_onecycle_start_peak_and_final_values_at_the_right_steps():
    cfg = ScheduleParams(name="onecycle", warmup_epochs=0, onecycle_pct_start=0.25, onecycle_div_factor=25,
                         onecycle_final_div_factor=1e4)
    lrs = _lrs(cfg)  # 40 steps
    assert lrs[0] == pytest.approx(0.4 / 25)
    peak = int(0.25 * 40) - 1
    assert lrs[peak] == pytest.approx(0.4)
    assert max(lrs) == pytest.approx(0.4) and lrs.index(max(lrs)) == peak
    assert lrs[-1] == pytest.approx(0.4 / 25 / 1e4, rel=0.05) or lrs[-1] < 0.4 / 25 / 1e4 * 20


def test_warmup_is_linear_and_composes_with_step_decay():
    cfg = ScheduleParams(name="step", warmup_epochs=1, step_epochs=1, gamma=0.5)
    lrs = _lrs(cfg)
    ramp = lrs[:10]
    diffs = [b - a for a, b in zip(ramp, ramp[1:])]
    assert all(d == pytest.approx(diffs[0]) for d in diffs)
    assert lrs[0] == pytest.approx(0.04)
    assert lrs[20] == pytest.approx(0.1) and lrs[30] == pytest.approx(0.05)   # decays at epochs 1, 2, 3, as without


@pytest.mark.parametrize("schedule", [dict(name="step", step_epochs=8), dict(name="multistep", milestones=[8, 10])])
def test_a_decay_lands_at_its_epoch_after_a_warm_up(schedule):
    """With 5 warm-up epochs and a step at epoch 8 of 12, the decay comes at epoch 8 (it came at
    epoch 13, after the run's end, when the step schedule restarted its count after the warm-up)."""
    warm = _lrs(ScheduleParams(warmup_epochs=5, gamma=0.1, **schedule), epochs=12)
    plain = _lrs(ScheduleParams(warmup_epochs=0, gamma=0.1, **schedule), epochs=12)
    assert warm[79] == pytest.approx(0.4) and warm[80] == pytest.approx(0.04)
    assert warm[50:] == pytest.approx(plain[50:])   # after the warm-up, the schedule it was composed with


def test_multistep_milestones_in_epochs():
    lrs = _lrs(ScheduleParams(name="multistep", warmup_epochs=0, milestones=[1, 3], gamma=0.1))
    assert lrs[9] == pytest.approx(0.4) and lrs[10] == pytest.approx(0.04)
    assert lrs[29] == pytest.approx(0.04) and lrs[30] == pytest.approx(0.004)


def test_cosine_reaches_its_floor():
    lrs = _lrs(ScheduleParams(name="cosine", warmup_epochs=0, min_lr=0.01))
    assert lrs[0] == pytest.approx(0.4)
    assert lrs[20] == pytest.approx(0.01 + (0.4 - 0.01) * 0.5)
    assert lrs[-1] == pytest.approx(0.01, abs=1e-3)


def test_lars_applies_the_trust_ratio():
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3, bias=False)
    w0 = model.weight.detach().clone()
    cfg = OptimizerParams(name="lars", lr=0.1, momentum=0.0, nesterov=False, weight_decay=1e-4, lars_trust_coeff=0.001)
    opt = build_optimizer(model, cfg)
    x = torch.randn(8, 4)
    model(x).pow(2).sum().backward()
    g = model.weight.grad.detach().clone()
    opt.step()
    trust = 0.001 * w0.norm() / (g.norm() + 1e-4 * w0.norm() + 1e-8)
    expected = w0 - 0.1 * trust * (g + 1e-4 * w0)
    assert torch.allclose(model.weight, expected, atol=1e-7)
    plain = w0 - 0.1 * (g + 1e-4 * w0)
    assert not torch.allclose(model.weight, plain, atol=1e-5)  # it is not plain SGD


@pytest.mark.parametrize("name", ["sgd", "adamw"])
def test_lookahead_syncs_slow_weights_every_k_steps(name):
    p = torch.nn.Parameter(torch.zeros(3))
    model = torch.nn.Module()
    model.p = p
    cfg = OptimizerParams(name=name, lr=0.1, momentum=0.0, nesterov=False, weight_decay=0.0,
                          lookahead=LookaheadParams(enabled=True, k=3, alpha=0.5))
    opt = build_optimizer(model, cfg)
    g = torch.tensor([1.0, 2.0, -1.0])
    values = []
    for _ in range(6):
        opt.zero_grad()
        (p * g).sum().backward()
        opt.step()
        values.append(p.detach().clone())
    if name == "sgd":  # closed form for plain SGD: each inner step moves by -lr * g
        assert torch.allclose(values[1], -2 * 0.1 * g)                 # fast weights, no sync yet
        assert torch.allclose(values[2], 0.5 * (-3 * 0.1 * g))         # step k: slow += alpha (fast - slow)
        assert torch.allclose(values[5], values[2] + 0.5 * (-3 * 0.1 * g))  # next sync at 2k
    else:  # any inner optimizer: the weights after a sync are halfway between the start and the fast weights
        inner = build_optimizer(model, OptimizerParams(name=name, lr=0.1, weight_decay=0.0))
        with torch.no_grad():
            p.zero_()
        for _ in range(3):
            inner.zero_grad()
            (p * g).sum().backward()
            inner.step()
        assert torch.allclose(values[2], 0.5 * p.detach(), atol=1e-6)


def test_no_weight_decay_on_norms_and_biases_by_default():
    from skillpack.train.models import build_model

    model = build_model("sp_cnn_s", 10, 1)
    opt = build_optimizer(model, OptimizerParams(weight_decay=5e-4))
    decay = {id(p) for g in opt.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    for name, p in model.named_parameters():
        assert (id(p) in decay) == (p.ndim > 1), name
    opt_all = build_optimizer(model, OptimizerParams(weight_decay=5e-4, decay_norm_and_bias=True))
    assert all(g["weight_decay"] > 0 for g in opt_all.param_groups)


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw", "lars"])
def test_every_optimizer_reduces_a_loss(name):
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    x, y = torch.randn(64, 4), torch.randn(64, 1)
    opt = build_optimizer(model, OptimizerParams(name=name, lr=0.05, weight_decay=1e-4))
    first = None
    for _ in range(50):
        loss = (model(x) - y).pow(2).mean()
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < first


def test_ema_weights_equal_the_closed_form_after_n_steps():
    model = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(1.0)
    d = 0.9
    ema = build_ema(model, EmaParams(enabled=True, decay=d, warmup=False))
    sequence = [2.0, 5.0, -1.0, 3.0]
    for w in sequence:
        with torch.no_grad():
            model.weight.fill_(w)
        ema.update(model)  # no step: the fixed decay
    expected = d ** len(sequence) * 1.0 + sum((1 - d) * d ** (len(sequence) - 1 - i) * w for i, w in enumerate(sequence))
    assert ema.module.weight.item() == pytest.approx(expected, rel=1e-6)


def test_ema_warmup_follows_more_closely_early_on():
    model = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(0.0)
    ema = build_ema(model, EmaParams(enabled=True, decay=0.999, warmup=True))
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema.update(model, step=1)  # timm's warm-up: the first update copies the weights
    assert ema.module.weight.item() == pytest.approx(1.0)
    with torch.no_grad():
        model.weight.fill_(3.0)
    ema.update(model, step=2)  # then decay = 1 - (1 + 1)^(-2/3) = 0.37
    d = 1 - 2 ** (-2 / 3)
    assert ema.module.weight.item() == pytest.approx(d * 1.0 + (1 - d) * 3.0, rel=1e-5)
    ema.update(model, step=10**9)  # late: the configured decay
    assert ema.module.weight.item() == pytest.approx(0.999 * (d + (1 - d) * 3.0) + 0.001 * 3.0, rel=1e-5)
