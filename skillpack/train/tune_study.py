"""The Optuna side of `skillpack tune`: where the study lives, how workers share it, and how a
trial of a dead worker ends.

Storage: a journal file (Optuna's JournalStorage, appended under a file lock) for worker
processes on one machine; an RDB URL (postgresql+psycopg2://...) for workers on several. A
worker killed with SIGKILL leaves its trial RUNNING; the next claim of any worker ends it FAIL
and queues its values once more (RetryFailedTrialCallback). The RDB storage knows dead workers by
their heartbeats; the journal storage has none, so each trial carries its worker's host, pid and
process start time, and a trial of this host whose process is gone is failed here.

The budget is exact across workers: a worker asks for a trial, and when the trials ahead of it
already fill params tune.n_trials it hands the trial back to the queue (WAITING, no values drawn
yet) instead of running it."""
from __future__ import annotations

import os
import socket
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.trial import TrialState

from skillpack.config import ParamsError, TuneParams

ENDED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
WORKER_ATTR = "worker"          # user attr: {"host", "pid", "started"} of the process running the trial
PARENT_RUN_ATTR = "mlflow_parent_run_id"   # study user attr: the study's MLflow run
with warnings.catch_warnings():   # "experimental" since Optuna 2.8; the replacement of RetryFailedTrialCallback
    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
    retry_failed = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1)   # a dead worker's trial: once more


def journal_path(cfg: TuneParams, folder: Path) -> Path:
    return folder / f"{cfg.study}.journal"


def open_storage(cfg: TuneParams, folder: Path) -> optuna.storages.BaseStorage:
    from optuna.storages.journal import JournalFileBackend

    if cfg.storage is None:
        folder.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(JournalFileBackend(str(journal_path(cfg, folder))))
    if "://" not in cfg.storage:
        raise ParamsError(f"params tune.storage: {cfg.storage!r} is not a database URL (postgresql+psycopg2://"
                          f"user:password@host:5432/optuna); null keeps the journal file in {folder}/")
    return optuna.storages.RDBStorage(cfg.storage, heartbeat_interval=cfg.heartbeat_s,
                                      heartbeat_stale_trial_callback=retry_failed)


def this_worker() -> dict:
    import psutil

    return {"host": socket.gethostname(), "pid": os.getpid(), "started": psutil.Process().create_time()}


def worker_is_gone(worker: dict) -> bool:
    """A trial's worker on this host whose process no longer runs (a reused pid has another start time)."""
    import psutil

    if worker.get("host") != socket.gethostname():
        return False   # another machine's worker: only its heartbeat (RDB storage) can tell
    try:
        process = psutil.Process(worker["pid"])
        return abs(process.create_time() - worker["started"]) > 1e-3 or process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@dataclass
class SharedStudy:
    """A study and the storage it lives in (kept here: Optuna's Study gives no public handle on it)."""
    study: optuna.Study
    storage: optuna.storages.BaseStorage
    created: bool                # this process created it (and queued the current recipe)

    def trial_id(self, number: int) -> int:
        return self.storage.get_trial_id_from_study_id_trial_number(
            self.storage.get_study_id_from_name(self.study.study_name), number)

    @property
    def beats(self) -> bool:
        return isinstance(self.storage, optuna.storages.RDBStorage)


def create_or_join(cfg: TuneParams, folder: Path, sampler, pruner,
                   directions: tuple[str, ...] = ("maximize",)) -> SharedStudy:
    """The study of params tune: created by the first worker (maximising validation accuracy, or
    with `directions`, one per objective), joined by the others."""
    storage = open_storage(cfg, folder)
    try:
        study = optuna.create_study(storage=storage, study_name=cfg.study, sampler=sampler, pruner=pruner,
                                    directions=list(directions))
        return SharedStudy(study, storage, created=True)
    except optuna.exceptions.DuplicatedStudyError:
        return SharedStudy(optuna.load_study(study_name=cfg.study, storage=storage, sampler=sampler, pruner=pruner),
                           storage, created=False)


def wait_for_attr(study: optuna.Study, name: str, timeout_s: float = 120.0):
    """A study user attr the creating worker sets once it has set the study up (None after `timeout_s`)."""
    deadline = time.monotonic() + timeout_s
    while name not in study.user_attrs and time.monotonic() < deadline:
        time.sleep(0.2)
    return study.user_attrs.get(name)


def fail_dead_workers_trials(shared: SharedStudy) -> list[int]:
    """End the RUNNING trials whose worker died FAIL, queue their values once more: their numbers."""
    study = shared.study
    if shared.beats:
        before = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))}
        optuna.storages.fail_stale_trials(study)
        return sorted({t.number for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))} - before)
    failed = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = trial.user_attrs.get(WORKER_ATTR)
        if not (worker and worker_is_gone(worker)):
            continue
        trial_id = shared.trial_id(trial.number)
        try:
            if shared.storage.set_trial_state_values(trial_id, TrialState.FAIL):
                retry_failed(study, shared.storage.get_trial(trial_id))
                failed.append(trial.number)
        except optuna.exceptions.UpdateFinishedTrialError:   # another worker failed it first
            pass
    return failed


def claim_trial(shared: SharedStudy, n_trials: int | None, deadline: float | None) -> optuna.Trial | None:
    """The next trial for this worker (a queued one first), or None when the budget is spent: the
    trials up to this one's number, in any state but WAITING, would exceed `n_trials`, or the
    monotonic clock is past `deadline`."""
    fail_dead_workers_trials(shared)
    if deadline is not None and time.monotonic() >= deadline:
        return None
    taken = [t for t in shared.study.get_trials(deepcopy=False) if t.state != TrialState.WAITING]
    if n_trials is not None and len(taken) >= n_trials:   # spent, or the last trials still running elsewhere
        return None
    trial = shared.study.ask()
    if n_trials is not None:   # another worker may have asked since: hand back a trial past the budget
        ahead = [t for t in shared.study.get_trials(deepcopy=False)
                 if t.state != TrialState.WAITING and t.number <= trial.number]
        if len(ahead) > n_trials:
            shared.storage.set_trial_state_values(shared.trial_id(trial.number), TrialState.WAITING)
            return None
    trial.set_user_attr(WORKER_ATTR, this_worker())
    return trial


@contextmanager
def heartbeat(shared: SharedStudy, trial: optuna.Trial, interval_s: float) -> Iterator[None]:
    """RDB storage: the trial's heartbeat, recorded now and every `interval_s` until it ends."""
    if not shared.beats:
        yield
        return
    trial_id, stop = shared.trial_id(trial.number), threading.Event()

    def beat() -> None:
        while True:
            shared.storage.record_heartbeat(trial_id)
            if stop.wait(interval_s):
                return

    thread = threading.Thread(target=beat, name=f"heartbeat-trial-{trial.number}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def counts(study: optuna.Study) -> dict[str, int]:
    """Trials by state name, e.g. {"COMPLETE": 3, "PRUNED": 2}."""
    from collections import Counter

    return dict(Counter(t.state.name for t in study.get_trials(deepcopy=False)))
