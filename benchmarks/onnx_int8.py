"""int8 against float32 ONNX files of the same model: size, CPU speed and quality.

`blindsr export` writes both files (the int8 one with ``--int8``, calibrated on T91); ONNX
Runtime's CPU provider runs each on the same whole input at the same thread count, timed
alternately (median of ``--repeats``); `blindsr.evaluate` scores both on the test sets (PSNR-Y,
the numbers `blindsr eval` prints). Ratio = float time / int8 time (above 1: int8 is faster).

    python benchmarks/onnx_int8.py                      # blindsr-x4 and andnet-x4
    python benchmarks/onnx_int8.py --model run/model.safetensors --data Set5 --degrade clean
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from blindsr.evaluate import evaluate
from blindsr.export import export_onnx
from blindsr.machine import machine_description

HERE = Path(__file__).resolve().parent


def timings(paths: dict[str, Path], size: int, threads: int, repeats: int) -> dict[str, float]:
    """Median ms per input megapixel of each file, run alternately on one random input."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    sessions = {k: onnxruntime.InferenceSession(str(p), options,
                                                providers=["CPUExecutionProvider"])
                for k, p in paths.items()}
    x = np.random.default_rng(0).random((1, 3, size, size), dtype=np.float32)
    times: dict[str, list[float]] = {k: [] for k in sessions}
    for s in sessions.values():
        s.run(None, {"lr": x})  # warm-up
    for _ in range(repeats):
        for k, s in sessions.items():
            start = time.perf_counter()
            s.run(None, {"lr": x})
            times[k].append(time.perf_counter() - start)
    megapixels = size * size / 1e6
    return {k: float(np.median(v)) * 1000 / megapixels for k, v in times.items()}


def row(model: str, data: list[str], degrade: list[str], size: int, threads: int,
        repeats: int) -> dict:
    """Sizes, speeds and PSNR of one model's float and int8 files."""
    with tempfile.TemporaryDirectory() as folder:
        paths = {"float32": Path(folder) / "float32.onnx", "int8": Path(folder) / "int8.onnx"}
        export_onnx(model, paths["float32"])
        report = export_onnx(model, paths["int8"], int8=True)
        ms = timings(paths, size, threads, repeats)
        results = evaluate({k: str(p) for k, p in paths.items()}, data, degrade, ["psnr"])
        mib = {k: p.stat().st_size / 2**20 for k, p in paths.items()}
    psnr = {f"{r.model}/{r.dataset}/{r.degradation}": round(r.value, 3) for r in results}
    return {"model": model, "mib": {k: round(v, 2) for k, v in mib.items()},
            "ms_per_mp": {k: round(v, 1) for k, v in ms.items()},
            "ratio": round(ms["float32"] / ms["int8"], 3),
            "int8_vs_float_psnr": round(report.int8_psnr, 2), "psnr": psnr}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", action="append", default=None)
    parser.add_argument("--data", default="Set5,Set14")
    parser.add_argument("--degrade", default="clean,b+n+j")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "onnx_int8.json")
    args = parser.parse_args(argv)
    data, degrade = args.data.split(","), args.degrade.split(",")
    rows = [row(m, data, degrade, args.size, args.threads, args.repeats)
            for m in args.model or ["blindsr-x4", "andnet-x4"]]
    meta = {"size": args.size, "threads": args.threads, "repeats": args.repeats,
            "machine": machine_description()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"rows": rows, "meta": meta}, indent=2) + "\n")
    print("| model | MiB float / int8 | ms/MP float / int8 | float / int8 | int8 vs float PSNR |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['mib']['float32']} / {r['mib']['int8']} | "
              f"{r['ms_per_mp']['float32']} / {r['ms_per_mp']['int8']} | {r['ratio']} | "
              f"{r['int8_vs_float_psnr']} dB |")
    for r in rows:
        print(f"\n{r['model']} PSNR-Y:", json.dumps(r["psnr"]))


if __name__ == "__main__":
    main()
