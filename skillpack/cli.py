"""`skillpack` command line.

    skillpack models [--size 28 --chans 1 --classes 10]   list model names with params and MACs
    skillpack explain <model.pt> [--split test] [key=value ...]  Grad-CAM, t-SNE, calibration, errors
    skillpack recipe <name>                               a recipe as `dvc exp run` -S flags
    skillpack serve [--model m.onnx | --registry] [--host 127.0.0.1 --port 8000] [key=value ...]
                                                          the inference service (Prometheus /metrics)
    skillpack predict PATH... [--model m.onnx | --checkpoint model.pt] [--top-k 3] [--output preds.csv]
                      [--tta] [--gradcam DIR] [--quiet]   top-k classes of image files, folders, globs as CSV
    skillpack tune [--n-trials N | --timeout S] [--workers N] [key=value ...]
                                                          hyper-parameter search (Optuna): best -> recipes.yaml
    skillpack tune --nas [--n-trials N] [key=value ...]   architecture search (accuracy vs ONNX latency, params
                                                          tune.nas): Pareto front, chosen -> recipes.yaml
    skillpack alerts [--out docker/prometheus]            alert rules + promtool tests from params monitor:
    skillpack pretrain [key=value ...]                    SimCLR pre-training of an encoder (params pretrain:)
    skillpack stage <name> [key=value ...]                run one pipeline stage with overrides  (*)
    skillpack pipeline [--force]                          the Prefect pipeline flow              (*)

(*) Commands of the layers above the library (stages/, flows/): they plug in through the
entry-point group `skillpack.commands` (pyproject.toml), so the library never imports them.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from skillpack.runtime import configure


def default_model_list() -> list[str]:
    from skillpack.train.models import OUR_MODELS

    return OUR_MODELS + ["resnet18", "resnet34", "resnet50"] + [f"efficientnet_b{i}" for i in range(5)] + [
        "efficientnet_cc_b0_4e", "mobilenetv3_small_100", "mobilenetv3_large_100"]


def add_models_command(sub) -> None:
    p = sub.add_parser("models", help="list models with parameter counts and MACs")
    p.add_argument("names", nargs="*")
    p.add_argument("--size", type=int, default=28)
    p.add_argument("--chans", type=int, default=1)
    p.add_argument("--classes", type=int, default=10)
    p.set_defaults(fn=cmd_models)


def cmd_models(args) -> int:
    from skillpack.train.models import build_model, count_macs, count_params

    names = args.names or default_model_list()
    print(f"{'model':32s} {'params':>12s} {'MMACs':>10s}   (input {args.chans}x{args.size}x{args.size}, {args.classes} classes)")
    for name in names:
        model = build_model(name, num_classes=args.classes, in_chans=args.chans, img_size=args.size)
        macs = count_macs(model, (args.chans, args.size, args.size))
        print(f"{name:32s} {count_params(model):12,d} {macs / 1e6:10.1f}")
    return 0


def add_explain_command(sub) -> None:
    p = sub.add_parser("explain", help="Grad-CAM, t-SNE, calibration and error analysis of any checkpoint")
    p.add_argument("checkpoint", help="a model.pt written by the train stage")
    p.add_argument("--data", default="data/prepared")
    p.add_argument("--split", default="test", choices=["train", "val", "test"])
    p.add_argument("--out", default="reports/explain")
    p.add_argument("--params", default="params.yaml")
    p.add_argument("overrides", nargs="*", help="e.g. evaluate.explain.method=eigencam")
    p.set_defaults(fn=cmd_explain)


def cmd_explain(args) -> int:
    from skillpack.config import load_params
    from skillpack.data import PreparedStore
    from skillpack.data.loader import to_tensor_nchw
    from skillpack.io import write_json
    from skillpack.train.checkpoint import load_classifier
    from skillpack.train.explain import explain_model

    params = load_params(args.params, args.overrides)
    model, meta = load_classifier(args.checkpoint)
    store = PreparedStore(args.data)
    images, labels = store.arrays(args.split)
    metrics = explain_model(model, to_tensor_nchw(images), labels, meta["classes"], params.evaluate.explain,
                            args.out, seed=params.seed)
    write_json(f"{args.out}/explain.json", metrics)
    print(f"{args.checkpoint}: Grad-CAM on {metrics['cam_layer']}, t-SNE silhouette {metrics['tsne_silhouette']:.3f}, "
          f"ECE {metrics['ece']:.4f} -> {args.out}/")
    return 0


def add_recipe_command(sub) -> None:
    p = sub.add_parser("recipe", help="print a recipe of recipes.yaml as `dvc exp run` -S flags")
    p.add_argument("name")
    p.set_defaults(fn=cmd_recipe)


def cmd_recipe(args) -> int:
    from skillpack.train.recipes import recipe_overrides

    print(" ".join(f"-S {item}" for item in recipe_overrides(args.name)))
    return 0


def add_serve_command(sub) -> None:
    p = sub.add_parser("serve", help="the HTTP inference service with Prometheus metrics")
    p.add_argument("--model", help="an exported ONNX file (default: params serve.model)")
    p.add_argument("--registry", action="store_true", help="the registry's version by alias (registry.aliases.champion, "
                                                           "then candidate_onnx)")
    p.add_argument("--host", help="bind address (default: params serve.host, 127.0.0.1)")
    p.add_argument("--port", type=int)
    p.add_argument("--data", default="data/prepared", help="prepared store whose test set is the drift reference")
    p.add_argument("--params", default="params.yaml")
    p.add_argument("overrides", nargs="*", help="e.g. serve.max_batch=16")
    p.set_defaults(fn=cmd_serve)


def cmd_serve(args) -> int:
    import uvicorn

    from skillpack.config import load_section
    from skillpack.data import prepared_test_images
    from skillpack.deploy.serving.app import build_service, service_token
    from skillpack.deploy.serving.model import load_onnx, load_registered

    cfg = load_section(args.params, "serve", args.overrides)  # the service reads only its own section
    cfg = cfg.model_copy(update={k: v for k, v in {"host": args.host, "port": args.port}.items() if v})
    token = service_token(cfg)   # before loading anything: an open non-loopback bind is refused
    if args.registry or (args.model is None and cfg.model is None):
        registry = load_section(args.params, "registry", args.overrides)
        model = load_registered(registry.model, registry.aliases.champion, registry.aliases.candidate_onnx,
                                cfg.threads)
    else:
        model = load_onnx(args.model or cfg.model, cfg.threads)
    test_images = prepared_test_images(args.data)
    app = build_service(model, cfg, test_images, token)
    print(f"serving {model.name} v{model.version} from {model.source} on http://{cfg.host}:{cfg.port} "
          f"(drift reference: {'the test set' if test_images is not None else 'none'}; "
          f"{'bearer token required' if token else 'no token'})", flush=True)
    # uvicorn's SIGTERM handling stops accepting connections and lets requests in flight finish
    uvicorn.run(app, host=cfg.host, port=cfg.port, log_level="warning", access_log=False)
    return 0


def add_predict_command(sub) -> None:
    from skillpack.deploy.predict import EXIT_SKIPPED

    p = sub.add_parser("predict", help="top-k classes of image files, folders and globs as CSV (ONNX, no torch)",
                       description=f"CSV columns: path, label_1, prob_1, ..., label_k, prob_k. Files are read as the "
                                   f"service reads uploads (formats and limits of params serve:). Exit 0: every file "
                                   f"predicted; {EXIT_SKIPPED}: some skipped (each named on stderr with why), the "
                                   f"others predicted; 1: nothing could run.")
    p.add_argument("paths", nargs="+", metavar="PATH", help="image files, folders (every file under them) or globs")
    model = p.add_mutually_exclusive_group()
    model.add_argument("--model", help="an exported ONNX file (default: params serve.model)")
    model.add_argument("--checkpoint", help="a model.pt written by the train stage (PyTorch; needed for --gradcam)")
    p.add_argument("--top-k", type=int, help="classes per row (default: params serve.top_k, 3)")
    p.add_argument("--output", "-o", help="the CSV file, written atomically (default: stdout)")
    p.add_argument("--tta", action="store_true", help="test-time augmentation: mirror + corner shifts of "
                                                      "params evaluate.tta_crop_padding px, probabilities averaged")
    p.add_argument("--gradcam", metavar="DIR", help="write a Grad-CAM overlay of each image's top class (with "
                                                    "--checkpoint; params evaluate.explain's method and layer)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--threads", type=int, help="ONNX Runtime threads (default: the CPUs this process may use)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar (there is none off a terminal)")
    p.add_argument("--params", default="params.yaml", help="where serve: and evaluate: are read (their defaults "
                                                           "when the default params.yaml is absent)")
    p.set_defaults(fn=cmd_predict)


def predict_sections(path: str) -> tuple:
    """params serve: and evaluate: (the defaults where the default params.yaml is absent: predict
    runs from any folder)."""
    from skillpack.config import EvaluateParams, ServeParams, load_section

    if path == "params.yaml" and not Path(path).is_file():
        return ServeParams(), EvaluateParams()
    return load_section(path, "serve"), load_section(path, "evaluate")


def cmd_predict(args) -> int:
    import os

    from skillpack.deploy import predict
    from skillpack.io import UserError

    serve, evaluate = predict_sections(args.params)
    if args.gradcam and not args.checkpoint:
        raise UserError("--gradcam needs --checkpoint (a model.pt): Grad-CAM takes gradients, an ONNX file has none")
    files, missing = predict.expand_inputs(args.paths)
    if args.checkpoint:
        model, network = predict.load_checkpoint(args.checkpoint)
    else:
        from skillpack.deploy.serving.model import load_onnx

        model = load_onnx(args.model or serve.model, args.threads or len(os.sched_getaffinity(0)))
    options = predict.PredictOptions(args.top_k or serve.top_k, args.batch_size,
                                     evaluate.tta_crop_padding if args.tta else None,
                                     not args.quiet and sys.stderr.isatty(), serve)
    predict.check_top_k(options.top_k, model)
    on_batch = predict.cam_writer(network, model.image_shape, args.gradcam, evaluate.explain) if args.gradcam else None

    def report_skip(path: str, why: str) -> None:
        print(f"skipped {path}: {why}", file=sys.stderr)

    for pattern, why in missing:
        report_skip(pattern, why)
    run = predict.write_predictions(files, model, options, args.output, report_skip, on_batch)
    skipped = len(missing) + len(run.skipped)
    if args.output or skipped:
        print(f"{run.predicted} predicted, {skipped} skipped" + (f" -> {args.output}" if args.output else ""),
              file=sys.stderr)
    return predict.EXIT_SKIPPED if skipped else 0


def add_tune_command(sub) -> None:
    p = sub.add_parser("tune", help="hyper-parameter search with Optuna over params tune.space; the best trial "
                                    "becomes a recipe of recipes.yaml (params tune.recipe)")
    p.add_argument("--nas", action="store_true", help="the architecture search instead (params tune.nas): "
                                                        "validation accuracy vs ONNX Runtime latency, a Pareto front")
    p.add_argument("--n-trials", type=int, help="trials in all, all workers together (params tune.n_trials; "
                                                "with --nas tune.nas.n_trials)")
    p.add_argument("--timeout", type=float, help="no trial starts after this many wall seconds (params tune.timeout_s; "
                                                 "with --nas tune.nas.timeout_s)")
    p.add_argument("--pruner", choices=["median", "hyperband"], help="params tune.pruner")
    p.add_argument("--storage", help="an RDB URL, e.g. postgresql+psycopg2://... (params tune.storage; "
                                     "default: the journal file tune/<study>.journal)")
    p.add_argument("--workers", type=int, default=1, help="worker processes on this machine (this one and N-1 more)")
    p.add_argument("--worker", type=int, default=0, help="this worker's index: the sampler's seed is params seed + it")
    p.add_argument("--params", default="params.yaml")
    p.add_argument("overrides", nargs="*", help="e.g. train.epochs=3 tune.study=short")
    p.set_defaults(fn=cmd_tune)


def cmd_tune(args) -> int:
    import subprocess

    from skillpack.train.tune import TuneRun, tune

    budget = "tune.nas" if args.nas else "tune"
    flags = {f"{budget}.n_trials": args.n_trials, f"{budget}.timeout_s": args.timeout, "tune.pruner": args.pruner,
             "tune.storage": args.storage}
    overrides = (*args.overrides, *(f"{key}={value}" for key, value in flags.items() if value is not None))
    others = [subprocess.Popen([sys.executable, "-m", "skillpack.cli", "tune", "--worker", str(args.worker + k),
                                "--params", args.params, *(["--nas"] if args.nas else []), *overrides])
              for k in range(1, args.workers)]
    if args.nas:
        from skillpack.deploy.architecture_search import search_architectures

        search_architectures(TuneRun(Path(args.params), overrides, args.worker))
    else:
        tune(TuneRun(Path(args.params), overrides, args.worker))
    return max([0, *(other.wait() for other in others)])


def add_alerts_command(sub) -> None:
    p = sub.add_parser("alerts", help="write the Prometheus alert rules and their promtool tests from params")
    p.add_argument("--out", default="docker/prometheus")
    p.add_argument("--params", default="params.yaml")
    p.add_argument("overrides", nargs="*", help="e.g. monitor.p95_latency_ms_max.threshold=50")
    p.set_defaults(fn=cmd_alerts)


def cmd_alerts(args) -> int:
    from skillpack.config import load_params
    from skillpack.deploy.monitoring import write_alerts

    written = write_alerts(load_params(args.params, args.overrides).monitor, args.out)
    print("\n".join(str(p) for p in written))
    return 0


def add_registry_command(sub) -> None:
    p = sub.add_parser("registry", help="`registry sync`: point the aliases of params' registry section at their "
                                        "versions (idempotent; after a rename of an alias the new name follows)")
    p.add_argument("action", choices=["sync"])
    p.add_argument("--params", default="params.yaml")
    p.set_defaults(fn=cmd_registry)


def cmd_registry(args) -> int:
    from skillpack import model_registry
    from skillpack.config import load_section

    registry = load_section(args.params, "registry")
    for alias, version in model_registry.sync_repo_aliases(Path("."), registry).items():
        print(f"{registry.model}@{alias}: " + (f"v{version}" if version else "no version to point at"))
    return 0


def add_fetch_command(sub) -> None:
    p = sub.add_parser("fetch", help="download fashion_mnist / cifar10 / cifar100 into a folder for data.root")
    p.add_argument("source", choices=["fashion_mnist", "cifar10", "cifar100"])
    p.add_argument("dest", nargs="?", default="data/raw")
    p.set_defaults(fn=cmd_fetch)


def cmd_fetch(args) -> int:
    """Download a public source with torchvision into a folder to use as data.root (machines
    without Debian's dataset-fashion-mnist)."""
    from skillpack.data import fetch_source

    dest = Path(args.dest)
    fetch_source(args.source, dest)
    print(f"{args.source} in {dest}: set params.yaml data.root: {dest} (data.source: {args.source})")
    return 0


def add_pretrain_command(sub) -> None:
    p = sub.add_parser("pretrain", help="SimCLR self-supervised pre-training of an encoder (params pretrain:)")
    p.add_argument("--params", default="params.yaml")
    p.add_argument("overrides", nargs="*", help="e.g. pretrain.enabled=true pretrain.epochs=5")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(fn=cmd_pretrain)


def cmd_pretrain(args) -> int:
    from skillpack.config import load_params
    from skillpack.train.simclr import run_pretraining

    run_pretraining(load_params(args.params, args.overrides), progress=not args.quiet)
    return 0


COMMANDS = (add_models_command, add_explain_command, add_recipe_command, add_serve_command, add_predict_command,
            add_tune_command, add_alerts_command, add_registry_command, add_fetch_command, add_pretrain_command)


def add_plugin_commands(sub) -> None:
    """Commands registered by other packages under the entry-point group `skillpack.commands`:
    each entry point is a function that adds its subparser to `sub`, as COMMANDS' do."""
    from importlib.metadata import entry_points

    for entry in sorted(entry_points(group="skillpack.commands"), key=lambda e: e.name):
        entry.load()(sub)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="skillpack", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for add_command in COMMANDS:
        add_command(sub)
    add_plugin_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    configure()   # an entry point: the process settings first (skillpack.runtime)
    args = build_parser().parse_args(argv)
    from skillpack.io import one_line_error

    try:
        return args.fn(args)
    except Exception as err:
        line = one_line_error(err)
        if line is None:
            raise
        print(line, file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
