"""`nntrain compare`: runs side by side, the config keys that differ and their metrics, with runs
that differ only by seed grouped as mean ± sample standard deviation.

A column is a run, or a group of runs whose configs are equal apart from `seed` (and `log.dir`,
where it was written). Group cells are `mean ± sd (n)`, with the sample standard deviation
(ddof=1, `statistics.stdev`) over the n runs that have the value; one run shows its value.
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nntrain.errors import ConfigError
from nntrain.runs import Run, load_run, run_dirs

ABSENT = object()  # a key that one run's config doesn't have
IGNORED = ("log.dir",)  # where a run was written, not what it trained
GROUP_BY = ("auto", "seed", "none")


@dataclass
class Column:
    """One run, or a group of runs that differ only by seed."""

    label: str
    runs: list[Run]

    @property
    def grouped(self) -> bool:
        return len(self.runs) > 1


@dataclass
class Stat:
    """A metric over a column's runs: the values, their mean, sample sd (ddof=1) and count."""

    values: list[float]

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float | None:
        return statistics.fmean(self.values) if self.values else None

    @property
    def sd(self) -> float | None:
        return statistics.stdev(self.values) if self.n > 1 else None

    def text(self, grouped: bool, digits: int | None = None) -> str:
        """`value` for one run; `mean ± sd (n=N)` for a group (`value (n=N)` when all N agree).

        `digits`: decimals (None: 4 significant digits); whole numbers print as such.
        """
        if not self.values:
            return "-"
        whole = all(v.is_integer() for v in self.values)
        if not grouped:
            return _fmt(self.values[0], 0 if whole else digits)
        if len(set(self.values)) == 1:  # a setting more than a measurement (lr, epochs): as written
            return f"{_fmt(self.values[0], 0 if whole else digits, zeros=False)} (n={self.n})"
        mean, sd = self.mean, self.sd
        assert mean is not None and sd is not None
        return f"{_fmt(mean, digits)} ± {_fmt(sd, digits, 2)} (n={self.n})"

    def to_json(self) -> dict[str, Any]:
        return {"mean": self.mean, "sd": self.sd, "n": self.n, "values": self.values}


def _fmt(value: float, digits: int | None, significant: int = 4, zeros: bool = True) -> str:
    """`digits` decimals, or `significant` digits (None), trailing zeros kept (0.9300 beside
    0.9311) unless `zeros` is False."""
    if digits is not None:
        return f"{value:,.{digits}f}"
    if value != 0 and not 1e-4 <= abs(value) < 1e6:
        return f"{value:.{significant - 1}e}"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:#.{significant}g}".rstrip(".") if zeros else f"{value:.{significant}g}"


# Decimals of some rows; the rest get 4 significant digits.
DIGITS = {"time s": 1, "samples/s": 0, "epochs": 1, "best epoch": 1}


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """`{"optimizer": {"lr": 0.1}}` -> `{"optimizer.lr": 0.1}`; lists are values (a null section too)."""
    if not isinstance(tree, dict) or (prefix and not tree):
        return {prefix.rstrip("."): tree}
    out: dict[str, Any] = {}
    for key, value in tree.items():
        out.update(flatten(value, f"{prefix}{key}."))
    return out


def _same(a: Any, b: Any) -> bool:
    if a is ABSENT or b is ABSENT:
        return a is b
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def differing_keys(configs: list[dict[str, Any]], ignore: tuple[str, ...] = IGNORED) -> list[str]:
    """The dotted keys whose values are not the same in every config, in config order."""
    flat = [flatten(c) for c in configs]
    keys = list(dict.fromkeys(k for f in flat for k in f))
    return [
        k for k in keys
        if k not in ignore and not all(_same(f.get(k, ABSENT), flat[0].get(k, ABSENT)) for f in flat[1:])
    ]


def _identity(run: Run) -> str:
    """What a run trains, apart from its seed: runs with the same identity form a seed group."""
    flat = {k: v for k, v in flatten(run.config).items() if k != "seed" and k not in IGNORED}
    return json.dumps(flat, sort_keys=True, default=str)


def columns(runs: list[Run], group_by: str = "auto") -> tuple[list[Column], bool]:
    """The table's columns and whether runs were grouped by seed.

    `auto` groups when some runs differ only by their seed; `seed` always groups; `none` never.
    """
    if group_by not in GROUP_BY:
        raise ConfigError(f"--group-by {group_by}: choose one of {', '.join(GROUP_BY)}")
    groups: dict[str, list[Run]] = {}
    for run in runs:
        groups.setdefault(_identity(run), []).append(run)
    grouped = group_by == "seed" or (group_by == "auto" and any(len(g) > 1 for g in groups.values()))
    cols = [Column(g[0].name, g) for g in groups.values()] if grouped else [Column(r.name, [r]) for r in runs]
    _unique_labels(cols)
    return cols, grouped


