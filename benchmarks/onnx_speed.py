"""ONNX Runtime against PyTorch on the same model: is the exported file worth deploying?

`blindsr export` writes the model to a temporary ONNX file; both sides then upscale the same
whole input (no tiles) at the same thread count, timed alternately so that load from elsewhere
hits both alike: PyTorch as `blindsr upscale` runs a model (``inference_mode``,
``channels_last``, fp32) and ONNX Runtime's CPU provider with its default graph optimisations.
Prints ms per input megapixel for each, the ratio (PyTorch time / ORT time: above 1, ORT is
faster) and the largest output difference in 8-bit levels.

    python benchmarks/onnx_speed.py                       # blindsr-x4 and DRN-S, 128 x 128
    python benchmarks/onnx_speed.py --model runs/x/model.safetensors --arch rrdbnet --size 256

``--arch NAME`` times an architecture at its default size with random weights (speed does not
depend on the weights).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from blindsr import archs, zoo
from blindsr.allocator import keep_freed_memory
from blindsr.export import export_onnx
from blindsr.machine import machine_description


def load(name: str) -> torch.nn.Module:
    """``arch:NAME`` -> that architecture with random weights; else a model name or path."""
    if name.startswith("arch:"):
        torch.manual_seed(0)
        return archs.build(name[len("arch:"):]).eval()
    return zoo.load(name)


def bench(model_name: str, size: int, threads: int, repeats: int) -> dict:
    """One row: ms per megapixel of each side, their ratio and the output difference
    (``threads``: ONNX Runtime's; PyTorch runs at torch's thread count, which `main` sets)."""
    import onnxruntime

    model = load(model_name)
    with tempfile.TemporaryDirectory() as folder:
        path = export_onnx(model, Path(folder) / "model.onnx", check=False).path
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        session = onnxruntime.InferenceSession(str(path), options,
                                               providers=["CPUExecutionProvider"])
    model = model.to(memory_format=torch.channels_last)
    x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    x_cl = x.contiguous(memory_format=torch.channels_last)
    feed = {session.get_inputs()[0].name: x.numpy()}

    def run_torch() -> torch.Tensor:
        with torch.inference_mode():
            return model(x_cl)

    def run_ort() -> torch.Tensor:
        return torch.from_numpy(session.run(None, feed)[0])

    sides = {"pytorch": run_torch, "onnxruntime": run_ort}
    times: dict[str, list[float]] = {name: [] for name in sides}
    outputs = {name: fn() for name, fn in sides.items()}  # warm-up
    for _ in range(repeats):
        for name, fn in sides.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    megapixels = size * size / 1e6
    ms = {name: sorted(t)[len(t) // 2] * 1e3 / megapixels for name, t in times.items()}
    diff = float((outputs["pytorch"] - outputs["onnxruntime"]).abs().max()) * 255
    return {"model": model_name, "size": size, "threads": threads,
            "torch_threads": torch.get_num_threads(),
            "pytorch_ms_per_mp": round(ms["pytorch"], 1),
            "onnxruntime_ms_per_mp": round(ms["onnxruntime"], 1),
            "ratio": round(ms["pytorch"] / ms["onnxruntime"], 3), "max_diff_255": diff}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", default=[],
                        help="model name or checkpoint (default: blindsr-x4 and --arch drn-s)")
    parser.add_argument("--arch", action="append", default=[],
                        help="architecture at its default size, random weights")
    parser.add_argument("--size", type=int, default=128, help="input side in pixels")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=None, help="write the rows as JSON")
    args = parser.parse_args()
    keep_freed_memory()  # as the `blindsr` command runs PyTorch
    torch.set_num_threads(args.threads)
    names = args.model + [f"arch:{a}" for a in args.arch] or ["blindsr-x4", "arch:drn-s"]
    rows = [bench(m, args.size, args.threads, args.repeats) for m in names]
    print(f"{machine_description()}; input {args.size}x{args.size}, {args.threads} threads, "
          f"median of {args.repeats}\n")
    print("| model | PyTorch ms/MP | ORT ms/MP | PyTorch / ORT | max diff (8-bit) |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['pytorch_ms_per_mp']} | {r['onnxruntime_ms_per_mp']} | "
              f"{r['ratio']} | {r['max_diff_255']:.2g} |")
    if args.out:
        args.out.write_text(json.dumps({"machine": machine_description(), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
