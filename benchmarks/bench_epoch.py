"""nntrain's training epoch against a hand-written PyTorch loop, side by side in one process.

    python benchmarks/bench_epoch.py [--epochs 5] [--models mlp,lenet] [--data ../shared/data/mnist]
                                     [--threads N] [--device cuda] [--precision bf16] [--compile]
                                     [--ema 0.999]

Both sides train the same architecture (built by nntrain's model builder, starting from the same
weights) on the same in-memory tensors (the real MNIST training split that nntrain prepared, 54,000
samples after the default 10% validation hold-out), with batch 128, Adam lr 1e-3 and a new shuffle
every epoch. The nntrain side is the real `Trainer.train_epoch`, built with `build_parts` from a
`Config`, with the callbacks `nntrain fit` attaches (`build.build_callbacks`: TensorBoard,
metrics.jsonl, progress bar, checkpointing) writing into a temporary folder.

Cases: `mlp` (784-128-10), `lenet`, `lenet_crop` (LeNet with random_crop padding 2) and `gru`
(28 rows as a sequence) classify standardized images with cross-entropy. `autoencoder` is the
model of configs/mnist_autoencoder.yaml (conv, channels [32, 64], a 32-number code, denoising
noise 0.2) with `data.task: reconstruction` on pixels in [0, 1] and bce_with_logits against the
clean input.

`--ema DECAY` turns on nntrain's `train.ema` (an average of the weights after every update) and
gives the hand loop torch's own `AveragedModel` with `get_ema_multi_avg_fn`, updated after every
step; comparing with a run without it gives the cost of EMA per step.

`--device cuda`, `--precision bf16` and `--compile` set nntrain's `train.device`, `precision` and
`compile`; the hand loop then does what a careful hand-written GPU loop does (data on the GPU,
fused Adam, channels_last for images, autocast, torch.compile), so the ratio stays like for like.

The hand loop draws the same shuffle as nntrain's loader, and each side draws the autoencoder's
input noise from its own copy of torch's random state, seeded alike, so both sides follow the same
trajectory; the script prints both sides' epoch losses and checks that they agree (proof of the
same work).

After one warm-up epoch each, the two alternate (nntrain, hand, nntrain, hand, ...) so that load
from other processes hits both alike; the table reports the median and the best epoch time of each
side and the ratios nntrain / hand (target <= 1.05). On a shared machine `--threads 1` is steadier:
with torch's default threads, other processes make single epochs 10x slower at random.
Results and an analysis of the overhead: benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import gzip
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the checkout, even without an installed package

from nntrain.build import build_callbacks, build_parts, build_trainer  # noqa: E402
from nntrain.callbacks import ProgressBar  # noqa: E402
from nntrain.data.info import DataInfo  # noqa: E402
from nntrain.data.sources import DATASETS  # noqa: E402
from nntrain.data.splits import Splits  # noqa: E402
from nntrain.models import build_model  # noqa: E402
from nntrain.validate import config_from_dict  # noqa: E402

MODELS = {
    "mlp": {"name": "mlp", "hidden": [128], "activation": "relu"},  # 784-128-10
    "lenet": {"name": "lenet", "activation": "relu"},
    "lenet_crop": {"name": "lenet", "activation": "relu"},  # with random_crop padding 2 on both sides
    "gru": {"name": "gru", "hidden_size": 64},  # MNIST rows as a 28-step sequence of 28 values
    # configs/mnist_autoencoder.yaml's model: 28x28 -> 32 numbers -> 28x28 logits, denoising
    "autoencoder": {"name": "autoencoder", "variant": "conv", "hidden": [32, 64], "latent_dim": 32, "noise_std": 0.2},
}
CROP_PADDING = 2


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (optionally gzipped) as a numpy array."""
    raw = gzip.open(path).read() if path.suffix == ".gz" else path.read_bytes()
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


