"""Shared fixtures: real Fashion-MNIST subsets and a throw-away git + DVC copy of the project."""
from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from skillpack.runtime import configure

configure()   # the test process is an entry point: OMP, DVC, MLflow and Prefect settings before torch loads

ROOT = Path(__file__).resolve().parent.parent
PROJECT_FILES = ["dvc.yaml", "params.yaml", "pyproject.toml", "recipes.yaml", "claims.yaml", "skillpack", "stages",
                 "flows", "ablations", "prefect.yaml"]
FMNIST = Path("/usr/share/datasets/fashion-mnist")

# The small real subset the end-to-end tests train on.
TINY_OVERRIDES = {
    "data.max_train": 2000, "data.max_test": 500, "train.epochs": 2, "train.batch_size": 128,
    "train.schedule.warmup_epochs": 0, "clean.oof.folds": 2, "clean.oof.train.epochs": 1,
    "compress.finetune.epochs": 1, "compress.student.model": "sp_dwcnn_s",
    "compress.student.epochs": 1, "compress.max_drop_points": 100.0, "export.quantize.calibration_images": 128,
    "export.latency_batches": [1, 8], "export.latency_seconds": 0.05, "export.aoti_cpu": False,
    "evaluate.explain.tsne_samples": 300,
}

# A real (if tiny) PostScript program: Pillow's EPS plugin, which runs Ghostscript, claims it.
POSTSCRIPT = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\nnewpath 0 0 moveto 8 8 lineto stroke\nshowpage\n"


class StopTraining(Exception):
    """Raised from an on_epoch callback: a run interrupted after its first epoch."""


def stop_after_first_epoch(record, history, model):
    raise StopTraining


def require_fmnist() -> None:
    """Data tests fail (not skip) without the data; pure unit tests run regardless."""
    if not FMNIST.is_dir():
        pytest.fail(f"{FMNIST} missing: `apt-get install dataset-fashion-mnist` (make test does it)", pytrace=False)


@pytest.fixture(scope="session")
def fmnist():
    from skillpack.data import load_source

    require_fmnist()
    return load_source("fashion_mnist")


@pytest.fixture
def mlflow_uri(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("SKILLPACK_ROOT", str(tmp_path))
    return uri


def set_params(repo: Path, overrides: dict) -> None:
    path = repo / "params.yaml"
    params = yaml.safe_load(path.read_text())
    for key, value in overrides.items():
        node = params
        *parents, leaf = key.split(".")
        for part in parents:
            node = node[part]
        node[leaf] = value
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def run(cmd: list[str], cwd: Path, env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"{cmd} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def make_project_repo(dest: Path, overrides: dict | None = None) -> Path:
    """A fresh git repo holding a copy of the project, `dvc init`-ed, committed."""
    if (overrides or {}).get("data.source", "fashion_mnist") == "fashion_mnist":
        require_fmnist()
    dest.mkdir(parents=True, exist_ok=True)
    for name in PROJECT_FILES:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "results"))
        else:
            shutil.copy2(src, dest / name)
    (dest / ".gitignore").write_text("/mlflow.db\n/mlartifacts/\n/.prefect/\n__pycache__/\n")
    set_params(dest, {**TINY_OVERRIDES, **(overrides or {})})
    run(["git", "init", "-q", "-b", "main"], dest)
    run(["git", "config", "user.email", "test@skillpack"], dest)
    run(["git", "config", "user.name", "skillpack tests"], dest)
    run([sys.executable, "-m", "dvc", "init", "-q"], dest)
    shutil.copy2(ROOT / ".dvc" / "config", dest / ".dvc" / "config")  # the project's default remote ...
    run([sys.executable, "-m", "dvc", "remote", "modify", "--local", "local", "url", str(dest.parent / "dvc-remote")],
        dest)  # ... pointed, for tests only, at a temporary folder instead of ~/.cache
    run(["git", "add", "-A"], dest)
    run(["git", "commit", "-q", "-m", "project"], dest)
    return dest


def project_env(repo: Path) -> dict:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{repo / 'mlflow.db'}"
    env["SKILLPACK_ROOT"] = str(repo)
    env["PYTHONPATH"] = str(repo)
    return env


@pytest.fixture(scope="session")
def prefect_server() -> str:
    """Prefect's own server (the test harness starts a real one on a free local port), once per
    test run: its API URL, for the flows the tests start in a process of their own (as
    PREFECT_API_URL), which then need no temporary server each."""
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield PREFECT_API_URL.value()


