"""`nntrain fit CONFIG --seeds 0,1,2 [--workers N]`: one run of a config per seed.

One after another in this process, or in up to N processes at once (`python -m nntrain fit CONFIG
... --set seed=S`, each with its output prefixed by `[seed S]`). Each run is a normal run folder,
so `nntrain compare` groups them (same config apart from the seed) as mean ± sd.

Worker processes get a session of their own, so a terminal's Ctrl-C reaches this process only,
which passes SIGINT/SIGTERM on to every running worker once (each saves last.pt and stops) and
starts no further seed. A worker dies with this process even when it is killed with -9
(`PARENT_ENV`, distributed.die_with_parent). The exit code aggregates the workers': 130/143 if a
signal stopped any, else 1 if any failed, else 0.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nntrain.errors import ConfigError, Interrupted, NntrainError, RunError

PARENT_ENV = "NNTRAIN_SEEDS_PARENT"  # set for the worker processes of --workers: the parent's pid
SEED_MAX = 2**32 - 1


@dataclass
class SeedRun:
    """How one seed's run went."""

    seed: int
    status: str = "pending"  # finished, failed, interrupted, pending (never started)
    run_dir: Path | None = None
    error: str | None = None
    code: int | None = None


def parse_seeds(text: str) -> list[int]:
    """`0,1,2` or `0-4` (inclusive), or both: `0-2,10`.

    Raises:
        ConfigError: not a list of seeds, a seed out of range, or a seed twice.
    """
    seeds: list[int] = []
    for part in (p.strip() for p in text.split(",")):
        low, dash, high = part.partition("-")
        try:
            values = list(range(int(low), int(high) + 1)) if dash and low else [int(part)]
        except ValueError:
            raise ConfigError(f"--seeds {text}: expected seeds such as 0,1,2 or 0-4") from None
        if not values:
            raise ConfigError(f"--seeds {text}: the range {part} is empty")
        seeds += values
    bad = [s for s in seeds if not 0 <= s <= SEED_MAX]
    if bad:
        raise ConfigError(f"--seeds {text}: seeds go from 0 to 2**32 - 1 (got {bad[0]})")
    twice = sorted({s for s in seeds if seeds.count(s) > 1})
    if twice:
        raise ConfigError(f"--seeds {text}: seed {twice[0]} is listed twice")
    return seeds


def check_options(overrides: list[str], workers: int, resume: Any, nproc: int) -> None:
    """The options --seeds does not combine with."""
    if resume is not None:
        raise ConfigError("--seeds starts new runs; --resume continues one: resume each seed's run on its own")
    if nproc > 1:
        raise ConfigError("--seeds runs one process per seed; combine it with --workers, not --nproc")
    if workers < 1:
        raise ConfigError(f"--workers {workers}: at least 1")
    if any(o.partition("=")[0].strip() == "seed" for o in overrides):
        raise ConfigError("--seeds sets the seed of each run: leave out --set seed=...")


def run_seeds(
    config: Path,
    overrides: list[str],
    name: str | None,
    seeds: list[int],
    workers: int,
    console: Any,
) -> list[SeedRun]:
    """Trains the config once per seed; returns how each went.

    `raise_for(results, ...)` then raises for the seeds that failed or were interrupted.

    Raises:
        ConfigError: the config is invalid (checked for every seed before any run starts).
    """
    from nntrain.validate import load_config

    named = [] if name is None else [f"name={name}"]  # as `nntrain fit --name` does
    cfgs = {seed: load_config(config, [*overrides, *named, f"seed={seed}"]) for seed in seeds}
    if workers > 1 and len(seeds) > 1:
        results = _parallel(config, overrides, name, cfgs, min(workers, len(seeds)), console)
    else:
        results = _sequential(cfgs, console)
    return results


def _sequential(cfgs: dict[int, Any], console: Any) -> list[SeedRun]:
    from nntrain.fit import fit

    results = [SeedRun(seed) for seed in cfgs]
    for i, result in enumerate(results):
        console.print(f"[bold]seed {result.seed}[/] ({i + 1} of {len(results)})", highlight=False)
        before = set(_run_folders(cfgs[result.seed]))
        try:
            summary = fit(cfgs[result.seed], console)
            result.status, result.run_dir = "finished", Path(summary["run_dir"])
        except Interrupted as exc:
            result.status, result.run_dir, result.error = "interrupted", Path(exc.run_dir), str(exc)
            result.code = exc.exit_code
            break
        except KeyboardInterrupt:
            result.status, result.error, result.code = "interrupted", "aborted at once", 130
            result.run_dir = _new_folder(cfgs[result.seed], before)
            break
        except NntrainError as exc:  # a failure of this seed's run: the other seeds still run
            result.status, result.error, result.code = "failed", str(exc), exc.exit_code
            result.run_dir = _new_folder(cfgs[result.seed], before)
            console.print(f"[bold red]seed {result.seed} failed:[/] {exc}", highlight=False, markup=True)
    return results


def _run_folders(cfg: Any) -> list[Path]:
    parent = Path(cfg.log.dir) / cfg.name
    return [p for p in parent.iterdir() if p.is_dir()] if parent.is_dir() else []


