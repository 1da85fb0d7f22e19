"""Sweeps sharing a study on a real PostgreSQL server (a throw-away one, tests/postgres.py): processes
that create the schema and the study at once, draw distinct trials, and survive a kill -9 of one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import REPO, nntrain_cmd
from postgres import postgres_server, postgres_url  # noqa: F401 - fixtures
from sweep_helpers import write_sweep

optuna = pytest.importorskip("optuna")
pytestmark = pytest.mark.filterwarnings("ignore:Heartbeat of storage:UserWarning")  # trials asked by hand

from nntrain.sweep.study import HEARTBEAT_ENV, driver_url  # noqa: E402 - after the optuna check

# Opens the study (schema and study creation) from several processes at the same instant: each
# imports everything, says it is ready (a file), and goes once all are.
_OPEN_AT_ONCE = """
import sys, time
from pathlib import Path
from nntrain.sweep import load_plan
from nntrain.sweep.study import open_study
path, url, folder, me, count = sys.argv[1], sys.argv[2], Path(sys.argv[3]), sys.argv[4], int(sys.argv[5])
plan = load_plan(path)
(folder / f"ready-{me}").touch()
while len(list(folder.glob("ready-*"))) < count:
    time.sleep(0.001)
study = open_study(plan, url, "shared", shared=True)
print(len(study.trials), getattr(plan, "sampler_seed", None))
"""


def _study(url: str, name: str = "test_run") -> list:
    return optuna.load_study(study_name=name, storage=driver_url(url)).get_trials()


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "NNTRAIN_SWEEP_STORAGE"}
    env.update(extra)
    return env


@pytest.mark.slow
def test_processes_create_the_schema_and_study_at_once(tmp_path, postgres_url):  # noqa: F811
    """Optuna's issue 1092: concurrent CREATE TABLE on a fresh database (UniqueViolation on pg_type)."""
    path = write_sweep(tmp_path)
    count = 3
    procs = [
        subprocess.Popen([sys.executable, "-c", _OPEN_AT_ONCE, str(path), postgres_url, str(tmp_path), str(i),
                          str(count)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO, env=_env())
        for i in range(count)
    ]
    outputs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outputs):
        assert p.returncode == 0, err
    seeds = [out.split()[1] for out, _ in outputs]
    assert len(set(seeds)) == count  # a shared study: every process seeds its sampler apart
    assert optuna.load_study(study_name="shared", storage=driver_url(postgres_url)).user_attrs["nntrain_config"]


@pytest.mark.slow
def test_two_sweeps_share_a_study_on_a_fresh_database(tmp_path, postgres_url):  # noqa: F811
    path = write_sweep(tmp_path, trials=6)
    env = _env(NNTRAIN_SWEEP_STORAGE=postgres_url)
    procs = [subprocess.Popen(nntrain_cmd("sweep", path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              cwd=REPO, env=env) for _ in range(2)]
    outputs = [p.communicate(timeout=600) for p in procs]
    for p, (out, err) in zip(procs, outputs):
        assert p.returncode == 0, out + err
        assert "UniqueViolation" not in err
    trials = _study(postgres_url)
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) >= 6
    assert not [t for t in trials if t.state == optuna.trial.TrialState.RUNNING]
    params = [json.dumps(t.params, sort_keys=True) for t in complete]
    assert len(set(params)) == len(params), params  # no two processes drew the same trial
    assert len({t.user_attrs["sampler_seed"] for t in complete}) == 2


@pytest.mark.slow
def test_a_sweep_killed_mid_trial_loses_no_trial(tmp_path, postgres_url):  # noqa: F811
    """kill -9 of one of two sweeps mid-trial: its trial is failed and run again (by the survivor or
    by --resume), until every requested trial completed; none is left RUNNING."""
    path = write_sweep(tmp_path, trials=6, epochs=20)  # trials of ~1 s: the victim is seen in one
    env = _env(NNTRAIN_SWEEP_STORAGE=postgres_url, **{HEARTBEAT_ENV: "1,3"})
    logs = [(tmp_path / f"sweep{i}.log").open("w") for i in range(2)]
    victim, survivor = (subprocess.Popen(nntrain_cmd("sweep", path), stdout=log, stderr=subprocess.STDOUT,
                                         cwd=REPO, env=env) for log in logs)
    try:
        deadline = time.monotonic() + 180
        cut = None
        while cut is None and time.monotonic() < deadline:  # the victim is in a trial
            assert victim.poll() is None, (tmp_path / "sweep0.log").read_text()
            try:
                trials = _study(postgres_url)
            except Exception:  # noqa: BLE001 - the study is not created yet
                trials = []
            cut = next((t for t in trials if t.state == optuna.trial.TrialState.RUNNING
                        and t.user_attrs.get("owner", {}).get("pid") == victim.pid
                        and Path(t.user_attrs.get("run_dir", "/nonexistent"), "config.yaml").exists()), None)
            time.sleep(0.2)
        assert cut is not None, "the victim never started a trial"
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait()
        victim_dir = Path(cut.user_attrs["run_dir"]).parent
        resumed = subprocess.run(nntrain_cmd("sweep", path, "--resume", victim_dir), capture_output=True,
                                 text=True, cwd=REPO, env=env, timeout=600)
        assert resumed.returncode == 0, resumed.stdout + resumed.stderr
        assert survivor.wait(timeout=600) == 0, (tmp_path / "sweep1.log").read_text()
    finally:
        for p in (victim, survivor):
            if p.poll() is None:
                p.kill()
        for log in logs:
            log.close()
    trials = _study(postgres_url)
    by_state = {s: [t for t in trials if t.state == s] for s in optuna.trial.TrialState}
    assert len(by_state[optuna.trial.TrialState.COMPLETE]) >= 6
    assert not by_state[optuna.trial.TrialState.RUNNING]
    if trials[cut.number].state != optuna.trial.TrialState.COMPLETE:  # not finished just before the kill
        assert trials[cut.number].state == optuna.trial.TrialState.FAIL
        assert any(t.params == cut.params for t in by_state[optuna.trial.TrialState.COMPLETE])  # run again
    params = [json.dumps(t.params, sort_keys=True) for t in by_state[optuna.trial.TrialState.COMPLETE]]
    assert len(set(params)) == len(params)
    text = "".join((tmp_path / f"sweep{i}.log").read_text() for i in range(2))
    assert "Cannot tell" not in text + resumed.stderr
