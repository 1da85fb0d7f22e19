"""Start-up: `nntrain fit` of a 1-epoch MLP against a plain script doing the same work, as processes.

    python benchmarks/bench_startup.py [--runs 5] [--threads N]

Both sides train the same model on the MNIST subset that ships with nntrain (`mnist_small`, 6,000
training images, 10% held out for validation): MLP 784-128-10, Adam 1e-3, batch 128, one epoch
(43 updates), then the validation and test accuracy, a checkpoint and TensorBoard scalars. The
plain script is what a student writes: `np.load` the .npz, scale and standardize, split, build the
model and the optimizer, a `SummaryWriter`, the loop, the evaluations and a `torch.save`.

Each side runs as a fresh `python` process (the cost a user waits for). Two times are taken the
same way on both: **to the first step** (the process is started until the first optimizer update
has returned, as wall-clock time read in the child) and **the whole process** (start to exit, read
by this script). nntrain's first update is marked by wrapping `Trainer.update` when nntrain's
trainer module is imported (an import hook in the child; nothing in nntrain knows about it).
nntrain runs twice: as configured by default (it also writes the HTML report of the run) and with
`log.report: false`, the same work as the plain script.

The sides alternate (hand, nntrain, nntrain without report, hand, ...) after one warm-up round, so
load from other processes hits all alike; the table gives medians and the ratio to the plain
script, and the CPU time of each whole process (user + system, all its threads: steadier than wall
time on a shared machine). Python's bytecode cache is on in the children (PYTHONDONTWRITEBYTECODE
is dropped): nntrain's modules are compiled once, by the warm-up, as after any install.
`--threads` sets OMP_NUM_THREADS in every child (default: torch's choice).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "nntrain" / "data" / "embedded" / "mnist_small.npz"

CONFIG = """\
name: startup
seed: 0
data:
  dataset: {name: mnist_small}
  val_split: 0.1
  batch_size: 128
  normalize: {name: standardize}
model: {name: mlp, hidden: [128], activation: relu}
loss: {name: cross_entropy}
optimizer: {name: adam, lr: 1.0e-3}
train: {epochs: 1, device: cpu}
log: {dir: RUNS}
"""

# The plain script: argv = npz, output folder, file for the first-step time.
HAND = textwrap.dedent("""
    import sys, time
    import numpy as np
    import torch
    from torch import nn
    from torch.utils.tensorboard import SummaryWriter

    npz, out, mark = sys.argv[1:4]
    torch.manual_seed(0)
    data = np.load(npz)
    x = torch.from_numpy(data["x_train"]).float().div_(255).flatten(1)
    y = torch.from_numpy(data["y_train"]).long()
    x_test = torch.from_numpy(data["x_test"]).float().div_(255).flatten(1)
    y_test = torch.from_numpy(data["y_test"]).long()
    order = torch.randperm(len(x))
    n_val = len(x) // 10
    x_val, y_val, x, y = x[order[:n_val]], y[order[:n_val]], x[order[n_val:]], y[order[n_val:]]
    mean, std = x.mean(), x.std()
    x, x_val, x_test = (x - mean) / std, (x_val - mean) / std, (x_test - mean) / std

    model = nn.Sequential(nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 10))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    writer = SummaryWriter(out)

    def accuracy(xs, ys):
        model.eval()
        with torch.no_grad():
            out = model(xs)
        model.train()
        return loss_fn(out, ys).item(), (out.argmax(1) == ys).float().mean().item()

    first = None
    perm = torch.randperm(len(x))
    total = torch.zeros(())
    for step, i in enumerate(range(0, len(x), 128)):
        batch = perm[i:i + 128]
        loss = loss_fn(model(x[batch]), y[batch])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += loss.detach()
        if first is None:
            first = time.time()
    writer.add_scalar("train/loss", (total / (step + 1)).item(), step + 1)
    val_loss, val_acc = accuracy(x_val, y_val)
    writer.add_scalar("val/loss", val_loss, step + 1)
    writer.add_scalar("val/acc", val_acc, step + 1)
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict()}, out + "/last.pt")
    print("test acc", accuracy(x_test, y_test)[1])
    writer.close()
    open(mark, "w").write(repr(first))