def _unique_labels(cols: list[Column]) -> None:
    """Columns with the same label get their stamp (a run) or a number (a group) added."""
    counts: dict[str, int] = {}
    for c in cols:
        counts[c.label] = counts.get(c.label, 0) + 1
    seen: dict[str, int] = {}
    for c in cols:
        if counts[c.label] > 1:
            seen[c.label] = seen.get(c.label, 0) + 1
            c.label = f"{c.label}/{c.runs[0].stamp}" if not c.grouped else f"{c.label} #{seen[c.label]}"


def _values(cols: list[Column], get: Any) -> list[Stat]:
    stats = []
    for col in cols:
        values = []
        for run in col.runs:
            value = get(run)
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                values.append(float(value))
        stats.append(Stat(values))
    return stats


def metric_rows(cols: list[Column]) -> list[tuple[str, list[Stat]]]:
    """(label, one Stat per column): final metrics, best monitored metric and its epoch, test
    metrics, epochs, time and throughput."""
    runs = [r for c in cols for r in c.runs]
    out: list[tuple[str, list[Stat]]] = []
    finals = list(dict.fromkeys(k for r in runs for k in r.final))
    for key in finals:
        out.append((f"final {key}", _values(cols, lambda r, k=key: r.final.get(k))))
    monitors = list(dict.fromkeys(r.monitor for r in runs if r.best is not None))
    for monitor in monitors:
        epoch = "best epoch" if len(monitors) == 1 else f"best epoch ({monitor})"
        out.append((f"best {monitor}", _values(cols, lambda r, m=monitor: r.best if r.monitor == m else None)))
        out.append((epoch, _values(cols, lambda r, m=monitor: r.best_epoch if r.monitor == m else None)))
    for key in dict.fromkeys(k for r in runs for k in r.test):
        out.append((f"{key} (best.pt)", _values(cols, lambda r, k=key: r.test.get(k))))
    out.append(("epochs", _values(cols, lambda r: r.epochs_done)))
    out.append(("time s", _values(cols, lambda r: r.duration_s)))
    out.append(("samples/s", _values(cols, lambda r: r.samples_per_s)))
    return [(label, stats) for label, stats in out if any(s.values for s in stats)]


def show(value: Any) -> str:
    """A config value as a short YAML-like text."""
    if value is ABSENT:
        return "-"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(", ", ": "))
    return str(value)


def config_cells(col: Column, key: str) -> str:
    """A config key's value in a column; a group shares it (the seed differs: its seeds, listed)."""
    values = [flatten(r.config).get(key, ABSENT) for r in col.runs]
    if all(_same(v, values[0]) for v in values[1:]):
        return show(values[0])
    return ", ".join(show(v) for v in values)


@dataclass
class Comparison:
    """What `nntrain compare` shows: columns, differing config keys (value per column), metrics."""

    cols: list[Column]
    grouped: bool
    keys: list[str]
    config: list[tuple[str, list[str]]]
    metrics: list[tuple[str, list[Stat]]]

    def to_json(self) -> dict[str, Any]:
        return {
            "grouped_by_seed": self.grouped,
            "sd": "sample standard deviation (ddof=1) over the runs of a group",
            "columns": [{"label": c.label, "runs": [str(r.dir) for r in c.runs],
                         "seeds": [r.seed for r in c.runs], "status": [r.status for r in c.runs]} for c in self.cols],
            "config": {key: cells for key, cells in self.config},
            "metrics": {label: [s.to_json() for s in stats] for label, stats in self.metrics},
            "curves": {key: [curve_json(c, key) for c in self.cols] for key in epoch_keys(self.cols)},
        }


def compare(patterns: list[str], group_by: str = "auto") -> Comparison:
    """Reads the runs `patterns` name (run folders, folders of runs, sweep folders, globs) and
    lays them out for a table.

    Raises:
        ConfigError: a pattern names no run folder.
    """
    runs = [load_run(d) for d in run_dirs(patterns)]
    cols, grouped = columns(runs, group_by)
    keys = differing_keys([c.runs[0].config for c in cols]) if len(cols) > 1 else []
    config: list[tuple[str, list[str]]] = []
    if grouped:  # the seeds of each group, in place of a `seed` row that would differ within a group
        keys = [k for k in keys if k != "seed"]
        config.append(("seed", [", ".join(str(r.seed) for r in c.runs) for c in cols]))
    config += [(key, [config_cells(c, key) for c in cols]) for key in keys]
    return Comparison(cols, grouped, keys, config, metric_rows(cols))


# ------------------------------------------------------------------------------------ plotting


