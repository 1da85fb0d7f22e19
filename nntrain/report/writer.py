"""Builds a report: evaluate on a split with every output kept, draw the figures, write the folder."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from nntrain import figures, metrics
from nntrain.build import Parts, load_trained
from nntrain.checkpoint import load_checkpoint
from nntrain.config import to_yaml
from nntrain.device import autocast
from nntrain.evaluate import Measured, evaluate_all
from nntrain.plots import write_error
from nntrain.report import html
from nntrain.report.samples import denormalize, describe_inputs, display_images
from nntrain.run_dir import write_json

WRONG = 16  # samples in the gallery of the most confidently wrong predictions
RECONSTRUCTIONS = 8  # inputs shown beside their reconstructions
FOLDER = "report"  # the report's folder in a run folder


def report_checkpoint(
    path: str | Path, split: str = "test", out: str | Path | None = None, overrides: Sequence[str] = (),
    wrong: int = WRONG,
) -> tuple[Path, dict[str, Any]]:
    """`nntrain report`: the report of the checkpoint at `path` on `split`, written into `out`
    (default: `<checkpoint>.<split>.report/` beside the checkpoint). Returns report.html's path
    and what report.json holds."""
    path = Path(path)
    trained = load_trained(path, overrides)
    folder = Path(out) if out is not None else path.with_name(f"{path.stem}.{split}.report")
    run_dir = path.parent.parent if path.parent.name == "checkpoints" else None
    return write_report(folder, trained.parts, trained.ckpt, split, path, run_dir, wrong=wrong)


def report_run(
    run_dir: Path, parts: Parts, model: nn.Module | None = None,
    autocast_ctx: contextlib.AbstractContextManager | None = None,
) -> Path | None:
    """The report `nntrain fit` writes into `<run>/report/` at the end: the best checkpoint (else
    the last) on the test split (val when there is none or `train.test_at_end` is false), its
    weights loaded into `model` (default: `parts.model`; the trainer's averaged copy with
    train.ema / train.swa). Evaluates in this process alone, with the plain model: under torchrun
    only rank 0 calls it. Returns report.html's path, or None when the run saved no checkpoint."""
    folder = Path(run_dir) / "checkpoints"
    path = next((folder / name for name in ("best.pt", "last.pt") if (folder / name).is_file()), None)
    if path is None:
        return None
    ckpt = load_checkpoint(path, purpose="weights")
    model = model if model is not None else parts.model
    model.load_state_dict(ckpt["model"])
    # The test split only where the run was tested at its end (train.test_at_end: false keeps it unseen).
    tested = parts.cfg.train.test_at_end and parts.data.test is not None
    split = "test" if tested else "val" if parts.data.val is not None else "train"
    return write_report(Path(run_dir) / FOLDER, parts, ckpt, split, path, Path(run_dir), autocast_ctx, model=model)[0]


@dataclass
class _Report:
    figures: dict[str, tuple[bytes, str]] = field(default_factory=dict)  # name -> (png, caption)
    sections: list[html.Section] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)  # report.json entries besides the metrics

    def section(self, anchor: str, title: str) -> html.Section:
        self.sections.append(html.Section(anchor, title))
        return self.sections[-1]

    def figure(self, section: html.Section, name: str, fig: Any, caption: str) -> None:
        png = figures.png(fig)
        self.figures[name] = (png, caption)
        section.parts.append(html.figure(png, name.replace("_", " "), f"{caption} ({name}.png)"))


