"""`sensaudit run` against the fastest plain pyarrow + torch process, side by side, same file.

The plain process is the floor for any audit of the file: it imports torch, loads the model,
reads the Parquet file with pyarrow and runs one forward pass and one backward pass to the
inputs over every row, nothing else. It is written to be as fast as it honestly can: the file
is read buffered without prefetching, Arrow columns are copied straight into one [rows,
features] array reused from batch to batch (no pandas), the backward pass asks for the inputs'
gradient only (``autograd.grad``, as the audit does: ``.backward()`` would also compute every
weight's gradient), and it runs in two variants, over each 131,072-row batch as read and in
65,536-row sub-batches (the faster at 2 threads on the machine measured: 4,096- and 16,384-row
sub-batches were slower there). The audit does that plus its statistics, checks and every
report: with its defaults (examples.csv then holds the rows report.md lists, since the audit
has over 100,000 rows), and with ``report.examples: all`` (examples.csv for every row).

Each command runs in a fresh process (so imports and peak memory count), taking turns, best of
``--repeats``; peak RSS is the process's VmHWM, CPU s its user + system time (all threads).
"vs fastest plain" divides by the faster plain variant's wall time at the same row count.

    python benchmarks/end_to_end.py                # 1M and 5M rows x 64 features
    python benchmarks/end_to_end.py --rows 200000  # a quick look
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

FEATURES = 64
ROW_GROUP = 131_072
SUB_BATCH = 65_536

# Peak RSS from /proc's VmHWM, which exec resets: getrusage's ru_maxrss would carry over the
# parent's peak.
_MEASURE = """
import os, resource, time
def _peak_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
def _cpu_s():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime
"""

PLAIN = _MEASURE + """
import sys, time, json
began = time.perf_counter()
import torch, pyarrow.parquet as pq
torch.set_num_threads(int(sys.argv[3]))
model = torch.export.load(sys.argv[1]).module()
sub = int(sys.argv[4])  # rows per forward/backward (0: the whole batch read)
rows = 0
# Buffered, unprefetched reads: faster than pyarrow's default here, and flat in memory (the
# default prefetching grew this process to 2.2 GB at 5M rows).
parquet = pq.ParquetFile(sys.argv[2], buffer_size=1 << 20, pre_buffer=False)
# Each column copied whole into a [features, rows] array, then transposed at once by torch:
# faster than pandas, column_stack or strided writes into a row-major array. Both arrays are
# reused batch after batch (nothing here keeps a batch), which spares the page faults of fresh
# 33 MB blocks.
by_column = torch.empty(FEATURES, ROW_GROUP)
rows_major = torch.empty(ROW_GROUP, FEATURES)
for batch in parquet.iter_batches(batch_size=ROW_GROUP):
    n = batch.num_rows
    stage = by_column[:, :n].numpy()
    for j, column in enumerate(batch.columns):
        stage[j] = column.to_numpy()
    x = rows_major[:n].copy_(by_column[:, :n].T)
    for part in (torch.split(x, sub) if sub else (x,)):
        part = part.requires_grad_(True)
        (grad,) = torch.autograd.grad(model(part).sum(), part)
        rows += grad.shape[0]
print(json.dumps({"seconds": time.perf_counter() - began, "rows": rows,
                  "peak_rss_mb": _peak_mb(), "cpu_s": _cpu_s()}))
""".replace("ROW_GROUP", str(ROW_GROUP)).replace("FEATURES", str(FEATURES))

AUDIT = _MEASURE + """
import sys, time, json
began = time.perf_counter()
import torch
torch.set_num_threads(int(sys.argv[2]))
from sensaudit import load_config, run_audit
result, _ = run_audit(load_config(sys.argv[1]))
print(json.dumps({"seconds": time.perf_counter() - began, "rows": result.rows,
                  "peak_rss_mb": _peak_mb(), "cpu_s": _cpu_s()}))