def curves(col: Column, key: str) -> tuple[list[int], list[float], list[float | None]]:
    """(epochs, mean, sd) of the epoch records' `key` over a column's runs, at every epoch some run
    reached; sd is None where fewer than two runs have a value."""
    by_epoch: dict[int, list[float]] = {}
    for run in col.runs:
        for record in run.epochs:
            value = record.get(key)
            if isinstance(value, (int, float)) and math.isfinite(value):
                by_epoch.setdefault(int(record["epoch"]), []).append(float(value))
    epochs = sorted(by_epoch)
    stats = [Stat(by_epoch[e]) for e in epochs]
    return epochs, [s.mean for s in stats], [s.sd for s in stats]  # type: ignore[misc]


def epoch_keys(cols: list[Column]) -> list[str]:
    """The metrics the epoch records hold (`train/loss`, `val/acc`, `lr`, ...), in record order."""
    skip = ("kind", "epoch", "step")
    return list(dict.fromkeys(k for c in cols for r in c.runs for e in r.epochs for k in e if k not in skip))


def curve_json(col: Column, key: str) -> dict[str, Any]:
    """`key` per epoch for --json: each run's values (null where it has none) and the mean and sd."""
    epochs, mean, sd = curves(col, key)
    per_run = []
    for run in col.runs:
        values = {int(r["epoch"]): r.get(key) for r in run.epochs}
        per_run.append([values.get(e) for e in epochs])
    return {"epochs": epochs, "runs": per_run, "mean": mean, "sd": sd}


def plot(comparison: Comparison, key: str, out: Path) -> Path:
    """The validation curves (`key` per epoch) of every column, overlaid: groups as their mean with a
    ±1 sd band. `out` ends in .png (an image) or .html (the figure as SVG and the comparison table)."""
    suffix = out.suffix.lower()
    if suffix not in (".png", ".html", ".htm"):
        raise ConfigError(f"--plot {out}: write a .png or an .html file")
    try:
        import matplotlib
    except ImportError:
        raise ConfigError("--plot needs matplotlib (pip install matplotlib)") from None
    matplotlib.use("Agg")
    import io

    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    drawn = 0
    for col in comparison.cols:
        epochs, mean, sd = curves(col, key)
        if not epochs:
            continue
        drawn += 1
        label = f"{col.label} (n={len(col.runs)})" if col.grouped else col.label
        (line,) = ax.plot(epochs, mean, marker="o" if len(epochs) < 20 else None, label=label)
        if col.grouped:
            lo = [m - (s or 0.0) for m, s in zip(mean, sd)]
            hi = [m + (s or 0.0) for m, s in zip(mean, sd)]
            ax.fill_between(epochs, lo, hi, color=line.get_color(), alpha=0.2, linewidth=0)
    if not drawn:
        plt.close(fig)
        raise ConfigError(f"--metric {key}: no run has it in its epoch records (metrics.jsonl)")
    ax.set_xlabel("epoch")
    ax.set_ylabel(key)
    band = " (band: ±1 sample sd over seeds)" if comparison.grouped else ""
    ax.set_title(f"{key} per epoch{band}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        if suffix == ".png":
            fig.savefig(out, dpi=120)
        else:
            svg = io.StringIO()
            fig.savefig(svg, format="svg")
            out.write_text(_html(comparison, svg.getvalue(), key), encoding="utf-8")
    except OSError as exc:
        from nntrain.errors import RunError

        raise RunError(f"cannot write {out}: {exc.strerror or exc}") from None
    finally:
        plt.close(fig)
    return out


def _html(comparison: Comparison, svg: str, key: str) -> str:
    import html

    head = "".join(f"<th>{html.escape(c.label)}</th>" for c in comparison.cols)
    body = []
    for label, cells in comparison.config:
        tds = "".join(f"<td>{html.escape(v)}</td>" for v in cells)
        body.append(f"<tr><td>{html.escape(label)}</td>{tds}</tr>")
    for label, stats in comparison.metrics:
        cells = "".join(f"<td>{html.escape(s.text(c.grouped, DIGITS.get(label)))}</td>"
                        for s, c in zip(stats, comparison.cols))
        body.append(f"<tr class=metric><td>{html.escape(label)}</td>{cells}</tr>")
    note = "<p>Groups: runs whose configs differ only by seed; ± is the sample standard deviation (ddof=1).</p>"
    return (
        "<!doctype html><html><head><meta charset=utf-8><title>nntrain compare</title><style>"
        "body{font-family:sans-serif}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 8px}"
        "tr.metric td{font-variant-numeric:tabular-nums}</style></head><body>"
        f"<h1>nntrain compare: {html.escape(key)}</h1>{svg}"
        f"<table><tr><th></th>{head}</tr>{''.join(body)}</table>{note if comparison.grouped else ''}</body></html>\n"
    )