@pytest.fixture(scope="session")
def tiny_repo(tmp_path_factory, prefect_server) -> Path:
    """The project in a temp git repo, its pipeline run once on the tiny real subset the way
    `make run` runs it: the Prefect flow (`dvc repro` per stage under one MLflow parent run),
    against the test run's Prefect server. The flow's result line is kept beside the repo
    (flow_result) for the flow's own test, so no test has to run the pipeline a second time."""
    from flows.pipeline import RESULT_MARKER

    repo = make_project_repo(tmp_path_factory.mktemp("project"))
    proc = run([sys.executable, "-m", "flows.pipeline", "--repo", str(repo)], repo,
               env={**project_env(repo), "PREFECT_API_URL": prefect_server})
    (line,) = [x for x in proc.stdout.splitlines() if x.startswith(RESULT_MARKER)]
    (repo.parent / "flow-result.json").write_text(line[len(RESULT_MARKER):])
    return repo


def wait_until_answers(url: str, timeout: float = 120) -> None:
    """Poll `url` until it answers 200 (a server just started), else fail naming it."""
    import httpx

    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise AssertionError(f"{url} did not answer within {timeout:.0f} s")


def flow_result(repo: Path) -> dict:
    """What the tiny repo's pipeline flow returned (its last line): parent run id, test accuracy,
    seconds per stage."""
    import json

    return json.loads((repo.parent / "flow-result.json").read_text())


@pytest.fixture(scope="session")
def prepared_project(tmp_path_factory) -> Path:
    """The project in a temp git repo on the tiny real subset, prepared and validated once per
    test run (`dvc repro validate`): the tests that need a prepared store work on copies of it
    (copy_project), with their own params beyond the data's."""
    repo = make_project_repo(tmp_path_factory.mktemp("prepared") / "project")
    run([sys.executable, "-m", "dvc", "repro", "validate"], repo, env=project_env(repo))
    return repo


def copy_project(prepared: Path, dest: Path, overrides: dict | None = None, keep_tracking: bool = False) -> Path:
    """A copy of `prepared` (its git history, DVC cache and outputs; a fresh MLflow database
    unless `keep_tracking`) with `overrides` set in params.yaml: a test that changes params
    works on its own copy, so nothing has to be put back. The data params stay the prepared
    ones: a change there would make DVC prepare again."""
    data = {key: value for key, value in (overrides or {}).items() if key.split(".")[0] == "data"}
    assert not data, f"copy_project: {data} would change the prepared data; use make_project_repo"
    ignore = None if keep_tracking else shutil.ignore_patterns("mlflow.db", "mlartifacts")
    shutil.copytree(prepared, dest, symlinks=True, ignore=ignore)
    local = dest / ".dvc" / "config.local"  # the remote make_project_repo set, moved along (as `dvc remote modify`)
    local.write_text(local.read_text().replace(str(prepared.parent / "dvc-remote"), str(dest.parent / "dvc-remote")))
    set_params(dest, overrides or {})
    return dest


@pytest.fixture(scope="session")
def small_model(fmnist):
    """sp_cnn_s trained for 2 epochs on 2,000 real images (seed 0), once per test run, on the CPU
    in eval mode, with its training images: the model the serving and promotion tests serve."""
    from skillpack.config import TrainParams
    from skillpack.train.runs import RunData, train_model

    x, y = small_split(fmnist, 2500)
    cfg = TrainParams.model_validate({"model": "sp_cnn_s", "epochs": 2, "batch_size": 64})
    model = train_model(cfg, RunData((x[:2000], y[:2000]), (x[2000:], y[2000:]), 10), seed=0).model.cpu().eval()
    return model, x[:2000]


def small_split(source, n: int, seed: int = 0):
    """First-n-per-class-balanced numpy arrays from a loaded source's train split."""
    rng = np.random.default_rng(seed)
    split = source.splits["train"]
    index = np.sort(rng.choice(len(split.labels), size=n, replace=False))
    return split.images[index], split.labels[index]


# ------------------------------------------------------------------ the two tiers
#
# `make test-fast` (pytest -m "not integration") runs the unit tier, `make test` both tiers.
# The integration tier: tests that start a process or a server, run real DVC / MLflow / Prefect /
# Prometheus, or train for more than a step or two. A test is in it when its module is listed
# below, when it is listed by name, when it uses a fixture listed below (each starts or trains
# something), or when it says so itself with @pytest.mark.integration.

