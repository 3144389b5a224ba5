"""Model-only CPU throughput per runtime, and each runtime's max |Δscore| against eager fp32.

    .venv/bin/python bench/bench_model.py                  # resnet18-w32 (the package default), 2 threads
    .venv/bin/python bench/bench_model.py --width 64 --seconds 5
    .venv/bin/python bench/bench_model.py --model resources/models/groundbreak-demo

Prints one table (Markdown) on stdout; progress goes to stderr. Inputs are synthetic, already
normalised chips (decode and preprocessing are not measured). Weights are random unless --model is
given: random weights are far more sensitive to bf16/int8 rounding than trained ones, so the Δ
columns are an upper bound of what a trained package shows. Runs in about 2-3 minutes on 2 idle
cores; the machine's load average is printed because other processes skew every figure.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from groundbreak.errors import DependencyError
from groundbreak.inference import Predictor, set_threads, sigmoid, synthetic_inputs
from groundbreak.model import load_model_package
from groundbreak.modelpack import make_random_package
from groundbreak.network import parameter_count


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def measure(run, x: np.ndarray, batch: int, seconds: float) -> float:
    """chips/s of ``run`` on batches of ``batch`` chips, after one warm-up call."""
    run(x[:batch])
    n, t0 = 0, time.perf_counter()
    i = 0
    while True:
        b = x[(i * batch) % len(x) :][:batch]
        if len(b) < batch:
            b = x[:batch]
        run(b)
        n += len(b)
        i += 1
        elapsed = time.perf_counter() - t0
        if elapsed >= seconds and i >= 2:
            return n / elapsed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, help="a model package (default: random weights, see --width)")
    ap.add_argument("--width", type=int, default=32, help="resnet18-wN for random weights (8/16/32/64)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=4.0, help="timed seconds per configuration")
    ap.add_argument("--batch", type=int, default=16, help="batch for the compiled runtimes")
    ap.add_argument("--calibration", type=int, default=128, help="int8 calibration chips")
    ap.add_argument("--only", nargs="*", help="configuration names to run (default: all)")
    args = ap.parse_args()

    tmp = tempfile.TemporaryDirectory(prefix="gb-bench-")
    if args.model:
        pkg = load_model_package(args.model)
    else:
        log(f"building a random resnet18-w{args.width} package ...")
        pkg = make_random_package(Path(tmp.name) / "pkg", seed=0, width=args.width)
    cache = Path(tmp.name) / "cache"  # fresh: int8 calibration is part of the measured setup
    set_threads(args.threads)

    c, s = len(pkg.bands), pkg.chip_size
    x = synthetic_inputs(64, c, s, seed=2024)
    check = synthetic_inputs(32, c, s, seed=4242)
    eager = Predictor(pkg, runtime="eager", threads=args.threads, batch_size=32, cache_dir=cache)
    ref = eager.predict_normalised(check)
    net = eager.net

    def eager_cl():
        cl = copy.deepcopy(net).to(memory_format=torch.channels_last)

        def run(b):
            with torch.inference_mode():
                return cl(torch.from_numpy(b).contiguous(memory_format=torch.channels_last))

        def predict(b):
            out = [run(b[i : i + args.batch]) for i in range(0, len(b), args.batch)]
            return sigmoid(torch.cat([o[0] for o in out]).numpy()), sigmoid(torch.cat([o[1] for o in out]).numpy())

        return run, predict

    rows = []
    configs = [
        ("eager fp32", "eager", 1),
        ("eager fp32", "eager", 32),
        ("eager channels_last", None, args.batch),
        ("torchscript frozen (channels_last)", "torchscript", args.batch),
        ("openvino fp32", "openvino", args.batch),
        ("openvino bf16", "openvino-bf16", args.batch),
        ("torch int8 (FX, x86)", "torch-int8", args.batch),
        ("openvino int8 (NNCF)", "openvino-int8", args.batch),
        ("auto", "auto", args.batch),  # reuses the int8 model cached above; shows what auto keeps
    ]
    for label, runtime, batch in configs:
        if args.only and runtime not in args.only and label not in args.only:
            continue
        log(f"{label}, batch {batch} ...")
        t0 = time.perf_counter()
        try:
            if runtime is None:
                run, predict = eager_cl()
                setup = time.perf_counter() - t0
                got_s, got_c = predict(check)
            else:
                p = eager if runtime == "eager" else Predictor(
                    pkg, runtime=runtime, threads=args.threads, batch_size=batch, cache_dir=cache,
                    calibration_size=args.calibration,
                )  # fmt: skip
                p.batch_size = batch
                setup = time.perf_counter() - t0
                if runtime == "auto":
                    label = f"auto -> {p.runtime}"
                run = p.predict_normalised
                got = p.predict_normalised(check)
                got_s, got_c = got.scores, got.cells
        except DependencyError as exc:
            rows.append((label, batch, "-", "-", "-", f"n/a: {exc}", ""))
            continue
        cps = measure(run, x, batch, args.seconds)
        ds = float(np.max(np.abs(got_s - ref.scores)))
        dc = float(np.max(np.abs(got_c - ref.cells)))
        rows.append((label, batch, f"{setup:.1f}", f"{cps:.1f}", f"{1000 / cps:.1f}", f"{ds:.4f}", f"{dc:.4f}"))
        log(f"  {cps:.1f} chips/s, max |dscore| {ds:.4f}")

    params = parameter_count(net)
    load = os.getloadavg()
    print(
        f"\n{pkg.architecture} ({params / 1e6:.2f} M parameters, {'random' if not args.model else pkg.model_id} "
        f"weights), {c}x{s}x{s} chips, {args.threads} threads, torch {torch.__version__}; "
        f"load average {load[0]:.1f} (1 min) at the end, int8 calibrated on {args.calibration} synthetic chips\n"
    )
    print("| configuration | batch | setup s | chips/s | ms/chip | max abs dscore vs eager | max abs dcell |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for row in rows:
        print("| " + " | ".join(str(v) for v in row) + " |")
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
