"""The course's four comparisons, run end to end through the CLI, summarized as Markdown tables.

    python benchmarks/course.py [--only deep_sigmoid_vs_relu,optimizers,schedules,overfitting]
                                [--seeds 0,1,2] [--out runs/course] [--tensorboard] [--threads 1]

Each comparison is one config under configs/ whose header comment lists one `nntrain fit` command
per variant; this script parses those lines, so the runs it makes are the ones the header
documents. Every variant runs as `python -m nntrain fit CONFIG <its arguments> --set seed=S
--set log.dir=<out>/<comparison>/seed-S --set log.tensorboard=...`, then the script reads the run's
summary.json (final, best and test metrics, time) and metrics.jsonl (the epoch records; for
deep_sigmoid_vs_relu the per-layer gradient norms of the step records logged during epoch 1).
For overfitting it also evaluates last.pt on the test split with `nntrain eval`, because best.pt
(picked on val/acc) is already a form of early stopping.

With several seeds, numbers are mean ± standard deviation over the seeds. Child processes get
OMP_NUM_THREADS=--threads (default 1): on a machine whose cores are shared, torch's default of
one thread per core can make these small models tens of times slower, not faster.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

ROOT = Path(__file__).resolve().parents[1]

COMPARISONS = {
    "deep_sigmoid_vs_relu": "configs/deep_sigmoid_vs_relu.yaml",
    "optimizers": "configs/optimizers.yaml",
    "schedules": "configs/schedules.yaml",
    "overfitting": "configs/overfitting.yaml",
}
COMMAND = re.compile(r"^#\s*nntrain fit\s+(.*)$")


@dataclass
class Variant:
    """One `nntrain fit` line of a config's header: its run name and arguments after the config."""

    name: str
    args: list[str]


@dataclass
class Run:
    """What one finished run left: its folder, summary.json, epoch and step records."""

    dir: Path
    summary: dict[str, Any]
    epochs: list[dict[str, Any]]
    steps: list[dict[str, Any]]
    extra: dict[str, Any] = field(default_factory=dict)


def header_variants(config: str) -> list[Variant]:
    """The `# nntrain fit <config> ...` lines at the top of `config`, one variant each."""
    variants = []
    for line in (ROOT / config).read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        match = COMMAND.match(line)
        if match is None:
            continue
        tokens = shlex.split(match.group(1), comments=True)
        if not tokens or tokens[0] != config:
            raise SystemExit(f"{config}: a header command runs {tokens[:1]}, not {config}: {line}")
        if "--name" not in tokens:
            raise SystemExit(f"{config}: every header command needs --name (the table's row): {line}")
        variants.append(Variant(tokens[tokens.index("--name") + 1], tokens[1:]))
    if not variants:
        raise SystemExit(f"{config}: no '# nntrain fit {config} ...' lines in its header")
    return variants


class RunFailed(Exception):
    """`nntrain fit` exited with 1: a failure during the run (a NaN loss, say), an outcome to report."""


