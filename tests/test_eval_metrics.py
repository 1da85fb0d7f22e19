"""`nntrain eval`'s figures against an independent reference: scikit-learn (a test-only dependency),
and torchmetrics for the calibration error (scikit-learn has none).

The classification set is fixed: 7 classes, class 5 occurs but is never predicted, class 6 is
predicted but never occurs; the batches have uneven sizes, as an evaluation's last batch does.
"""

from __future__ import annotations

import math
import socket
import subprocess
import sys
import textwrap
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from nntrain import metrics
from nntrain.data.info import DataInfo
from nntrain.data.loaders import Data
from nntrain.evaluate import evaluate, evaluate_all
from nntrain.metrics import Context, Meter

sk = pytest.importorskip("sklearn.metrics", reason="scikit-learn is the test-only reference (pip install -e .[test])")

K = 7
NEVER_PREDICTED, NEVER_OCCURS = 5, 6
BATCHES = (37, 100, 63)  # 200 samples in uneven batches


def _fixed_predictions() -> tuple[torch.Tensor, torch.Tensor]:
    """(logits (200, 7), targets (200,)): random but for the two special classes."""
    gen = torch.Generator().manual_seed(12)
    y = torch.randint(0, K - 1, (200,), generator=gen)  # class 6 never occurs
    logits = torch.randn(200, K, generator=gen) * 2
    logits[torch.arange(200), y] += 1.5  # better than chance
    logits[:, NEVER_PREDICTED] -= 20  # never the argmax (but in some top-5)
    logits[:12, NEVER_OCCURS] += 30  # predicted for a few samples
    assert NEVER_PREDICTED not in logits.argmax(1) and NEVER_OCCURS in logits.argmax(1)
    assert NEVER_PREDICTED in y and NEVER_OCCURS not in y
    return logits, y


def _meter(ctx: Context, out: torch.Tensor, y: torch.Tensor, names, sizes=BATCHES) -> tuple[dict, dict]:
    meter = Meter(ctx, torch.device("cpu"), names)
    start = 0
    for size in sizes:
        meter.update(out[start : start + size], y[start : start + size])
        start += size
    assert start == len(y)
    values = meter.compute("test")
    return {k.split("/")[1]: v for k, v in values.items()}, meter.detail()


@pytest.fixture(scope="module")
def classification():
    logits, y = _fixed_predictions()
    ctx = Context("classification", nn.CrossEntropyLoss(), num_classes=K)
    names = metrics.for_task("classification", everything=True, num_classes=K)
    got, detail = _meter(ctx, logits, y, names)
    probs = logits.softmax(1).numpy().astype(np.float64)
    return SimpleNamespace(got=got, detail=detail, y=y.numpy(), pred=logits.argmax(1).numpy(), probs=probs,
                           logits=logits, target=y)


def test_accuracy_and_top5_match_sklearn(classification):
    c = classification
    assert c.got["acc"] == pytest.approx(sk.accuracy_score(c.y, c.pred), abs=1e-12)
    assert c.got["top5"] == pytest.approx(sk.top_k_accuracy_score(c.y, c.probs, k=5, labels=range(K)), abs=1e-12)
    assert c.got["top5"] > c.got["acc"]


@pytest.mark.parametrize("average", ["macro", "weighted"])
def test_precision_recall_f1_averages_match_sklearn(classification, average):
    c = classification
    p, r, f, _ = sk.precision_recall_fscore_support(c.y, c.pred, average=average, zero_division=0)
    assert c.got[f"precision_{average}"] == pytest.approx(p, abs=1e-12)
    assert c.got[f"recall_{average}"] == pytest.approx(r, abs=1e-12)
    assert c.got[f"f1_{average}"] == pytest.approx(f, abs=1e-12)


