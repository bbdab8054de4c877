"""Cleaning detectors on a small real Fashion-MNIST subset with planted label noise and
planted outliers; policies; the oof + clean stages end to end."""
import json
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import copy_project, project_env, run, small_split

from skillpack.config import load_params
from skillpack.data import cleaning
from skillpack.train import oof as oof_module

N_SAMPLES, NOISE, N_INVERTED = 4500, 0.2, 45


@pytest.fixture(scope="module")
def planted(fmnist):
    """4,500 real images, 20% of labels flipped (symmetric), 45 clean-labelled images inverted;
    out-of-fold predictions of 3 fold models."""
    images, labels = small_split(fmnist, N_SAMPLES, seed=1)
    images = images.copy()
    noisy, flipped = cleaning.inject_label_noise(labels, NOISE, "symmetric", 10, seed=0)
    inverted = np.zeros(len(labels), dtype=bool)
    inverted[np.random.default_rng(1).choice(np.flatnonzero(~flipped), N_INVERTED, replace=False)] = True
    images[inverted] = 255 - images[inverted]
    params = load_params("params.yaml", ["clean.oof.folds=3", "clean.oof.train.epochs=8"])
    oof = oof_module.out_of_fold(images, noisy, 10, params.clean.oof.train_params(2, "cpu"), 3, seed=0)
    return {"images": images, "labels": labels, "noisy": noisy, "flipped": flipped, "inverted": inverted,
            "oof": oof, "params": params, "detections": cleaning.run_detectors(oof, noisy, params.clean)}


def test_symmetric_noise_flips_exactly_the_rate_to_other_classes():
    labels = np.repeat(np.arange(10), 100)
    noisy, flipped = cleaning.inject_label_noise(labels, 0.2, "symmetric", 10, seed=3)
    assert flipped.sum() == 200
    assert np.all(noisy[flipped] != labels[flipped]) and np.all(noisy[~flipped] == labels[~flipped])
    assert len(np.unique(noisy[flipped])) == 10  # spread over classes, not one target
    again, _ = cleaning.inject_label_noise(labels, 0.2, "symmetric", 10, seed=3)
    assert np.array_equal(noisy, again)


def test_pair_noise_follows_the_partner_map():
    labels = np.repeat(np.arange(10), 50)
    noisy, flipped = cleaning.inject_label_noise(labels, 0.4, "pair", 10, seed=0, pairs=cleaning.FASHION_MNIST_PAIRS)
    assert flipped.sum() == 200
    assert all(noisy[i] == cleaning.FASHION_MNIST_PAIRS[labels[i]] for i in np.flatnonzero(flipped))
    with pytest.raises(ValueError, match="noise kind"):
        cleaning.inject_label_noise(labels, 0.1, "uniform", 10, seed=0)


def test_logit_gradient_norm_equals_softmax_minus_onehot():
    logits = torch.randn(64, 10)
    labels = torch.randint(0, 10, (64,))
    expected = (logits.softmax(1) - torch.nn.functional.one_hot(labels, 10)).norm(dim=1)
    torch.testing.assert_close(oof_module.logit_grad_norm(logits, labels), expected)


def test_knee_of_a_k_distance_curve():
    curve = np.concatenate([np.linspace(0.1, 0.2, 90), np.linspace(0.5, 3.0, 10)])
    assert 0.19 <= cleaning.knee(curve) <= 0.5


def test_out_of_fold_predictions_come_from_the_model_that_held_the_sample_out(planted):
    oof, noisy = planted["oof"], planted["noisy"]
    assert oof.probs.shape == (3, N_SAMPLES, 10)
    assert np.bincount(oof.fold).tolist() == [1500, 1500, 1500]
    np.testing.assert_allclose(oof.probs.sum(2), 1.0, atol=1e-4)
    in_fold_acc = np.mean([(oof.probs[k][oof.fold != k].argmax(1) == noisy[oof.fold != k]).mean() for k in range(3)])
    held_out_acc = (oof.oof_probs.argmax(1) == noisy).mean()
    assert held_out_acc < in_fold_acc  # a model agrees more with the labels it was trained on
    assert held_out_acc > 0.5


def test_flipped_labels_score_higher_on_every_detector(planted):
    flipped, detections = planted["flipped"] & ~planted["inverted"], planted["detections"]
    for name in ("vote", "gradient", "cleanlab", "ensemble", "implausible"):
        det = detections[name]
        assert det.score[flipped].mean() > det.score[~flipped].mean() + 0.2 * det.score.std(), name
        quality = cleaning.precision_recall_f1(det.flag, planted["flipped"])
        assert quality["precision"] > 2 * NOISE, (name, quality)  # far better than flagging at random