"""


def make_model(path: Path, seed: int = 0) -> None:
    """A 64-64-64-1 ReLU MLP from ``seed``'s initialisation, exported with a dynamic batch (the
    model of this benchmark, benchmarks/compare.py and benchmarks/ray_engine.py)."""
    torch.manual_seed(seed)
    model = torch.nn.Sequential(
        torch.nn.Linear(FEATURES, 64), torch.nn.ReLU(), torch.nn.Linear(64, 64),
        torch.nn.ReLU(), torch.nn.Linear(64, 1)).eval()
    example = torch.randn(8, FEATURES)
    batch = torch.export.Dim("rows", min=1)
    program = torch.export.export(model, (example,), dynamic_shapes=({0: batch},))
    torch.export.save(program, str(path))


def make_data(path: Path, rows: int) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    generator = np.random.default_rng(0)
    names = [f"f{j}" for j in range(FEATURES)]
    with pq.ParquetWriter(path, pa.schema([(n, pa.float32()) for n in names])) as writer:
        for start in range(0, rows, 500_000):
            block = generator.standard_normal((min(500_000, rows - start), FEATURES),
                                              dtype=np.float32)
            writer.write_table(pa.table(dict(zip(names, block.T, strict=True))),
                               row_group_size=ROW_GROUP)


def run(code: str, *args: str) -> dict:
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 5_000_000])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--no-every-row", action="store_true",
                        help="leave out the report.examples: all run (the slowest)")
    args = parser.parse_args()
    threads = str(args.threads)
    print(f"torch {torch.__version__}, {threads} threads, {FEATURES} float32 features, "
          f"MLP {FEATURES}-64-64-1, best of {args.repeats}\n")
    print("| rows | command | wall s | CPU s | rows/s | peak RSS MB | vs fastest plain |")
    print("|---:|---|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory(prefix="sensaudit-bench-") as folder:
        root = Path(folder)
        model = root / "model.pt2"
        make_model(model)
        for rows in args.rows:
            data = root / f"data_{rows}.parquet"
            make_data(data, rows)
            config = root / f"audit_{rows}.yaml"
            config.write_text(f"model:\n  path: {model}\ndata:\n  path: {data}\n"
                              f"report:\n  dir: {root / f'reports_{rows}'}\n")
            every_row = root / f"audit_{rows}_all.yaml"
            every_row.write_text(f"model:\n  path: {model}\ndata:\n  path: {data}\n"
                                 f"report:\n  dir: {root / f'reports_{rows}_all'}\n"
                                 "  examples: all\n")
            plain = {
                f"plain: read + forward/backward per {ROW_GROUP:,}-row batch":
                    (PLAIN, str(model), str(data), threads, "0"),
                f"plain: same, in {SUB_BATCH:,}-row sub-batches":
                    (PLAIN, str(model), str(data), threads, str(SUB_BATCH)),
            }
            commands = {
                **plain,
                "sensaudit run (csv, markdown, json reports)": (AUDIT, str(config), threads),
            }
            if not args.no_every_row:
                commands["sensaudit run, report.examples: all (examples.csv of every row)"] = \
                    (AUDIT, str(every_row), threads)
            best: dict[str, dict] = {}
            for _ in range(args.repeats):
                for name, (code, *cmd_args) in commands.items():
                    began = time.perf_counter()
                    result = run(code, *cmd_args)
                    result["wall"] = time.perf_counter() - began
                    if name not in best or result["wall"] < best[name]["wall"]:
                        best[name] = result
            floor = min(best[name]["wall"] for name in plain)
            for name, result in best.items():
                print(f"| {rows:,} | {name} | {result['wall']:.1f} | {result['cpu_s']:.1f} | "
                      f"{rows / result['wall']:,.0f} | {result['peak_rss_mb']:,.0f} | "
                      f"{result['wall'] / floor:.2f}x |", flush=True)
            data.unlink()


if __name__ == "__main__":
    main()