def test_macro_average_leaves_out_a_class_neither_seen_nor_predicted():
    """4 classes, class 3 neither occurs nor is predicted: scikit-learn's labels are those seen."""
    y = torch.tensor([0, 0, 1, 1, 2, 2, 2])
    logits = torch.nn.functional.one_hot(torch.tensor([0, 1, 1, 1, 2, 0, 2]), 4).float()
    got, _ = _meter(Context("classification", num_classes=4), logits, y, ["f1_macro", "precision_macro"], [7])
    assert got["f1_macro"] == pytest.approx(sk.f1_score(y, logits.argmax(1), average="macro"))
    assert got["precision_macro"] == pytest.approx(sk.precision_score(y, logits.argmax(1), average="macro"))


def test_per_class_figures_and_support_match_sklearn(classification):
    c = classification
    described = metrics.describe(c.detail, [f"c{i}" for i in range(K)])
    p, r, f, s = sk.precision_recall_fscore_support(c.y, c.pred, labels=range(K), average=None, zero_division=0)
    per_class = described["per_class"]
    assert list(per_class) == [f"c{i}" for i in range(K)]  # a mapping by class name, in class order
    for i in range(K):
        row = per_class[f"c{i}"]
        assert (row["precision"], row["recall"], row["f1"]) == pytest.approx((p[i], r[i], f[i]), abs=1e-12)
        assert row["support"] == s[i]
    assert per_class[f"c{NEVER_PREDICTED}"]["precision"] == 0 and per_class[f"c{NEVER_PREDICTED}"]["support"] > 0
    assert per_class[f"c{NEVER_OCCURS}"]["recall"] == 0 and per_class[f"c{NEVER_OCCURS}"]["support"] == 0


def test_confusion_matrix_counts_and_row_normalized_match_sklearn(classification):
    c = classification
    matrix = metrics.describe(c.detail)["confusion_matrix"]
    assert matrix["labels"] == [str(i) for i in range(K)]
    assert matrix["counts"] == sk.confusion_matrix(c.y, c.pred, labels=range(K)).tolist()
    expected = sk.confusion_matrix(c.y, c.pred, labels=range(K), normalize="true")  # a class absent: a row of 0
    np.testing.assert_allclose(matrix["normalized"], expected, atol=1e-12)
    assert matrix["normalized"][NEVER_OCCURS] == [0.0] * K


def test_auroc_is_the_mean_over_classes_that_occur(classification):
    """One-vs-rest per class (scikit-learn's binary AUROC); class 6, which never occurs, has none."""
    c = classification
    per_class = [sk.roc_auc_score(c.y == i, c.probs[:, i]) for i in range(K) if i != NEVER_OCCURS]
    assert c.got["auroc"] == pytest.approx(np.mean(per_class), abs=1e-6)
    auroc = metrics.describe(c.detail)["per_class"]
    assert auroc[str(NEVER_OCCURS)]["auroc"] is None
    assert auroc["0"]["auroc"] == pytest.approx(per_class[0], abs=1e-6)


def test_auroc_with_every_class_present_matches_sklearn_ovr_macro():
    gen = torch.Generator().manual_seed(3)
    y = torch.randint(0, 4, (150,), generator=gen)
    logits = torch.randn(150, 4, generator=gen) + 1.2 * torch.nn.functional.one_hot(y, 4)
    got, _ = _meter(Context("classification", num_classes=4), logits, y, ["auroc"], [64, 64, 22])
    expected = sk.roc_auc_score(y.numpy(), logits.softmax(1).double().numpy(), multi_class="ovr", average="macro")
    assert got["auroc"] == pytest.approx(expected, abs=1e-6)


def test_binary_auroc_matches_sklearn():
    gen = torch.Generator().manual_seed(4)
    y = torch.randint(0, 2, (90,), generator=gen)
    logits = torch.randn(90, 2, generator=gen) + 0.8 * torch.nn.functional.one_hot(y, 2)
    got, _ = _meter(Context("classification", num_classes=2), logits, y, ["auroc"], [50, 40])
    assert got["auroc"] == pytest.approx(sk.roc_auc_score(y.numpy(), logits.softmax(1)[:, 1].numpy()), abs=1e-6)