INTEGRATION_MODULES = {
    "test_cli", "test_ddp", "test_deployments", "test_docker", "test_flow", "test_gpu_bench", "test_pipeline",
    "test_lint", "test_skills_wiring", "test_stage_imports",
}
INTEGRATION_FIXTURES = {
    "prefect_server", "prepared_project", "small_model", "tiny_repo",                        # this file's
    "deployed", "planted", "prepared_repo", "registry", "served", "service", "tiny_splits", "trained",  # modules'
}
INTEGRATION_TESTS = {
    "test_ablation": {"test_quick_ablation_flow_runs_resumes_and_reports"},
    "test_benchmark_helpers": {"test_noise_draws_flip_their_own_labels_and_add_to_the_stored_results"},
    "test_checkpoint": {"test_a_temp_file_left_by_a_killed_writer_is_removed_at_the_next_write"},
    "test_cleaning": {"test_oof_and_clean_stages_drop_policy_end_to_end",
                      "test_clean_stage_refuses_to_drop_when_the_fold_models_are_at_chance"},
    "test_compress": {"test_a_pruned_model_trains_and_its_fine_tune_starts_from_the_pruned_weights"},
    "test_dask": {"test_ablation_runs_on_a_two_worker_local_dask_cluster"},
    "test_engine": {"test_training_learns_and_is_deterministic",
                    "test_bf16_autocast_on_cpu_runs_where_the_cpu_has_bf16_units_and_stays_deterministic",
                    "test_another_seed_gives_other_weights",
                    "test_skill_combinations_train_and_resume_deterministically",
                    "test_sigkilled_training_resumes_to_the_weights_of_an_uninterrupted_run",
                    "test_every_step_s_loss_is_recorded_once_per_epoch_and_resumes_from_old_checkpoints",
                    "test_step_losses_of_the_resident_path_equal_the_host_path_s"},
    "test_explain": {"test_gradcam_on_a_cnn_lights_up_the_deciding_patch",
                     "test_gradcam_on_a_vit_uses_the_real_patch_grid_and_lights_up_the_patch",
                     "test_explain_model_writes_every_artifact"},
    "test_export": {"test_aoti_package_compiles_for_the_cpu_and_matches_eager"},
    "test_imagefolder": {"test_prepare_refuses_a_near_limit_bomb_from_its_header_in_little_memory"},
    "test_metrics": {"test_a_model_memorising_a_tiny_set_is_flagged",
                     "test_train_and_evaluate_reports_the_ablation_figures"},
    "test_model_names": {"test_missing_list_is_made_and_records_timms_version",
                         "test_a_list_made_for_another_timm_version_is_remade",
                         "test_the_install_step_writes_the_list"},
    "test_resident": {"test_resident_path_on_a_cpu_is_bit_identical_to_the_host_path",
                      "test_a_host_checkpoint_resumes_on_the_resident_path_to_the_same_weights",
                      "test_compile_runs_before_the_first_epoch_timed_apart_and_changes_nothing"},
    "test_serving": {"test_generated_rules_pass_promtool_check_and_their_unit_tests"},
    "test_runtime": {"test_importing_skillpack_and_its_modules_sets_nothing"},
    "test_stream": {"test_a_real_child_streams_live_to_the_terminal_and_throttled_to_the_log",
                    "test_a_failing_child_raises_with_the_tail_of_its_output"},
}


def is_integration(item: pytest.Item) -> bool:
    module, name = item.path.stem, getattr(item, "originalname", item.name)
    return (module in INTEGRATION_MODULES or name in INTEGRATION_TESTS.get(module, ())
            or bool(INTEGRATION_FIXTURES & set(getattr(item, "fixturenames", ())))
            or item.get_closest_marker("integration") is not None)


def check_integration_names(items) -> None:
    """A renamed test must not fall into the unit tier unnoticed: every name INTEGRATION_TESTS
    lists for a collected module is a function of that module."""
    for module in {item.module for item in items if isinstance(item, pytest.Function)}:
        stem = Path(module.__file__).stem
        missing = sorted(name for name in INTEGRATION_TESTS.get(stem, ()) if not hasattr(module, name))
        if missing:
            raise pytest.UsageError(f"tests/conftest.py INTEGRATION_TESTS[{stem!r}]: {', '.join(missing)}: "
                                    f"no such test in {module.__file__}")


