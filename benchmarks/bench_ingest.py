"""CSV ingest: nntrain's `csv` source against pandas.read_csv, side by side, each in a fresh process.

    python benchmarks/bench_ingest.py [--cases mnist,tall,wide] [--dir /tmp/nntrain-bench-ingest]
                                      [--repeat 1] [--before] [--loadtxt]

Files (generated once into --dir, reused while their marker matches):

- mnist: 42,000 x 785, the layout of Kaggle's MNIST train.csv (`label,pixel0..pixel783`, integers
  0-255); the pixels are the embedded MNIST subset (nntrain/data/embedded/mnist_small.npz) tiled,
  so the text has MNIST's mix of zeros and 1-3 digit values (~77 MB). Target: `label`, classes.
- tall: 1,000,000 x 10 floats (`y,x1..x9`, 4 decimals). Target: `y`, regression.
- wide: 10,000 x 10,000 floats (`y,x1..x9999`, 4 decimals; ~0.9 GB). Target: `y`, regression.

Readers, each run in its own new process (`python -c`), one after another:

- `pandas.read_csv(path)`: pandas' defaults (int64/float64 columns), the figure issue 13 quotes.
- `pandas float32`: pandas with the dtypes nntrain ends with (features float32, the label as text)
  and the same output, a C-contiguous float32 torch tensor of the features.
- `nntrain csv`: the real source, `DATASETS.build({"name": "csv", ...})`: header, pyarrow read,
  labels encoded to class indices, torch tensors (nntrain/data/csv_reader.py).
- with --before (mnist): nntrain's line-accurate reader alone (Python's csv module + float() per cell, the
  reader of every release before this one, still the fallback that names a bad file's line).
- with --loadtxt: numpy.loadtxt(float32) (mnist only; it is slow).

Each process imports torch first and takes its resident memory then as the baseline; "peak" is
the process's high-water mark (VmHWM) minus that baseline, so it counts the reader's imports and
everything it allocates; "x array" is the size of the final float32 feature array. "read s" is the
call alone (wall clock); "CPU s" the CPU time of all the process's threads during it (steadier than
wall time on a busy machine: it counts the work, not the waiting); "import s" the reader's own
imports (pandas, pyarrow, nntrain's sources). With
--repeat N the fastest of N runs is shown (memory from the first). Timings on a shared machine
vary by 2x from run to run: compare the sides of one table, not tables of different runs.
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

CASES = {
    # name: (rows, columns, target, task)
    "mnist": (42_000, 785, "label", "classification"),
    "tall": (1_000_000, 10, "y", "regression"),
    "wide": (10_000, 10_000, "y", "regression"),
}


# ---------------------------------------------------------------- files


def make_file(case: str, folder: Path) -> Path:
    rows, cols, target, _ = CASES[case]
    path = folder / f"{case}_{rows}x{cols}.csv"
    marker = path.with_suffix(".ok")
    if path.exists() and marker.exists() and marker.read_text() == str(path.stat().st_size):
        return path
    import pyarrow as pa
    import pyarrow.csv as pacsv

    folder.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    if case == "mnist":
        with np.load(REPO / "nntrain" / "data" / "embedded" / "mnist_small.npz") as npz:
            images = np.concatenate([npz["x_train"], npz["x_test"]]).reshape(-1, 784)
            labels = np.concatenate([npz["y_train"], npz["y_test"]])
        reps = -(-rows // len(images))
        pixels = np.tile(images, (reps, 1))[:rows].astype(np.int32)
        names = ["label"] + [f"pixel{i}" for i in range(784)]
        columns = [np.tile(labels, reps)[:rows].astype(np.int32)] + [pixels[:, i] for i in range(784)]
    else:
        rng = np.random.default_rng(0)
        names = [target] + [f"x{i}" for i in range(1, cols)]
        columns = [np.round(rng.normal(0, 10, rows), 4) for _ in range(cols)]
    with open(path, "wb") as f:
        f.write((",".join(names) + "\n").encode())
        table = pa.table({f"c{i}": c for i, c in enumerate(columns)})
        pacsv.write_csv(table, f, pacsv.WriteOptions(include_header=False, quoting_style="none"))
    marker.write_text(str(path.stat().st_size))
    print(f"wrote {path} ({path.stat().st_size / 2**20:.0f} MiB) in {time.perf_counter() - started:.0f} s",
          file=sys.stderr)
    return path


# ---------------------------------------------------------------- readers (run in a child process)

CHILD = textwrap.dedent(
    """
    import json, sys, time
    import torch

    def status(field):
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field):
                    return int(line.split()[1]) / 1024
        import resource
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    base = status("VmRSS")
    reader, path, target, task = sys.argv[1:5]
    t0 = time.perf_counter()
    if reader.startswith("pandas"):
        import pandas as pd
        import numpy as np
    elif reader == "nntrain":
        from nntrain.data.sources import DATASETS
    elif reader == "before":
        from pathlib import Path
        from nntrain.data.csv_reader import csv_header, _read_exact
    else:
        import numpy as np
    t1 = time.perf_counter()
    c1 = time.process_time()  # CPU seconds of every thread of this process
    if reader == "pandas":
        df = pd.read_csv(path)
        shape = [len(df), df.shape[1] - 1]
    elif reader == "pandas32":
        header = open(path).readline().strip().split(",")
        types = {h: (str if h == target and task == "classification" else np.float32) for h in header}
        df = pd.read_csv(path, dtype=types)
        x = torch.from_numpy(np.ascontiguousarray(df[[h for h in header if h != target]].to_numpy(np.float32)))
        shape = list(x.shape)
    elif reader == "nntrain":
        s = DATASETS.build({"name": "csv", "path": path, "target": target, "task": task})
        shape = list(s.x_train.shape)
    elif reader == "before":
        head = csv_header(Path(path))
        t = head.index(target, "target")
        cols = [i for i in range(len(head.header)) if i != t]
        label = (t, target) if task == "classification" else None
        groups = [cols] if label else [cols, [t]]
        out = _read_exact(Path(path), ",", groups, label, (), None, "no rows")
        shape = list(out.numbers[0].shape)
    else:
        a = np.loadtxt(path, delimiter=",", skiprows=1, dtype=np.float32)
        shape = [a.shape[0], a.shape[1] - 1]
    t2 = time.perf_counter()
    cpu = time.process_time() - c1
    print(json.dumps({"import_s": t1 - t0, "read_s": t2 - t1, "cpu_s": cpu, "peak_mb": status("VmHWM") - base,
                      "base_mb": base, "shape": shape}))
    """
)

LABELS = {
    "pandas": "pandas.read_csv (defaults)",
    "pandas32": "pandas.read_csv float32 -> tensor",
    "nntrain": "nntrain csv source",
    "before": "nntrain before (csv module + float())",
    "loadtxt": "numpy.loadtxt float32",
}


def run_reader(reader: str, path: Path, target: str, task: str) -> dict:
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    out = subprocess.run(
        [sys.executable, "-c", CHILD, reader, str(path), target, task],
        capture_output=True, text=True, env=env, cwd=REPO,
    )
    if out.returncode != 0:
        raise SystemExit(f"{reader} on {path} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cases", default="mnist,tall,wide")
    ap.add_argument("--dir", default="/tmp/nntrain-bench-ingest")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--before", action="store_true", help="also time the line-accurate reader (mnist)")
    ap.add_argument("--loadtxt", action="store_true", help="also time numpy.loadtxt (mnist)")
    ap.add_argument("--json", help="write the results there too")
    args = ap.parse_args()

    results = []
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the start")
    for case in args.cases.split(","):
        rows, cols, target, task = CASES[case]
        path = make_file(case, Path(args.dir))
        path.read_bytes()  # into the page cache: every reader starts from the same warm cache
        readers = ["pandas", "pandas32", "nntrain"]
        if args.before and case == "mnist":
            readers.append("before")
        if args.loadtxt and case == "mnist":
            readers.append("loadtxt")
        got = {}
        for reader in readers:
            runs = [run_reader(reader, path, target, task) for _ in range(args.repeat)]
            best = min(runs, key=lambda r: r["read_s"])
            got[reader] = {**best, "peak_mb": runs[0]["peak_mb"]}
        x_mb = rows * (cols - 1) * 4 / 2**20
        print(f"\n### {case}: {rows:,} x {cols:,} ({path.stat().st_size / 2**20:.0f} MiB), x array {x_mb:.0f} MiB")
        print("| reader | read s | vs pandas | CPU s | import s | peak MiB over torch | peak / x array |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for reader, r in got.items():
            print(f"| {LABELS[reader]} | {r['read_s']:.2f} | {r['read_s'] / got['pandas']['read_s']:.2f}x | "
                  f"{r['cpu_s']:.2f} | {r['import_s']:.2f} | {r['peak_mb']:.0f} | {r['peak_mb'] / x_mb:.1f}x |")
            results.append({"case": case, "reader": reader, "x_mb": x_mb, **r})
        sys.stdout.flush()
    print(f"\nload average {os.getloadavg()[0]:.1f} at the end")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