@DATASETS.register("bench_mnist_idx", runtime=("context",))
def bench_mnist_idx(path: str, rows: bool = False, *, context: object = None) -> Splits:
    """MNIST read straight from the four IDX .gz files in `path` (benchmark only).

    `rows`: each image as a sequence of 28 rows of 28 values, (N, 28, 28), for recurrent models.
    """
    folder = Path(path)
    load = lambda name: torch.from_numpy(read_idx(folder / name).copy())  # noqa: E731
    shape = (lambda t: t) if rows else (lambda t: t.unsqueeze(1))
    x_train = shape(load("train-images-idx3-ubyte.gz")).float().div_(255.0)
    x_test = shape(load("t10k-images-idx3-ubyte.gz")).float().div_(255.0)
    info = DataInfo(
        "classification", tuple(x_train.shape[1:]), 10, [str(i) for i in range(10)],
        variable_length=False if rows else None,  # every image has 28 rows: nothing to pack
    )
    return Splits(
        x_train, load("train-labels-idx1-ubyte.gz").long(), info,
        x_test, load("t10k-labels-idx1-ubyte.gz").long(),
    )


@dataclass(frozen=True)
class Setup:
    """Where and how both sides train: `--device`, `--precision` (fp32|bf16), `--compile`."""

    device: str = "cpu"
    precision: str = "fp32"
    compile: bool = False
    ema: float | None = None  # train.ema's decay (None: no averaging)


def make_config(model: dict, data: Path, log_dir: str, crop: bool = False, setup: Setup = Setup()):
    augment = [{"name": "random_crop", "padding": CROP_PADDING}] if crop else []
    # Reconstruction as configs/mnist_autoencoder.yaml trains it: the target is the input, pixels
    # stay in [0, 1] for bce_with_logits, and the checkpoint watches val/mse (no val/acc there).
    reconstruction = model["name"] == "autoencoder"
    return config_from_dict(
        {
            "name": f"bench_{model['name']}",
            "seed": 0,
            "data": {
                "dataset": {"name": "bench_mnist_idx", "path": str(data), "rows": model["name"] == "gru"},
                "batch_size": 128,
                "normalize": None if reconstruction else {"name": "standardize"},
                "augment": augment,
                "task": "reconstruction" if reconstruction else None,
            },
            "model": model,
            "loss": {"name": "bce_with_logits" if reconstruction else "cross_entropy"},
            "optimizer": {"name": "adam", "lr": 1e-3},
            "train": {
                "device": setup.device, "precision": setup.precision, "compile": setup.compile,
                "checkpoint": {"monitor": "val/mse" if reconstruction else "val/acc"},
                **({"ema": {"decay": setup.ema}} if setup.ema is not None else {}),
            },
            "log": {"dir": log_dir, "tensorboard": True, "every_n_steps": 50},
        },
        where="<bench_epoch>",
    )


class NntrainSide:
    """nntrain's Trainer with the callbacks `nntrain fit` attaches; one `train_epoch()` per call."""

    def __init__(self, cfg, run_dir: Path):
        from rich.console import Console

        self.parts = build_parts(cfg)
        # A terminal-like console that goes nowhere: the bar renders as it would for a user.
        self._sink = open(Path(run_dir) / "progress.txt", "w")
        console = Console(file=self._sink, force_terminal=True, width=100)
        # Exactly what `nntrain fit` attaches and builds.
        callbacks, _ = build_callbacks(cfg, run_dir, console=console, data=self.parts.data)
        self.trainer = build_trainer(self.parts, callbacks)
        for cb in callbacks:
            cb.on_fit_start(self.trainer)
        # rich redraws from a thread of its own: let it run during nntrain's epochs only.
        self.bar = next(cb for cb in callbacks if isinstance(cb, ProgressBar))
        self.bar.progress.stop()

    def epoch(self) -> float:
        t = self.trainer
        self.bar.progress.start()
        try:
            loss = t.train_epoch()
        finally:
            self.bar.progress.stop()
        t.epoch += 1  # what fit() does between epochs (evaluation and epoch-end hooks not timed)
        t.batch_in_epoch = 0
        return loss

    def close(self) -> None:
        self.bar.progress.start()  # on_fit_end stops it
        for cb in self.trainer.callbacks:
            cb.on_fit_end(self.trainer)
        self._sink.close()


