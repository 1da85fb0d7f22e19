"""`nntrain predict` against a hand-written `torch.inference_mode()` loop, side by side in one process.

    python benchmarks/bench_predict.py [--runs 7] [--model lenet] [--data ../shared/data/mnist]
                                       [--threads N] [--batch-size 1000]

The input is the 10,000 MNIST test images (read from the IDX files in `--data` and saved as an
.npz of uint8 images, the form a user would have them in); the script says so and stops if the
files are absent. The checkpoint is a model trained one epoch on the embedded `mnist_small`
subset (LeNet by default, standardized inputs), made once in a temporary folder.

The nntrain side is exactly what the command does after start-up: `predict_to_file` loads the
checkpoint, reads the .npz, scales and normalizes the images, runs the batches in inference
mode, takes the softmax and the top 5 classes, and writes the CSV (atomically). The hand side is
the loop a user writes over the same tensors, already in memory and normalized (the very tensor
nntrain computes): the same model and weights, the same batch size, `argmax` and the softmax
probability of each prediction. The two are checked to predict the same classes.

Timing as benchmarks/bench_epoch.py: one warm-up run each, then the two alternate (nntrain,
hand, nntrain, hand, ...) so that load from other processes hits both alike; the table reports
the median and the best run of each side, their CPU time (all threads of the process) and the
ratios nntrain / hand (goal <= 1.1), and where nntrain's time goes (load, read, inference, write;
each measured apart, medians). On a shared machine `--threads 1` is steadier.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the checkout, even without an installed package

from bench_epoch import read_idx  # noqa: E402

from nntrain.build import load_model  # noqa: E402
from nntrain.data.inputs import read_inputs  # noqa: E402
from nntrain.fit import fit  # noqa: E402
from nntrain.predict import predict_tensors, predict_to_file, spec_of, write_predictions  # noqa: E402
from nntrain.validate import config_from_dict  # noqa: E402

MODELS = {"lenet": {"name": "lenet"}, "mlp": {"name": "mlp", "hidden": [128]}}


def make_checkpoint(folder: Path, model: dict, batch_size: int) -> Path:
    raw = {
        "name": "bench_predict",
        "seed": 0,
        "data": {"dataset": {"name": "mnist_small"}, "batch_size": 64, "eval_batch_size": batch_size,
                 "normalize": {"name": "standardize"}},
        "model": model,
        "optimizer": {"name": "adam", "lr": 2e-3},
        "train": {"epochs": 1, "device": "cpu"},
        "log": {"dir": str(folder / "runs"), "tensorboard": False, "report": False},
    }
    summary = fit(config_from_dict(raw), progress=False)
    return Path(summary["run_dir"]) / "checkpoints" / "best.pt"


class Hand:
    """The ordinary loop: batches of the in-memory tensor, forward, argmax and its probability."""

    def __init__(self, model: torch.nn.Module, x: torch.Tensor, batch_size: int):
        self.model, self.x, self.batch_size = model.eval(), x, batch_size

    def run(self) -> torch.Tensor:
        classes, probs = [], []
        with torch.inference_mode():
            for i in range(0, len(self.x), self.batch_size):
                out = self.model(self.x[i : i + self.batch_size])
                p, c = out.softmax(dim=1).max(dim=1)
                classes.append(c)
                probs.append(p)
        return torch.cat(classes)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=7, help="measured runs per side (after 1 warm-up)")
    parser.add_argument("--model", default="lenet", choices=list(MODELS))
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "mnist",
                        help="folder with the MNIST IDX .gz files (t10k-images-idx3-ubyte.gz)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    parser.add_argument("--batch-size", type=int, default=1000, help="inference batch size on both sides")
    args = parser.parse_args(argv)
    images = args.data / "t10k-images-idx3-ubyte.gz"
    if not images.is_file():
        print(f"skipped: no MNIST test images at {images} (give --data, a folder with the IDX .gz files)")
        return
    if args.threads:
        torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory(prefix="nntrain-bench-predict-") as tmp:
        folder = Path(tmp)
        npz = folder / "t10k.npz"
        np.savez(npz, x=read_idx(images))
        ckpt = make_checkpoint(folder, MODELS[args.model], args.batch_size)
        out = folder / "predictions.csv"

        restored = load_model(ckpt, "cpu")
        data = read_inputs([npz], spec_of(restored))
        hand = Hand(restored.model, restored.normalizer(data.values()), args.batch_size)

        def ours() -> torch.Tensor:
            return predict_to_file(ckpt, [npz], out, batch_size=args.batch_size).predicted

        sides = {"nntrain": ours, "hand": hand.run}
        results = {name: side() for name, side in sides.items()}  # warm-up
        same = torch.equal(results["nntrain"], results["hand"])
        wall: dict[str, list[float]] = {name: [] for name in sides}
        cpu: dict[str, list[float]] = {name: [] for name in sides}
        for _ in range(args.runs):
            for name, side in sides.items():
                start, start_cpu = time.perf_counter(), time.process_time()
                side()
                wall[name].append(time.perf_counter() - start)
                cpu[name].append(time.process_time() - start_cpu)  # all threads of this process

        phases: dict[str, list[float]] = {"load": [], "read": [], "inference": [], "write": []}
        for _ in range(args.runs):
            t0 = time.perf_counter()
            r = load_model(ckpt, "cpu")
            t1 = time.perf_counter()
            d = read_inputs([npz], spec_of(r))
            t2 = time.perf_counter()
            preds = predict_tensors(r, d, batch_size=args.batch_size)
            t3 = time.perf_counter()
            write_predictions(preds, out, "csv")
            t4 = time.perf_counter()
            for key, value in zip(phases, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
                phases[key].append(value)

    med = statistics.median
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, cpu, model {args.model}, "
          f"10,000 MNIST test images, batch {args.batch_size}, {args.runs} measured runs per side (+1 warm-up), "
          f"interleaved; same predicted classes on both sides: {same}")
    print()
    print("| side | median (s) | best (s) | CPU time, median (s) |")
    print("|---|---|---|---|")
    for name in sides:
        print(f"| {name} | {med(wall[name]):.3f} | {min(wall[name]):.3f} | {med(cpu[name]):.3f} |")
    print(f"| ratio nntrain / hand | {med(wall['nntrain']) / med(wall['hand']):.3f} | "
          f"{min(wall['nntrain']) / min(wall['hand']):.3f} | {med(cpu['nntrain']) / med(cpu['hand']):.3f} |")
    print()
    print("nntrain's time, by phase (medians, s): " + ", ".join(f"{k} {med(v):.3f}" for k, v in phases.items()))
    if not same:
        print("WARNING: the two sides predicted different classes: check the comparison")


if __name__ == "__main__":
    main()