def test_implausible_keeps_the_ensemble_flags_whose_label_the_models_find_plausible(planted):
    detections, noisy, flipped = planted["detections"], planted["noisy"], planted["flipped"]
    ens, imp = detections["ensemble"], detections["implausible"]
    label_prob = planted["oof"].probs.mean(0)[np.arange(N_SAMPLES), noisy]
    limit = planted["params"].clean.implausible.max_label_prob
    assert np.array_equal(imp.flag, ens.flag & (label_prob < limit))
    assert 0 < imp.flag.sum() < ens.flag.sum()
    # what it lets go of are mostly clean labels: it is more precise than the ensemble
    released = ens.flag & ~imp.flag
    assert (~flipped[released]).mean() > 0.5
    assert (cleaning.precision_recall_f1(imp.flag, flipped)["precision"]
            > cleaning.precision_recall_f1(ens.flag, flipped)["precision"])


def test_dbscan_flags_planted_inverted_images(planted):
    det = planted["detections"]["dbscan"]
    inverted, normal = planted["inverted"], ~planted["inverted"] & ~planted["flipped"]
    assert det.flag[inverted].mean() >= 0.6
    assert det.flag[inverted].mean() > 4 * det.flag[normal].mean()


def test_drop_policy_counts_add_up_and_the_flagged_list_names_every_dropped_id(planted):
    ids = np.array([f"train-{i}" for i in range(N_SAMPLES)])
    detections = planted["detections"]
    view = cleaning.apply_policy(ids, planted["noisy"], detections["ensemble"], "drop")
    counts = view.counts
    assert counts["keep"] + counts["drop"] == counts["input"] == N_SAMPLES and counts["drop"] > 0
    assert len(view.index) == counts["keep"] and len(view.labels) == counts["keep"]
    table = cleaning.flag_table(ids, planted["noisy"], detections, "ensemble", [str(c) for c in range(10)])
    dropped = set(view.actions.query("action == 'drop'")["id"])
    assert dropped <= set(table["id"]) and dropped == set(table[table["ensemble_flag"]]["id"])
    assert set(ids[view.index]).isdisjoint(dropped)


def test_relabel_policy_changes_only_flagged_labels_to_the_suggestion(planted):
    ids = np.arange(N_SAMPLES).astype(str)
    det = planted["detections"]["ensemble"]
    view = cleaning.apply_policy(ids, planted["noisy"], det, "relabel")
    changed = view.actions["action"].to_numpy() == "relabel"
    assert len(view.index) == N_SAMPLES and changed.sum() > 0
    assert np.all(det.flag[changed])
    assert np.array_equal(view.labels[changed], det.suggested[changed])
    assert np.array_equal(view.labels[~changed], planted["noisy"][~changed])
    # relabeling must fix more flipped labels than it breaks
    fixed = (view.labels == planted["labels"]) & (planted["noisy"] != planted["labels"])
    broken = (view.labels != planted["labels"]) & (planted["noisy"] == planted["labels"])
    assert fixed.sum() > broken.sum()


def test_ensemble_rule_and_params_are_checked():
    with pytest.raises(Exception, match="min_flags"):
        load_params("params.yaml", ["clean.ensemble.members=[vote]", "clean.ensemble.min_flags=2"])
    with pytest.raises(Exception, match="min_disagree"):
        load_params("params.yaml", ["clean.vote.min_disagree=9"])


def test_oof_and_clean_stages_drop_policy_end_to_end(prepared_project, tmp_path):
    """`dvc repro clean` with policy drop: the prepared store is untouched, the cleaned view
    and flagged.csv agree, and the train stage sees exactly the kept rows."""
    # fold models good enough to judge (2 folds x 2 epochs at batch 256 were at chance: 0.16)
    repo = copy_project(prepared_project, tmp_path / "project",
                        {"clean.policy": "drop", "clean.oof.train.epochs": 3, "clean.oof.train.batch_size": 32})
    env = project_env(repo)
    run([sys.executable, "-m", "dvc", "repro", "clean"], repo, env=env)
    labels_before = np.load(repo / "data/prepared/train_labels.npy")
    summary = json.loads((repo / "data/cleaned/summary.json").read_text())
    actions = pd.read_csv(repo / "data/cleaned/actions.csv", dtype={"id": str})
    flagged = pd.read_csv(repo / "reports/flagged.csv", dtype={"id": str})
    assert summary["keep"] + summary["drop"] == summary["input"] == len(labels_before)
    assert summary["policy"] == "drop" and 0 < summary["drop"] <= 0.1 * summary["input"]  # acted, under the cap
    assert set(actions.query("action == 'drop'")["id"]) <= set(flagged["id"])
    assert len(np.load(repo / "data/cleaned/train_index.npy")) == summary["keep"]
    assert (repo / "reports/clean/suspicious.png").read_bytes()[:4] == b"\x89PNG"
    assert np.array_equal(np.load(repo / "data/prepared/train_labels.npy"), labels_before)
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{repo / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("skillpack").experiment_id])
    clean_run = next(r for r in runs if r.data.tags["stage"] == "clean")
    assert clean_run.data.metrics["drop"] == summary["drop"]
    assert {a.path for a in client.list_artifacts(clean_run.info.run_id, "clean")} >= {"clean/flagged.csv"}
    run([sys.executable, "-m", "dvc", "repro", "train"], repo, env=env)
    runs = client.search_runs([client.get_experiment_by_name("skillpack").experiment_id])
    train_run = next(r for r in runs if r.data.tags["stage"] == "train")
    assert train_run.data.metrics["train_samples"] == summary["keep"]
    assert train_run.data.metrics["clean_drop"] == summary["drop"]


