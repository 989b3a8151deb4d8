"""`sensaudit run` against a plain pyarrow + torch process, side by side, on the same file.

The plain process is the floor for any audit of the file: it imports torch, reads the Parquet
file with pyarrow and runs one forward and one backward pass over every row, nothing else. The
audit does that plus its statistics, checks and every report: with its defaults (examples.csv
then holds the rows report.md lists, since the audit has over 100,000 rows), and with
``report.examples: all`` (examples.csv for every row).
Each command runs in a fresh process (so imports and peak memory count), taking turns, best of
``--repeats``; peak RSS is the process's VmHWM.

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

# Peak RSS from /proc's VmHWM, which exec resets: getrusage's ru_maxrss would carry over the
# parent's peak.
_PEAK = """
def _peak_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
"""

PLAIN = _PEAK + """
import sys, time, json
began = time.perf_counter()
import torch, pyarrow.parquet as pq
torch.set_num_threads(int(sys.argv[3]))
model = torch.export.load(sys.argv[1]).module()
sub = int(sys.argv[4])  # rows per forward/backward (0: the whole batch read)
rows = 0
for batch in pq.ParquetFile(sys.argv[2]).iter_batches(batch_size=ROW_GROUP):
    x = torch.from_numpy(batch.to_pandas().to_numpy())
    for part in (torch.split(x, sub) if sub else (x,)):
        part = part.requires_grad_(True)
        model(part).sum().backward()
        rows += part.shape[0]
print(json.dumps({"seconds": time.perf_counter() - began, "rows": rows,
                  "peak_rss_mb": _peak_mb()}))
""".replace("ROW_GROUP", str(ROW_GROUP))

AUDIT = _PEAK + """
import sys, time, json
began = time.perf_counter()
import torch
torch.set_num_threads(int(sys.argv[2]))
from sensaudit import load_config, run_audit
result, _ = run_audit(load_config(sys.argv[1]))
print(json.dumps({"seconds": time.perf_counter() - began, "rows": result.rows,
                  "peak_rss_mb": _peak_mb()}))
"""


def make_model(path: Path) -> None:
    torch.manual_seed(0)
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
    args = parser.parse_args()
    threads = str(args.threads)
    print(f"torch {torch.__version__}, {threads} threads, {FEATURES} float32 features, "
          f"MLP {FEATURES}-64-64-1, best of {args.repeats}\n")
    print("| rows | command | wall s | rows/s | peak RSS MB | vs plain |")
    print("|---:|---|---:|---:|---:|---:|")
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
            commands = {
                "plain: read + forward/backward per 131,072-row batch":
                    (PLAIN, str(model), str(data), threads, "0"),
                "plain: same, in 4,096-row sub-batches":
                    (PLAIN, str(model), str(data), threads, "4096"),
                "sensaudit run (csv, markdown, json reports)": (AUDIT, str(config), threads),
                "sensaudit run, report.examples: all (examples.csv of every row)":
                    (AUDIT, str(every_row), threads),
            }
            best: dict[str, dict] = {}
            for _ in range(args.repeats):
                for name, (code, *cmd_args) in commands.items():
                    began = time.perf_counter()
                    result = run(code, *cmd_args)
                    result["wall"] = time.perf_counter() - began
                    if name not in best or result["wall"] < best[name]["wall"]:
                        best[name] = result
            floor = best[next(iter(commands))]["wall"]
            for name, result in best.items():
                print(f"| {rows:,} | {name} | {result['wall']:.1f} | "
                      f"{rows / result['wall']:,.0f} | {result['peak_rss_mb']:,.0f} | "
                      f"{result['wall'] / floor:.2f}x |", flush=True)
            data.unlink()


if __name__ == "__main__":
    main()
