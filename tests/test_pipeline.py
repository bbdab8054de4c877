"""End to end: `dvc repro` in a temporary git repo on a small real subset, then MLflow's DB."""
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY_OVERRIDES, flow_result, make_project_repo, project_env, run, set_params
from mlflow import MlflowClient

STAGES = {"prepare", "validate", "oof", "clean", "train", "evaluate", "compress", "export"}


def test_repro_produces_metrics_plots_and_a_registered_model(tiny_repo):
    metrics = json.loads((tiny_repo / "reports" / "metrics.json").read_text())
    assert 0.0 <= metrics["test_accuracy"] <= 1.0
    assert metrics["test_accuracy"] > 0.5  # two epochs on 1,800 images, chance is 0.1
    assert metrics["n_test"] == TINY_OVERRIDES["data.max_test"]
    per_class = json.loads((tiny_repo / "reports" / "per_class.json").read_text())
    assert len(per_class) == 10 and all({"precision", "recall", "f1"} <= set(m) for m in per_class.values())
    for png in ("confusion.png", "curves.png"):
        assert (tiny_repo / "reports" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    shown = run([sys.executable, "-m", "dvc", "metrics", "show", "--json"], tiny_repo, env=project_env(tiny_repo))
    assert "test_accuracy" in shown.stdout

    client = MlflowClient(tracking_uri=f"sqlite:///{tiny_repo / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("skillpack")
    runs = client.search_runs([experiment.experiment_id])
    by_stage = {r.data.tags["stage"]: r for r in sorted(runs, key=lambda r: r.info.start_time)}  # latest wins
    assert STAGES <= set(by_stage)
    commit = run(["git", "rev-parse", "HEAD"], tiny_repo).stdout.strip()
    for stage in STAGES:
        assert re.fullmatch(rf"{stage} [0-9a-f]{{8}}", by_stage[stage].info.run_name), by_stage[stage].info.run_name
        tags = by_stage[stage].data.tags
        assert tags["git_commit"] == commit
        assert len(tags["data_hash"]) == 16
    train = by_stage["train"]
    assert train.data.params["train.epochs"] == "2"
    assert "val_acc" in train.data.metrics
    assert by_stage["evaluate"].data.metrics["test_accuracy"] == metrics["test_accuracy"]
    version = client.get_model_version_by_alias("skillpack-classifier", "candidate")
    # the version comes from a train stage run (other tests re-run train on this shared repo: a
    # re-run with unchanged weights registers nothing new, so it need not be the latest run)
    assert client.get_run(version.run_id).data.tags["stage"] == "train"
    artifacts = {a.path for a in client.list_artifacts(by_stage["evaluate"].info.run_id)}
    assert {"confusion.png", "curves.png", "metrics.json"} <= artifacts


# Each stage's report JSON, DVC metrics file (where it has one) and MLflow run, from one run of the pipeline.
REPORTS = {"prepare": ("data/prepared/summary.json", None), "validate": ("reports/validation.json", None),
           "oof": ("reports/oof.json", "oof"), "clean": ("reports/clean.json", "clean"),
           "train": ("reports/train.json", "train"), "evaluate": ("reports/metrics.json", "evaluate"),
           "compress": ("reports/compress.json", None), "export": ("reports/compression.json", None)}


def test_a_figure_has_one_name_in_the_report_the_dvc_metrics_and_mlflow(tiny_repo):
    """Every top-level number of a stage's report JSON is an MLflow metric of its run under the
    same name with the same value (a bool as 0/1), every string a tag, and every DVC metric is
    the report's figure of that name."""
    client = MlflowClient(tracking_uri=f"sqlite:///{tiny_repo / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("skillpack")
    runs = sorted(client.search_runs([experiment.experiment_id]), key=lambda r: r.info.start_time)
    by_stage = {r.data.tags["stage"]: r for r in runs}  # latest wins
    for stage, (report_path, dvc_name) in REPORTS.items():
        report = json.loads((tiny_repo / report_path).read_text())
        logged = by_stage[stage].data
        numbers = {k: float(v) for k, v in report.items() if isinstance(v, (int, float)) and math.isfinite(v)}
        assert numbers, stage
        for key, value in numbers.items():
            assert key in logged.metrics, f"{stage}: {key} is in {report_path} but not an MLflow metric"
            assert logged.metrics[key] == pytest.approx(value, rel=1e-12, abs=1e-12), f"{stage}: {key}"
        if stage not in ("prepare", "validate"):   # their reports are the data's own description
            for key, value in report.items():
                if isinstance(value, str):
                    assert logged.tags.get(key) == value, f"{stage}: {key} is in {report_path} but not a tag"
        if dvc_name:
            dvc = json.loads((tiny_repo / "reports" / "metrics" / f"{dvc_name}.json").read_text())
            assert dvc and all(report[key] == value for key, value in dvc.items()), (stage, dvc)


def test_registered_model_loads_and_predicts(tiny_repo):
    import mlflow.pytorch
    import numpy as np

    mlflow.set_tracking_uri(f"sqlite:///{tiny_repo / 'mlflow.db'}")
    model = mlflow.pytorch.load_model("models:/skillpack-classifier@candidate")
    images = np.load(tiny_repo / "data" / "prepared" / "test_images.npy")[:8]
    import torch

    logits = model(torch.as_tensor(images).permute(0, 3, 1, 2).float())
    assert tuple(logits.shape) == (8, 10)


def test_second_repro_does_nothing(tiny_repo):
    proc = run([sys.executable, "-m", "dvc", "repro"], tiny_repo, env=project_env(tiny_repo))
    out = proc.stdout + proc.stderr
    assert "up to date" in out and "Running stage" not in out, out


def _changed_stages(repo) -> set[str]:
    status = run([sys.executable, "-m", "dvc", "status", "--json", "dvc.yaml"], repo, env=project_env(repo))
    return set(json.loads(status.stdout or "{}"))


def test_editing_a_function_body_in_optim_marks_train_as_changed(tiny_repo):
    """DVC's one promise: change code a stage imports and the stage is out of date."""
    optim = tiny_repo / "skillpack" / "train" / "optim.py"
    original = optim.read_text()
    assert _changed_stages(tiny_repo) == set()
    try:
        optim.write_text(original.replace('"""', '"""Edited. ', 1) + "\n\ndef _edited():\n    return 1\n")
        changed = _changed_stages(tiny_repo)
        assert {"train", "oof"} <= changed, changed
        assert "prepare" not in changed and "validate" not in changed
    finally:
        optim.write_text(original)
    assert _changed_stages(tiny_repo) == set()


def _registered_versions(repo) -> int:
    client = MlflowClient(tracking_uri=f"sqlite:///{repo / 'mlflow.db'}")
    return len(client.search_model_versions("name='skillpack-classifier'"))


def test_a_bad_params_edit_destroys_nothing_and_an_unchanged_model_is_not_registered_again(tiny_repo, tmp_path):
    from conftest import copy_project

    repo = copy_project(tiny_repo, tmp_path / "repo", keep_tracking=True)   # DVC removes a failed stage's outputs
    params = repo / "params.yaml"
    original = params.read_text()
    model = repo / "models" / "model.pt"
    before, versions = model.read_bytes(), _registered_versions(repo)
    params.write_text(original.replace("model: sp_cnn_m", "model: sp_cnn_typo"))
    proc = run([sys.executable, "-m", "dvc", "repro"], repo, env=project_env(repo), check=False)
    assert proc.returncode != 0
    assert "train.model" in proc.stderr and "sp_cnn_typo" in proc.stderr, proc.stderr
    assert "Running stage 'train'" not in proc.stdout
    assert model.read_bytes() == before
    params.write_text(original)
    # train re-run by force: it resumes its finished checkpoint, trains nothing, registers nothing
    proc = run([sys.executable, "-m", "dvc", "repro", "--force", "--single-item", "train"], repo,
               env=project_env(repo))
    assert "no new version" in proc.stdout + proc.stderr
    assert _registered_versions(repo) == versions
    import io

    import torch

    weights = [torch.load(io.BytesIO(b), weights_only=True)["state_dict"] for b in (before, model.read_bytes())]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_leaky_imagefolder_stops_dvc_repro_at_validate(tmp_path):
    """A test image copied into train: `dvc repro` must fail at validate, name the row, and
    never train; the corrupt file is quarantined with its reason and the counts add up."""
    from test_sources import make_image_folder

    root = tmp_path / "folder"
    for seed, split in enumerate(("train", "test")):
        make_image_folder(root / split, corrupt=(split == "train"), seed=seed)
    # the same bytes decode to the same pixels, so the prepared images share a sha256
    (root / "train" / "dog" / "leaked.jpg").write_bytes((root / "test" / "dog" / "0a.jpg").read_bytes())
    repo = make_project_repo(tmp_path / "repo", {"data.source": "imagefolder", "data.root": str(root),
                                                 "data.image_size": 16, "data.max_train": None,
                                                 "data.max_test": None, "data.val_fraction": 0.2})
    proc = run([sys.executable, "-m", "dvc", "repro"], repo, env=project_env(repo), check=False)
    assert proc.returncode != 0
    assert "leaks_into_test" in proc.stderr and "train/dog/leaked.jpg" in proc.stderr
    assert not (repo / "models" / "model.pt").exists()
    report = json.loads((repo / "reports" / "validation.json").read_text())
    assert report["success"] is False
    quarantined = {q["path"]: q["reason"] for q in report["quarantine"]}
    assert "unreadable image" in quarantined["train/cat/broken.jpg"]
    counts = report["counts"]
    assert counts["found"] == counts["prepared"] + counts["quarantined"] + counts["ignored"] + counts["subset_excluded"]
    assert counts["quarantined"] == 1 and counts["ignored"] == 1  # broken.jpg; notes.txt: not an image extension


def test_compress_and_export_make_checked_deployable_models(tiny_repo):
    compressed = json.loads((tiny_repo / "reports" / "compress.json").read_text())
    variants = compressed["variants"]
    assert variants["pruned"]["params"] < compressed["baseline"]["params"]
    assert variants["student"]["model"] == "sp_dwcnn_s"
    assert all(v["accepted"] for v in variants.values())   # TINY_OVERRIDES' budget accepts any loss
    table = json.loads((tiny_repo / "reports" / "compression.json").read_text())
    by_runtime = {(c["variant"], c["runtime"]): c for c in table["parity"]}
    for variant in ("baseline", "pruned", "student"):
        fp32, int8 = by_runtime[(variant, "onnx fp32")], by_runtime[(variant, "onnx int8")]
        assert fp32["max_abs_diff"] < 1e-4 and fp32["top1_agreement"] == 1.0
        assert int8["top1_agreement"] >= 0.9
    assert table["skipped"]["tensorrt fp16"].startswith("skipped: ")
    assert table["int8_format"]["format"] in {"s8s8", "u8s8_reduce_range"}
    rows = {(r["variant"], r["runtime"]) for r in table["rows"]}
    assert {(v, rt) for v in ("baseline", "pruned", "student") for rt in ("eager torch", "onnx fp32", "onnx int8")} <= rows
    for r in table["rows"]:
        assert set(r["latency"]) == {"1", "8"} and all(c["p50_ms"] <= c["p95_ms"] for c in r["latency"].values())
    served = table["served"]    # the rule's pick is the fastest candidate at batch 1 (every one is within 100 points)
    assert served["rule"] == "fastest_within_budget"
    assert served["p50_ms"] == min(c["p50_ms"] for c in table["candidates"])
    from skillpack.deploy.onnx_runtime import onnx_metadata

    served_meta = onnx_metadata(tiny_repo / "models" / "export" / "model.onnx")
    assert served_meta["variant"] == served["variant"] and "classes" in served_meta
    report = (tiny_repo / "reports" / "compression.md").read_text()
    assert "| pruned | eager torch |" in report and "tensorrt fp16" in report and "**Served**" in report
    card = (tiny_repo / "reports" / "model_card.md").read_text()
    assert "uint8" in card and "Trouser" in card
    import onnxruntime as ort

    session = ort.InferenceSession(str(tiny_repo / "models" / "export" / "model.onnx"))
    pixels = np.load(tiny_repo / "data" / "prepared" / "test_images.npy")[:4]
    assert session.run(None, {"pixels": pixels})[0].shape == (4, 10)
    client = MlflowClient(tracking_uri=f"sqlite:///{tiny_repo / 'mlflow.db'}")
    version = client.get_model_version_by_alias("skillpack-classifier", "candidate-onnx")
    assert version.tags["format"] == "onnx" and "uint8" in version.description
    import mlflow.pyfunc

    mlflow.set_tracking_uri(f"sqlite:///{tiny_repo / 'mlflow.db'}")
    registered = mlflow.pyfunc.load_model("models:/skillpack-classifier@candidate-onnx")
    assert registered.metadata.get_input_schema().inputs[0].type == np.dtype("uint8")
    table = registered.predict(pixels)
    classes = json.loads((tiny_repo / "data" / "prepared" / "classes.json").read_text())
    assert list(table.columns[:2]) == ["class", "probability"] and set(table["class"]) <= set(classes)
    assert np.allclose(table[[f"p_{c}" for c in classes]].sum(axis=1), 1.0, atol=1e-5)
    expected = session.run(None, {"pixels": pixels})[0].argmax(1)
    assert [classes.index(c) for c in table["class"]] == expected.tolist()


def test_changing_the_prune_ratio_reruns_only_compress_and_export(tiny_repo, tmp_path):
    from conftest import copy_project

    repo = copy_project(tiny_repo, tmp_path / "repo")
    run([sys.executable, "-m", "dvc", "repro"], repo, env=project_env(repo))   # settle what earlier tests left stale
    set_params(repo, {"compress.prune_ratio": 0.3})
    proc = run([sys.executable, "-m", "dvc", "repro"], repo, env=project_env(repo))
    ran = set(re.findall(r"Running stage '([a-z_]+)'", proc.stdout))
    assert ran == {"check_params", "compress", "export"}, proc.stdout[-2000:]
    assert json.loads((repo / "reports" / "compress.json").read_text())["prune_ratio"] == 0.3


def test_renaming_the_experiment_or_an_alias_reruns_nothing_and_the_registry_follows(tiny_repo, tmp_path):
    """registry: and runtime: are not DVC params: a rename leaves every stage up to date, and
    `skillpack registry sync` points the renamed alias at the version the old name pointed at;
    a training param changes train and no stage before it."""
    from conftest import copy_project
    from mlflow import MlflowClient

    repo = copy_project(tiny_repo, tmp_path / "repo", keep_tracking=True)
    env = project_env(repo)
    run([sys.executable, "-m", "dvc", "repro"], repo, env=env)   # settle what earlier tests left stale
    set_params(repo, {"registry.experiment": "renamed-experiment", "registry.aliases.candidate_onnx": "onnx-next",
                      "runtime.compile": "default"})
    status = run([sys.executable, "-m", "dvc", "status", "dvc.yaml"], repo, env=env)  # the pipeline's stages
    assert "Data and pipelines are up to date" in status.stdout, status.stdout
    run([sys.executable, "-m", "skillpack.cli", "registry", "sync"], repo, env=env)
    client = MlflowClient(tracking_uri=f"sqlite:///{repo / 'mlflow.db'}")
    old = client.get_model_version_by_alias("skillpack-classifier", "candidate-onnx").version
    assert client.get_model_version_by_alias("skillpack-classifier", "onnx-next").version == old
    # A training param changes train (and check_params, which declares every section) and no stage
    # before it; what follows train re-runs because train's outputs change: DVC's own rule, run for
    # real by the prune-ratio test above and timed at full size by benchmarks.pipeline_time.
    set_params(repo, {"train.optimizer.momentum": 0.85})
    status = json.loads(run([sys.executable, "-m", "dvc", "status", "--json", "dvc.yaml"], repo, env=env).stdout)
    assert {"check_params", "train"} <= set(status), status
    assert not set(status) & {"prepare", "validate", "oof", "clean", "alerts"}, status


def test_the_service_loads_the_registered_model_by_alias_with_a_fallback(tiny_repo, monkeypatch, caplog):
    from skillpack.deploy.serving.model import load_registered

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tiny_repo / 'mlflow.db'}")
    monkeypatch.setenv("SKILLPACK_ROOT", str(tiny_repo))
    with caplog.at_level("WARNING", logger="skillpack.deploy.serving"):  # an alias no test sets (champion may exist)
        served = load_registered("skillpack-classifier", "no-such-alias", "candidate-onnx")
    assert served.version.endswith("@candidate-onnx") and served.source == "models:/skillpack-classifier@candidate-onnx"
    assert "no alias 'no-such-alias'; falling back to 'candidate-onnx'" in caplog.text
    pixels = np.load(tiny_repo / "data" / "prepared" / "test_images.npy")[:3]
    assert np.allclose(served.probabilities(pixels).sum(axis=1), 1.0, atol=1e-5)


def test_mlflow_models_serve_answers_class_names_for_raw_pixels(tiny_repo):
    """What MLflow users expect: `mlflow models serve` on the registered version, raw uint8 in."""
    import subprocess
    import time

    import httpx

    from skillpack.deploy.monitoring import free_port

    port = free_port()
    env = project_env(tiny_repo)
    proc = subprocess.Popen([sys.executable, "-m", "mlflow", "models", "serve", "-m",
                             "models:/skillpack-classifier@candidate-onnx", "--env-manager", "local", "-h", "127.0.0.1",
                             "-p", str(port), "-w", "1"], cwd=tiny_repo, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        pixels = np.load(tiny_repo / "data" / "prepared" / "test_images.npy")[:3]
        deadline, reply = time.time() + 120, None
        while time.time() < deadline and proc.poll() is None:
            try:
                reply = httpx.post(f"http://127.0.0.1:{port}/invocations", json={"inputs": pixels.tolist()}, timeout=10)
                break
            except httpx.HTTPError:
                time.sleep(0.5)
        assert reply is not None and reply.status_code == 200, proc.stderr.read()[-2000:] if proc.poll() else reply
        rows = reply.json()["predictions"]
        classes = json.loads((tiny_repo / "data" / "prepared" / "classes.json").read_text())
        assert len(rows) == 3 and all(r["class"] in classes and 0 < r["probability"] <= 1 for r in rows)
    finally:
        import os
        import signal

        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(20)


def _numbers_only(node, path="") -> list[str]:
    """Paths of every non-number leaf of `dvc metrics show --json`'s data."""
    if isinstance(node, dict):
        return [p for key, value in node.items() for p in _numbers_only(value, f"{path}.{key}")]
    return [] if isinstance(node, (int, float)) and not isinstance(node, bool) else [f"{path}={node!r}"]


def test_dvc_metrics_are_numbers_that_fit_a_160_column_terminal(tiny_repo):
    env = {**project_env(tiny_repo), "COLUMNS": "1000"}  # let the tables be as wide as they are
    shown = json.loads(run([sys.executable, "-m", "dvc", "metrics", "show", "--json"], tiny_repo, env).stdout)
    files = shown[""]["data"]
    assert set(files) == {f"reports/metrics/{s}.json" for s in ("oof", "clean", "train", "evaluate")}
    assert _numbers_only({f: body["data"] for f, body in files.items()}) == []
    table = run([sys.executable, "-m", "dvc", "metrics", "show"], tiny_repo, env).stdout
    assert "test_accuracy" in table and max(map(len, table.splitlines())) <= 160, table


def test_stage_runs_of_one_dvc_repro_share_a_repro_id_and_versions_carry_their_lineage(tiny_repo):
    client = MlflowClient(tracking_uri=f"sqlite:///{tiny_repo / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("skillpack")
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"  # the UI opens on training runs
    stage_runs = [r for r in client.search_runs([experiment.experiment_id]) if r.data.tags["stage"] != "pipeline"]
    flow_id = flow_result(tiny_repo)["parent_run_id"]   # the fixture's flow: its parent run's id for every stage
    assert STAGES <= {r.data.tags["stage"] for r in stage_runs if r.data.tags["skillpack.repro_id"] == flow_id}
    before = {r.info.run_id for r in client.search_runs([experiment.experiment_id])}
    run([sys.executable, "-m", "dvc", "repro", "--force", "validate"], tiny_repo, env=project_env(tiny_repo))
    plain = [r for r in client.search_runs([experiment.experiment_id]) if r.info.run_id not in before]
    assert {r.data.tags["stage"] for r in plain} == {"prepare", "validate"}   # a plain `dvc repro`: its own id
    (repro_id,) = {r.data.tags["skillpack.repro_id"] for r in plain}
    assert repro_id.startswith("dvc-")
    commit = run(["git", "rev-parse", "HEAD"], tiny_repo).stdout.strip()
    for alias, metric in (("candidate", "test.test_accuracy"), ("candidate-onnx", "baseline.onnx_fp32.test_accuracy")):
        version = client.get_model_version_by_alias("skillpack-classifier", alias)
        assert version.tags["git_commit"] == commit and len(version.tags["data_hash"]) == 16, alias
        assert 0.5 < float(version.tags[metric]) <= 1.0 and len(version.description) > 100, (alias, version.tags)


def test_a_pushed_pipeline_pulled_into_a_fresh_copy_is_up_to_date_and_exp_show_fits(tiny_repo, tmp_path):
    import configparser
    import shutil

    from conftest import ROOT

    committed = configparser.ConfigParser()
    committed.read(ROOT / ".dvc" / "config")
    assert committed["core"]["remote"] == "local"
    assert committed['\'remote "local"\'']["url"] == "~/.cache/skillpack/dvc-remote"
    env = project_env(tiny_repo)
    run([sys.executable, "-m", "dvc", "repro"], tiny_repo, env)   # settle what earlier tests left stale
    run([sys.executable, "-m", "dvc", "push"], tiny_repo, env)
    clone = tmp_path / "clone"
    outputs = {".dvc/cache", ".dvc/tmp", "data/prepared", "data/oof", "data/cleaned", "models", "mlflow.db", "mlartifacts"}

    def pipeline_outputs(folder, names):
        return [n for n in names if str((Path(folder) / n).relative_to(tiny_repo)) in outputs]

    shutil.copytree(tiny_repo, clone, ignore=pipeline_outputs)
    assert not (clone / "models").exists()
    run([sys.executable, "-m", "dvc", "pull"], clone, project_env(clone))
    assert (clone / "models" / "model.pt").read_bytes() == (tiny_repo / "models" / "model.pt").read_bytes()
    status = run([sys.executable, "-m", "dvc", "status", "dvc.yaml"], clone, project_env(clone)).stdout
    assert "up to date" in status, status
    # the user's next step: commit the pipeline's state, try a param; the table stays readable
    run(["git", "add", "-A"], clone)
    run(["git", "commit", "-q", "-m", "pipeline state"], clone)
    set_params(clone, {"train.epochs": TINY_OVERRIDES["train.epochs"] + 1})
    env = {**project_env(clone), "COLUMNS": "1000"}
    table = run([sys.executable, "-m", "dvc", "exp", "show", "--only-changed", "--no-pager"], clone, env).stdout
    assert "train.epochs" in table and max(map(len, table.splitlines())) <= 160, table


@pytest.mark.fault('the disk fills during prepare (EFBIG): old store whole, one line', guards=('lost', 'traceback'))
def test_a_disk_that_fills_during_prepare_leaves_the_old_store_whole_and_says_so_in_one_line(prepared_project,
                                                                                             tmp_path):
    import resource

    from conftest import copy_project

    repo = copy_project(prepared_project, tmp_path / "repo")
    store = repo / "data" / "prepared"
    before = {p.name: p.read_bytes() for p in store.iterdir()}

    def small_files():   # a real write error: files over 256 KB fail with EFBIG (Python ignores SIGXFSZ)
        resource.setrlimit(resource.RLIMIT_FSIZE, (256 * 1024, 256 * 1024))
    proc = subprocess.run([sys.executable, "-m", "stages.prepare"], cwd=repo, env=project_env(repo),
                          capture_output=True, text=True, preexec_fn=small_files, timeout=300)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    (line,) = proc.stderr.strip().splitlines()
    assert "nothing was replaced (writes are atomic)" in line and ("file too large" in line or "cut short" in line)
    assert {p.name: p.read_bytes() for p in store.iterdir()} == before
    assert [p.name for p in store.parent.iterdir() if p.name.startswith(".prepared")] == []


@pytest.mark.fault("the MLflow server killed in the middle of training: model and reports written, one line on the "
                   "tracking that was lost", guards=("lost", "traceback"))
def test_a_tracking_server_killed_mid_training_loses_no_output(prepared_project, tmp_path):
    import signal
    import time

    from conftest import copy_project, wait_until_answers

    from skillpack.deploy.monitoring import free_port

    repo = copy_project(prepared_project, tmp_path / "repo", {"train.epochs": 4})
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
                               "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
                               "--artifacts-destination", str(tmp_path / "artifacts"), "--workers", "1"],
                              cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_until_answers(f"{uri}/health")
        stage = subprocess.Popen([sys.executable, "-m", "stages.train"], cwd=repo,
                                 env={**project_env(repo), "MLFLOW_TRACKING_URI": uri},
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        log = repo / "reports" / "train_log.csv"
        while not log.exists() and stage.poll() is None:   # the first epoch is logged: now the server dies
            time.sleep(0.2)
        os.killpg(server.pid, signal.SIGKILL)
        out, err = stage.communicate(timeout=600)
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGKILL)
    assert stage.returncode == 0 and "Traceback" not in err, err[-3000:]
    lost = [line for line in err.splitlines() if "stopped answering" in line]
    assert len(lost) == 1 and uri in lost[0] and "dvc repro --force" in lost[0], err[-2000:]
    assert "not registered: the tracking server stopped answering" in out
    from skillpack.train.checkpoint import load_classifier
    load_classifier(repo / "models" / "model.pt")
    assert json.loads((repo / "reports" / "train.json").read_text())["epochs_trained"] == 4