def test_expected_calibration_error_matches_torchmetrics_and_the_formula(classification):
    from torchmetrics.functional.classification import multiclass_calibration_error

    c = classification
    expected = multiclass_calibration_error(c.logits.softmax(1), c.target, K, n_bins=15, norm="l1")
    assert c.got["ece"] == pytest.approx(expected.item(), abs=1e-6)
    # By hand: |accuracy - confidence| per bin, weighted by the bin's share of samples.
    confidence, correct = c.probs.max(1), c.pred == c.y
    bins = np.minimum((confidence * 15).astype(int), 14)
    by_hand = sum(abs(correct[bins == b].sum() - confidence[bins == b].sum()) for b in range(15)) / len(c.y)
    assert c.got["ece"] == pytest.approx(by_hand, abs=1e-6)
    calibration = metrics.describe(c.detail)["calibration"]["bins"]
    assert sum(b["count"] for b in calibration) == len(c.y) and len(calibration) == 15


def test_scores_do_not_depend_on_the_batches(classification):
    c = classification
    ctx = Context("classification", nn.CrossEntropyLoss(), num_classes=K)
    names = metrics.for_task("classification", everything=True, num_classes=K)
    once, _ = _meter(ctx, c.logits, c.target, names, [200])
    for name in names:
        assert once[name] == pytest.approx(c.got[name], abs=1e-6), name


@pytest.mark.parametrize("outputs", [1, 3])
def test_regression_figures_in_original_units_match_sklearn(outputs):
    gen = torch.Generator().manual_seed(5)
    y = torch.randn(120, outputs, generator=gen)
    pred = y + 0.3 * torch.randn(120, outputs, generator=gen) + 0.1
    scale, shift = [10.0, 2.0, 0.5][:outputs], [100.0, -3.0, 7.0][:outputs]
    ctx = Context("regression", nn.MSELoss(), target_shift=shift, target_scale=scale)
    got, _ = _meter(ctx, pred, y, metrics.for_task("regression", everything=True), [50, 50, 20])
    true_units = (y * torch.tensor(scale) + torch.tensor(shift)).double().numpy()
    pred_units = (pred * torch.tensor(scale) + torch.tensor(shift)).double().numpy()
    # mae/mse/rmse over every value (scikit-learn's uniform average over outputs of equal counts)
    assert got["mae"] == pytest.approx(sk.mean_absolute_error(true_units, pred_units), rel=1e-5)
    assert got["mse"] == pytest.approx(sk.mean_squared_error(true_units, pred_units), rel=1e-5)
    assert got["rmse"] == pytest.approx(math.sqrt(sk.mean_squared_error(true_units, pred_units)), rel=1e-5)
    assert got["r2"] == pytest.approx(sk.r2_score(true_units, pred_units), rel=1e-6)
    if outputs == 1:
        assert got["rmse"] == pytest.approx(sk.root_mean_squared_error(true_units, pred_units), rel=1e-5)


def test_r2_of_a_constant_target_follows_sklearn():
    y = torch.full((6, 1), 3.0)
    for pred, expected in ((y.clone(), 1.0), (y + 1, 0.0)):
        got, _ = _meter(Context("regression"), pred, y, ["r2"], [6])
        assert got["r2"] == sk.r2_score(y.numpy(), pred.numpy()) == expected


def test_psnr_matches_torchmetrics_with_the_inputs_range():
    from torchmetrics.functional.image import peak_signal_noise_ratio

    gen = torch.Generator().manual_seed(6)
    x = torch.rand(20, 1, 8, 8, generator=gen)
    out = (x + 0.05 * torch.randn(20, 1, 8, 8, generator=gen)).clamp(0, 1)
    ctx = Context("reconstruction", nn.MSELoss(), data_range=2.0)
    got, _ = _meter(ctx, out, x, ["mse", "psnr"], [12, 8])
    assert got["psnr"] == pytest.approx(peak_signal_noise_ratio(out, x, data_range=2.0).item(), rel=1e-5)
    assert got["psnr"] == pytest.approx(10 * math.log10(4 / got["mse"]), rel=1e-9)
    logits = torch.logit(out.clamp(1e-3, 1 - 1e-3))  # bce_with_logits: compared after a sigmoid, peak 1
    got, _ = _meter(Context("reconstruction", sigmoid=True), logits, x, ["psnr"], [20])
    assert got["psnr"] == pytest.approx(peak_signal_noise_ratio(logits.sigmoid(), x, data_range=1.0).item(), rel=1e-5)


