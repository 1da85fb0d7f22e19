"""Every metric nntrain measures: its name, the tasks that have it, its mode and its computation.

One table (`Metric` entries, by name) answers what config validation, `evaluate`, callbacks and
reports ask: which metrics a task has (`for_task`), which keys a `monitor` may name
(`monitorable`), whether higher or lower is better (`mode`), and how to compute them (`Meter`).

Metrics are logged as `<split>/<name>` (`val/acc`, `test/mse`); `train/loss` is the running
training loss the trainer records. A metric is computed by its `Sums`: running sums kept on the
device, updated per batch without reading anything back, and read once at the end of the split.
Several metrics may share one `Sums` (mse, rmse and mae come from the same errors).

Adding a metric: subclass `Sums` (or reuse one) and `register(Metric(...))`. A metric with
`default=False` is computed only when asked for (`Meter(names=...)`), e.g. a costly one.

Per-epoch validation computes the default metrics only (loss, acc / mse...). `nntrain eval`,
`nntrain report` and the end of `fit` compute everything a task has (`for_task(task,
everything=True, num_classes=...)`): top-5 accuracy, macro and weighted precision / recall / F1,
one-vs-rest AUROC and the expected calibration error for classification, R2 for regression,
PSNR for reconstruction. Any of them can be asked for per epoch by name (`val/f1_macro`): the
count-based ones cost one bincount per batch. Besides scalars, `Meter.detail()` hands over what a
report shows (the confusion matrix, the calibration bins, per-class AUROC); `describe` turns it
into plain data with class names.

Why most of this is not torchmetrics: these sums follow nntrain's protocol (state on the device,
no host read per batch, one all-reduce, one read at the end), and the confusion matrix is the one
sufficient statistic of accuracy and every precision / recall / F1, so one (C, C) tensor crosses
the processes. torchmetrics' modular metrics each keep their own copy of the counts, check their
inputs with host syncs per batch (`normalize_logits_if_needed` on the CPU, `validate_args`) and
gather themselves at `compute`. The formulas are a few lines each and tests/test_eval_metrics.py
checks them against scikit-learn (and ECE and PSNR against torchmetrics). AUROC keeps every sample's
score and ranks them once at the end (the Mann-Whitney statistic, ties as scikit-learn counts them):
importing torchmetrics for it would cost about two seconds of start-up (it loads scipy.signal and
torchvision.models), more than the ranking of a test set.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from nntrain.errors import did_you_mean

TRAIN_LOSS = "train/loss"
MODES = ("min", "max")


@dataclass(frozen=True)
class Context:
    """What the sums need to know about the data and the model's outputs.

    Args:
        task: DataInfo.task (classification, regression, reconstruction, unlabeled).
        loss_fn: the run's loss, for `loss`.
        target_shift, target_scale: regression targets in original units are y * scale + shift.
        sigmoid: the outputs are logits of values in [0, 1] (reconstruction with bce_with_logits).
        num_classes: classification: the number of classes (confusion matrix, AUROC).
        data_range: reconstruction: max - min of the inputs (PSNR's peak), a number or a 0-dim
            tensor on the device; None: 1.
        sync: the metrics that keep every sample (AUROC) gather them across processes at the end
            (torchrun); the sums of the others are added up by the caller (`Meter.state`).
    """

    task: str
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None
    target_shift: Sequence[float] | None = None
    target_scale: Sequence[float] | None = None
    sigmoid: bool = False
    num_classes: int | None = None
    data_range: Any = None
    sync: bool = False


class Sums:
    """Running sums of one pass over a split, on `device`: `update` per batch, `values` at the end.

    `update` must not read from the device (no `.item()`, no Python branching on tensor values).
    `state()` lists the tensors that are added up across processes under torchrun.
    """

    def __init__(self, ctx: Context, device: torch.device):
        self.ctx, self.device = ctx, device

    def update(self, out: torch.Tensor, target: torch.Tensor) -> None:
        raise NotImplementedError

    def state(self) -> list[torch.Tensor]:
        return []

    def values(self) -> dict[str, torch.Tensor]:
        """Metric name -> 0-dim tensor on the device (float64 or float32)."""
        raise NotImplementedError

    def detail(self) -> dict[str, torch.Tensor]:
        """What a report shows besides the scalars (a confusion matrix...), on the host; after `values`."""
        return {}

    def _zeros(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return torch.zeros((), device=self.device, dtype=dtype)


class LossSums(Sums):
    """The mean of the loss over samples (each batch's mean loss weighted by its size)."""

    def __init__(self, ctx: Context, device: torch.device):
        super().__init__(ctx, device)
        self.total, self.count = self._zeros(), self._zeros(torch.long)

    def update(self, out: torch.Tensor, target: torch.Tensor) -> None:
        assert self.ctx.loss_fn is not None, "the loss metric needs Context.loss_fn"
        self.total += self.ctx.loss_fn(out, target).float() * len(out)
        self.count += len(out)

    def state(self) -> list[torch.Tensor]:
        return [self.total, self.count]

    def values(self) -> dict[str, torch.Tensor]:
        return {"loss": self.total / self.count}


class ClassSums(Sums):
    """Correct top-1 predictions of class indices."""

    def __init__(self, ctx: Context, device: torch.device):
        super().__init__(ctx, device)
        self.correct, self.count = self._zeros(torch.long), self._zeros(torch.long)

    def update(self, out: torch.Tensor, target: torch.Tensor) -> None:
        self.correct += (out.argmax(dim=-1) == target).sum()
        self.count += len(target)

    def state(self) -> list[torch.Tensor]:
        return [self.correct, self.count]

    def values(self) -> dict[str, torch.Tensor]:
        return {"acc": self.correct.double() / self.count.double()}


class ErrorSums(Sums):
    """Squared and absolute errors over every predicted value, in the data's original units
    (regression targets the source scaled) or of the reconstruction (sigmoid of logits)."""

    def __init__(self, ctx: Context, device: torch.device):
        super().__init__(ctx, device)
        self.sq, self.abs, self.count = self._zeros(), self._zeros(), self._zeros(torch.long)
        self.scale = self.shift = None
        if ctx.target_scale is not None:
            self.scale = torch.tensor(ctx.target_scale, device=device)
            self.shift = torch.tensor(ctx.target_shift, device=device)

    def update(self, out: torch.Tensor, target: torch.Tensor) -> None:
        pred, target = out.float(), target.float()
        if self.ctx.sigmoid:
            pred = pred.sigmoid()
        if self.scale is not None:  # back to the original units
            pred, target = pred * self.scale + self.shift, target * self.scale + self.shift
        err = pred - target
        self.sq += err.pow(2).sum()
        self.abs += err.abs().sum()
        self.count += target.numel()

    def state(self) -> list[torch.Tensor]:
        return [self.sq, self.abs, self.count]

    def values(self) -> dict[str, torch.Tensor]:
        n = self.count.double()
        mse = self.sq.double() / n
        values = {"mse": mse, "rmse": mse.sqrt(), "mae": self.abs.double() / n}
        if self.ctx.task == "reconstruction":
            peak = 1.0 if self.ctx.data_range is None else self.ctx.data_range
            peak = torch.as_tensor(peak, device=self.device, dtype=torch.float64)
            values["psnr"] = 10 * torch.log10(peak.pow(2) / mse)
        return values


def _wide(device: torch.device) -> torch.dtype:
    """float64 for sums that cancel (R2's total sum of squares); MPS has float32 only."""
    return torch.float32 if device.type == "mps" else torch.float64


class TopKSums(Sums):
    """Samples whose class is among the K highest outputs (K = 5; only for more than 5 classes)."""

    K = 5

    def __init__(self, ctx: Context, device: torch.device):
        super().__init__(ctx, device)
        self.correct, self.count = self._zeros(torch.long), self._zeros(torch.long)

    def update(self, out: torch.Tensor, target: torch.Tensor) -> None:
        top = out.topk(min(self.K, out.shape[-1]), dim=-1).indices
        self.correct += (top == target.unsqueeze(-1)).any(dim=-1).sum()
        self.count += len(target)

    def state(self) -> list[torch.Tensor]:
        return [self.correct, self.count]

    def values(self) -> dict[str, torch.Tensor]:
        return {f"top{self.K}": self.correct.double() / self.count.double()}


def class_scores(matrix: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-class precision, recall, F1 and support, and their macro and weighted averages, from a
    confusion matrix (rows: true class, columns: predicted class; float).

    A class never predicted has precision 0, one that never occurs recall 0 (scikit-learn's
    `zero_division=0`); F1 is 2 TP / (2 TP + FP + FN). The macro averages leave out classes that
    neither occur nor are predicted (as scikit-learn, whose labels are those seen, and torchmetrics
    do); the weighted ones weigh each class by its support.
    """
    tp = matrix.diagonal()
    support, predicted = matrix.sum(dim=1), matrix.sum(dim=0)
    per_class = {
        "precision": tp / predicted.clamp_min(1),
        "recall": tp / support.clamp_min(1),
        "f1": 2 * tp / (support + predicted).clamp_min(1),
    }
    seen = ((support + predicted) > 0).to(matrix.dtype)
    weights = support / support.sum().clamp_min(1)
    scores = {"support": support}
    for name, value in per_class.items():
        scores[name] = value
        scores[f"{name}_macro"] = (value * seen).sum() / seen.sum().clamp_min(1)
        scores[f"{name}_weighted"] = (value * weights).sum()
    return scores


class ConfusionSums(Sums):
    """The confusion matrix (rows: true class, columns: predicted class), one bincount per batch;
    yields the macro and weighted precision, recall and F1 (`class_scores`)."""

    AVERAGES = tuple(f"{m}_{a}" for a in ("macro", "weighted") for m in ("precision", "recall", "f1"))

    def __init__(self, ctx: Context, device: torch.device):
        super().__init__(ctx, device)
        if not ctx.num_classes:
            raise ValueError("the confusion matrix needs Context.num_classes")
        self.k = ctx.num_classes
        self.counts = torch.zeros(self.k * self.k, device=device, dtype=torch.long)

    def update(self, out: torch.Tensor, target: torch.Tensor) -> None:
        # bincount without weights: exact integers, allowed under torch.use_deterministic_algorithms.
        self.counts += torch.bincount(target * self.k + out.argmax(dim=-1), minlength=self.k * self.k)

    def state(self) -> list[torch.Tensor]:
        return [self.counts]

    def matrix(self) -> torch.Tensor:
        return self.counts.view(self.k, self.k)

    def values(self) -> dict[str, torch.Tensor]:
        scores = class_scores(self.matrix().to(_wide(self.device)))
        return {name: scores[name] for name in self.AVERAGES}

    def detail(self) -> dict[str, torch.Tensor]:
        return {"confusion": self.matrix().cpu()}


class CalibrationSums(Sums):
    """Expected calibration error (Guo et al. 2017) of the top-1 softmax probability, over BINS
    equal-width bins of confidence: bin b holds [b/BINS, (b+1)/BINS), the last one also 1.0
    (torchmetrics' `multiclass_calibration_error` puts an exact 1.0 in a bin of its own).
    ECE = sum over bins of |accuracy - mean confidence| * share of samples."""

    BINS = 15

    def __init__(self, ctx: Context, device: torch.device):
        super().__init__(ctx, device)
        self.edges = torch.linspace(0, 1, self.BINS + 1, device=device)
        self.count = torch.zeros(self.BINS, device=device, dtype=torch.long)
        self.confidence, self.correct = torch.zeros(self.BINS, device=device), torch.zeros(self.BINS, device=device)

    def update(self, out: torch.Tensor, target: torch.Tensor) -> None:
        confidence, predicted = out.float().softmax(dim=-1).max(dim=-1)
        bins = (torch.bucketize(confidence, self.edges, right=True) - 1).clamp(0, self.BINS - 1)
        onehot = torch.nn.functional.one_hot(bins, self.BINS)
        self.count += onehot.sum(dim=0)
        # Sums per bin as masked reductions (deterministic on every device, unlike scatter_add).
        self.confidence += (onehot * confidence.unsqueeze(-1)).sum(dim=0)
        self.correct += (onehot * (predicted == target).unsqueeze(-1)).sum(dim=0)

    def state(self) -> list[torch.Tensor]:
        return [self.count, self.confidence, self.correct]

    def values(self) -> dict[str, torch.Tensor]:
        n = self.count.sum().double()
        return {"ece": (self.correct.double() - self.confidence.double()).abs().sum() / n}

    def detail(self) -> dict[str, torch.Tensor]:
        return {
            "calibration_edges": self.edges.cpu(),
            "calibration_count": self.count.cpu(),
            "calibration_confidence": self.confidence.cpu(),
            "calibration_correct": self.correct.cpu(),
        }


class AurocSums(Sums):
    """One-vs-rest AUROC per class, averaged over the classes that occur: a class without positive
    (or without negative) samples has no ROC curve. Keeps every sample's softmax probabilities
    until the end (hence computed only when asked for); under torchrun (`Context.sync`) they are
    gathered from every process then.

    The area under the ROC curve is the Mann-Whitney statistic: the chance that a random positive
    scores above a random negative, ties counting one half. With average ranks r over all n
    samples, AUROC = (sum of the positives' r - p (p + 1) / 2) / (p (n - p)) for p positives; it
    equals the trapezoidal area scikit-learn's `roc_auc_score` computes, ties included."""

    def __init__(self, ctx: Context, device: torch.device):
        super().__init__(ctx, device)
        if not ctx.num_classes:
            raise ValueError("AUROC needs Context.num_classes")
        self.probs: list[torch.Tensor] = []
        self.targets: list[torch.Tensor] = []
        self.per_class: torch.Tensor | None = None

    def update(self, out: torch.Tensor, target: torch.Tensor) -> None:
        self.probs.append(out.float().softmax(dim=-1))
        self.targets.append(target)

    def values(self) -> dict[str, torch.Tensor]:
        k = self.ctx.num_classes
        probs = torch.cat(self.probs) if self.probs else torch.zeros(0, k, device=self.device)
        target = torch.cat(self.targets) if self.targets else torch.zeros(0, dtype=torch.long, device=self.device)
        if self.ctx.sync and torch.distributed.is_available() and torch.distributed.is_initialized():
            probs, target = _gather_rows(probs), _gather_rows(target)
        self.per_class = one_vs_rest_auroc(probs, target, k)
        chosen = self.per_class[~self.per_class.isnan()]
        return {"auroc": chosen.mean() if len(chosen) else torch.tensor(torch.nan, device=self.device)}

    def detail(self) -> dict[str, torch.Tensor]:
        return {} if self.per_class is None else {"auroc": self.per_class.cpu()}


RANK_BLOCK = 1 << 22  # (class, sample) entries `one_vs_rest_auroc` ranks at once (~70 bytes each)


def one_vs_rest_auroc(probs: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """AUROC of each class against the rest (float64), from (N, C) scores and (N,) class indices,
    by average ranks (`AurocSums`). NaN for a class with no positive or no negative sample, or
    with a score that is not finite (a diverged model: its ranks mean nothing). Classes are ranked
    a block at a time: about max(RANK_BLOCK, N) entries at once."""
    n = len(target)
    out = torch.full((num_classes,), torch.nan, dtype=torch.float64, device=probs.device)
    block = max(1, RANK_BLOCK // max(n, 1))
    for first in range(0, num_classes, block):
        scores = probs[:, first:first + block].T.contiguous()  # (classes of the block, N)
        ordered = scores.sort(dim=1).values
        below = torch.searchsorted(ordered, scores, side="left")  # samples scoring lower
        up_to = torch.searchsorted(ordered, scores, side="right")  # lower or equal
        ranks = (below + up_to + 1).double() / 2  # 1-based, ties share their mean rank
        classes = torch.arange(first, first + len(scores), device=probs.device)
        positive = target.unsqueeze(0) == classes.unsqueeze(1)
        p = positive.sum(dim=1).double()
        rank_sum = (ranks * positive).sum(dim=1)
        auc = (rank_sum - p * (p + 1) / 2) / (p * (n - p)).clamp_min(1)
        defined = (p > 0) & (p < n) & torch.isfinite(scores).all(dim=1)
        out[first:first + len(scores)] = torch.where(defined, auc, torch.nan)
    return out


def _gather_rows(t: torch.Tensor) -> torch.Tensor:
    """`t` of every process concatenated along dim 0 (rank order); the processes may hold
    different numbers of rows (padded to the longest for the collective, then cut back)."""
    import torch.distributed as dist

    world = dist.get_world_size()
    size = torch.tensor([len(t)], device=t.device)
    sizes = [torch.zeros_like(size) for _ in range(world)]
    dist.all_gather(sizes, size)
    counts = [int(s.item()) for s in sizes]
    padded = torch.zeros((max(counts), *t.shape[1:]), dtype=t.dtype, device=t.device)
    padded[: len(t)] = t
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded)
    return torch.cat([part[:count] for part, count in zip(parts, counts)])


class R2Sums(Sums):
    """R2 (coefficient of determination) per output, averaged over outputs with equal weights
    (scikit-learn's `r2_score` default). R2 doesn't change under the targets' affine scaling, so
    the sums are of the scaled values (near mean 0: float64 sums of squares don't cancel). An
    output whose targets are constant has R2 1 if predicted exactly, else 0 (scikit-learn)."""

    def __init__(self, ctx: Context, device: torch.device):
        super().__init__(ctx, device)
        self.dtype = _wide(device)
        self.sums: torch.Tensor | None = None  # (4, outputs): count, sum y, sum y^2, sum err^2

    def update(self, out: torch.Tensor, target: torch.Tensor) -> None:
        pred, y = out.reshape(len(out), -1).to(self.dtype), target.reshape(len(target), -1).to(self.dtype)
        batch = torch.stack([torch.ones_like(y).sum(0), y.sum(0), y.pow(2).sum(0), (pred - y).pow(2).sum(0)])
        self.sums = batch if self.sums is None else self.sums + batch

    def state(self) -> list[torch.Tensor]:
        return [] if self.sums is None else [self.sums]

    def values(self) -> dict[str, torch.Tensor]:
        if self.sums is None:
            return {"r2": torch.tensor(torch.nan, device=self.device)}
        n, total, squares, sse = self.sums.double()
        sst = squares - total.pow(2) / n
        r2 = torch.where(sst > 0, 1 - sse / sst.clamp_min(1e-300), (sse == 0).double())
        return {"r2": r2.mean()}


@dataclass(frozen=True)
class Metric:
    """One metric of the table.

    Args:
        name: logged as `<split>/<name>`.
        tasks: the DataInfo.task values that have it.
        mode: "max" when higher is better, "min" when lower is.
        sums: the `Sums` class that computes it (metrics may share one).
        default: computed by every evaluation; False: only when asked for (costly ones).
        doc: one line for users.
        min_classes: classification: computed only with at least this many classes (top-5: 6).
    """

    name: str
    tasks: tuple[str, ...]
    mode: str
    sums: type[Sums]
    default: bool = True
    doc: str = ""
    min_classes: int = 0


_TABLE: dict[str, Metric] = {}


def register(metric: Metric) -> Metric:
    """Adds `metric` to the table; a name registered twice is an error."""
    if metric.name in _TABLE:
        raise ValueError(f"metric '{metric.name}' is registered twice")
    if metric.mode not in MODES:
        raise ValueError(f"metric '{metric.name}': mode must be min or max (got {metric.mode!r})")
    _TABLE[metric.name] = metric
    return metric


_ALL = ("classification", "regression", "reconstruction", "unlabeled")
register(Metric("loss", _ALL, "min", LossSums, doc="mean loss per sample"))
register(Metric("acc", ("classification",), "max", ClassSums, doc="top-1 accuracy"))
register(Metric("mse", ("regression", "reconstruction"), "min", ErrorSums,
                doc="mean squared error per value, in original units"))
register(Metric("rmse", ("regression",), "min", ErrorSums, doc="square root of mse"))
register(Metric("mae", ("regression",), "min", ErrorSums, doc="mean absolute error per value, in original units"))
# Computed by eval, report and the end of fit; per epoch only when asked for.
_CLS = ("classification",)
register(Metric("top5", _CLS, "max", TopKSums, default=False, min_classes=TopKSums.K + 1,
                doc="the true class among the 5 highest outputs (more than 5 classes)"))
for _avg, _how in (("macro", "mean over classes"), ("weighted", "mean over classes weighted by support")):
    for _name in ("precision", "recall", "f1"):
        register(Metric(f"{_name}_{_avg}", _CLS, "max", ConfusionSums, default=False, doc=f"{_name}, {_how}"))
register(Metric("auroc", _CLS, "max", AurocSums, default=False,
                doc="one-vs-rest area under the ROC curve, mean over the classes that occur"))
register(Metric("ece", _CLS, "min", CalibrationSums, default=False,
                doc=f"expected calibration error of the top-1 probability ({CalibrationSums.BINS} bins)"))
register(Metric("r2", ("regression",), "max", R2Sums, default=False,
                doc="coefficient of determination, mean over outputs"))
register(Metric("psnr", ("reconstruction",), "max", ErrorSums, default=False,
                doc="peak signal-to-noise ratio in dB, the peak being the inputs' range"))


def get(name: str) -> Metric:
    """The metric `name` (`acc`, or a logged key such as `val/acc`)."""
    return _TABLE[name.rpartition("/")[2]]


def names() -> list[str]:
    """Every metric name, in table order."""
    return list(_TABLE)


def for_task(task: str, everything: bool = False, num_classes: int | None = None) -> list[str]:
    """The metrics an evaluation of `task` data computes (`loss` first); with `everything`, also
    those computed only on request (with `num_classes` given, those that apply to that many)."""
    return [
        m.name for m in _TABLE.values()
        if task in m.tasks and (m.default or everything) and (num_classes is None or num_classes >= m.min_classes)
    ]


def measured(task: str) -> list[str]:
    """The keys a training run on `task` data records after each epoch: train/loss and val/*."""
    return [TRAIN_LOSS, *(f"val/{name}" for name in for_task(task))]


def monitorable() -> list[str]:
    """Every key a `monitor` may name, whatever the task (config validation: the task is unknown)."""
    return [TRAIN_LOSS, *(f"val/{name}" for name in _TABLE)]


def check_monitor(key: str) -> str:
    """`key` if a monitor may name it; else ValueError with the closest choice."""
    choices = monitorable()
    if key not in choices:
        raise ValueError(f"unknown metric '{key}'{did_you_mean(key, choices)} (choices: {', '.join(choices)})")
    return key


def mode(key: str) -> str:
    """'max' or 'min': whether a higher or a lower value of the logged `key` is better."""
    name = key.rpartition("/")[2]
    return _TABLE[name].mode if name in _TABLE else "min"


def monitor_mode(monitor: str, explicit: str | None) -> str:
    """The mode a config gives explicitly, else the metric's own."""
    return explicit or mode(monitor)


class Meter:
    """Computes metrics over the batches of one split.

    Args:
        ctx: what the sums need to know (task, loss, target scaling).
        device: where the sums live (the batches' device).
        names: the metrics to compute (default: `for_task(ctx.task)`).
        extra: further `Sums` to keep for their `detail()` only (the confusion matrix for
            TensorBoard), whether or not a named metric needs them.
    """

    def __init__(
        self, ctx: Context, device: torch.device, names: Sequence[str] | None = None,
        extra: Sequence[type[Sums]] = (),
    ):
        self.names = list(for_task(ctx.task) if names is None else names)
        unknown = [n for n in self.names if n not in _TABLE]
        if unknown:
            raise ValueError(f"unknown metric '{unknown[0]}'{did_you_mean(unknown[0], _TABLE)}")
        self._sums: dict[type[Sums], Sums] = {}
        for kind in [_TABLE[name].sums for name in self.names] + list(extra):
            if kind not in self._sums:
                self._sums[kind] = kind(ctx, device)

    def update(self, out: torch.Tensor, target: torch.Tensor) -> None:
        """Adds one batch (no host sync)."""
        for sums in self._sums.values():
            sums.update(out, target)

    def state(self) -> list[torch.Tensor]:
        """The tensors to add up across processes before `compute`."""
        return [t for sums in self._sums.values() for t in sums.state()]

    def compute(self, prefix: str) -> dict[str, float]:
        """`{f"{prefix}/{name}": value}` for every metric, read from the device at once."""
        values: dict[str, torch.Tensor] = {}
        for sums in self._sums.values():
            values.update(sums.values())
        numbers = torch.stack([values[n].double() for n in self.names]).tolist() if self.names else []
        return {f"{prefix}/{name}": value for name, value in zip(self.names, numbers)}

    def detail(self) -> dict[str, torch.Tensor]:
        """What the sums hold besides the scalars, on the host (after `compute`): `confusion`
        (C, C) counts, `calibration_*` bins, `auroc` per class (NaN where undefined)."""
        return {key: value for sums in self._sums.values() for key, value in sums.detail().items()}


def describe(detail: dict[str, torch.Tensor], classes: Sequence[str] | None = None) -> dict[str, Any]:
    """`Meter.detail()` as plain data for JSON, classes by name (default: their indices).

    Returns (the keys whose sums were kept):
        per_class: {name: {precision, recall, f1, support[, auroc]}} in class order.
        confusion_matrix: {labels, counts, normalized} (rows: true class, columns: predicted;
            `normalized` divides each row by its count: the share of a class predicted as each).
        calibration: {bins: [{low, high, count, confidence, accuracy}]} (mean confidence and
            accuracy per bin; null for an empty bin), for a reliability diagram.
    """
    out: dict[str, Any] = {}
    if "confusion" in detail:
        matrix = detail["confusion"].to(torch.float64)
        k = len(matrix)
        labels = [str(c) for c in classes] if classes is not None else [str(i) for i in range(k)]
        scores = class_scores(matrix)
        auroc = detail.get("auroc")
        per_class = {}
        for i, label in enumerate(labels):
            row = {name: float(scores[name][i]) for name in ("precision", "recall", "f1")}
            row["support"] = int(scores["support"][i])
            if auroc is not None:
                row["auroc"] = None if torch.isnan(auroc[i]) else float(auroc[i])
            per_class[label] = row
        out["per_class"] = per_class
        rows = matrix.sum(dim=1, keepdim=True)
        out["confusion_matrix"] = {
            "labels": labels,
            "rows": "true class",
            "columns": "predicted class",
            "counts": detail["confusion"].long().tolist(),
            "normalized": (matrix / rows.clamp_min(1)).tolist(),
        }
    if "calibration_count" in detail:
        edges, count = detail["calibration_edges"].tolist(), detail["calibration_count"].tolist()
        confidence, correct = detail["calibration_confidence"].tolist(), detail["calibration_correct"].tolist()
        out["calibration"] = {"bins": [
            {"low": edges[b], "high": edges[b + 1], "count": count[b],
             "confidence": confidence[b] / count[b] if count[b] else None,
             "accuracy": correct[b] / count[b] if count[b] else None}
            for b in range(len(count))
        ]}
    return out