def _stage_without_mlflow(monkeypatch):
    """The clean stage's own code, in-process, with MLflow out of the way (tracked elsewhere)."""
    import contextlib

    from skillpack import tracking
    monkeypatch.setattr(tracking, "stage_run", lambda *a, **k: contextlib.nullcontext())
    monkeypatch.setattr(tracking, "log_metrics", lambda *a, **k: None)
    monkeypatch.setattr(tracking, "log_artifact", lambda *a, **k: None)
    monkeypatch.setattr(tracking, "set_tags", lambda *a, **k: None)


def test_clean_stage_refuses_to_drop_when_the_fold_models_are_at_chance(fmnist, tmp_path, monkeypatch, capsys):
    """With fold models at chance, `implausible` flagged half the training set
    and policy drop took test accuracy from 0.95 to 0.30. Labels shuffled here: the models
    cannot beat chance, and the stage only flags, saying why with the numbers."""
    import shutil

    from skillpack.data.sourcedata import SourceData, Split
    from skillpack.data.store import write_store
    from stages import clean as clean_stage

    images, labels = small_split(fmnist, 400, seed=2)
    shuffled = np.random.default_rng(0).permutation(labels)
    params = load_params("params.yaml", ["clean.oof.folds=2", "clean.oof.train.epochs=1", "clean.oof.train.model=sp_cnn_s"])
    oof = oof_module.out_of_fold(images, shuffled, 10, params.clean.oof.train_params(1, "cpu"), 2, seed=0)
    split = Split(images, shuffled, [f"train/{i}" for i in range(len(labels))])
    empty = Split(images[:0], labels[:0], [])
    write_store(tmp_path / "data/prepared", SourceData("t", [str(c) for c in range(10)], {"train": split}),
                {"train": split, "val": empty, "test": empty})
    oof.save(tmp_path / "data/oof/oof.npz")
    shutil.copy("params.yaml", tmp_path / "params.yaml")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["clean", "clean.policy=drop", "clean.grid_images=4"])
    _stage_without_mlflow(monkeypatch)
    assert clean_stage.main() == 0
    out = capsys.readouterr().out
    refused = next(line for line in out.splitlines() if "refused" in line)
    assert "clean.policy=drop refused, flagging only: cannot judge: the fold models are too weak" in refused
    assert "chance 0.1" in refused and "clean.min_oof_skill 0.5" in refused
    summary = json.loads((tmp_path / "reports/clean.json").read_text())
    judge = summary["judge"]
    assert judge["can_judge"] is False and judge["skill"] < 0.1 and judge["oof_accuracy"] < 0.25
    assert summary["policy_applied"] == "flag" and summary["drop"] == 0 and summary["keep"] == len(labels)
    assert summary["flagged_implausible"] > 0.1 * len(labels)   # what drop would have thrown away
    cleaned = json.loads((tmp_path / "data/cleaned/summary.json").read_text())
    assert cleaned["policy"] == "flag" and cleaned["policy_requested"] == "drop"
    print(f"shuffled labels: oof accuracy {judge['oof_accuracy']:.3f}, chance {judge['chance']:.3f}, "
          f"implausible flagged {summary['flagged_implausible']} of {len(labels)}, dropped 0")


def test_no_policy_may_act_on_more_than_max_drop_fraction():
    labels = np.repeat(np.arange(4), 50)
    probs = np.full((2, 200, 4), 0.02, dtype=np.float32)
    probs[:, np.arange(200), labels] = 0.94     # strong fold models: they can judge
    oof = cleaning.OutOfFold(fold=np.arange(200) % 2, probs=probs, embeddings=np.zeros((200, 2), np.float32),
                             grad_norm=np.zeros(200, np.float32))
    ids = np.array([f"s{i}" for i in range(200)])
    flag = np.zeros(200, dtype=bool)
    flag[:30] = True                              # 15% of the training set
    detection = cleaning.Detection(score=flag.astype(float), flag=flag, suggested=(labels + 1) % 4)
    cfg = load_params("params.yaml", ["clean.policy=drop"]).clean
    with pytest.raises(cleaning.CleaningStopped) as stop:
        cleaning.decide_policy(ids, labels, detection, oof, cfg)
    assert "would drop 30 of 200 training samples (15.0%), over clean.max_drop_fraction 10%" in str(stop.value)
    with pytest.raises(cleaning.CleaningStopped, match="would relabel 30 of 200"):
        cleaning.decide_policy(ids, labels, detection, oof, cfg.model_copy(update={"policy": "relabel"}))
    view, decision = cleaning.decide_policy(ids, labels, detection, oof, cfg.model_copy(update={"max_drop_fraction": 0.2}))
    assert view.counts["drop"] == 30 and decision["judge"]["can_judge"] and decision["policy_applied"] == "drop"
    view, _ = cleaning.decide_policy(ids, labels, detection, oof, cfg.model_copy(update={"policy": "flag"}))
    assert view.counts["keep"] == 200             # flag drops nothing: no cap to hit