def nntrain(args: list[str], env: dict[str, str], log: Path) -> None:
    """Runs `python -m nntrain ARGS` in the repository root; its output goes to `log`.

    Raises RunFailed on exit status 1 (with nntrain's error line); any other failure ends the script.
    """
    with open(log, "w", encoding="utf-8") as out:
        result = subprocess.run(
            [sys.executable, "-m", "nntrain", *args], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    if result.returncode == 0:
        return
    lines = log.read_text(encoding="utf-8").splitlines()
    if result.returncode == 1:
        error = [ln for ln in lines if ln.startswith("error:")] or lines[-1:] or ["(no output)"]
        raise RunFailed(error[-1])
    tail = "\n".join(lines[-15:])
    raise SystemExit(f"nntrain {shlex.join(args)} exited with {result.returncode}:\n{tail}")


def run_variant(config: str, variant: Variant, seed: int, log_dir: Path, tensorboard: bool, env: dict) -> Run:
    """Trains one variant with one seed into a new folder under `log_dir` and reads it back."""
    parent = log_dir / variant.name
    before = set(parent.glob("*")) if parent.exists() else set()
    args = ["fit", config, *variant.args, "--set", f"seed={seed}", "--set", f"log.dir={log_dir}",
            "--set", f"log.tensorboard={'true' if tensorboard else 'false'}"]
    log_dir.mkdir(parents=True, exist_ok=True)
    nntrain(args, env, log_dir / f"{variant.name}.log")
    (run_dir,) = set(parent.glob("*")) - before
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    return Run(
        run_dir,
        json.loads((run_dir / "summary.json").read_text(encoding="utf-8")),
        [r for r in records if r["kind"] == "epoch"],
        [r for r in records if r["kind"] == "step"],
    )


def eval_last(run: Run, env: dict) -> float:
    """Test accuracy of the run's last.pt (the weights training ended with)."""
    ckpt = run.dir / "checkpoints" / "last.pt"
    out = run.dir / "last.test.json"
    nntrain(["eval", str(ckpt), "--split", "test", "--out", str(out)], env, run.dir / "eval_last.log")
    return json.loads(out.read_text(encoding="utf-8"))["test/acc"]


# ---------------------------------------------------------------------------------------- tables


def fmt(values: list[Optional[float]], digits: int = 3, sci: bool = False, integer: bool = False) -> str:
    """Mean (± standard deviation over seeds, unless they all agree) of `values`; '-' if none.

    `integer` values (epochs) print as whole numbers when they all agree, else with one decimal.
    """
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    if integer and len(set(values)) == 1:
        return str(int(values[0]))
    spec = ".1f" if integer else f".{digits - 1}e" if sci else f".{digits}f"
    mean = statistics.fmean(values)
    if len(set(values)) == 1:
        return format(mean, spec)
    return f"{format(mean, spec)} ± {format(statistics.stdev(values), spec)}"


def epoch_value(run: Run, key: str, epoch: int) -> Optional[float]:
    """`key` of the epoch record after `epoch` (1-based) epochs, if the run got that far."""
    return next((r[key] for r in run.epochs if r["epoch"] == epoch), None)


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


Column = tuple[str, Callable[[Run], Optional[float]], dict]

COMMON: list[Column] = [
    ("val/acc after epoch 1", lambda r: epoch_value(r, "val/acc", 1), {}),
    ("final train/loss", lambda r: r.summary["final"]["train/loss"], {"digits": 3, "sci": True}),
    ("final val/loss", lambda r: r.summary["final"]["val/loss"], {}),
    ("final val/acc", lambda r: r.summary["final"]["val/acc"], {}),
    ("best val/acc", lambda r: r.summary["best"]["value"], {}),
    ("best epoch", lambda r: r.summary["best"]["epoch"], {"integer": True}),
    ("test/acc (best.pt)", lambda r: r.summary.get("test", {}).get("test/acc"), {}),
    ("epochs run", lambda r: r.summary["epochs"], {"integer": True}),
    ("time s", lambda r: r.summary["time_s"], {"digits": 1}),
]
EXTRA: dict[str, list[Column]] = {
    "schedules": [("final lr", lambda r: r.summary["final"]["lr"], {"digits": 2, "sci": True})],
    "overfitting": [
        ("min val/loss", lambda r: min(e["val/loss"] for e in r.epochs), {}),
        ("its epoch", lambda r: min(r.epochs, key=lambda e: e["val/loss"])["epoch"], {"integer": True}),
        ("test/acc (last.pt)", lambda r: r.extra.get("test_acc_last"), {}),
    ],
}


def results_table(comparison: str, results: dict[str, list[Run]]) -> str:
    columns = COMMON + EXTRA.get(comparison, [])
    rows = [
        [f"`{name}`"] + [fmt([get(r) for r in runs], **opts) for _, get, opts in columns]
        for name, runs in results.items()
    ]
    return table(["variant"] + [title for title, _, _ in columns], rows)


# Epoch-record curves printed per comparison: the keys, and the epochs (1-based) to show.
CURVES: dict[str, tuple[list[str], list[int]]] = {
    "deep_sigmoid_vs_relu": (["val/acc"], [1, 2, 3, 5, 10]),
    "optimizers": (["train/loss"], [1, 2, 3, 5, 10]),
    "schedules": (["lr", "val/loss"], [1, 3, 5, 6, 10, 11, 15]),
    "overfitting": (["val/loss"], [1, 3, 5, 7, 10, 20, 40, 60]),
}


def curve_table(key: str, epochs: list[int], results: dict[str, list[Run]]) -> str:
    """`key` of the epoch records after each of `epochs`; '-' where a run had stopped before."""
    rows = []
    for name, runs in results.items():
        cells = []
        for epoch in epochs:
            values = [epoch_value(r, key, epoch) for r in runs]
            sci = key in ("lr", "train/loss")
            cells.append("-" if None in values else fmt(values, digits=2 if sci else 3, sci=sci))
        rows.append([f"`{name}`"] + cells)
    return table(["variant"] + [f"epoch {e}" for e in epochs], rows)


def layer_weights(run: Run) -> list[str]:
    """The `grad_norm/<layer>.weight` keys of the step records, in the model's order."""
    return [k for k in run.steps[0] if k.startswith("grad_norm/") and k.endswith(".weight")]


def epoch1_grad_norm(run: Run, key: str) -> float:
    """Mean of `key` over the step records logged during the first epoch."""
    values = [r[key] for r in run.steps if r["epoch"] == 0]
    return statistics.fmean(values)


def grad_tables(results: dict[str, list[Run]]) -> str:
    """First vs last layer, and every layer, of the mean epoch-1 gradient norms per variant."""
    rows, layers = [], None
    for name, runs in results.items():
        keys = layer_weights(runs[0])
        layers = layers or keys
        first = [epoch1_grad_norm(r, keys[0]) for r in runs]
        last = [epoch1_grad_norm(r, keys[-1]) for r in runs]
        rows.append([f"`{name}`", fmt(first, sci=True), fmt(last, sci=True),
                     fmt([b / a for a, b in zip(first, last)], sci=True)])
    short = lambda k: k.removeprefix("grad_norm/")  # noqa: E731
    summary = table(
        ["variant", f"{short(layers[0])} (first)", f"{short(layers[-1])} (last)", "last / first"], rows
    )
    per_layer = table(
        ["layer"] + [f"`{name}`" for name in results],
        [[short(k)] + [fmt([epoch1_grad_norm(r, k) for r in runs], sci=True) for runs in results.values()]
         for k in layers],
    )
    return summary + "\n\nEvery layer (mean gradient norm over epoch 1's logged steps):\n\n" + per_layer


# ------------------------------------------------------------------------------------------ main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default=",".join(COMPARISONS), help="comma-separated comparisons")
    parser.add_argument("--seeds", default="0", help="comma-separated seeds, e.g. 0,1,2")
    parser.add_argument("--out", default="runs/course", help="log.dir root of the runs")
    parser.add_argument("--tensorboard", action="store_true", help="also write TensorBoard events")
    parser.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of each run")
    args = parser.parse_args()
    chosen = [c.strip() for c in args.only.split(",") if c.strip()]
    unknown = [c for c in chosen if c not in COMPARISONS]
    if unknown:
        parser.error(f"unknown comparison(s) {unknown}; choose from {list(COMPARISONS)}")
    seeds = [int(s) for s in args.seeds.split(",")]
    out = Path(args.out).resolve()
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    import torch  # noqa: PLC0415  (only for the report's header)

    print(f"# nntrain course comparisons\n\nseeds {seeds}; torch {torch.__version__}; "
          f"OMP_NUM_THREADS={args.threads}; runs under {out}\n")
    for comparison in chosen:
        config = COMPARISONS[comparison]
        results: dict[str, list[Run]] = {}
        start = time.perf_counter()
        failures: list[str] = []
        for variant in header_variants(config):
            results[variant.name] = []
            for seed in seeds:
                try:
                    run = run_variant(config, variant, seed, out / comparison / f"seed-{seed}", args.tensorboard, env)
                    if comparison == "overfitting":
                        run.extra["test_acc_last"] = eval_last(run, env)
                except RunFailed as exc:
                    failures.append(f"- `{variant.name}`, seed {seed}: {exc}")
                    print(f"  {comparison}/{variant.name} seed {seed}: FAILED {exc}", file=sys.stderr, flush=True)
                    continue
                results[variant.name].append(run)
                print(f"  {comparison}/{variant.name} seed {seed}: {run.dir}", file=sys.stderr, flush=True)
        results = {name: runs for name, runs in results.items() if runs}
        print(f"## {comparison} (`{config}`, {time.perf_counter() - start:.0f}s wall)\n")
        print(results_table(comparison, results) + "\n")
        if failures:
            print("Runs that failed (left out of the tables):\n\n" + "\n".join(failures) + "\n")
        keys, epochs = CURVES[comparison]
        for key in keys:
            print(f"{key} after each epoch (the epoch records of metrics.jsonl):\n")
            print(curve_table(key, epochs, results) + "\n")
        if comparison == "deep_sigmoid_vs_relu":
            print("Gradient norm of the first and last layer's weights, mean over the step records "
                  "logged during epoch 1:\n")
            print(grad_tables(results) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
