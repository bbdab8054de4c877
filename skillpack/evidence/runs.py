"""One (arm, seed) of an ablation, wherever it executes: in a Prefect task of the ablation flow
(flows/ablation.py adds MLflow and the task runner around it) or in a worker process of
skillpack.train.concurrent (benchmarks/gpu.py: N at once on one GPU, no Prefect, no MLflow), and
the training subset each run draws. Kept apart from skillpack.evidence.ablation (spec, result
store) and skillpack.evidence.comparisons (statistics), which the reports import without
training anything.
"""
from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from skillpack.config import Params
from skillpack.evidence.ablation import (
    Arm,
    ResultStore,
    Spec,
    arm_key,
    regime_options,
    run_params,
    teacher_arm,
    teacher_name,
)

if TYPE_CHECKING:
    from skillpack.train.runs import RunData

VAL_IMAGES = 1000   # per-epoch validation of an ablation run only feeds its curves: the first 1,000 val images


def train_teacher(spec: Spec, name: str, data: dict, classes: list[str], path: str | Path,
                  extra: dict | None = None) -> Path:
    """Train the spec's distillation teacher `name` on its regime and save it at `path`
    (a no-op when the file exists). `data`: split name -> (images, labels)."""
    from skillpack.train.checkpoint import save_classifier
    from skillpack.train.runs import RunData, train_model

    path = Path(path)
    if path.is_file():
        return path
    body = spec.teachers[name]
    arm = Arm(name=name, overrides=body.get("overrides", {}), regime=body.get("regime", "standard"))
    params = run_params(spec, arm, body.get("seed", 0), extra)
    data = regime_data(regime_options(spec, arm.regime), data)
    x, y = regime_split(*data["train"], regime_options(spec, arm.regime), body.get("seed", 0))
    val = tuple(a[:VAL_IMAGES] for a in data["val"])
    trained = train_model(params.train, RunData((x, y), val, len(classes)), params.seed)
    save_classifier(path, trained.model.cpu(), model_name=params.train.model, classes=classes,
                    image_shape=x.shape[1:], head=params.train.head)
    return path


@dataclass
class RunContext:
    """What every model one (arm, seed) run needs is built from: the spec, the seed, the
    prepared splits (split name -> (images, labels)), the fixed teachers' files, the result
    store whose models/ folder caches the models other runs start from (None: no cache)."""
    spec: Spec
    seed: int
    data: dict
    num_classes: int
    data_hash: str
    teachers: dict[str, str]
    results: ResultStore | None = None
    torch_threads: int | None = None
    extra: dict | None = None

    def params(self, arm: Arm) -> Params:
        """The arm's params at this seed, as they train here (torch_threads says where the run
        executes, not what it computes: keys are made from run_params alone)."""
        params = run_params(self.spec, arm, self.seed, self.extra)
        if self.torch_threads:
            params = params.model_copy(update={"train": params.train.model_copy(update={"threads": self.torch_threads})})
        return params

    def key(self, arm: Arm) -> str:
        return arm_key(self.spec, arm, self.seed, self.data_hash, self.extra)


@dataclass
class RunInputs:
    """An arm's training at one seed, before it trains: params, its data draw, the test split,
    the teacher, the model it starts from (start:), and what the result records about them."""
    params: Params
    data: RunData
    test: tuple
    teacher: object = None
    init: object = None
    recorded: dict = field(default_factory=dict)


def run_inputs(ctx: RunContext, arm: Arm) -> RunInputs:
    """The inputs of `arm`'s training at ctx.seed: its regime's data drawn with the seed (the
    spec's resample), the teacher it distils from (a fixed one's file, or a per-seed one trained
    here on the same draw) and, for an arm with start:, the `from` arm's model of the same seed,
    pruned when the start says so."""
    from skillpack.train.runs import RunData

    params = ctx.params(arm)
    options = regime_options(ctx.spec, arm.regime)
    data = regime_data(options, ctx.data)
    train = regime_split(*data["train"], options, ctx.seed if ctx.spec.resample else 0)
    val = tuple(a[:VAL_IMAGES] for a in data["val"])
    num_classes = len(data["classes"]) if "classes" in data else ctx.num_classes
    inputs = RunInputs(params, RunData(train, val, num_classes), data["test"])
    name = teacher_name(params)
    if name in ctx.spec.seed_teachers:
        inputs.teacher, info = arm_model(ctx, teacher_arm(ctx.spec, name, arm.regime))
        inputs.recorded["teacher_test_accuracy"] = info["test_accuracy"]
    elif name:
        from skillpack.train.checkpoint import load_classifier
        from skillpack.train.runs import evaluate_model

        inputs.teacher = load_classifier(ctx.teachers[name])[0]
        inputs.recorded["teacher_test_accuracy"] = evaluate_model(inputs.teacher, *inputs.test).accuracy
    if arm.start:
        inputs.init, inputs.recorded["start"] = start_model(ctx, arm, inputs.data.image_shape, inputs.test)
    return inputs


