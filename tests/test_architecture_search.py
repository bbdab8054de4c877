"""`skillpack tune --nas`: the architectures a trial draws lie in params tune.nas's space (the
fused reference first), the Pareto front is the study's non-dominated trials as a table and JSON,
the chosen point is the most accurate under the latency bound and its name builds; and
`python -m benchmarks.search` at a toy budget writes search.json with a front of real trainings."""
from __future__ import annotations

import json

import optuna
import pytest
import torch

from skillpack.config import load_params
from skillpack.config.architecture import NAMED_ARCHITECTURES, parse_arch_name
from skillpack.deploy.architecture_search import (
    DIRECTIONS,
    FRONT_COLUMNS,
    REFERENCE,
    choose,
    front_table,
    pareto_front,
    save_front,
    suggest_architecture,
    trial_values,
)
from skillpack.train.models import build_model
from tests.conftest import ROOT

NAS = load_params(ROOT / "params.yaml").tune.nas


def dominated(row: dict, rows: list[dict]) -> bool:
    return any(o["val_acc"] >= row["val_acc"] and o["latency_ms"] <= row["latency_ms"]
               and (o["val_acc"], o["latency_ms"]) != (row["val_acc"], row["latency_ms"]) for o in rows)


def drawn(n: int) -> list:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0), directions=list(DIRECTIONS))
    study.enqueue_trial(trial_values(NAMED_ARCHITECTURES[REFERENCE], NAS))
    return [suggest_architecture(study.ask(), NAS) for _ in range(n)]


def test_every_drawn_architecture_lies_in_the_space_and_the_reference_comes_first():
    specs = drawn(60)
    assert specs[0] == NAMED_ARCHITECTURES[REFERENCE]
    for spec in specs:
        assert parse_arch_name(spec.encode()) == spec and (spec.stem, spec.head) == (NAS.stem, NAS.head)
        assert all(s.block == "mbconv" for s in spec.stages[2:])
        assert all(1 <= s.depth <= NAS.max_depth and s.width in NAS.widths[i] for i, s in enumerate(spec.stages))
    assert {len(s.stages) for s in specs} == {3, 4}
    assert {s.stages[0].block for s in specs} == {"fused", "mbconv"} and {s.stages[1].se for s in specs} == {False, True}
    assert {s.stages[2].kernel for s in specs} == {3, 5} and {s.stages[2].expansion for s in specs} == {1, 4, 6}
    narrow = NAS.model_copy(update={"widths": [[24], [48], [96], [128]]})
    assert trial_values(NAMED_ARCHITECTURES[REFERENCE], narrow) is None   # not queued where the space cannot give it


def finished_study(points: list[tuple[float, float]]) -> optuna.Study:
    """A two-objective study of finished trials (values told, as a trial's measurement would)."""
    study = optuna.create_study(directions=list(DIRECTIONS))
    for spec, (acc, ms) in zip(drawn(len(points)), points):
        study.add_trial(optuna.trial.create_trial(values=[acc, ms], user_attrs={
            "name": spec.encode(), "params": int(1000 * ms), "macs": 1, "onnx_max_abs_diff": 1e-7}))
    return study


def test_the_front_is_the_non_dominated_trials_and_the_chosen_is_the_most_accurate_under_the_bound(tmp_path):
    study = finished_study([(0.80, 1.0), (0.85, 2.0), (0.84, 3.0), (0.90, 4.0), (0.79, 1.5)])
    front = pareto_front(study)
    assert [row["number"] for row in front] == [0, 1, 3]            # 2 and 4 are dominated; fastest first
    assert not any(dominated(row, front) for row in front)
    assert set(FRONT_COLUMNS) <= set(front[0])
    assert choose(front, None)["number"] == 3 and choose(front, 2.5)["number"] == 1 and choose(front, 0.5) is None
    table = front_table(front, choose(front, 2.5)).splitlines()
    assert len(table) == 2 + 3 and "(chosen)" in table[3] and "`" + front[1]["name"] + "`" in table[3]
    files = save_front(study, front, choose(front, 2.5), tmp_path)
    saved = json.loads((tmp_path / "pareto.json").read_text())
    assert saved == {"front": front, "chosen": front[1]} and (tmp_path / "pareto.png").stat().st_size > 0
    assert [f.name for f in files] == ["pareto.md", "pareto.json", "pareto.png"]
    name = choose(front, None)["name"]
    assert load_params(ROOT / "params.yaml", [f"train.model={name}"]).train.model == name
    assert build_model(name, num_classes=10, in_chans=1).eval()(torch.zeros(1, 1, 28, 28)).shape == (1, 10)


@pytest.mark.integration
def test_the_quick_search_benchmark_writes_a_front_of_real_trainings(tmp_path, mlflow_uri, monkeypatch):
    from benchmarks import search

    monkeypatch.chdir(ROOT)
    out = tmp_path / "search.json"
    figures = search.main(["--quick", "--trials", "1", "--nas-trials", "2", "--max-train", "300",
                            "--other-pruner", "hyperband", "--out", str(out)])
    saved = json.loads(out.read_text())
    assert saved == json.loads(json.dumps(figures))
    assert saved["trials"] == 1 and saved["nas_trials"] == 2 and saved["heldout_seeds"] == [100, 101, 102]
    assert len(saved["heldout_test"]) == 3 and saved["heldout_test_ci"][0] <= saved["heldout_test_mean"] \
        <= saved["heldout_test_ci"][1]
    assert {"pruned", "wall_s", "best_val", "machine", "generated_by", "budget"} <= set(saved)
    assert set(saved["pruners"]) == {"median", "hyperband"}, "the default pruner and the one it is compared with"
    for pruner in saved["pruners"].values():   # one trial of one epoch each: nothing to prune
        assert pruner["trials"] == 1 and pruner["pruned"] == 0 and pruner["epochs_trained"] == 1
    assert saved["pruners"]["median"]["best_val"] == saved["best_val"]
    front = saved["pareto"]
    assert 1 <= len(front) <= 2 and all(set(row) == {"name", "val_acc", "latency_ms", "params"} for row in front)
    assert not any(dominated(row, front) for row in front)
    assert saved["chosen"] in {row["name"] for row in front} and parse_arch_name(saved["chosen"])
    assert saved["chosen_onnx_max_abs_diff"] < saved["parity_max_abs_diff"] == 1e-4 and saved["chosen_onnx_parity_ok"]