# ------------------------------------------------------------------ through evaluate()


def _data(task: str, x: torch.Tensor, y: torch.Tensor, **info) -> Data:
    return Data((x, y), (x, y), (x, y), DataInfo(task, tuple(x.shape[1:]), **info), None)


def test_evaluate_all_names_classes_and_matches_the_per_epoch_metrics():
    logits, y = _fixed_predictions()
    info = {"num_classes": K, "classes": [f"class {i}" for i in range(K)]}
    data = _data("classification", logits, y, **info)
    cfg = SimpleNamespace(data=SimpleNamespace(eval_batch_size=64))
    loss = nn.CrossEntropyLoss()
    record, measured = evaluate_all(nn.Identity(), loss, data, "test", cfg, keep_outputs=True)
    assert record["task"] == "classification" and record["classes"] == info["classes"]
    assert list(record["per_class"]) == info["classes"] and record["confusion_matrix"]["labels"] == info["classes"]
    assert record["test/acc"] == pytest.approx(sk.accuracy_score(y, logits.argmax(1)))
    assert torch.equal(measured.outputs, logits)  # every output kept, in the split's order
    # The per-epoch evaluation computes the defaults only, and the same values.
    quick = evaluate(nn.Identity(), loss, data, "test", cfg)
    assert list(quick) == ["test/loss", "test/acc"]
    assert quick == {k: record[k] for k in quick}
    # Asked for per epoch (a monitor such as val/f1_macro): the same figure.
    asked = evaluate(nn.Identity(), loss, data, "val", cfg, names=["f1_macro"])
    assert asked["val/f1_macro"] == record["test/f1_macro"]


def test_evaluate_detail_hands_over_the_confusion_matrix():
    logits, y = _fixed_predictions()
    data = _data("classification", logits, y, num_classes=K)
    detail: dict = {}
    cfg = SimpleNamespace(data=SimpleNamespace(eval_batch_size=64))
    evaluate(nn.Identity(), nn.CrossEntropyLoss(), data, "val", cfg, detail=detail)
    assert detail["val"]["confusion"].tolist() == sk.confusion_matrix(y, logits.argmax(1), labels=range(K)).tolist()


def test_evaluate_all_regression_and_reconstruction():
    x, y = torch.randn(30, 2), torch.randn(30, 1)
    data = _data("regression", x, y, output_size=1, target_shift=[5.0], target_scale=[2.0])
    cfg = SimpleNamespace(data=SimpleNamespace(eval_batch_size=8))
    model = nn.Linear(2, 1)
    record, _ = evaluate_all(model, nn.MSELoss(), data, "test", cfg)
    with torch.no_grad():
        pred = model(x)
    assert record["test/r2"] == pytest.approx(sk.r2_score(y * 2 + 5, pred * 2 + 5), rel=1e-6)
    assert set(record) == {"task", "test/loss", "test/mse", "test/rmse", "test/mae", "test/r2"}
    images = torch.rand(10, 1, 4, 4)
    images[0, 0, 0, 0], images[1, 0, 0, 0] = 0.0, 1.0  # the inputs' range is 1
    data = _data("reconstruction", images, images)
    record, _ = evaluate_all(nn.Identity(), nn.MSELoss(), data, "test", cfg)
    assert record["test/mse"] == 0 and record["test/psnr"] == math.inf


