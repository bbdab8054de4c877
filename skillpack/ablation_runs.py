"""One (arm, seed) of an ablation, wherever it executes: in a Prefect task of the ablation flow
(flows/ablation.py adds MLflow and the task runner around it) or in a worker process of
skillpack.concurrent (benchmarks/gpu.py: N at once on one GPU, no Prefect, no MLflow). Kept
apart from skillpack.ablation (spec, statistics, result store), which the reports import
without training anything.
"""
from __future__ import annotations

from pathlib import Path

from skillpack.ablation import Arm, ResultStore, Spec, regime_options, regime_split, run_key, run_params
from skillpack.config import Params

VAL_IMAGES = 1000   # per-epoch validation of an ablation run only feeds its curves: the first 1,000 val images


def train_teacher(spec: Spec, name: str, data: dict, classes: list[str], path: str | Path,
                  params_path: str | Path = "params.yaml", extra: dict | None = None) -> Path:
    """Train the spec's distillation teacher `name` on its regime and save it at `path`
    (a no-op when the file exists). `data`: split name -> (images, labels)."""
    from skillpack.checkpoint import save_classifier
    from skillpack.runs import RunData, train_model

    path = Path(path)
    if path.is_file():
        return path
    body = spec.teachers[name]
    arm = Arm(name=name, overrides=body.get("overrides", {}), regime=body.get("regime", "standard"))
    params = run_params(spec, arm, body.get("seed", 0), params_path, extra)
    data = regime_data(regime_options(spec, arm.regime), data)
    x, y = regime_split(*data["train"], regime_options(spec, arm.regime), body.get("seed", 0))
    val = tuple(a[:VAL_IMAGES] for a in data["val"])
    trained = train_model(params.train, RunData((x, y), val, len(classes)), params.seed)
    save_classifier(path, trained.model.cpu(), model_name=params.train.model, classes=classes,
                    image_shape=x.shape[1:], head=params.train.head)
    return path


def arm_run(spec: Spec, arm_name: str, seed: int, data: dict, num_classes: int, data_hash: str,
            teachers: dict[str, str], torch_threads: int | None = None, results: ResultStore | None = None,
            params_path: str | Path = "params.yaml", extra: dict | None = None) -> tuple[dict, Params]:
    """One (arm, seed) of `spec`: the stored result when `results` holds its key, else trained
    and scored on the test split (and stored). `data`: split name -> (images, labels);
    `teachers`: teacher name -> model file. The ablation flow's task and benchmarks/gpu.py both
    run this; the flow adds MLflow and Prefect around it. `torch_threads` says where the run
    executes, not what it computes: the key stays."""
    from skillpack.runs import RunData, train_and_evaluate

    arm = spec.arm(arm_name)
    params = run_params(spec, arm, seed, params_path, extra)
    options = regime_options(spec, arm.regime)
    key = run_key(seed, params, data_hash, options)
    if torch_threads:
        params = params.model_copy(update={"train": params.train.model_copy(update={"threads": torch_threads})})
    labels = dict(arm=arm.name, seed=seed, regime=arm.regime, claims=arm.claims, key=key)
    cached = results.get(key) if results is not None else None
    if cached is not None:
        return {**cached, **labels, "cached": True}, params
    reference = params.train.loss.distill.teacher
    teacher = None
    if reference:
        from skillpack.checkpoint import load_classifier

        teacher = load_classifier(teachers[reference.split(":", 1)[1]])[0]
    data = regime_data(options, data)
    train = regime_split(*data["train"], options, seed if spec.resample else 0)
    val = tuple(a[:VAL_IMAGES] for a in data["val"])
    num_classes = len(data["classes"]) if "classes" in data else num_classes
    result = train_and_evaluate(params.train, params.seed, RunData(train, val, num_classes), data["test"], teacher)
    result.update(labels)
    if results is not None:
        results.put(key, result)
    return result, params


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
    from skillpack.ablation import load_spec

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
    """arm_run in a worker process of skillpack.concurrent.run_all (no Prefect, no MLflow, no
    result store): what benchmarks/gpu.py runs N at a time on one GPU."""
    import os
    import time

    spec = cached_spec(spec_path, "quick" if quick else "cpu")
    store, data = prepared_data(prepared)
    t0 = time.perf_counter()
    result, _ = arm_run(spec, arm_name, seed, data, len(store.classes), store.data_hash(), teachers,
                        torch_threads, extra=extra)
    return {**result, "wall_seconds": time.perf_counter() - t0, "pid": os.getpid()}