class HandSide:
    """The ordinary PyTorch loop: randperm, index, forward, loss, zero_grad, backward, step.

    On CUDA it does what a careful hand-written loop does: data already on the GPU, fused Adam,
    channels_last for image batches, autocast for bf16, and `torch.compile` when asked.
    """

    def __init__(self, parts):
        self.x, self.y = parts.data.train  # the very tensors the Trainer batches from
        self.device = device = parts.device
        self.model = build_model(parts.cfg.model.model_dump(), parts.data.info.model_kwargs())
        self.model.load_state_dict(parts.model.state_dict())  # same starting weights
        self.model.to(device)
        self.channels_last = device.type == "cuda" and self.x.dim() == 4
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.forward = torch.compile(self.model) if parts.cfg.train.compile else self.model
        self.bf16 = parts.cfg.train.precision == "bf16"
        self.reconstruction = parts.data.info.task == "reconstruction"
        self.loss_fn = nn.BCEWithLogitsLoss() if self.reconstruction else nn.CrossEntropyLoss()
        fused = {"fused": True} if device.type == "cuda" else {}
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=1e-3, **fused)
        ema = parts.cfg.train.ema
        self.ema = None
        if ema is not None:  # what a hand-written loop with EMA does: torch's AveragedModel
            from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

            self.ema = AveragedModel(self.model, multi_avg_fn=get_ema_multi_avg_fn(ema.decay), use_buffers=True)
        self.batch_size = parts.cfg.data.batch_size
        self.seed, self.epochs_done = parts.cfg.seed, 0
        self.crop = bool(parts.cfg.data.augment)
        self.crop_gen = torch.Generator(device=device).manual_seed(parts.cfg.seed)

    def random_crop(self, xb: torch.Tensor) -> torch.Tensor:
        """The batched crop of the fast CIFAR-10 scripts: pad, one random offset per sample, one gather."""
        p = CROP_PADDING
        n, c, h, w = xb.shape
        d = xb.device
        padded = torch.nn.functional.pad(xb, (p, p, p, p))
        top = torch.randint(0, 2 * p + 1, (n,), generator=self.crop_gen, device=d)
        left = torch.randint(0, 2 * p + 1, (n,), generator=self.crop_gen, device=d)
        rows = (top[:, None] + torch.arange(h, device=d))[:, None, :, None]
        cols = (left[:, None] + torch.arange(w, device=d))[:, None, None, :]
        n_idx, c_idx = torch.arange(n, device=d)[:, None, None, None], torch.arange(c, device=d)[None, :, None, None]
        return padded[n_idx, c_idx, rows, cols]

    def epoch(self) -> float:
        x, y, b = self.x, self.y, self.batch_size
        n = len(x)
        self.model.train()
        # The shuffle nntrain's TensorLoader draws for this epoch, so both sides take the same
        # trajectory: same weights, same optimizer state, same arithmetic (tiny denormal values in
        # Adam's state cost CPU time, and which ones appear depends on the trajectory).
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epochs_done)
        order = torch.randperm(n, generator=gen).to(x.device)
        loss_sum = torch.zeros((), device=x.device)
        for i in range(0, n, b):
            idx = order[i : i + b]
            xb = x[idx]
            yb = xb if self.reconstruction else y[idx]  # an autoencoder's target is its (clean) input
            if self.crop:
                xb = self.random_crop(xb)
            if self.channels_last:
                xb = xb.contiguous(memory_format=torch.channels_last)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
                loss = self.loss_fn(self.forward(xb), yb)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            if self.ema is not None:
                self.ema.update_parameters(self.model)
            loss_sum += loss.detach() * len(idx)  # on the device: no host sync per step
        self.epochs_done += 1
        return (loss_sum / n).item()


def bench(model_name: str, data: Path, epochs: int, setup: Setup = Setup()) -> dict:
    with tempfile.TemporaryDirectory(prefix="nntrain-bench-") as tmp:
        cfg = make_config(MODELS[model_name], data, tmp, crop=model_name.endswith("_crop"), setup=setup)
        run_dir = Path(tmp) / "run"
        run_dir.mkdir()
        ours = NntrainSide(cfg, run_dir)
        hand = HandSide(ours.parts)
        sides = {"nntrain": ours, "hand": hand}
        wall: dict[str, list[float]] = {name: [] for name in sides}
        cpu: dict[str, list[float]] = {name: [] for name in sides}
        losses: dict[str, list[float]] = {name: [] for name in sides}
        # Each side's own copy of torch's global random state (the autoencoder's input noise), so
        # both draw the same noise although their epochs alternate. Swapped outside the timing.
        rng = {name: rng_state() for name in sides}
        for name, side in sides.items():  # warm-up: allocator, kernels, compilation, lazy imports, first writes
            set_rng_state(rng[name])
            losses[name].append(side.epoch())
            rng[name] = rng_state()
        for _ in range(epochs):
            for name, side in sides.items():
                set_rng_state(rng[name])
                # Each epoch ends by reading its loss (a sync), so CUDA work is inside the timing.
                start, start_cpu = time.perf_counter(), time.process_time()
                losses[name].append(side.epoch())
                wall[name].append(time.perf_counter() - start)
                cpu[name].append(time.process_time() - start_cpu)  # all threads of this process
                rng[name] = rng_state()
        ours.close()
    return {"model": model_name, "samples": len(hand.x), "wall": wall, "cpu": cpu, "losses": losses}


