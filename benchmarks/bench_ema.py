"""The cost of one EMA update (`train.ema`) against one training step, on the benchmark's models.

    python benchmarks/bench_ema.py [--models mlp,lenet] [--steps 300] [--threads N] [--device cuda]

For each model: the median time of a training step (Adam, batch 128, forward + backward + step on
random MNIST-shaped data), of nntrain's EMA update (`nntrain.averaging.Averaging.update`, torch's
`get_ema_multi_avg_fn` with the count kept on the host) and of torch's
`AveragedModel.update_parameters` with the same function (which reads `n_averaged` back from the
device twice per call). The end-to-end figure is `benchmarks/bench_epoch.py --ema 0.999`.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nntrain.averaging import Averaging  # noqa: E402
from nntrain.models import build_model  # noqa: E402

MODELS = {
    "mlp": {"name": "mlp", "hidden": [128], "activation": "relu"},
    "lenet": {"name": "lenet", "activation": "relu"},
}


def _median_ms(fn, steps: int, device: torch.device) -> float:
    times = []
    for _ in range(steps):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def bench(name: str, steps: int, device: torch.device) -> dict[str, float]:
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    torch.manual_seed(0)
    model = build_model(MODELS[name], {"in_features": 784, "in_channels": 1, "image_size": 28, "num_classes": 10})
    model.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.randn(128, 1, 28, 28, device=device)
    y = torch.randint(0, 10, (128,), device=device)
    loss_fn = nn.CrossEntropyLoss()

    def train_step():
        optimizer.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        optimizer.step()

    ours = Averaging(model, ema=SimpleNamespace(decay=0.999, every_n_steps=1))
    theirs = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(0.999), use_buffers=True)
    for fn in (train_step, ours.update, lambda: theirs.update_parameters(model)):  # warm-up
        for _ in range(10):
            fn()
    return {
        "params": sum(p.numel() for p in model.parameters()),
        "step": _median_ms(train_step, steps, device),
        "ours": _median_ms(ours.update, steps, device),
        "torch": _median_ms(lambda: theirs.update_parameters(model), steps, device),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="mlp,lenet")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {device}, batch 128, "
          f"median of {args.steps} calls")
    print("| model | parameters | train step (ms) | EMA update, nntrain (ms) | EMA update, torch AveragedModel (ms) "
          "| nntrain EMA / step |")
    print("|---|---|---|---|---|---|")
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        r = bench(name, args.steps, device)
        print(f"| {name} | {r['params']} | {r['step']:.3f} | {r['ours']:.3f} | {r['torch']:.3f} | "
              f"{r['ours'] / r['step']:.1%} |")


if __name__ == "__main__":
    main()