def write_report(
    out: Path,
    parts: Parts,
    ckpt: dict[str, Any],
    split: str,
    checkpoint: Path,
    run_dir: Path | None = None,
    autocast_ctx: contextlib.AbstractContextManager | None = None,
    wrong: int = WRONG,
    model: nn.Module | None = None,
) -> tuple[Path, dict[str, Any]]:
    """Evaluates `model` (default: `parts.model`) on `split` and writes report.html, report.json and the figures
    (PNG) into `out`. Returns report.html's path and what report.json holds.

    Args:
        out: the report's folder (created; an earlier report's files of the same names are written over).
        parts: the model with its weights, its data (as in training) and config.
        ckpt: the checkpoint the weights came from (epoch, step, provenance).
        split: train, val or test.
        checkpoint: the checkpoint's path (shown).
        run_dir: the run folder, for the training curves of its metrics.jsonl (None: none shown).
        autocast_ctx: mixed precision (default: the config's).
        wrong: how many of the most confidently wrong samples the gallery shows.
        model: the model to evaluate, if not `parts.model` (the trainer's averaged copy).
    """
    if autocast_ctx is None:
        autocast_ctx = autocast(parts.device, parts.cfg.train.precision)
    record, measured = evaluate_all(
        model if model is not None else parts.model, parts.loss_fn, parts.data, split, parts.cfg, autocast_ctx,
        keep_outputs=True,
    )
    info = parts.data.info
    x, y = parts.data.split(split)
    report = _Report()
    _overview(report, record, split, len(y))
    if info.task == "classification":
        _classification(report, record, split)
        _wrong(report, parts, measured, x, y, record["classes"], wrong)
    elif info.task == "regression":
        _regression(report, parts, measured, y)
    elif info.task == "reconstruction":
        _reconstruction(report, parts, measured, x)
    _training(report, parts, run_dir)
    _config(report, parts, checkpoint, ckpt)
    title = f"nntrain report: {parts.cfg.name}"
    subtitle = (f"{checkpoint} on the {split} split ({len(y)} samples), epoch {ckpt.get('epoch')}, "
                f"step {ckpt.get('step')}; written {datetime.now().strftime('%Y-%m-%d %H:%M')}")
    document = html.page(title, subtitle, report.sections)
    summary = {
        "checkpoint": str(checkpoint), "split": split, "epoch": ckpt.get("epoch"), "step": ckpt.get("step"),
        **record, **report.extra,
        "figures": {name: f"{name}.png" for name in report.figures},
        "config": parts.cfg.to_dict(),
        "provenance": ckpt.get("provenance"),
    }
    return _write(Path(out), document, summary, report.figures), summary


def _write(out: Path, document: str, summary: dict[str, Any], pngs: dict[str, tuple[bytes, str]]) -> Path:
    page = out / "report.html"
    try:
        out.mkdir(parents=True, exist_ok=True)
        for name, (png, _) in pngs.items():
            (out / f"{name}.png").write_bytes(png)
        tmp = out / f".report.html.tmp-{os.getpid()}"
        tmp.write_text(document, encoding="utf-8")
        os.replace(tmp, page)
    except OSError as exc:
        raise write_error(page, exc) from None
    write_json(out / "report.json", summary)
    return page


# ------------------------------------------------------------------ sections


def _number(value: Any) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "n/a"
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _overview(report: _Report, record: dict[str, Any], split: str, samples: int) -> None:
    section = report.section("metrics", "Metrics")
    rows = []
    for key, value in record.items():
        if key.startswith(f"{split}/"):
            rows.append([key, _number(value), metrics.get(key).doc])
    section.parts.append(html.table(["metric", "value", "meaning"], rows, left=1))
    section.parts.append(html.paragraph(
        f"task {record['task']}, {samples} samples of the {split} split; errors of regression in the "
        "targets' original units", note=True))


def _classification(report: _Report, record: dict[str, Any], split: str) -> None:
    labels, per_class, matrix = record["classes"], record["per_class"], record["confusion_matrix"]
    section = report.section("per-class", "Per class")
    rows = [[name, _number(c["precision"]), _number(c["recall"]), _number(c["f1"]), c["support"],
             _number(c.get("auroc"))] for name, c in per_class.items()]
    section.parts.append(html.table(["class", "precision", "recall", "F1", "support", "AUROC"], rows))
    f1, support = [c["f1"] for c in per_class.values()], [c["support"] for c in per_class.values()]
    bars = figures.class_bars(labels, f1, "F1", support, mean=record.get(f"{split}/f1_macro"))
    report.figure(section, "f1_per_class", bars,
                  "F1 per class; the dashed line is the macro F1; a hatched bar is a class absent from the split")

    section = report.section("confusion", "Confusion matrix")
    report.figure(section, "confusion_matrix", figures.confusion_matrix(matrix["counts"], labels),
                  "rows: true class, columns: predicted class; colour: share of the true class, numbers: counts")
    if len(labels) <= figures.ANNOTATED:
        section.parts.append(html.table(["true \\ predicted", *labels],
                                        [[label, *row] for label, row in zip(labels, matrix["counts"])],
                                        caption="counts"))

    section = report.section("calibration", "Calibration")
    ece = record.get(f"{split}/ece")
    report.figure(section, "reliability", figures.reliability(record["calibration"]["bins"], ece),
                  "accuracy against confidence per confidence bin; bars below the diagonal are over-confident")