def start_model(ctx: RunContext, arm: Arm, image_shape: tuple[int, int, int], test: tuple) -> tuple:
    """The model `arm`'s run starts from: its start's `from` arm's model at ctx.seed, pruned
    by skillpack.deploy.compress.prune_channels when the start has a prune_ratio; with what the result
    records about both."""
    from skillpack.train.models import count_params
    from skillpack.train.runs import evaluate_model

    start = arm.start
    model, info = arm_model(ctx, ctx.spec.arm(start["from"]))
    recorded = {**start, "from_key": info["key"], "from_test_accuracy": info["test_accuracy"],
                "from_params": info["params"]}
    if start.get("prune_ratio") is not None:
        from skillpack.deploy.compress import prune_channels

        model = prune_channels(model, image_shape, start["prune_ratio"], start["prune_importance"])
        recorded.update(pruned_test_accuracy=evaluate_model(model, *test).accuracy, pruned_params=count_params(model))
    return model, recorded


_MODEL_LOCKS: dict[str, threading.Lock] = {}
_LOCKS_LOCK = threading.Lock()


def _model_lock(path: Path | None):
    """One lock per model file: two runs of a thread pool that start from the same model train
    it once (processes may both train it; the file is written atomically). No lock without a
    store: nothing is shared."""
    if path is None:
        return contextlib.nullcontext()
    with _LOCKS_LOCK:
        return _MODEL_LOCKS.setdefault(str(path), threading.Lock())


def arm_model(ctx: RunContext, arm: Arm) -> tuple:
    """The model `arm`'s run trains at ctx.seed - the same params, data draw, teacher and start
    as that run - and {key, test_accuracy, params}: read from the result store's models/ folder
    when there, else trained and saved there (skillpack.train.checkpoint), then read back, so that a
    run gets the same model whether it was just trained or cached."""
    from skillpack.train.checkpoint import load_classifier, save_classifier
    from skillpack.train.models import count_params
    from skillpack.train.runs import evaluate_model, train_model

    key = ctx.key(arm)
    path = ctx.results.model_path(key) if ctx.results is not None else None
    with _model_lock(path):
        if path is None or not path.is_file():
            inputs = run_inputs(ctx, arm)
            trained = train_model(inputs.params.train, inputs.data, inputs.params.seed, teacher=inputs.teacher,
                                  init=inputs.init).model.cpu().eval()
            info = {"key": key, "test_accuracy": evaluate_model(trained, *inputs.test).accuracy,
                    "params": count_params(trained)}
            if path is None:
                return trained, info
            classes = [str(i) for i in range(inputs.data.num_classes)]  # a cache of the ablation's: class indices
            save_classifier(path, trained, model_name=inputs.params.train.model, classes=classes,
                            image_shape=inputs.data.image_shape, head=inputs.params.train.head, extra=info)
        model, state = load_classifier(path)
    return model, state["extra"]


def arm_run(spec: Spec, arm_name: str, seed: int, data: dict, num_classes: int, data_hash: str,
            teachers: dict[str, str], torch_threads: int | None = None, results: ResultStore | None = None,
            extra: dict | None = None) -> tuple[dict, Params]:
    """One (arm, seed) of `spec`: the stored result when `results` holds its key, else trained
    and scored on the test split (and stored). `data`: split name -> (images, labels);
    `teachers`: fixed teacher name -> model file (per-seed teachers and the models an arm starts
    from are trained here, cached in the store's models/ folder). The ablation flow's task and
    benchmarks/gpu.py both run this; the flow adds MLflow and Prefect around it. `torch_threads`
    says where the run executes, not what it computes: the key stays."""
    from skillpack.train.runs import train_and_evaluate

    arm = spec.arm(arm_name)
    ctx = RunContext(spec, seed, data, num_classes, data_hash, teachers, results, torch_threads, extra)
    key = ctx.key(arm)
    labels = dict(arm=arm.name, seed=seed, regime=arm.regime, claims=arm.claims, key=key)
    cached = results.get(key) if results is not None else None
    if cached is not None:
        return {**cached, **labels, "cached": True}, ctx.params(arm)
    inputs = run_inputs(ctx, arm)
    result = train_and_evaluate(inputs.params.train, inputs.params.seed, inputs.data, inputs.test, inputs.teacher,
                                init=inputs.init)
    result.update(inputs.recorded)
    result.update(labels)
    if results is not None:
        results.put(key, result)
    return result, inputs.params


