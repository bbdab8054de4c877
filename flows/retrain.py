"""The retrain flow: rebuild the pipeline (`dvc repro`: only what changed), then judge the new
candidate (the ONNX version the export stage registered) against the `champion` on the same
test set, and move `champion` only when the candidate is better by params retrain.margin_points
with 95% confidence (skillpack.deploy.promotion). The decision and its reason go on the MLflow
version and into the Prefect artifact `retrain-decision`.

    python -m flows.retrain             # what the nightly deployment runs
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact

from skillpack import model_registry, paths, tracking


def correctness(registered_name: str, alias: str, images, labels):
    """Per test image: is the version `alias` points to right? None when there is no such alias."""
    from skillpack.deploy.serving.model import load_registered

    try:
        model = load_registered(registered_name, alias)
    except FileNotFoundError:
        return None, None
    predicted = model.probabilities(images).argmax(1)
    return predicted == labels, model.version.split("@")[0]


@task(name="judge-candidate")
def promote_if_better(registered_name: str, candidate_alias: str, champion_alias: str, images, labels,
                      margin_points: float, confidence: float) -> dict:
    from skillpack.deploy.promotion import Decision, decide

    tracking.setup()
    candidate, candidate_version = correctness(registered_name, candidate_alias, images, labels)
    if candidate is None:
        raise FileNotFoundError(f"{registered_name} has no {candidate_alias!r} version: run the export stage")
    champion, champion_version = correctness(registered_name, champion_alias, images, labels)
    if champion_version == candidate_version:
        decision = Decision(False, 0.0, 0.0, 0.0, 1.0, margin_points, len(labels),
                            "kept: the candidate is already the champion")
    else:
        decision = decide(candidate, champion, margin_points, confidence)
    now = model_registry.apply_promotion(registered_name, candidate_version, champion_alias, decision)
    return {"candidate_version": candidate_version, "previous_champion": champion_version,
            "champion_version": now, **decision.as_dict()}


def decision_markdown(result: dict) -> str:
    return "\n".join([f"# Retrain decision: {'promoted' if result['promote'] else 'champion kept'}", "",
                      result["reason"], "", "```json", json.dumps(result, indent=2, default=str), "```"])


@flow(name="skillpack-retrain", log_prints=True)
def retrain(repo: str = ".", force: bool = False) -> dict:
    import numpy as np

    from flows.pipeline import pipeline
    from skillpack.config import load_params
    from skillpack.data import PreparedStore

    root = Path(repo).resolve()
    pipeline(repo=str(root), force=force)
    params = load_params(root / paths.PARAMS)
    images, labels = (np.array(a) for a in PreparedStore(root / paths.PREPARED).arrays("test"))
    result = promote_if_better(params.registry.model, params.registry.aliases.candidate_onnx,
                               params.registry.aliases.champion, images, labels, params.retrain.margin_points,
                               params.retrain.confidence)
    create_markdown_artifact(key="retrain-decision", markdown=decision_markdown(result),
                             description=f"{params.registry.model}: candidate v{result['candidate_version']}")
    print(result["reason"])
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repo", default=".")
    parser.add_argument("--force", action="store_true")
    args = parser.parse_args(argv)
    print(json.dumps(retrain(repo=args.repo, force=args.force), default=str))


if __name__ == "__main__":
    main()