def _wrong(report: _Report, parts: Parts, measured: Measured, x: torch.Tensor, y: torch.Tensor,
           labels: list[str], count: int) -> None:
    section = report.section("wrong", "Most confidently wrong")
    probs = measured.outputs.softmax(dim=-1)
    confidence, predicted = probs.max(dim=-1)
    target = y.cpu()
    wrong = (predicted != target).nonzero().squeeze(1)
    chosen = wrong[confidence[wrong].argsort(descending=True, stable=True)][:count]
    samples = []
    for i in chosen.tolist():
        samples.append({"index": i, "true": labels[target[i]], "predicted": labels[predicted[i]],
                        "probability": float(confidence[i]), "true_probability": float(probs[i, target[i]])})
    report.extra["wrong"] = samples
    if not samples:
        section.parts.append(html.paragraph("every sample of the split is classified correctly", note=True))
        return
    section.parts.append(html.paragraph(
        f"the {len(samples)} wrong predictions made with the highest probability, of {len(wrong)} wrong in all"))
    shown = describe_inputs(parts.data.info, x[chosen.to(x.device)], parts.data.normalizer)
    captions = [f"#{s['index']} true {s['true']}\npred {s['predicted']} ({s['probability']:.2f})" for s in samples]
    if shown["kind"] == "image":
        report.figure(section, "wrong", figures.images(shown["images"], captions), "most confidently wrong samples")
    elif shown["kind"] == "sequence":
        panels = [[("", rows)] for rows in shown["series"]]
        report.figure(section, "wrong", figures.series(panels, captions), "most confidently wrong sequences")
    text = shown.get("texts") or shown.get("rows")
    if text is not None:
        key = "text" if shown["kind"] == "text" else "features"
        for sample, value in zip(samples, text):
            sample[key] = value
    header = ["sample", "true", "predicted", "probability", "p(true)"] + ([key] if text is not None else [])
    rows = [[s["index"], s["true"], s["predicted"], f"{s['probability']:.3f}", f"{s['true_probability']:.3f}"]
            + ([s[key]] if text is not None else []) for s in samples]
    section.parts.append(html.table(header, rows, left=(1, 2) if text is None else (1, 2, 5), css="wrong-samples"))


def _original_units(info: Any, values: torch.Tensor) -> np.ndarray:
    values = values.reshape(len(values), -1).double()
    if info.target_scale is not None:
        values = values * torch.tensor(info.target_scale, dtype=torch.float64) + torch.tensor(
            info.target_shift, dtype=torch.float64)
    return values.numpy()


def _regression(report: _Report, parts: Parts, measured: Measured, y: torch.Tensor) -> None:
    info = parts.data.info
    true = _original_units(info, y.cpu()).ravel()
    pred = _original_units(info, measured.outputs).ravel()
    section = report.section("predictions", "Predictions")
    report.figure(section, "predicted_vs_true", figures.predicted_vs_true(true, pred),
                  "each predicted value against its target, in the targets' units; the dashed line is y = x")
    report.figure(section, "residuals", figures.residuals(true, pred),
                  "residuals (predicted - true) against the prediction, and their distribution")
    errors = np.abs(pred - true)
    report.extra["largest_errors"] = [
        {"value": int(i), "true": float(true[i]), "predicted": float(pred[i])}
        for i in np.argsort(-errors, kind="stable")[:10]
    ]