def long_tailed_indices(labels: np.ndarray, imbalance_ratio: float, max_per_class: int, seed: int) -> np.ndarray:
    """Exponential profile: class k keeps max_per_class * ratio^(-k/(K-1)) samples."""
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    keep = []
    for rank, c in enumerate(classes):
        n = max(1, int(round(max_per_class * imbalance_ratio ** (-rank / max(len(classes) - 1, 1)))))
        keep.append(rng.permutation(np.flatnonzero(labels == c))[:n])
    return np.sort(np.concatenate(keep))


def corrupt_labels(labels: np.ndarray, share: float, seed: int) -> np.ndarray:
    """A copy of `labels` with round(share * n) of them, drawn with `seed`, replaced by another
    class drawn uniformly (never the true one; the cleaning benchmark's symmetric noise): a
    planted effect of known size for calibration."""
    from skillpack.data.cleaning import inject_label_noise

    # seed + 7919: a stream of its own, apart from the subset draw made with `seed`
    return inject_label_noise(labels, share, "symmetric", int(labels.max()) + 1, seed + 7919)[0]


def regime_split(images: np.ndarray, labels: np.ndarray, options: dict, seed: int = 0):
    """The training subset of a regime, drawn with `seed`: the ablation passes the run's seed
    (Spec.resample), so that an arm and its baseline share a subset and each seed draws anew;
    with `label_noise`, a share of its labels corrupted (corrupt_labels)."""
    from skillpack.data.sourcedata import Split
    from skillpack.data.split import stratified_subset

    if options.get("imbalance_ratio"):
        idx = long_tailed_indices(labels, options["imbalance_ratio"], options.get("max_per_class", 1000), seed)
        images, labels = images[idx], labels[idx]
    elif options.get("max_train"):
        split = stratified_subset(Split(images, labels, [str(i) for i in range(len(labels))]),
                                  int(options["max_train"]), seed)
        images, labels = split.images, split.labels
    if options.get("label_noise"):
        labels = corrupt_labels(labels, options["label_noise"], seed)
    return images, labels


_DATASETS: dict[str, dict] = {}


def regime_data(options: dict, data: dict) -> dict:
    """The splits a regime trains on: the prepared data, or the bundled dataset its `dataset`
    option names (read once per process; its validation split carved from its train split)."""
    name = options.get("dataset")
    if not name:
        return data
    if name not in _DATASETS:
        from skillpack.data.sources import load_source
        from skillpack.data.store import carve_splits

        source = load_source(name)
        splits = carve_splits(source, val_fraction=0.1, seed=0)
        _DATASETS[name] = {**{k: (v.images, v.labels) for k, v in splits.items()}, "classes": source.classes}
    return _DATASETS[name]


_PREPARED: dict[str, tuple] = {}
_SPECS: dict[tuple, Spec] = {}


def cached_spec(spec_path: str | Path, profile: str) -> Spec:
    """load_spec, once per process and spec version (a worker runs many (arm, seed) tasks; a
    spec with budget curves takes a second or more to expand and validate)."""
    from skillpack.evidence.ablation import load_spec

    stat = Path(spec_path).stat()
    key = (str(spec_path), profile, stat.st_mtime_ns, stat.st_size)
    if key not in _SPECS:
        _SPECS[key] = load_spec(spec_path, profile=profile)
    return _SPECS[key]


def prepared_data(root: str | Path):
    """(store, split name -> arrays) of a prepared store, read once per process."""
    from skillpack.data import PreparedStore

    root = str(root)
    if root not in _PREPARED:
        store = PreparedStore(root)
        _PREPARED[root] = store, {split: store.arrays(split) for split in ("train", "val", "test")}
    return _PREPARED[root]


def pool_run(spec_path: str, quick: bool, arm_name: str, seed: int, prepared: str, teachers: dict[str, str],
             torch_threads: int | None = None, extra: dict | None = None) -> dict:
    """arm_run in a worker process of skillpack.train.concurrent.run_all (no Prefect, no MLflow, no
    result store): what benchmarks/gpu.py runs N at a time on one GPU."""
    import os
    import time

    spec = cached_spec(spec_path, "quick" if quick else "cpu")
    store, data = prepared_data(prepared)
    t0 = time.perf_counter()
    result, _ = arm_run(spec, arm_name, seed, data, len(store.classes), store.data_hash(), teachers,
                        torch_threads, extra=extra)
    return {**result, "wall_seconds": time.perf_counter() - t0, "pid": os.getpid()}
