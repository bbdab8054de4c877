"""The pre-training flow: SimCLR on unlabelled images (params pretrain:, off by default), one
MLflow run with the NT-Xent loss per epoch and the budget (images, epochs, minutes); the encoder
checkpoint at pretrain.out, which train.pretrained can name to fine-tune from it (or, with
train.freeze_backbone: true, to train a linear probe on it). Not a DVC stage: the pipeline
never depends on it.

    python -m flows.pretrain pretrain.enabled=true                     # the prepared training split
    python -m flows.pretrain pretrain.enabled=true pretrain.images=photos/ pretrain.epochs=5
    dvc exp run -S train.model=tf_efficientnet_lite0 -S train.pretrained=models/pretrain/simclr.pt \\
        -S train.input_size=64                                          # then fine-tune from it
"""
from __future__ import annotations

import argparse
import json

from prefect import flow, task

from skillpack import paths


@task(name="simclr-pretrain")
def pretrain_task(params_path: str, overrides: list[str]) -> dict:
    from skillpack.config import load_params
    from skillpack.train.simclr import run_pretraining

    return run_pretraining(load_params(params_path, overrides), progress=False)


@flow(name="skillpack-pretrain", log_prints=True)
def pretrain(params_path: str = str(paths.PARAMS), overrides: list[str] | None = None) -> dict:
    return pretrain_task(params_path, list(overrides or []))


def main(argv: list[str] | None = None) -> None:
    from skillpack.io import one_line_error

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default=str(paths.PARAMS))
    parser.add_argument("overrides", nargs="*", help="params overrides, e.g. pretrain.enabled=true pretrain.epochs=5")
    args = parser.parse_args(argv)
    try:   # bad params, or pre-training off: one line, before Prefect starts a flow run
        from skillpack.config import load_params
        from skillpack.train.simclr import require_enabled

        require_enabled(load_params(args.params, args.overrides))
        result = pretrain(params_path=args.params, overrides=args.overrides)
    except Exception as err:
        line = one_line_error(err)
        if line is None:
            raise
        raise SystemExit(line) from None
    print(json.dumps(result, default=str))


if __name__ == "__main__":
    main()