def test_auroc_with_tied_scores_matches_sklearn():
    """Ties (scores rounded to one decimal) count one half, as the trapezoids of the ROC curve do."""
    gen = torch.Generator().manual_seed(5)
    y = torch.randint(0, 3, (400,), generator=gen)
    probs = (torch.rand(400, 3, generator=gen) + 0.3 * torch.nn.functional.one_hot(y, 3)).round(decimals=1)
    got = metrics.one_vs_rest_auroc(probs, y, 3)
    for i in range(3):
        assert got[i].item() == pytest.approx(sk.roc_auc_score((y == i).numpy(), probs[:, i].numpy()), abs=1e-12)
    constant = metrics.one_vs_rest_auroc(torch.full((10, 2), 0.5), torch.tensor([0, 1] * 5), 2)
    assert constant.tolist() == [0.5, 0.5]  # every pair tied


def test_auroc_ranks_classes_in_blocks_with_the_same_result(monkeypatch):
    """Many classes are ranked a block at a time (bounded memory); the result does not change."""
    gen = torch.Generator().manual_seed(6)
    y = torch.randint(0, 50, (300,), generator=gen)
    probs = torch.rand(300, 50, generator=gen).softmax(1)
    whole = metrics.one_vs_rest_auroc(probs, y, 50)
    monkeypatch.setattr(metrics, "RANK_BLOCK", 7 * 300)  # 7 classes per block: 8 blocks, the last short
    torch.testing.assert_close(metrics.one_vs_rest_auroc(probs, y, 50), whole, rtol=0, atol=0, equal_nan=True)
    for i in range(50):
        if (y == i).any():
            assert whole[i].item() == pytest.approx(sk.roc_auc_score((y == i).numpy(), probs[:, i].numpy()), abs=1e-12)
        else:
            assert whole[i].isnan()


def test_auroc_gathers_uneven_shards_across_processes(tmp_path):
    """Under torchrun each process keeps its own samples (70 and 30 here); the AUROC of the gathered
    scores is the one of the whole set."""
    script = tmp_path / "gather.py"
    script.write_text(textwrap.dedent("""
        import os, sys, torch, torch.distributed as dist, torch.multiprocessing as mp
        from nntrain import metrics

        def worker(rank):
            os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=sys.argv[1])
            dist.init_process_group("gloo", rank=rank, world_size=2)
            gen = torch.Generator().manual_seed(7)
            y = torch.randint(0, 3, (100,), generator=gen)
            logits = torch.randn(100, 3, generator=gen) + torch.nn.functional.one_hot(y, 3)
            mine = slice(0, 70) if rank == 0 else slice(70, 100)
            meter = metrics.Meter(metrics.Context("classification", num_classes=3, sync=True), torch.device("cpu"), ["auroc"])
            meter.update(logits[mine], y[mine])
            got = meter.compute("test")["test/auroc"]
            whole = metrics.one_vs_rest_auroc(logits.softmax(1), y, 3).mean().item()
            assert abs(got - whole) < 1e-12, (rank, got, whole)
            dist.destroy_process_group()

        if __name__ == "__main__":
            mp.spawn(worker, nprocs=2)
    """))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = subprocess.run([sys.executable, str(script), str(port)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]


def test_auroc_of_a_class_with_a_non_finite_score_is_undefined():
    """A diverged model's NaN scores rank nowhere: that class has no AUROC (not 1.25 or inf); the
    other classes keep theirs, and the mean is over them."""
    gen = torch.Generator().manual_seed(8)
    y = torch.randint(0, 3, (60,), generator=gen)
    probs = torch.rand(60, 3, generator=gen)
    clean = metrics.one_vs_rest_auroc(probs, y, 3)
    probs[5, 1] = torch.nan
    got = metrics.one_vs_rest_auroc(probs, y, 3)
    assert got[1].isnan() and got[0] == clean[0] and got[2] == clean[2]
    every = metrics.one_vs_rest_auroc(torch.tensor([[0.2, 0.8], [torch.nan, 0.5]]), torch.tensor([0, 0]), 2)
    assert every.isnan().all()  # class 0 has every sample, class 1 none: neither has a curve