def rng_state() -> tuple:
    return torch.get_rng_state(), torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None


def set_rng_state(state: tuple) -> None:
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state_all(state[1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=5, help="measured epochs per side (after 1 warm-up)")
    parser.add_argument("--models", default="mlp,lenet,lenet_crop,gru,autoencoder",
                        help="comma-separated: mlp, lenet, lenet_crop (LeNet with random_crop padding 2), gru, "
                             "autoencoder (conv, reconstruction, bce_with_logits)")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "mnist",
                        help="folder with the four MNIST IDX .gz files")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads (default: torch's choice); 1 is steadier on a busy machine")
    parser.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N (default: cpu)")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"], help="autocast dtype on both sides")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model on both sides")
    parser.add_argument("--ema", type=float, default=None, metavar="DECAY",
                        help="train.ema with this decay on the nntrain side, torch's AveragedModel on the hand side")
    args = parser.parse_args(argv)
    setup = Setup(args.device, args.precision, args.compile, args.ema)
    names = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in names if m not in MODELS]
    if unknown:
        parser.error(f"unknown model(s) {', '.join(unknown)} (choices: {', '.join(MODELS)})")
    if args.epochs < 1:
        parser.error("--epochs must be at least 1")
    if not (args.data / "train-images-idx3-ubyte.gz").is_file():
        parser.error(f"no MNIST IDX files in {args.data}")
    if args.threads:
        torch.set_num_threads(args.threads)

    where = args.device
    if args.device.startswith("cuda"):
        where += f" ({torch.cuda.get_device_name(torch.device(args.device))})"
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {where}, {args.precision}, "
          f"compile {'on' if args.compile else 'off'}, EMA {args.ema if args.ema is not None else 'off'}, "
          f"batch 128, Adam lr 1e-3, "
          f"{args.epochs} measured epochs per side (+1 warm-up), interleaved")
    rows = []
    for name in names:
        r = bench(name, args.data, args.epochs, setup)
        rows.append(r)
        fmt = lambda ts: " ".join(f"{t:.3f}" for t in ts)  # noqa: E731
        for side in ("nntrain", "hand"):
            print(f"  {name:11s} {side:7s} wall [{fmt(r['wall'][side])}]  cpu [{fmt(r['cpu'][side])}]  "
                  f"epoch losses [{' '.join(f'{v:.6f}' for v in r['losses'][side])}]")
        gap = max(abs(a - b) for a, b in zip(r["losses"]["nntrain"], r["losses"]["hand"]))
        if name.endswith("_crop"):  # each side draws its own crops: close losses, not equal ones
            same = "the same work, different random crops" if gap < 5e-2 else "DIFFERENT: check the comparison"
        else:
            same = "the same work" if gap < 1e-4 else "DIFFERENT trajectories: check the comparison"
        print(f"  {name:11s} largest epoch-loss difference nntrain vs hand: {gap:.2e} ({same})")
    print()
    print("| model | samples/epoch | nntrain median (s) | hand median (s) | ratio (median) | "
          "nntrain best (s) | hand best (s) | ratio (best) | ratio (CPU time, median) |")
    print("|---|---|---|---|---|---|---|---|---|")
    med = statistics.median
    for r in rows:
        w, c = r["wall"], r["cpu"]
        print(f"| {r['model']} | {r['samples']} | {med(w['nntrain']):.3f} | {med(w['hand']):.3f} | "
              f"{med(w['nntrain']) / med(w['hand']):.3f} | {min(w['nntrain']):.3f} | {min(w['hand']):.3f} | "
              f"{min(w['nntrain']) / min(w['hand']):.3f} | {med(c['nntrain']) / med(c['hand']):.3f} |")
    print("\nwall-clock epoch times over the measured epochs; ratio = nntrain / hand (target <= 1.05). "
          "'best' is the fastest epoch of each side (least disturbed by other load); CPU time counts all "
          "threads of this process.")

if __name__ == "__main__":
    main()
