"""The course's four comparisons, run end to end with nntrain's own commands, as Markdown tables.

    python benchmarks/course.py [--only deep_sigmoid_vs_relu,optimizers,schedules,overfitting]
                                [--seeds 0,1,2] [--workers N] [--out runs/course] [--tensorboard]
                                [--threads 1] [--set KEY=VALUE ...]

Each comparison is one config under configs/ whose header comment lists one `nntrain fit` command
per variant; this script parses those lines, so the runs it makes are the ones the header
documents. Each variant runs as

    nntrain fit CONFIG <its arguments> --seeds S,S,S [--workers N] --set log.dir=<out>/<comparison> ...

(one run folder per seed), then `nntrain runs <out>/<comparison> --json` says which runs finished
and `nntrain compare <those runs> --group-by seed --json` gives every number of the tables: each
variant is one seed group, mean ± sample standard deviation over its seeds (one number where all
seeds agree). Only two things are read besides: for deep_sigmoid_vs_relu the per-layer gradient
norms of the step records of metrics.jsonl (logged during epoch 1), and for overfitting
`nntrain eval` of last.pt on the test split (best.pt, picked on val/acc, is already a form of early
stopping). `--set` adds overrides to every run (a quick check: `--set train.epochs=1`).

Runs get OMP_NUM_THREADS=--threads (default 1; with --workers N, N runs share the cores): on a
machine whose cores are shared, torch's default of one thread per core can make these small models
tens of times slower, not faster.
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
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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


def run_variant(config: str, variant: Variant, seeds: list[int], log_dir: Path, options: argparse.Namespace,
                env: dict) -> str | None:
    """Trains one variant once per seed (`nntrain fit --seeds`) into run folders under `log_dir`;
    returns the error line when some seeds failed (the others' runs still count)."""
    args = ["fit", config, *variant.args, "--seeds", ",".join(map(str, seeds)), "--workers", str(options.workers),
            "--set", f"log.dir={log_dir}", "--set", f"log.tensorboard={'true' if options.tensorboard else 'false'}"]
    for text in options.set or []:
        args += ["--set", text]
    log_dir.mkdir(parents=True, exist_ok=True)
    try:
        nntrain(args, env, log_dir / f"{variant.name}.log")
    except RunFailed as exc:
        return str(exc)
    return None


def nntrain_json(args: list[str], env: dict) -> Any:
    """`python -m nntrain ARGS --json`, parsed."""
    result = subprocess.run([sys.executable, "-m", "nntrain", *args, "--json"], cwd=ROOT, env=env,
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"nntrain {shlex.join(args)} exited with {result.returncode}:\n{result.stderr}")
    return json.loads(result.stdout)


@dataclass
class Group:
    """One variant's seed group, as `nntrain compare --json` gives it."""

    name: str
    dirs: list[Path]
    metrics: dict[str, list[float]]  # compare's metric label -> the value of each run
    curves: dict[str, dict[str, Any]]  # epoch-record key -> {"epochs": [...], "runs": [[...] per run]}
    extra: dict[str, list[float | None]] = field(default_factory=dict)

    def epoch(self, key: str, epoch: int) -> list[float | None]:
        """`key` of each run's epoch record after `epoch` (1-based) epochs; None where it had stopped."""
        curve = self.curves.get(key)
        if curve is None or epoch not in curve["epochs"]:
            return [None] * len(self.dirs)
        i = curve["epochs"].index(epoch)
        return [values[i] for values in curve["runs"]]

    def per_run(self, key: str) -> list[list[tuple[int, float]]]:
        """(epoch, value) of `key` for each run."""
        curve = self.curves.get(key, {"epochs": [], "runs": [[] for _ in self.dirs]})
        return [[(e, v) for e, v in zip(curve["epochs"], values) if v is not None] for values in curve["runs"]]


def compare_groups(dirs: list[Path], env: dict) -> dict[str, Group]:
    """`nntrain compare DIRS --group-by seed --json`, one Group per variant (column)."""
    data = nntrain_json(["compare", *map(str, dirs), "--group-by", "seed"], env)
    groups = {}
    for i, col in enumerate(data["columns"]):
        metrics = {label: cells[i]["values"] for label, cells in data["metrics"].items()}
        curves = {key: cols[i] for key, cols in data["curves"].items()}
        groups[col["label"]] = Group(col["label"], [Path(d) for d in col["runs"]], metrics, curves)
    return groups


def eval_last(run_dir: Path, env: dict) -> float:
    """Test accuracy of the run's last.pt (the weights training ended with)."""
    ckpt = run_dir / "checkpoints" / "last.pt"
    out = run_dir / "last.test.json"
    nntrain(["eval", str(ckpt), "--split", "test", "--out", str(out)], env, run_dir / "eval_last.log")
    return json.loads(out.read_text(encoding="utf-8"))["test/acc"]


# ---------------------------------------------------------------------------------------- tables


def fmt(values: list[float | None], digits: int = 3, sci: bool = False, integer: bool = False) -> str:
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


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _min_epoch(points: list[tuple[int, float]]) -> tuple[int, float]:
    return min(points, key=lambda p: (p[1], p[0]))


# A column: its title, the values of a group's runs, and fmt's options.
Column = tuple[str, Callable[[Group], list[float | None]], dict]

COMMON: list[Column] = [
    ("val/acc after epoch 1", lambda g: g.epoch("val/acc", 1), {}),
    ("final train/loss", lambda g: g.metrics.get("final train/loss", []), {"digits": 3, "sci": True}),
    ("final val/loss", lambda g: g.metrics.get("final val/loss", []), {}),
    ("final val/acc", lambda g: g.metrics.get("final val/acc", []), {}),
    ("best val/acc", lambda g: g.metrics.get("best val/acc", []), {}),
    ("best epoch", lambda g: g.metrics.get("best epoch", []), {"integer": True}),
    ("test/acc (best.pt)", lambda g: g.metrics.get("test/acc (best.pt)", []), {}),
    ("epochs run", lambda g: g.metrics.get("epochs", []), {"integer": True}),
    ("time s", lambda g: g.metrics.get("time s", []), {"digits": 1}),
]
EXTRA: dict[str, list[Column]] = {
    "schedules": [("final lr", lambda g: g.metrics.get("final lr", []), {"digits": 2, "sci": True})],
    "overfitting": [
        ("min val/loss", lambda g: [_min_epoch(p)[1] for p in g.per_run("val/loss") if p], {}),
        ("its epoch", lambda g: [_min_epoch(p)[0] for p in g.per_run("val/loss") if p], {"integer": True}),
        ("test/acc (last.pt)", lambda g: g.extra.get("test_acc_last", []), {}),
    ],
}


def results_table(comparison: str, groups: dict[str, Group]) -> str:
    columns = COMMON + EXTRA.get(comparison, [])
    rows = [
        [f"`{name}`"] + [fmt(get(g), **opts) for _, get, opts in columns]
        for name, g in groups.items()
    ]
    return table(["variant"] + [title for title, _, _ in columns], rows)


# Epoch-record curves printed per comparison: the keys, and the epochs (1-based) to show.
CURVES: dict[str, tuple[list[str], list[int]]] = {
    "deep_sigmoid_vs_relu": (["val/acc"], [1, 2, 3, 5, 10]),
    "optimizers": (["train/loss"], [1, 2, 3, 5, 10]),
    "schedules": (["lr", "val/loss"], [1, 3, 5, 6, 10, 11, 15]),
    "overfitting": (["val/loss"], [1, 3, 5, 7, 10, 20, 40, 60]),
}


def curve_table(key: str, epochs: list[int], groups: dict[str, Group]) -> str:
    """`key` of the epoch records after each of `epochs`; '-' where a run had stopped before."""
    rows = []
    for name, g in groups.items():
        cells = []
        for epoch in epochs:
            values = g.epoch(key, epoch)
            sci = key in ("lr", "train/loss")
            cells.append("-" if None in values else fmt(values, digits=2 if sci else 3, sci=sci))
        rows.append([f"`{name}`"] + cells)
    return table(["variant"] + [f"epoch {e}" for e in epochs], rows)


def step_records(run_dir: Path) -> list[dict[str, Any]]:
    lines = (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == "step"]


def epoch1_grad_norms(run_dir: Path) -> dict[str, float]:
    """Mean of each `grad_norm/<layer>.weight` over the step records logged during the first epoch,
    in the model's order."""
    steps = [r for r in step_records(run_dir) if r["epoch"] == 0]
    keys = [k for k in steps[0] if k.startswith("grad_norm/") and k.endswith(".weight")]
    return {k: statistics.fmean(r[k] for r in steps) for k in keys}


def grad_tables(groups: dict[str, Group]) -> str:
    """First vs last layer, and every layer, of the mean epoch-1 gradient norms per variant."""
    rows, layers, norms = [], None, {}
    for name, g in groups.items():
        norms[name] = [epoch1_grad_norms(d) for d in g.dirs]
        keys = list(norms[name][0])
        layers = layers or keys
        first = [n[keys[0]] for n in norms[name]]
        last = [n[keys[-1]] for n in norms[name]]
        rows.append([f"`{name}`", fmt(first, sci=True), fmt(last, sci=True),
                     fmt([b / a for a, b in zip(first, last)], sci=True)])
    short = lambda k: k.removeprefix("grad_norm/")  # noqa: E731
    summary = table(
        ["variant", f"{short(layers[0])} (first)", f"{short(layers[-1])} (last)", "last / first"], rows
    )
    per_layer = table(
        ["layer"] + [f"`{name}`" for name in groups],
        [[short(k)] + [fmt([n[k] for n in norms[name]], sci=True) for name in groups] for k in layers],
    )
    return summary + "\n\nEvery layer (mean gradient norm over epoch 1's logged steps):\n\n" + per_layer


# ------------------------------------------------------------------------------------------ main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default=",".join(COMPARISONS), help="comma-separated comparisons")
    parser.add_argument("--seeds", default="0", help="comma-separated seeds, e.g. 0,1,2")
    parser.add_argument("--workers", type=int, default=1, help="seeds of a variant trained at once (processes)")
    parser.add_argument("--out", default="runs/course", help="log.dir root of the runs")
    parser.add_argument("--tensorboard", action="store_true", help="also write TensorBoard events")
    parser.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of each run")
    parser.add_argument("--set", action="append", metavar="KEY=VALUE", help="an override for every run")
    args = parser.parse_args()
    chosen = [c.strip() for c in args.only.split(",") if c.strip()]
    unknown = [c for c in chosen if c not in COMPARISONS]
    if unknown:
        parser.error(f"unknown comparison(s) {unknown}; choose from {list(COMPARISONS)}")
    seeds = [int(s) for s in args.seeds.split(",")]
    out = Path(args.out).resolve()
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    import torch  # noqa: PLC0415  (only for the report's header)

    extra = "".join(f" --set {shlex.quote(s)}" for s in args.set or [])
    print(f"# nntrain course comparisons\n\nseeds {seeds}; torch {torch.__version__}; "
          f"OMP_NUM_THREADS={args.threads}; {args.workers} worker(s); runs under {out}{extra}\n")
    for comparison in chosen:
        config = COMPARISONS[comparison]
        log_dir = out / comparison
        before = {row["dir"] for row in nntrain_json(["runs", str(log_dir)], env)} if log_dir.is_dir() else set()
        start = time.perf_counter()
        errors: dict[str, str] = {}
        for variant in header_variants(config):
            error = run_variant(config, variant, seeds, log_dir, args, env)
            if error:
                errors[variant.name] = error
            print(f"  {comparison}/{variant.name}: {'FAILED ' + error if error else 'done'}",
                  file=sys.stderr, flush=True)
        runs = [row for row in nntrain_json(["runs", str(log_dir)], env) if row["dir"] not in before]
        failures = [f"- `{r['name']}`, seed {r.get('seed', '?')} ({r['dir']}): {r['status']}: {r['reason']}"
                    for r in runs if r["status"] != "finished"]
        failures += [f"- `{name}`: {error}" for name, error in errors.items()
                     if not any(r["name"] == name and r["status"] != "finished" for r in runs)]
        finished = [Path(r["dir"]) for r in runs if r["status"] == "finished"]
        groups = compare_groups(finished, env) if finished else {}
        if comparison == "overfitting":
            for g in groups.values():
                g.extra["test_acc_last"] = [eval_last(d, env) for d in g.dirs]
        wall = time.perf_counter() - start
        print(f"## {comparison} (`{config}`, {wall:.0f}s wall)\n")
        print("Every number: `nntrain compare " + shlex.quote(str(log_dir)) + "/*/* --group-by seed`"
              " (mean ± sample sd over the seeds).\n")
        print(results_table(comparison, groups) + "\n")
        if failures:
            print("Runs that failed (left out of the tables):\n\n" + "\n".join(failures) + "\n")
        keys, epochs = CURVES[comparison]
        for key in keys:
            print(f"{key} after each epoch (the epoch records of metrics.jsonl):\n")
            print(curve_table(key, epochs, groups) + "\n")
        if comparison == "deep_sigmoid_vs_relu" and groups:
            print("Gradient norm of the first and last layer's weights, mean over the step records "
                  "logged during epoch 1:\n")
            print(grad_tables(groups) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