# `make test` runs two pytest-xdist workers (--dist loadgroup): a group's tests run on one worker,
# in file order. The tests that use a session fixture of a minute or more form one group, so it is
# built once per test run, not once per worker; every other group is a test file, so its module
# fixtures are built once and its tests keep their order.
SHARED_FIXTURES = ("prepared_project", "tiny_repo")


def xdist_group(item: pytest.Item) -> str:
    used = set(getattr(item, "fixturenames", ()))
    return next((name for name in SHARED_FIXTURES if name in used), item.path.stem)


def pytest_itemcollected(item):
    """The item's xdist group, marked as it is collected (before any collection_modifyitems
    hook: pytest-xdist reads the group in its own)."""
    item.add_marker(pytest.mark.xdist_group(xdist_group(item)))


def shared_fixture_groups_first(items: list) -> None:
    """The SHARED_FIXTURES groups first, in that order (a stable sort: file order otherwise kept).
    With --no-loadscope-reorder xdist hands out groups in this order, one to each worker first:
    the two longest groups start at once, on different workers, and the short ones fill in."""
    rank = {name: i for i, name in enumerate(SHARED_FIXTURES)}
    items.sort(key=lambda item: rank.get(xdist_group(item), len(rank)))


@pytest.hookimpl(tryfirst=True)   # before -m deselects by marker
def pytest_collection_modifyitems(config, items):
    check_integration_names(items)
    shared_fixture_groups_first(items)
    for item in items:
        if is_integration(item):
            item.add_marker(pytest.mark.integration)


# The unit tier's guard: a test outside the integration tier fails when it starts a process, or
# when its call takes longer than UNIT_TEST_SECONDS (its fixtures' set-up not counted; set
# SKILLPACK_UNIT_TEST_SECONDS to change the limit on a slower machine).
UNIT_TEST_SECONDS = float(os.environ.get("SKILLPACK_UNIT_TEST_SECONDS", "15"))


# Commands of a few milliseconds that libraries run on their own: the commit a run is tagged
# with (skillpack.tracking.git_commit), joblib's count of physical cores (`lscpu`, once per
# process, from whichever test first uses scikit-learn's parallel code), ctypes' library lookup
# when torch loads (`ldconfig -p`) and `platform.processor()` (`uname -p`).
CHEAP_COMMANDS = {"git", "ldconfig", "lscpu", "uname"}


@contextlib.contextmanager
def no_process_started(item: pytest.Item):
    """Fail `item` at the first process it starts (subprocess, multiprocessing), CHEAP_COMMANDS aside."""
    import multiprocessing.process

    def refuse(what):
        pytest.fail(f"{item.nodeid} starts a process ({what}) but is not in the integration tier: mark it "
                    f"integration (tests/conftest.py INTEGRATION_*) or make it start none", pytrace=False)

    def execute_child_unless_heavy(self, args, *rest, **kwargs):
        command = [args] if isinstance(args, (str, bytes, os.PathLike)) else list(args)
        if Path(os.fsdecode(command[0])).name not in CHEAP_COMMANDS:
            refuse(args)
        return execute_child(self, args, *rest, **kwargs)

    execute_child, process_start = subprocess.Popen._execute_child, multiprocessing.process.BaseProcess.start
    subprocess.Popen._execute_child = execute_child_unless_heavy
    multiprocessing.process.BaseProcess.start = lambda self: refuse(f"multiprocessing {self.name}")
    try:
        yield
    finally:
        subprocess.Popen._execute_child, multiprocessing.process.BaseProcess.start = execute_child, process_start


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item):
    if item.get_closest_marker("integration"):
        return (yield)
    with no_process_started(item):
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    if item.get_closest_marker("integration"):
        return (yield)
    start = time.perf_counter()
    with no_process_started(item):
        result = yield
    seconds = time.perf_counter() - start
    if seconds > UNIT_TEST_SECONDS:
        pytest.fail(f"{item.nodeid} took {seconds:.1f} s, over the unit tier's {UNIT_TEST_SECONDS:.0f} s: make it "
                    f"cheaper or mark it integration (tests/conftest.py INTEGRATION_*)", pytrace=False)
    return result