""")

# Runs the nntrain CLI with `Trainer.update` wrapped, once nntrain.trainer is imported, to write the
# wall-clock time its first call returned. argv: file for the first-step time, then the CLI's arguments.
NNTRAIN = textwrap.dedent("""
    import importlib.abc, importlib.machinery, sys, time

    mark = sys.argv.pop(1)

    class Hook(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name != "nntrain.trainer":
                return None
            sys.meta_path.remove(self)
            spec = importlib.machinery.PathFinder.find_spec(name, path)
            run = spec.loader.exec_module

            def exec_module(module):
                run(module)
                update = module.Trainer.update

                def first(self, *args, **kwargs):
                    result = update(self, *args, **kwargs)
                    module.Trainer.update = update
                    open(mark, "w").write(repr(time.time()))
                    return result

                module.Trainer.update = first

            spec.loader.exec_module = exec_module
            return spec

    sys.meta_path.insert(0, Hook())
    from nntrain.cli import main
    sys.argv[0] = "nntrain"
    main()
""")


def run_once(argv: list[str], mark: Path, env: dict[str, str]) -> tuple[float, float, float]:
    """(seconds to the first update, seconds of the whole process, its CPU seconds) of one child."""
    mark.unlink(missing_ok=True)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.time()
    done = subprocess.run(argv, env=env, capture_output=True, text=True)
    total = time.time() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{argv[:3]} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return float(mark.read_text()) - start, total, cpu


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="measured rounds (after 1 warm-up)")
    parser.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS of the children")
    args = parser.parse_args(argv)

    env = {**os.environ, "PYTHONPATH": str(ROOT)}  # the checkout, even without an installed package
    env.pop("NNTRAIN_SHARED_DATA", None)
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # the warm-up writes nntrain's .pyc, as any install has
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    with tempfile.TemporaryDirectory(prefix="nntrain-bench-startup-") as tmp:
        folder = Path(tmp)
        mark = folder / "first_step"
        (folder / "hand.py").write_text(HAND)
        (folder / "nntrain_cli.py").write_text(NNTRAIN)
        (folder / "startup.yaml").write_text(CONFIG.replace("RUNS", str(folder / "runs")))
        sides = {
            "plain script": [sys.executable, str(folder / "hand.py"), str(DATA), str(folder / "hand"), str(mark)],
            "nntrain fit": [sys.executable, str(folder / "nntrain_cli.py"), str(mark), "fit",
                            str(folder / "startup.yaml")],
            "nntrain fit, no report": [sys.executable, str(folder / "nntrain_cli.py"), str(mark), "fit",
                                       str(folder / "startup.yaml"), "--set", "log.report=false"],
        }
        first: dict[str, list[float]] = {name: [] for name in sides}
        whole: dict[str, list[float]] = {name: [] for name in sides}
        cpu: dict[str, list[float]] = {name: [] for name in sides}
        for round_ in range(args.runs + 1):
            for name, command in sides.items():
                (folder / "hand").mkdir(exist_ok=True)
                to_first, total, seconds = run_once(command, mark, env)
                if round_ > 0:  # the first round warms the file cache and writes the .pyc
                    first[name].append(to_first)
                    whole[name].append(total)
                    cpu[name].append(seconds)

    med = statistics.median
    hand_first, hand_whole = med(first["plain script"]), med(whole["plain script"])
    print(f"python {sys.version.split()[0]}, {args.runs} rounds, medians, OMP_NUM_THREADS={args.threads or 'unset'}")
    hand_cpu = med(cpu["plain script"])
    print("| side | to first step (s) | ratio | whole process (s) | ratio | extra (s) | CPU (s) | ratio |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name in sides:
        f, w, c = med(first[name]), med(whole[name]), med(cpu[name])
        print(f"| {name} | {f:.2f} | {f / hand_first:.2f} | {w:.2f} | {w / hand_whole:.2f} | {w - hand_whole:+.2f} "
              f"| {c:.2f} | {c / hand_cpu:.2f} |")
    print(json.dumps({"first_step": first, "whole": whole, "cpu": cpu}))


if __name__ == "__main__":
    main()
