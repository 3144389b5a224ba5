"""Model-only CPU throughput per runtime, each runtime's score change against eager fp32, and model load
time cold and warm.

    .venv/bin/python bench/bench_model.py                  # resnet18-w32 random weights, 2 threads
    .venv/bin/python bench/bench_model.py --width 64 --seconds 5
    .venv/bin/python bench/bench_model.py --model resources/models/groundbreak-demo
    .venv/bin/python bench/bench_model.py --model resources/models/groundbreak-demo --only load

Prints Markdown tables on stdout; progress goes to stderr.

1. **Throughput**: synthetic, already normalised chips (decode and preprocessing are not measured),
   one ``Predictor`` per runtime with ``force=True`` (runtimes the package refuses are measured too).
   With --model, runtimes on the package's own IR say so. Random weights (no --model) are far more
   sensitive to bf16/int8 rounding than trained ones, so their Δ columns are an upper bound.
2. **Load** (``--only load``): a fresh process per measurement, as a run pays it: the imports, then
   building the ``Predictor``. *Cold* starts from an empty cache folder, *warm* from the one the cold
   load filled (OpenVINO's compiled-model cache, converted IR). The table says whether torch was
   imported. For a package with IR it also measures the same package without its IR (the network
   converted from torch, as before ``groundbreak model quantize``).

The machine's load average is printed because other processes skew every figure.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

LOAD_SCRIPT = """
import json, sys, time
t0 = time.perf_counter()
from groundbreak.inference import Predictor
from groundbreak.model import load_model_package
t1 = time.perf_counter()
p = Predictor(load_model_package(sys.argv[1]), runtime=sys.argv[2], threads=int(sys.argv[3]), force=True)
t2 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "setup_s": t2 - t1, "runtime": p.runtime, "source": p.source,
                  "from_cache": p.from_cache, "torch": "torch" in sys.modules}))
"""


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


def throughput(pkg, args, cache: Path) -> list:
    import torch

    from groundbreak.errors import DependencyError
    from groundbreak.inference import Predictor, sigmoid, synthetic_inputs

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
        ("openvino int8", "openvino-int8", args.batch),
        ("auto", "auto", args.batch),  # what auto keeps for this package
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
                    calibration_size=args.calibration, force=True,
                )  # fmt: skip
                p.batch_size = batch
                setup = time.perf_counter() - t0
                if runtime == "auto":
                    label = f"auto -> {p.runtime}"
                if p.source == "package IR":
                    label += " (package IR)"
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
    return rows


def _load_once(root: Path, runtime: str, threads: int, cache: Path) -> dict:
    env = dict(os.environ, GROUNDBREAK_CACHE=str(cache))
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-c", LOAD_SCRIPT, str(root), runtime, str(threads)], capture_output=True,
                         text=True, env=env, timeout=900)
    wall = time.perf_counter() - t0
    if res.returncode:
        return {"error": res.stderr.strip().splitlines()[-1] if res.stderr.strip() else "failed"}
    out = json.loads(res.stdout.strip().splitlines()[-1])
    out["process_s"] = wall
    return out


def loads(pkg, args, tmp: Path) -> list:
    variants = [(pkg.root, "package")]
    if pkg.artifacts:
        bare = tmp / "without-ir"
        shutil.copytree(pkg.root, bare, ignore=shutil.ignore_patterns("openvino*"))
        meta = bare / "model.json"
        doc = json.loads(meta.read_text())
        props = doc.get("properties", doc)
        props.pop("groundbreak:artifacts", None)
        props.pop("groundbreak:runtime_validation", None)
        meta.write_text(json.dumps(doc))
        variants.append((bare, "package without IR"))
    rows = []
    for root, what in variants:
        for runtime in args.load_runtimes:
            cache = Path(tempfile.mkdtemp(prefix="gb-load-", dir=tmp))
            for state in ("cold", "warm"):
                log(f"load {what}, {runtime}, {state} ...")
                r = _load_once(root, runtime, args.threads, cache)
                if "error" in r:
                    rows.append((what, runtime, state, "-", "-", "-", "-", r["error"][:60]))
                    break
                rows.append((what, f"{runtime} -> {r['runtime']}", state, f"{r['import_s']:.2f}", f"{r['setup_s']:.2f}",
                             f"{r['process_s']:.2f}", "yes" if r["torch"] else "no",
                             f"{r['source']}{', compiled model from cache' if r['from_cache'] else ''}"))
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, help="a model package (default: random weights, see --width)")
    ap.add_argument("--width", type=int, default=32, help="resnet18-wN for random weights (8/16/32/64)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=4.0, help="timed seconds per configuration")
    ap.add_argument("--batch", type=int, default=16, help="batch for the compiled runtimes")
    ap.add_argument("--calibration", type=int, default=128, help="int8 chips calibrated at load (no package IR)")
    ap.add_argument("--only", nargs="*", help="configuration names to run, or 'load' (default: all)")
    ap.add_argument("--load-runtimes", nargs="*", default=["auto", "openvino", "openvino-int8"],
                    help="runtimes whose cold and warm load is measured")
    ap.add_argument("--with-ir", action="store_true",
                    help="random weights: first write their fp32 OpenVINO IR into the package (as `groundbreak "
                         "model quantize` does), so loads from the package IR are measured too")
    args = ap.parse_args()

    from groundbreak.model import load_model_package

    tmp = tempfile.TemporaryDirectory(prefix="gb-bench-")
    if args.model:
        pkg = load_model_package(args.model)
    else:
        from groundbreak.modelpack import make_random_package

        log(f"building a random resnet18-w{args.width} package ...")
        pkg = make_random_package(Path(tmp.name) / "pkg", seed=0, width=args.width)
        if args.with_ir:
            from groundbreak import artifacts
            from groundbreak.torch_runtime import load_network, to_openvino

            fp32 = artifacts.write_ir(pkg, "openvino", to_openvino(load_network(pkg), pkg), precision="fp32")
            pkg = artifacts.record(pkg, artifacts=[fp32])
    cache = Path(tmp.name) / "cache"  # fresh: int8 calibration is part of the measured setup
    only_load = bool(args.only) and args.only == ["load"]
    rows = [] if only_load else throughput(pkg, args, cache)
    load_rows = loads(pkg, args, Path(tmp.name)) if (not args.only or "load" in args.only) else []

    import torch

    from groundbreak.network import parameter_count
    from groundbreak.torch_runtime import load_network

    params = parameter_count(load_network(pkg))
    load = os.getloadavg()
    print(
        f"\n{pkg.architecture} ({params / 1e6:.2f} M parameters, {'random' if not args.model else pkg.model_id} "
        f"weights), {len(pkg.bands)}x{pkg.chip_size}x{pkg.chip_size} chips, {args.threads} threads, "
        f"torch {torch.__version__}; load average {load[0]:.1f} (1 min) at the end; IR in the package: "
        f"{', '.join(pkg.artifacts) or 'none'}\n"
    )
    if rows:
        print("| configuration | batch | setup s | chips/s | ms/chip | max abs dscore vs eager | max abs dcell |")
        print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
        for row in rows:
            print("| " + " | ".join(str(v) for v in row) + " |")
        print()
    if load_rows:
        print("| model | runtime | cache | imports s | Predictor s | process s | torch imported | from |")
        print("| --- | --- | --- | ---: | ---: | ---: | --- | --- |")
        for row in load_rows:
            print("| " + " | ".join(str(v) for v in row) + " |")
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
