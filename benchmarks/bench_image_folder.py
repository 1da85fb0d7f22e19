"""Image folders: nntrain's `image_folder` (parallel decode + disk cache) against torchvision's
ImageFolder + DataLoader(num_workers=2), one epoch of LeNet each, every case in a fresh process.

    python benchmarks/bench_image_folder.py [--n 20000] [--dir /tmp/nntrain-bench-images]
                                            [--batch 64] [--workers 2] [--threads 0]

The folder: --n 28x28 greyscale PNGs in `<dir>/<digit>/<i>.png` (ImageFolder's layout), written
once by PIL from the embedded MNIST subset (nntrain/data/embedded/mnist_small.npz, 7,000 images;
beyond that, copies shifted by a pixel or two, so no two files are equal). Every file is read once
before the cases, so all of them start with the folder in the page cache.

Cases (each a new `python -c` process; torch is imported before the clock starts):

- `torchvision`: `ImageFolder(root, transform=Compose([Grayscale(1), ToTensor()]))` and
  `DataLoader(batch_size, shuffle=True, num_workers=2)`; the epoch decodes every image in the
  workers while the main process trains. "load" is building the dataset (the folder scan).
- `before`: nntrain's previous loader: one thread, PIL per file (`convert`, `resize`), no cache.
  Load only (its epoch is nntrain's, below).
- `nntrain first`: `image_folder` with an empty cache: scan, decode on threads, write the entry.
- `nntrain cached`: `image_folder` again: scan, stat, read the entry back (CRC-checked).

The nntrain cases then train one epoch on the in-memory tensors with nntrain's `TensorLoader`
(same batch size, shuffled). All sides train the same LeNet (`nntrain.models`, 1x28x28, 10
classes, same initial weights) with SGD (lr 0.01, momentum 0.9) and cross-entropy on pixels in
[0, 1]. "epoch" is the training pass; "total" is load + epoch, the time from nothing to one trained
epoch. The machine this was written on had 2 shared CPUs: timings vary from run to run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def make_folder(root: Path, n: int) -> Path:
    marker = root / ".complete"
    if marker.exists() and marker.read_text() == str(n):
        return root
    from PIL import Image

    with np.load(REPO / "nntrain" / "data" / "embedded" / "mnist_small.npz") as npz:
        images = np.concatenate([npz["x_train"], npz["x_test"]])
        labels = np.concatenate([npz["y_train"], npz["y_test"]])
    started = time.perf_counter()
    for digit in range(10):
        (root / str(digit)).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        k, copy = i % len(images), i // len(images)
        img = images[k] if copy == 0 else np.roll(images[k], (copy, -copy), axis=(0, 1))
        Image.fromarray(img, "L").save(root / str(int(labels[k])) / f"{i:06d}.png")
    marker.write_text(str(n))
    print(f"wrote {n} PNGs into {root} in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    return root


CHILD = textwrap.dedent(
    """
    import json, os, sys, time
    import torch
    from torch import nn

    case, root, batch, workers, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
    if threads:
        torch.set_num_threads(threads)
    from nntrain.models import MODELS

    def lenet():
        torch.manual_seed(0)
        return MODELS.build({"name": "lenet", "in_channels": 1, "image_size": 28, "num_classes": 10})

    def train(batches):
        model = lenet()
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        loss_fn = nn.CrossEntropyLoss()
        n = 0
        for x, y in batches:
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(x), y)
            loss.backward()
            opt.step()
            n += len(y)
        return n, float(loss)

    out = {"case": case}
    t0 = time.perf_counter()
    if case == "torchvision":
        from torchvision import datasets, transforms
        ds = datasets.ImageFolder(root, transform=transforms.Compose([transforms.Grayscale(1), transforms.ToTensor()]))
        loader = torch.utils.data.DataLoader(ds, batch_size=batch, shuffle=True, num_workers=workers)
        t1 = time.perf_counter()
        n, loss = train(loader)
    elif case == "before":
        import numpy as np
        from pathlib import Path
        from PIL import Image
        files = sorted(p for p in Path(root).rglob("*.png"))
        x = torch.empty((len(files), 1, 28, 28), dtype=torch.uint8)
        for i, f in enumerate(files):
            with Image.open(f) as img:
                img = img.convert("L").resize((28, 28), Image.BILINEAR)
            x[i] = torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).unsqueeze(0)
        t1 = time.perf_counter()
        n, loss = len(files), float("nan")
    else:
        from nntrain.data.loaders import TensorLoader
        from nntrain.data.sources import DATASETS
        s = DATASETS.build({"name": "image_folder", "root": root, "size": 28, "grayscale": True})
        t1 = time.perf_counter()
        n, loss = train(TensorLoader(s.x_train, s.y_train, batch, shuffle=True, seed=0).epoch(0))
    t2 = time.perf_counter()
    out.update(load_s=t1 - t0, epoch_s=t2 - t1, samples=n, last_loss=loss)
    print(json.dumps(out))
    """
)


def run(case: str, root: Path, args: argparse.Namespace, cache: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "NNTRAIN_CACHE_DIR": str(cache)}
    out = subprocess.run(
        [sys.executable, "-c", CHILD, case, str(root), str(args.batch), str(args.workers), str(args.threads)],
        capture_output=True, text=True, env=env, cwd=REPO,
    )
    if out.returncode != 0:
        raise SystemExit(f"{case} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--dir", default="/tmp/nntrain-bench-images")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--workers", type=int, default=2, help="the DataLoader's num_workers")
    ap.add_argument("--threads", type=int, default=0, help="torch threads in every case (0: torch's default)")
    ap.add_argument("--json")
    args = ap.parse_args()

    root = make_folder(Path(args.dir) / f"mnist_{args.n}", args.n)
    for f in root.rglob("*.png"):
        f.read_bytes()  # warm the page cache for every case alike
    cache = Path(args.dir) / "cache"
    for entry in cache.glob("*"):
        entry.unlink()
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the start")
    results = [run(case, root, args, cache) for case in ("torchvision", "before", "nntrain first", "nntrain cached")]
    base = results[0]
    base_total = base["load_s"] + base["epoch_s"]
    print(f"\n### {args.n:,} PNGs (28x28 grey), LeNet, batch {args.batch}, one epoch")
    print("| case | load s | epoch s | total s | total vs torchvision |")
    print("|---|---:|---:|---:|---:|")
    names = {"torchvision": f"torchvision ImageFolder + DataLoader(num_workers={args.workers})",
             "before": "nntrain before: serial PIL, no cache (load only)",
             "nntrain first": "nntrain image_folder, first run (decode + write cache)",
             "nntrain cached": "nntrain image_folder, cached run"}
    for r in results:
        if r["case"] == "before":
            print(f"| {names['before']} | {r['load_s']:.2f} | | | |")
            continue
        total = r["load_s"] + r["epoch_s"]
        print(f"| {names[r['case']]} | {r['load_s']:.2f} | {r['epoch_s']:.2f} | {total:.2f} | "
              f"{total / base_total:.2f}x |")
    print(f"\nload average {os.getloadavg()[0]:.1f} at the end")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
