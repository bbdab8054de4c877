"""`skillpack` command line.

    skillpack models [--size 28 --chans 1 --classes 10]   list model names with params and MACs
    skillpack explain <model.pt> [--split test] [key=value ...]  Grad-CAM, t-SNE, calibration, errors
    skillpack recipe <name>                               a recipe as `dvc exp run` -S flags
    skillpack serve [--model m.onnx | --registry] [--host 127.0.0.1 --port 8000] [key=value ...]
                                                          the inference service (Prometheus /metrics)
    skillpack alerts [--out docker/prometheus]            alert rules + promtool tests from params monitor:
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
    from skillpack import tracking
    from skillpack.config import load_section

    registry = load_section(args.params, "registry")
    for alias, version in tracking.sync_repo_aliases(Path("."), registry).items():
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


COMMANDS = (add_models_command, add_explain_command, add_recipe_command, add_serve_command, add_alerts_command,
            add_registry_command, add_fetch_command)


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
