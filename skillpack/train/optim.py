"""Optimizers (timm's factory, plus timm's Lars and Lookahead) and per-iteration schedules
(torch.optim.lr_scheduler), with linear warm-up composable with any schedule."""
from __future__ import annotations

import torch
from torch import nn
from torch.optim import lr_scheduler as sched


def param_groups(model: nn.Module, weight_decay: float, decay_norm_and_bias: bool) -> list[dict]:
    """timm's grouping: no weight decay on 1-d params (norms, biases) unless asked."""
    from timm.optim import param_groups_weight_decay

    if decay_norm_and_bias:
        return [{"params": [p for p in model.parameters() if p.requires_grad], "weight_decay": weight_decay}]
    return param_groups_weight_decay(model, weight_decay)


def layer_decay_groups(model: nn.Module, cfg) -> list[dict]:
    """Layer-wise lr decay: timm's param_groups_layer_decay on the backbone (its group_matcher
    orders the layers: stem, blocks, head conv), each group's lr_scale folded into its lr (the
    torch schedules here scale each group's own lr; timm's would read lr_scale); the classifier's
    head and anything else outside the backbone train at lr."""
    from timm.optim import param_groups_layer_decay

    backbone = getattr(model, "backbone", model)
    groups = param_groups_layer_decay(backbone, cfg.weight_decay, layer_decay=cfg.layer_decay,
                                      weight_decay_exclude_1d=not cfg.decay_norm_and_bias)
    in_backbone = {id(p) for p in backbone.parameters()}
    rest = [p for p in model.parameters() if p.requires_grad and id(p) not in in_backbone]
    groups += [{**group, "lr_scale": 1.0}
               for group in param_groups(nn.ParameterList(rest), cfg.weight_decay, cfg.decay_norm_and_bias)]
    return [{**group, "lr": cfg.lr * group["lr_scale"]} for group in groups if group["params"]]


def build_optimizer(model: nn.Module, cfg, extra_groups: list[dict] | None = None) -> torch.optim.Optimizer:
    """`cfg` is OptimizerParams. `extra_groups` (e.g. the center-loss centres with their own
    lr) are added as they are."""
    from timm.optim import create_optimizer_v2

    groups = (layer_decay_groups(model, cfg) if cfg.layer_decay is not None else
              param_groups(model, cfg.weight_decay, cfg.decay_norm_and_bias)) + list(extra_groups or [])
    kwargs = {"lr": cfg.lr, "weight_decay": cfg.weight_decay}
    if cfg.name == "sgd":
        opt = create_optimizer_v2(groups, opt="sgd" if cfg.nesterov else "momentum", momentum=cfg.momentum, **kwargs)
    elif cfg.name == "lars":
        opt = create_optimizer_v2(groups, opt="lars", momentum=cfg.momentum, trust_coeff=cfg.lars_trust_coeff,
                                  nesterov=cfg.nesterov, **kwargs)
    else:
        opt = create_optimizer_v2(groups, opt=cfg.name, **kwargs)
    if cfg.lookahead.enabled:
        opt = _paper_lookahead()(opt, alpha=cfg.lookahead.alpha, k=cfg.lookahead.k)
    return opt


def _paper_lookahead():
    """timm's Lookahead creates the slow weights lazily at the first sync, from the fast
    weights of that moment, so its first sync is a no-op. The paper (Zhang et al. 2019)
    starts the slow weights at the initial weights: this subclass records them just before
    the first inner step (after it would break optimizers that initialise an empty state)."""
    from timm.optim import Lookahead

    class PaperLookahead(Lookahead):
        @torch.no_grad()
        def step(self, closure=None):
            state = self._base_optimizer.state
            initial = {p: p.detach().clone() for group in self.param_groups for p in group["params"]
                       if "lookahead_slow_buff" not in state[p]}
            loss = self._base_optimizer.step(closure)
            for p, weights in initial.items():
                state[p]["lookahead_slow_buff"] = weights
            for group in self._base_optimizer.param_groups:
                group["lookahead_step"] += 1
                if group["lookahead_step"] % group["lookahead_k"] == 0:
                    self.update_slow(group)
            return loss

    return PaperLookahead


def build_scheduler(optimizer: torch.optim.Optimizer, cfg, base_lr: float, epochs: int, steps_per_epoch: int):
    """Stepped once per iteration. `cfg` is ScheduleParams; warm-up ramps linearly from
    base_lr / warmup_steps to base_lr over `warmup_epochs`, then the main schedule runs: step and
    multistep decay at the epochs they name (counted from the start of training), cosine and
    onecycle span the remaining steps."""
    total = epochs * steps_per_epoch
    warmup = min(int(round(cfg.warmup_epochs * steps_per_epoch)), total - 1)
    remaining = max(total - warmup, 1)
    main = _main_schedule(optimizer, cfg, base_lr, remaining, warmup, steps_per_epoch)
    if warmup <= 0:
        return main
    ramp = sched.LinearLR(optimizer, start_factor=1.0 / warmup, end_factor=1.0, total_iters=warmup)
    return sched.SequentialLR(optimizer, [ramp, main], milestones=[warmup])


def _main_schedule(optimizer, cfg, base_lr: float, steps: int, warmup: int, steps_per_epoch: int):
    if cfg.name == "none":
        return sched.ConstantLR(optimizer, factor=1.0, total_iters=0)
    if cfg.name == "step":
        size = max(int(round(cfg.step_epochs * steps_per_epoch)), 1)
        if warmup <= 0:
            return sched.StepLR(optimizer, step_size=size, gamma=cfg.gamma)
        # SequentialLR restarts the main schedule's count after the warm-up: a StepLR there would
        # decay at warm-up + step_epochs. The decays stay at the epochs the schedule names.
        return sched.MultiStepLR(optimizer, milestones=[max(at - warmup, 1) for at in range(size, warmup + steps, size)],
                                 gamma=cfg.gamma)
    if cfg.name == "multistep":
        marks = sorted(max(int(round(m * steps_per_epoch)) - warmup, 1) for m in cfg.milestones)
        return sched.MultiStepLR(optimizer, milestones=marks, gamma=cfg.gamma)
    if cfg.name == "cosine":
        return sched.CosineAnnealingLR(optimizer, T_max=steps, eta_min=cfg.min_lr)
    if cfg.name == "onecycle":
        max_lr = [base_lr * group.get("lr_scale", 1.0) for group in optimizer.param_groups]   # layer decay's scales
        return sched.OneCycleLR(optimizer, max_lr=max_lr, total_steps=steps, pct_start=cfg.onecycle_pct_start,
                                div_factor=cfg.onecycle_div_factor, final_div_factor=cfg.onecycle_final_div_factor,
                                cycle_momentum=False)
    raise ValueError(f"train.schedule.name: unknown {cfg.name!r}")


def build_ema(model: nn.Module, cfg):
    """timm's ModelEmaV3 (exponential moving average of weights and buffers) or None."""
    if not cfg.enabled:
        return None
    from timm.utils import ModelEmaV3

    return ModelEmaV3(model, decay=cfg.decay, use_warmup=cfg.warmup)