def _new_folder(cfg: Any, before: set[Path], pid: int | None = None) -> Path | None:
    """The run folder a run of `cfg` made (by process `pid`, if given), if any."""
    from nntrain.run_status import read_status

    new = [p for p in _run_folders(cfg) if p not in before]
    if pid is not None:
        new = [p for p in new if (read_status(p) or {}).get("pid") == pid]
    return max(new, key=lambda p: p.stat().st_mtime, default=None)


def _parallel(
    config: Path, overrides: list[str], name: str | None, cfgs: dict[int, Any], workers: int, console: Any
) -> list[SeedRun]:
    """Up to `workers` processes at once, each `python -m nntrain fit ... --set seed=S`."""
    env = {**os.environ, PARENT_ENV: str(os.getpid())}
    if "OMP_NUM_THREADS" not in os.environ:  # the cores are shared between the workers
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // workers))
    base = [sys.executable, "-m", "nntrain", "fit", str(config)]
    for text in overrides:
        base += ["--set", text]
    if name is not None:
        base += ["--name", name]
    results = {seed: SeedRun(seed) for seed in cfgs}
    waiting = list(cfgs)
    running: dict[int, tuple[subprocess.Popen, threading.Thread, set[Path], list[str]]] = {}
    received: list[int] = []
    lock = threading.Lock()

    def forward(signum: int, frame: Any = None) -> None:
        received.append(signum)
        for proc, *_ in list(running.values()):
            if proc.poll() is None:
                proc.send_signal(signum)

    def pump(seed: int, proc: subprocess.Popen, errors: list[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip("\n")
            if line.startswith("error:"):
                errors.append(line.removeprefix("error:").strip())
            elif errors and line.startswith("  "):  # an error's further lines
                errors[-1] += "\n" + line
            with lock:
                console.print(f"[dim]\\[seed {seed}][/] ", end="", highlight=False)
                console.out(line, highlight=False)

    handlers = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    console.print(f"[bold]{len(cfgs)} seeds[/], {workers} worker processes", highlight=False)
    try:
        while waiting or running:
            while waiting and len(running) < workers and not received:
                seed = waiting.pop(0)
                before = set(_run_folders(cfgs[seed]))
                proc = subprocess.Popen(
                    [*base, "--set", f"seed={seed}"], env=env, start_new_session=True,
                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
                )
                errors: list[str] = []
                thread = threading.Thread(target=pump, args=(seed, proc, errors), daemon=True)
                thread.start()
                running[seed] = (proc, thread, before, errors)
            if received and not running:
                break
            for seed, (proc, thread, before, errors) in list(running.items()):
                code = proc.poll()
                if code is None:
                    continue
                thread.join()
                del running[seed]
                result = results[seed]
                result.code, result.run_dir = code, _new_folder(cfgs[seed], before, proc.pid)
                result.error = "\n".join(errors) or None
                result.status = (
                    "finished" if code == 0 else "interrupted" if code in (130, 143) or code < 0 else "failed"
                )
            time.sleep(0.1)
    finally:
        for s, h in handlers.items():
            signal.signal(s, h)
        for proc, *_ in running.values():  # an exception here: no worker outlives this process
            if proc.poll() is None:
                proc.terminate()
    return [results[s] for s in cfgs]


def raise_for(results: list[SeedRun], config: Path, overrides: list[str], name: str | None) -> None:
    """Interrupted if a signal stopped any seed (with how to resume each), else RunError if any
    seed failed; nothing when every seed finished."""
    stopped = [r for r in results if r.status == "interrupted"]
    failed = [r for r in results if r.status == "failed"]
    if stopped:
        code = next((r.code for r in stopped if r.code in (130, 143)), 130)
        lines = [f"interrupted: {len(stopped)} of {len(results)} seeds stopped by a signal"]
        for r in stopped:
            if r.run_dir is not None:
                args = ["nntrain", "fit", str(config), *[a for o in overrides for a in ("--set", o)]]
                args += ["--name", name] if name else []
                args += ["--set", f"seed={r.seed}", "--resume", str(r.run_dir)]
                lines.append(f"  seed {r.seed}: resume with {shlex.join(args)}")
        pending = [str(r.seed) for r in results if r.status == "pending"]
        if pending:
            lines.append(f"  never started: seed {', '.join(pending)}")
        raise Interrupted("\n".join(lines), code - 128, str(stopped[0].run_dir))
    if failed:
        lines = [f"{len(failed)} of {len(results)} seeds failed"]
        lines += [f"  seed {r.seed}: {(r.error or f'exit code {r.code}').splitlines()[0]}" for r in failed]
        raise RunError("\n".join(lines))


def follow_parent() -> None:
    """In a worker process of --workers: stop (SIGTERM: save last.pt) when the parent dies."""
    parent = os.environ.get(PARENT_ENV, "")
    if not parent.isdigit():
        return
    from nntrain.distributed import die_with_parent

    die_with_parent()
    if os.getppid() != int(parent):  # the parent died before this process asked to follow it
        os.kill(os.getpid(), signal.SIGTERM)
