"""Benchmark: each attribution method of sensaudit against Captum's batched equivalent, on the
same rows, model and settings, in this one process on this one machine.

    python benchmarks/methods.py                  # CPU, 8,192 rows (about two minutes)
    python benchmarks/methods.py --device cuda    # the same on a GPU

Pairs: gradient / Saliency(abs=False); gradient_x_input (zero baseline) / InputXGradient;
smoothgrad / NoiseTunnel(Saliency), both 50 noisy copies per row; integrated_gradients /
IntegratedGradients, both 50 Gauss-Legendre steps from the same baseline. Captum runs as one
call over all rows, and for integrated gradients also with its internal_batch_size (path
points per batch) at 4 x the rows, its smallest batch holding every row at 4 steps;
sensaudit.attribute as it is. Rows/s are the best of --repeats rounds after a warm-up,
the implementations taking turns in each round. The last column checks both compute the same
attributions (SmoothGrad's noise differs, so its check is to the Monte Carlo error).
"""

from __future__ import annotations

import argparse
import os
import platform
import warnings

import torch
from engine import best_rates, mlp

import sensaudit


def pairs(model: torch.nn.Module, x: torch.Tensor, samples: int, steps: int,
          noise: float) -> dict[str, dict[str, object]]:
    """method -> implementation name -> a function returning [rows, features] attributions."""
    from captum.attr import InputXGradient, IntegratedGradients, NoiseTunnel, Saliency

    baseline = x.mean(0, keepdim=True)
    std = float(x.std(0).mean())  # Captum's noise is one scale per input; x's stds are ~1

    def ours(method: str, **kwargs):
        return lambda: sensaudit.attribute(model, x, method=method, **kwargs)[:, 0]

    ig = IntegratedGradients(model)
    return {
        "gradient": {
            "sensaudit": ours("gradient"),
            "captum Saliency": lambda: Saliency(model).attribute(x, abs=False),
        },
        "gradient_x_input": {
            "sensaudit": ours("gradient_x_input", baseline="zero"),
            "captum InputXGradient": lambda: InputXGradient(model).attribute(x),
        },
        "smoothgrad": {
            "sensaudit": ours("smoothgrad", samples=samples, noise=noise),
            "captum NoiseTunnel(Saliency)": lambda: NoiseTunnel(Saliency(model)).attribute(
                x, nt_type="smoothgrad", nt_samples=samples, stdevs=noise * std, abs=False),
        },
        "integrated_gradients": {
            "sensaudit": ours("integrated_gradients", steps=steps, baseline="mean"),
            "captum IntegratedGradients": lambda: ig.attribute(
                x, baselines=baseline, n_steps=steps, method="gausslegendre"),
            # Captum batches rows x steps path points; the batch must hold every row once.
            f"captum IntegratedGradients, internal_batch_size {4 * len(x):,}": lambda: ig.attribute(
                x, baselines=baseline, n_steps=steps, method="gausslegendre",
                internal_batch_size=4 * len(x)),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rows", type=int, default=8_192)
    parser.add_argument("--features", type=int, default=64)
    parser.add_argument("--samples", type=int, default=50)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--noise", type=float, default=0.2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    warnings.filterwarnings("ignore", message="Input Tensor 0 did not already require")
    device = torch.device(args.device)
    machine = (f"{platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}, "
               f"{torch.get_num_threads()} threads"
               + (f", {torch.cuda.get_device_name(0)}" if device.type == "cuda" else ""))
    print(f"# machine: {machine}; device: {device}\n")
    model = mlp(args.features, 1).to(device)
    torch.manual_seed(1)
    x = torch.randn(args.rows, args.features, device=device)
    print(f"## Attribution methods, MLP {args.features}-256-256-1, {args.rows:,} rows, float32;"
          f" smoothgrad {args.samples} samples, integrated_gradients {args.steps} steps\n")
    print("| method | implementation | rows/s | sensaudit vs this | max abs difference |")
    print("|---|---|---:|---:|---:|")
    for method, implementations in pairs(model, x, args.samples, args.steps,
                                         args.noise).items():
        results = {name: fn().detach() for name, fn in implementations.items()}
        rates = best_rates({name: (fn, args.rows, None) for name, fn in
                            implementations.items()}, args.repeats, device)
        ours = results["sensaudit"]
        for name, rate in rates.items():
            ratio = "" if name == "sensaudit" else f"{rates['sensaudit'] / rate:.2f}x"
            diff = "" if name == "sensaudit" else \
                f"{float((results[name] - ours).abs().max()):.1e}"
            print(f"| {method} | {name} | {rate:,.0f} | {ratio} | {diff} |")


if __name__ == "__main__":
    main()
