"""`sensaudit compare` of two models against `sensaudit run` of one, side by side, same file.

Issue 23 asks for compare at a small multiple of the audit: two models cost two audits, and
the change's interval (a paired bootstrap, 1,000 replicates by default) should add little on
top. Three commands on one Parquet file (float32 features, two 64-input MLPs of different
initialisations): the run of the first model; compare of the two with the default settings;
and compare with ``compare.bootstrap_samples: 0`` (no interval: the two audits and the
per-row agreement alone), so the interval's own cost is the difference of the last two.

Each command runs in a fresh process (imports and peak memory count), taking turns, over
``--repeats`` rounds; the table gives each command's best and median wall time, its CPU time
(user + system, all threads) and peak RSS (VmHWM) in its best round, and its best and median
wall time divided by the run's in the same round.

    python benchmarks/compare.py                  # 1M rows x 64 features, 3 rounds
    python benchmarks/compare.py --rows 200000    # a quick look
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

# benchmarks/ is the script's folder: end_to_end's data, process code and runner are shared.
from end_to_end import _MEASURE, AUDIT, FEATURES, make_data, make_model, run

COMPARE = _MEASURE + """
import sys, time, json
began = time.perf_counter()
import torch
torch.set_num_threads(int(sys.argv[2]))
from sensaudit import load_config, run_compare
result, _ = run_compare(load_config(sys.argv[1], require_model=False), sys.argv[3], sys.argv[4])
print(json.dumps({"seconds": time.perf_counter() - began, "rows": result.new.rows,
                  "peak_rss_mb": _peak_mb(), "cpu_s": _cpu_s()}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    threads = str(args.threads)
    with tempfile.TemporaryDirectory(prefix="sensaudit-bench-") as folder:
        root = Path(folder)
        old, new = root / "old.pt2", root / "new.pt2"
        make_model(old, seed=0)
        make_model(new, seed=1)
        data = root / "data.parquet"
        make_data(data, args.rows)
        configs = {}
        for name, compare in (("default", ""), ("no_interval", "compare:\n"
                                                "  bootstrap_samples: 0\n")):
            configs[name] = root / f"{name}.yaml"
            configs[name].write_text(f"model:\n  path: {old}\ndata:\n  path: {data}\n"
                                     f"report:\n  dir: {root / name}\n{compare}")
        commands = {
            "sensaudit run (old model)": (AUDIT, str(configs["default"]), threads),
            "sensaudit compare old new (defaults: 1,000 replicates)":
                (COMPARE, str(configs["default"]), threads, str(old), str(new)),
            "sensaudit compare old new, bootstrap_samples: 0 (no interval)":
                (COMPARE, str(configs["no_interval"]), threads, str(old), str(new)),
        }
        rounds: list[dict[str, dict]] = []
        for _ in range(args.repeats):
            results: dict[str, dict] = {}
            for name, (code, *cmd_args) in commands.items():
                began = time.perf_counter()
                results[name] = run(code, *cmd_args)
                results[name]["wall"] = time.perf_counter() - began
                if results[name]["rows"] != args.rows:
                    sys.exit(f"{name} audited {results[name]['rows']} rows, not {args.rows}")
            rounds.append(results)
    load = Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else []
    print(f"torch {torch.__version__}, {threads} threads, {args.rows:,} rows x {FEATURES} "
          f"float32 features (Parquet), MLP {FEATURES}-64-64-1, {args.repeats} rounds"
          + (f", load average at the end {' '.join(load)}" if load else "") + "\n")
    print("| command | best wall s | median wall s | CPU s | peak RSS MB | vs run (best) "
          "| vs run (median of rounds) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    run_name = next(iter(commands))
    for name in commands:
        walls = [r[name]["wall"] for r in rounds]
        best = min(rounds, key=lambda r: r[name]["wall"])[name]
        ratio_best = best["wall"] / min(r[run_name]["wall"] for r in rounds)
        ratio_median = statistics.median(r[name]["wall"] / r[run_name]["wall"] for r in rounds)
        print(f"| {name} | {best['wall']:.1f} | {statistics.median(walls):.1f} | "
              f"{best['cpu_s']:.1f} | {best['peak_rss_mb']:,.0f} | {ratio_best:.2f}x | "
              f"{ratio_median:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
