"""`nntrain sweep` under faults: workers that die with their parent, lost trials run again (and never
twice at once), distinct seeds for processes sharing a study, best.yaml with the trial's threads,
and clear storage errors. The PostgreSQL server tests are in test_sweep_postgres.py."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import REPO, assert_clean_error, nntrain_cmd
from sweep_helpers import write_sweep

from nntrain.errors import ConfigError

optuna = pytest.importorskip("optuna")
pytestmark = pytest.mark.filterwarnings("ignore:Heartbeat of storage:UserWarning")  # trials asked by hand

import nntrain.sweep.run as sweep_run  # noqa: E402 - after the optuna check
from nntrain.sweep import load_plan, procs, run_sweep  # noqa: E402
from nntrain.sweep.study import HEARTBEAT_ENV, SEED_ATTR, driver_url, open_study, work  # noqa: E402

COMPLETE, RUNNING, FAIL = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.RUNNING,
                           optuna.trial.TrialState.FAIL)


def ask(plan: Any, study: Any) -> Any:
    """A trial started as a worker starts one (RUNNING, with the plan's params drawn)."""
    trial = study.ask()
    for p in plan.params:
        p.suggest(trial)
    return trial


def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def fake_worker() -> subprocess.Popen:
    """A live process standing in for a worker."""
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", "nntrain-sweep-worker"])


def children(pid: int) -> list[int]:
    """The pids whose parent is `pid` (from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def running(pid: int) -> bool:
    """Alive and not a zombie."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def states(study: Any) -> list[Any]:
    return [t.state for t in study.get_trials(deepcopy=False)]


# ---------------------------------------------------------------- lost trials (item 10)


def test_a_trial_whose_process_died_is_failed_and_run_again(tmp_path):
    """A RUNNING trial of a dead process (same host) counts as lost at once, not as running."""
    plan = load_plan(write_sweep(tmp_path, trials=2))
    study = open_study(plan, f"sqlite:///{tmp_path / 'study.db'}", "s", shared=True)
    lost = ask(plan, study)
    lost.set_user_attr("owner", {"host": procs.host(), "pid": dead_pid(), "number": lost.number})
    work(plan, study, tmp_path / "sweep")
    trials = study.get_trials()
    assert trials[0].state == FAIL
    assert states(study).count(COMPLETE) == 2 and RUNNING not in states(study)
    assert any(t.params == lost.params and t.state == COMPLETE for t in trials[1:])  # the same values again


def test_a_trial_whose_heartbeat_expired_is_failed_and_run_again(tmp_path, monkeypatch):
    """A trial of another host is lost once its heartbeat is older than the grace period."""
    monkeypatch.setenv(HEARTBEAT_ENV, "1,2")
    plan = load_plan(write_sweep(tmp_path, trials=2))
    study = open_study(plan, f"sqlite:///{tmp_path / 'study.db'}", "s", shared=True)
    lost = ask(plan, study)
    lost.set_user_attr("owner", {"host": "another-machine", "pid": 1, "number": lost.number})
    study._storage.record_heartbeat(lost._trial_id)
    start = time.monotonic()
    work(plan, study, tmp_path / "sweep")
    assert study.get_trials()[0].state == FAIL
    assert states(study).count(COMPLETE) == 2 and RUNNING not in states(study)
    assert time.monotonic() - start >= 2  # not before the grace period


def test_a_trial_of_a_live_process_is_waited_for_not_run_twice(tmp_path, monkeypatch):
    """The last trial runs in another (live) process: the worker waits for it instead of exiting
    with it unfinished, and neither fails it nor starts it again."""
    monkeypatch.setenv(HEARTBEAT_ENV, "1,60")
    plan = load_plan(write_sweep(tmp_path, trials=1))
    study = open_study(plan, f"sqlite:///{tmp_path / 'study.db'}", "s", shared=True)
    other = fake_worker()
    try:
        trial = ask(plan, study)
        trial.set_user_attr("owner", {"host": procs.host(), "pid": other.pid, "number": trial.number})
        study._storage.record_heartbeat(trial._trial_id)
        worker = threading.Thread(target=work, args=(plan, study, tmp_path / "sweep"), daemon=True)
        worker.start()
        time.sleep(2.5)
        assert worker.is_alive(), "the worker returned while the study's last trial was unfinished"
        assert states(study) == [RUNNING]
        study.tell(trial, 0.5)  # the other process finishes it
        worker.join(timeout=30)
        assert not worker.is_alive() and states(study) == [COMPLETE]
    finally:
        other.kill()
        other.wait()


def test_resume_waits_for_the_workers_of_a_killed_sweep_and_never_fails_their_trials(tmp_path, monkeypatch):
    path = write_sweep(tmp_path, trials=1)
    sweep_dir = Path(run_sweep(path)["sweep_dir"])
    study = optuna.load_study(study_name="test_run", storage=f"sqlite:///{sweep_dir / 'study.db'}")
    cut = ask(load_plan(path), study)  # the trial of a worker that outlived its parent
    worker = fake_worker()
    monkeypatch.setattr(sweep_run, "WORKERS_STOP_S", 0.5)
    try:
        (sweep_dir / "sweep.pid").write_text(f"{dead_pid()}\n{worker.pid}\n")
        message = rf"worker process\(es\) {worker.pid} of the stopped sweep are still running"
        with pytest.raises(ConfigError, match=message):
            run_sweep(path, ["sweep.trials=2"], resume=sweep_dir)
        assert study.trials[cut.number].state == RUNNING  # left to its worker
    finally:
        worker.kill()
        worker.wait()
    resumed = run_sweep(path, ["sweep.trials=2"], resume=sweep_dir)  # the worker is gone: run it again
    assert [t["state"] for t in resumed["trials"]] == ["complete", "fail", "complete"]
    assert resumed["trials"][2]["params"] == load_plan(path).decode(cut.params)


# ---------------------------------------------------------------- seeds (item 9)


def test_processes_sharing_a_study_draw_different_params(tmp_path):
    """Two processes that open one shared study at once (same config, worker 0, no trials yet)."""
    plan = load_plan(write_sweep(tmp_path, trials=4))
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    first = open_study(plan, url, "s", shared=True)
    seed_first = getattr(plan, "sampler_seed", None)
    second = open_study(plan, url, "s", shared=True)
    assert ask(plan, first).params != ask(plan, second).params
    assert seed_first != plan.sampler_seed  # recorded with each trial (user attr sampler_seed)


def test_a_one_process_sweep_draws_the_same_trials_every_time(tmp_path):
    plan = load_plan(write_sweep(tmp_path, trials=4))
    drawn = []
    for name in ("a", "b"):
        study = open_study(plan, f"sqlite:///{tmp_path / name}.db", "s", shared=False)
        drawn.append((plan.sampler_seed, [ask(plan, study).params for _ in range(3)]))
    assert drawn[0] == drawn[1] and drawn[0][0] == 0  # seed 0 of the config, no trial yet


# ---------------------------------------------------------------- best.yaml (item 11)


def test_best_yaml_and_trial_configs_record_the_threads_the_trial_used(tmp_path):
    import torch

    summary = run_sweep(write_sweep(tmp_path, trials=1, threads=None))
    threads = torch.get_num_threads()
    best = yaml.safe_load(Path(summary["best_yaml"]).read_text())
    trial = yaml.safe_load((Path(summary["sweep_dir"]) / "trial-0" / "config.yaml").read_text())
    assert best["train"]["threads"] == trial["train"]["threads"] == threads
    assert summary["trials"][0][SEED_ATTR] == 0 and summary["trials"][0]["settings"] == {"train.threads": threads}


@pytest.mark.slow
def test_best_yaml_of_a_workers_sweep_reproduces_the_best_trial(tmp_path):
    """Workers share the cores (cpu // workers threads each): best.yaml says so, and a refit matches."""
    path = write_sweep(tmp_path, trials=2, threads=None)
    result = subprocess.run(nntrain_cmd("sweep", path, "--workers", "2"), capture_output=True, text=True,
                            cwd=REPO, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    (sweep_dir,) = (tmp_path / "runs" / "test_run").glob("sweep-*")
    summary = json.loads((sweep_dir / "summary.json").read_text())
    threads = max(1, (os.cpu_count() or 1) // 2)
    best = yaml.safe_load((sweep_dir / "best.yaml").read_text())
    assert best["train"]["threads"] == threads
    for t in summary["trials"]:
        trial_cfg = yaml.safe_load((sweep_dir / f"trial-{t['number']}" / "config.yaml").read_text())
        assert trial_cfg["train"]["threads"] == threads
    best["log"]["dir"] = str(tmp_path / "refit")
    (tmp_path / "best.yaml").write_text(yaml.safe_dump(best))
    refit = subprocess.run(nntrain_cmd("fit", tmp_path / "best.yaml"), capture_output=True, text=True,
                           cwd=REPO, timeout=300)
    assert refit.returncode == 0, refit.stdout + refit.stderr
    (run_dir,) = (tmp_path / "refit" / "test_run").iterdir()
    final = json.loads((run_dir / "summary.json").read_text())["final"]
    assert final["val/acc"] == summary["best"]["value"]  # one epoch: its val/acc is the trial's best


# ---------------------------------------------------------------- workers die with their parent (item 7)


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds the workers through /proc")
def test_kill_9_of_a_workers_sweep_ends_its_workers(tmp_path):
    """The workers (in sessions of their own) stop within seconds of their parent's kill -9, and
    fail their trials on the way (SIGTERM: last.pt saved), so none is left RUNNING for a resume."""
    path = write_sweep(tmp_path, trials=6, epochs=500)  # trials of many seconds (30 epochs: ~1.3 s idle)
    log = (tmp_path / "sweep.log").open("w")
    parent = subprocess.Popen(nntrain_cmd("sweep", path, "--workers", "2"), stdout=log, stderr=subprocess.STDOUT,
                              cwd=REPO)
    workers: list[int] = []
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:  # both workers in a trial: each has written its config.yaml
            if len(list((tmp_path / "runs" / "test_run").glob("sweep-*/trial-*/config.yaml"))) >= 2:
                break
            assert parent.poll() is None, (tmp_path / "sweep.log").read_text()
            time.sleep(0.2)
        else:
            pytest.fail("the workers never started their trials:\n" + (tmp_path / "sweep.log").read_text())
        workers = children(parent.pid)
        assert len(workers) == 2
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
        killed = time.monotonic()
        while time.monotonic() < killed + 10 and any(running(p) for p in workers):
            time.sleep(0.1)
        alive = [p for p in workers if running(p)]
        assert not alive, f"workers {alive} outlived their parent by 10 s"
        print(f"workers gone {time.monotonic() - killed:.1f} s after the kill")
    finally:
        if parent.poll() is None:
            parent.kill()
        for p in workers:
            if running(p):
                os.kill(p, signal.SIGKILL)
        log.close()
    (sweep_dir,) = (tmp_path / "runs" / "test_run").glob("sweep-*")
    study = optuna.load_study(study_name="test_run", storage=f"sqlite:///{sweep_dir / 'study.db'}")
    assert RUNNING not in states(study) and states(study).count(FAIL) == 2
    assert all(t.user_attrs.get("interrupted") == t.number for t in study.trials if t.state == FAIL)
    assert sorted(int(p) for p in (sweep_dir / "sweep.pid").read_text().split()[1:]) == sorted(workers)
    assert "Cannot tell" not in (tmp_path / "sweep.log").read_text()


# ---------------------------------------------------------------- storage errors (items 8, 12)


def test_a_plain_postgresql_url_names_the_installed_driver(monkeypatch):
    pytest.importorskip("psycopg")
    assert driver_url("postgresql://me@db.example/sweeps") == "postgresql+psycopg://me@db.example/sweeps"
    assert driver_url("postgresql+psycopg2://me@db.example/s") == "postgresql+psycopg2://me@db.example/s"
    assert driver_url("sqlite:///x.db") == "sqlite:///x.db"


def test_a_missing_postgresql_driver_names_what_to_install(tmp_path, cli, monkeypatch):
    monkeypatch.setitem(sys.modules, "psycopg", None)  # neither driver importable
    monkeypatch.setitem(sys.modules, "psycopg2", None)
    path = write_sweep(tmp_path, trials=1)
    stderr = assert_clean_error(cli("sweep", path, "--storage", "postgresql://me:secret@127.0.0.1:1/sweeps"))
    assert "no PostgreSQL driver is installed" in stderr and "pip install 'nntrain[postgres]'" in stderr
    assert "secret" not in stderr
    stderr = assert_clean_error(cli("sweep", path, "--storage", "postgresql+psycopg2://me@127.0.0.1:1/sweeps"))
    assert "module 'psycopg2' is not installed" in stderr and "psycopg2-binary" in stderr
    assert not list((tmp_path / "runs").glob("test_run/sweep-*"))  # no empty sweep folder left behind


def test_an_unreachable_database_is_a_run_error_with_its_message(tmp_path, cli):
    pytest.importorskip("psycopg")
    path = write_sweep(tmp_path, trials=1)
    stderr = assert_clean_error(cli("sweep", path, "--storage", "postgresql://me:secret@127.0.0.1:1/sweeps"), code=1)
    assert "cannot open the study storage" in stderr and "127.0.0.1" in stderr and "refused" in stderr.lower()
    assert "secret" not in stderr
    assert not list((tmp_path / "runs").glob("test_run/sweep-*"))


def test_a_bad_heartbeat_setting_is_a_config_error(tmp_path, monkeypatch):
    monkeypatch.setenv(HEARTBEAT_ENV, "5,2")
    with pytest.raises(ConfigError, match=rf"\${HEARTBEAT_ENV}='5,2': .* greater than the interval"):
        run_sweep(write_sweep(tmp_path, trials=1))


# ---------------------------------------------------------------- signals outside training (procs.StopGate)


def test_a_signal_between_trials_is_raised_at_the_next_check_not_where_it_lands():
    """Outside a trial the gate only remembers the signal (optuna may be recording a trial); the
    next check raises it, and leaving the gate it is Interrupted with the signal's exit code."""
    from nntrain.errors import Interrupted

    gate = procs.StopGate()
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Interrupted) as stopped:
        with gate.installed():
            os.kill(os.getpid(), signal.SIGTERM)  # lands here, in "optuna's" code: nothing raised
            landed = True
            gate.check()
    assert landed and stopped.value.exit_code == 143
    assert signal.getsignal(signal.SIGTERM) == before  # the gate is gone with its block


def test_a_signal_inside_a_trial_is_raised_past_except_exception():
    """Inside a trial it raises at once, as a KeyboardInterrupt (optuna fails the trial with it) that
    a trial's `except Exception` cannot swallow; a signal that came just before the trial raises
    as the trial starts."""
    from nntrain.errors import Interrupted

    gate = procs.StopGate()
    with pytest.raises(Interrupted) as stopped:
        with gate.installed():
            with gate.trial_may_stop():
                try:
                    os.kill(os.getpid(), signal.SIGINT)
                    time.sleep(1)  # the handler runs before this returns
                    pytest.fail("the signal was not raised inside the trial")
                except Exception:  # noqa: BLE001 - what trial code might do
                    pytest.fail("an `except Exception` caught the stop")
    assert stopped.value.exit_code == 130

    with pytest.raises(Interrupted):
        with gate.installed():
            os.kill(os.getpid(), signal.SIGTERM)
            with pytest.raises(procs.SignalStop):
                with gate.trial_may_stop():
                    pytest.fail("a trial started after the signal")


def test_a_signal_during_the_last_trials_bookkeeping_still_stops_the_sweep():
    """A signal that comes after the last check (the last trial being recorded) is not lost: the
    gate raises it when its block ends."""
    from nntrain.errors import Interrupted

    gate = procs.StopGate()
    with pytest.raises(Interrupted):
        with gate.installed():
            os.kill(os.getpid(), signal.SIGINT)