def _reconstruction(report: _Report, parts: Parts, measured: Measured, x: torch.Tensor) -> None:
    section = report.section("reconstructions", "Reconstructions")
    n = min(RECONSTRUCTIONS, len(x))
    inputs, outputs = x[:n].cpu().float(), measured.outputs[:n].view_as(x[:n].cpu())
    if isinstance(parts.loss_fn, nn.BCEWithLogitsLoss):
        outputs = outputs.sigmoid()  # logits of values in [0, 1]
    inputs, outputs = denormalize(parts.data.normalizer, inputs), denormalize(parts.data.normalizer, outputs)
    if inputs.dim() == 4:
        tiles = display_images(torch.cat([inputs, outputs]))
        captions = [f"input #{i}" for i in range(n)] + [f"reconstruction #{i}" for i in range(n)]
        report.figure(section, "reconstructions", figures.images(tiles, captions, cols=n),
                      f"the first {n} samples of the split (top) beside their reconstructions (bottom)")
    else:
        panels = [[("input", a.reshape(len(a), -1).numpy() if a.dim() > 1 else a.numpy()),
                   ("reconstruction", b.reshape(len(b), -1).numpy() if b.dim() > 1 else b.numpy())]
                  for a, b in zip(inputs, outputs)]
        report.figure(section, "reconstructions", figures.series(panels, [f"#{i}" for i in range(n)]),
                      f"the first {n} samples of the split and their reconstructions")


def _training(report: _Report, parts: Parts, run_dir: Path | None) -> None:
    section = report.section("training", "Training")
    log = None if run_dir is None else Path(run_dir) / "metrics.jsonl"
    if log is None or not log.is_file():
        section.parts.append(html.paragraph("no metrics.jsonl beside the checkpoint's run folder: no training "
                                            "curves", note=True))
        report.extra["metrics_jsonl"] = None
        return
    report.extra["metrics_jsonl"] = str(log)
    records = []
    for line in log.read_text(encoding="utf-8").splitlines():
        with contextlib.suppress(ValueError):
            records.append(json.loads(line))
    steps = [r for r in records if r.get("kind") == "step"]
    epochs = [r for r in records if r.get("kind") == "epoch"]

    def series(rows: list[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
        kept = [r for r in rows if isinstance(r.get(key), (int, float))]
        return [r["step"] for r in kept], [float(r[key]) for r in kept]

    curves: dict[str, dict[str, tuple[list[float], list[float]]]] = {"loss": {}}
    for label, rows, key in (("train/loss", steps or epochs, "train/loss"), ("val/loss", epochs, "val/loss")):
        if series(rows, key)[0]:
            curves["loss"][label] = series(rows, key)
    monitor = parts.cfg.train.checkpoint.monitor
    if monitor not in ("train/loss", "val/loss") and series(epochs, monitor)[0]:
        curves[monitor] = {monitor: series(epochs, monitor)}
    lr = series(steps, "lr") if series(steps, "lr")[0] else series(epochs, "lr")
    if lr[0]:
        curves["learning rate"] = {"lr": lr}
    if not any(curves.values()):
        section.parts.append(html.paragraph(f"{log} holds no epoch yet", note=True))
        return
    report.figure(section, "training_curves", figures.training_curves({k: v for k, v in curves.items() if v}),
                  f"from {log}: the losses, the monitored metric ({monitor}) and the learning rate, by step")
    rows = [[r.get("epoch"), r.get("step"), *(_number(r.get(k)) for k in ("train/loss", "val/loss", monitor))]
            for r in epochs]
    header = ["epoch", "step", "train/loss", "val/loss", monitor]
    if monitor in ("train/loss", "val/loss"):
        header, rows = header[:-1], [r[:-1] for r in rows]
    section.parts.append(html.table(header, rows, caption="per epoch", left=0))


def _config(report: _Report, parts: Parts, checkpoint: Path, ckpt: dict[str, Any]) -> None:
    section = report.section("config", "Config")
    section.parts.append(html.paragraph("the resolved config stored in the checkpoint (with any --set applied)"))
    section.parts.append(html.preformatted(to_yaml(parts.cfg)))
    section = report.section("provenance", "Provenance")
    rows = [["checkpoint", str(checkpoint)], ["epoch", ckpt.get("epoch")], ["step", ckpt.get("step")],
            ["config hash", ckpt.get("config_hash")], ["seed", ckpt.get("seed")]]
    rows += [[key, value] for key, value in (ckpt.get("provenance") or {}).items()]
    section.parts.append(html.table(["", "value"], rows, left=2))
