"""`nntrain predict`: a checkpoint's model on new inputs, one prediction per input, into a file.

Everything the inputs need (normalizer statistics, vocabulary, scaler, class names) comes from
the checkpoint (`build.load_model`); `nntrain.data.inputs` reads the inputs as the training
source would have. Inference runs in batches, in inference mode, on the training device, with
the training precision.

Output, one row per input (its path, `id` or file:line):
- classification: the predicted class and its probability, then the top-k classes and theirs;
- regression and forecasting: the predicted values in the target's original units;
- reconstruction: the reconstruction's mean squared error (in the normalized units eval reports).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from nntrain import jsonfile
from nntrain.build import Restored, load_model
from nntrain.data.inputs import Inputs, InputSpec, input_spec, read_inputs
from nntrain.data.reading import float_images
from nntrain.device import autocast
from nntrain.errors import ConfigError, RunError

FORMATS = ("csv", "jsonl")
DEFAULT_TOP_K = 5


@dataclass
class Predictions:
    """The model's outputs for each input, ready to write.

    Classification fills `classes`, `predicted` (N,), `probability` (N,), `top_classes` (N, k)
    and `top_probabilities` (N, k); regression fills `values` (N, outputs) in original units
    with `value_names`; reconstruction fills `values` (N, 1) with the per-input MSE.
    """

    names: list[str]
    task: str
    classes: list[str] | None = None
    predicted: torch.Tensor | None = None
    probability: torch.Tensor | None = None
    top_classes: torch.Tensor | None = None
    top_probabilities: torch.Tensor | None = None
    values: torch.Tensor | None = None
    value_names: list[str] | None = None

    def __len__(self) -> int:
        return len(self.names)

    def header(self) -> list[str]:
        if self.task == "classification":
            k = self.top_classes.shape[1]
            tops = [name for i in range(1, k + 1) for name in (f"class_{i}", f"probability_{i}")]
            return ["input", "class", "probability", *tops]
        return ["input", *self.value_names]

    def rows(self) -> list[list[Any]]:
        """Plain Python values, one list per input, in the order of `header()`."""
        if self.task != "classification":
            values = self.values.tolist()
            return [[name, *row] for name, row in zip(self.names, values)]
        classes = self.classes
        predicted, probability = self.predicted.tolist(), self.probability.tolist()
        top_c, top_p = self.top_classes.tolist(), self.top_probabilities.tolist()
        return [
            [name, classes[c], p, *(v for pair in zip((classes[i] for i in tc), tp) for v in pair)]
            for name, c, p, tc, tp in zip(self.names, predicted, probability, top_c, top_p)
        ]

    def records(self) -> list[dict[str, Any]]:
        """One JSON object per input."""
        if self.task != "classification":
            return [
                {"input": row[0], **dict(zip(self.value_names, row[1:]))} for row in self.rows()
            ]
        classes = self.classes
        return [
            {
                "input": name, "class": classes[c], "probability": p,
                "top_k": [{"class": classes[i], "probability": q} for i, q in zip(tc, tp)],
            }
            for name, c, p, tc, tp in zip(
                self.names, self.predicted.tolist(), self.probability.tolist(),
                self.top_classes.tolist(), self.top_probabilities.tolist(),
            )
        ]


def spec_of(restored: Restored) -> InputSpec:
    """What inputs the restored model takes."""
    from nntrain.models.rnn import SequenceModel

    dataset = restored.cfg.data.dataset
    options = {k: v for k, v in dataset.model_dump().items() if k != "name"}
    return input_spec(restored.info, dataset.name, options, isinstance(restored.model, SequenceModel))


def predict(
    checkpoint: str | Path,
    inputs: Sequence[str | Path],
    top_k: int | None = None,
    batch_size: int | None = None,
    device: str | None = None,
) -> Predictions:
    """Predicts every input with the checkpoint's model (see the module docstring).

    Args:
        checkpoint: an nntrain checkpoint file.
        inputs: files and folders (`nntrain.data.inputs` says which the model takes).
        top_k: classes listed per input (default 5, at most the number of classes).
        batch_size: samples per forward pass (default: the config's `data.eval_batch_size`).
        device: where to run (default: the training device).
    """
    _check_counts(top_k, batch_size)
    restored = load_model(checkpoint, device)
    data = read_inputs([Path(p) for p in inputs], spec_of(restored))
    return predict_tensors(restored, data, top_k, batch_size)


def _check_counts(top_k: int | None, batch_size: int | None) -> None:
    if top_k is not None and top_k < 1:
        raise ConfigError(f"--top-k {top_k}: give 1 or more")
    if batch_size is not None and batch_size < 1:
        raise ConfigError(f"--batch-size {batch_size}: give 1 or more")


def predict_tensors(
    restored: Restored,
    data: Inputs,
    top_k: int | None = None,
    batch_size: int | None = None,
) -> Predictions:
    """The predictions of `restored`'s model on prepared inputs (normalized here, as in training)."""
    cfg, info, model, device = restored.cfg, restored.info, restored.model, restored.device
    x, normalizer = data.x, restored.normalizer
    size = batch_size or cfg.data.eval_batch_size
    task = info.task
    k = min(top_k or DEFAULT_TOP_K, info.num_classes or 1)
    sigmoid = task == "reconstruction" and cfg.loss.name == "bce_with_logits"
    keep: list[list[torch.Tensor]] = []
    precision = autocast(device, cfg.train.precision)
    with torch.inference_mode(), precision:
        for start in range(0, len(x), size):
            xb = x[start : start + size].to(device, non_blocking=True)
            if data.pixels:
                xb = float_images(xb)  # uint8 -> [0, 1], as the source scaled the training images
            if normalizer is not None:  # elementwise, so per batch gives what build_data's whole tensor got
                xb = normalizer(xb)
            out = model(xb).float()
            if task == "classification":
                probs = out.softmax(dim=-1)
                top_p, top_c = probs.topk(k, dim=-1)
                pred = out.argmax(dim=-1)  # as eval's accuracy counts it
                keep.append([pred, probs.gather(1, pred.unsqueeze(1)).squeeze(1), top_c, top_p])
            elif task == "reconstruction":
                rec = out.sigmoid() if sigmoid else out
                keep.append([(rec - xb.float()).pow(2).reshape(len(xb), -1).mean(dim=1, keepdim=True)])
            else:
                keep.append([out])
    return _assemble(restored, data.names, [torch.cat(parts).cpu() for parts in zip(*keep)])


def _assemble(restored: Restored, names: list[str], cols: list[torch.Tensor]) -> Predictions:
    """Predictions from the loop's columns (on the host); regression values in original units."""
    info = restored.info
    task = info.task
    if task == "classification":
        classes = list(info.classes or map(str, range(info.num_classes)))
        return Predictions(names, task, classes, cols[0], cols[1], cols[2], cols[3])
    if task == "reconstruction":
        return Predictions(names, task, values=cols[0].double(), value_names=["mse"])
    values = cols[0].double()
    if info.target_scale is not None:
        values = values * torch.tensor(info.target_scale, dtype=torch.float64) + torch.tensor(
            info.target_shift, dtype=torch.float64
        )
    return Predictions(names, task, values=values, value_names=value_names(restored, values.shape[1]))


def value_names(restored: Restored, outputs: int) -> list[str]:
    """Names of a regression model's outputs: its target columns (`<column>+<step>` for a
    forecast of several steps), else value_0, value_1, ..."""
    state = restored.info.source_state or {}
    targets = state.get("targets") or []
    if isinstance(targets, str):
        targets = [targets]
    if targets and outputs == len(targets):
        return list(targets)
    if targets and outputs % len(targets) == 0:
        steps = outputs // len(targets)
        return [f"{t}+{h}" for h in range(1, steps + 1) for t in targets]
    return ["value"] if outputs == 1 else [f"value_{i}" for i in range(outputs)]


def output_format(out: Path | None, fmt: str | None) -> str:
    """`--format`, or what `--out`'s suffix says (.jsonl/.json: jsonl), else csv."""
    if fmt is not None:
        if fmt not in FORMATS:
            raise ConfigError(f"--format {fmt}: choose {' or '.join(FORMATS)}")
        return fmt
    return "jsonl" if out is not None and out.suffix.lower() in (".jsonl", ".json", ".ndjson") else "csv"


def check_out(out: Path) -> None:
    """Fails before any work if `out` can't be written (no folder, or a folder in its place)."""
    if out.is_dir():
        raise ConfigError(f"--out {out}: is a folder; give a file name such as {out / 'predictions.csv'}")
    if not out.parent.is_dir():
        raise ConfigError(f"--out {out}: folder '{out.parent}' does not exist")


def render(preds: Predictions, fmt: str) -> str:
    """The predictions as CSV (probabilities and values to 6 significant digits) or JSON lines."""
    return render_header(preds, fmt) + render_rows(preds, fmt)


def render_header(preds: Predictions, fmt: str) -> str:
    return "" if fmt == "jsonl" else ",".join(map(_csv_field, preds.header())) + "\n"


def render_rows(preds: Predictions, fmt: str) -> str:
    """Every row of `preds` (no header), each ending in a line break."""
    if fmt == "jsonl":
        return "".join(jsonfile.dumps(record) + "\n" for record in _rounded(preds.records()))
    # Column by column, each formatted by one C-level map: ten thousand rows take milliseconds.
    number = "%.6g".__mod__
    columns = [list(map(_csv_field, preds.names))]
    if preds.task == "classification":
        classes = [_csv_field(c) for c in preds.classes]
        columns.append(list(map(classes.__getitem__, preds.predicted.tolist())))
        columns.append(list(map(number, preds.probability.tolist())))
        for c, p in zip(preds.top_classes.T.tolist(), preds.top_probabilities.T.tolist()):
            columns += [list(map(classes.__getitem__, c)), list(map(number, p))]
    else:
        columns += [list(map(number, column)) for column in preds.values.T.tolist()]
    lines = map(",".join, zip(*columns))
    return "".join(line + "\n" for line in lines)


_NEEDS_QUOTES = re.compile('[,"\r\n]').search


def _csv_field(text: Any) -> str:
    """A CSV field as the csv module writes it: quoted when it holds a comma, quote or line break."""
    text = str(text)
    return '"' + text.replace('"', '""') + '"' if _NEEDS_QUOTES(text) else text


def _rounded(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    def each(v: Any) -> Any:
        if isinstance(v, float):
            return float(f"{v:.6g}")
        if isinstance(v, list):
            return [each(i) for i in v]
        if isinstance(v, dict):
            return {k: each(i) for k, i in v.items()}
        return v

    return [each(r) for r in records]


def write_predictions(preds: Predictions, out: Path, fmt: str) -> None:
    """Writes atomically: a temporary file in the same folder, renamed over `out`."""
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            f.write(render(preds, fmt))
        os.replace(tmp, out)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise RunError(f"cannot write {out}: {exc.strerror or exc}") from None


def predict_to_file(
    checkpoint: str | Path,
    inputs: Sequence[str | Path],
    out: str | Path | None = None,
    fmt: str | None = None,
    top_k: int | None = None,
    batch_size: int | None = None,
    device: str | None = None,
) -> Predictions:
    """What `nntrain predict` does: checks `out`, predicts, writes `out` (if given)."""
    out = None if out is None else Path(out)
    fmt = output_format(out, fmt)
    if out is None:
        return predict(checkpoint, inputs, top_k, batch_size, device)
    check_out(out)
    preds = predict(checkpoint, inputs, top_k, batch_size, device)
    write_predictions(preds, out, fmt)  # only once every input was read and predicted
    return preds
