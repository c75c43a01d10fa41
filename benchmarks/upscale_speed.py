"""Upscaling speed: blindsr's Upscaler against a plain reference forward of the same weights.

The reference is what a straightforward script does (and what Real-ESRGAN's inference does): fp32,
NCHW, ``torch.no_grad()``, tiles sent one at a time, in a process with the C library's default
allocator settings. blindsr runs as ``blindsr upscale`` does: ``inference_mode``,
``channels_last``, batched tiles, and freed memory kept for reuse (`blindsr.allocator`). Each side
runs in its own worker process (allocator settings are per process) with the same weights and
input; the two are timed alternately, so that load from elsewhere on the machine hits both alike.
The script prints ms per input megapixel, the speed-up ratio, the largest output difference, and
each side's conv throughput (the untiled forward's multiply-accumulates over its time) beside the
throughput of one large channels-last 3x3 conv on the same machine: how close each side already
is to what the convolutions allow.

    python benchmarks/upscale_speed.py            # full-size SRResNet and RRDBNet
    python benchmarks/upscale_speed.py --quick    # tiny widths, a smoke run
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import platform
import time
from multiprocessing.connection import Connection

import torch

from blindsr import archs
from blindsr.allocator import keep_freed_memory
from blindsr.compress.measure import count_macs
from blindsr.inference import Settings, Upscaler
from blindsr.tiling import run_tiled

SIDES = ("reference", "blindsr")


def reference_forward(model: torch.nn.Module):
    """The plain forward: NCHW fp32, no_grad, one tile at a time."""

    def forward(batch: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return torch.cat([model(batch[i:i + 1]) for i in range(batch.shape[0])]).clamp(0, 1)

    return forward


def conv_peak(repeats: int = 5) -> float:
    """GMAC/s of one 3x3 64 -> 64 conv on a 1 x 64 x 128 x 128 channels-last input under
    ``inference_mode`` at torch's thread count: what this machine's convolutions reach at their
    best (median)."""
    conv = torch.nn.Conv2d(64, 64, 3, padding=1).to(memory_format=torch.channels_last)
    x = torch.rand(1, 64, 128, 128).contiguous(memory_format=torch.channels_last)
    times = []
    with torch.inference_mode():
        for _ in range(repeats + 1):
            times.append(timed(lambda: conv(x))[0])
    return 128 * 128 * 64 * 64 * 9 / sorted(times[1:])[repeats // 2] / 1e9


def timed(fn) -> tuple[float, torch.Tensor]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def worker(conn: Connection, side: str, name: str, kwargs: dict, size: int, threads: int | None,
           ) -> None:
    """One side of the comparison in its own process: builds the model and input from fixed seeds
    (the same in both workers), says whether freed memory is kept, then answers ``(tile, pad,
    batch, dtype)`` requests with the time of one upscale and its output, until it receives None.
    Every message is ``(ok, payload)``; a failure is sent as ``(False, "Error: text")``."""
    try:
        if threads:
            torch.set_num_threads(threads)
        conn.send((True, keep_freed_memory() if side == "blindsr" else False))
        torch.manual_seed(0)
        model = archs.build(name, **kwargs).eval()
        x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(1))
        upscalers: dict[tuple, Upscaler] = {}
        while (request := conn.recv()) is not None:
            tile, pad, batch, dtype = request
            if side == "reference":
                conn.send((True, timed(lambda t=tile, p=pad: run_tiled(
                    reference_forward(model), x, model.scale, t, p))))
                continue
            if request not in upscalers:
                upscalers[request] = Upscaler(model, Settings(
                    tile=tile, tile_pad=pad, batch=batch, dtype=dtype, device="cpu"))
            conn.send((True, timed(lambda u=upscalers[request]: u.upscale_tensor(x))))
    except Exception as err:  # noqa: BLE001 - reported to the parent, which stops
        conn.send((False, f"{type(err).__name__}: {err}"))


def answer(conn: Connection, side: str):
    """The next reply of a worker; RuntimeError if it failed or died."""
    try:
        ok, payload = conn.recv()
    except EOFError:
        raise RuntimeError(f"the {side} worker died") from None
    if not ok:
        raise RuntimeError(f"the {side} worker failed: {payload}")
    return payload


def side_by_side(conns: dict[str, Connection], request: tuple, repeats: int,
                 ) -> tuple[float, float, torch.Tensor, torch.Tensor]:
    """Best-of-``repeats`` times of the two workers, run alternately after one warm-up each;
    returns the reference and blindsr times and outputs."""
    times: dict[str, list[float]] = {side: [] for side in SIDES}
    outputs: dict[str, torch.Tensor] = {}
    for i in range(repeats + 1):
        for side in SIDES:
            try:
                conns[side].send(request)
            except OSError:  # the worker has exited: the message it left says why (answer)
                pass
            t, outputs[side] = answer(conns[side], side)
            if i:
                times[side].append(t)
    return (min(times["reference"]), min(times["blindsr"]), outputs["reference"],
            outputs["blindsr"])


def bench(name: str, kwargs: dict, size: int, tile: int, pad: int, batch: int,
          repeats: int, threads: int | None = None,
          dtypes: tuple[str, ...] = ("fp32", "bf16")) -> list[dict]:
    context = mp.get_context("spawn")
    conns, workers = {}, []
    try:
        for side in SIDES:
            ours, theirs = context.Pipe()
            process = context.Process(target=worker, daemon=True,
                                      args=(theirs, side, name, kwargs, size, threads))
            process.start()
            theirs.close()  # the worker's end lives in the worker: its exit reads as EOF here
            conns[side], workers = ours, [*workers, process]
        kept = answer(conns["blindsr"], "blindsr")
        answer(conns["reference"], "reference")  # ready
        if not kept:
            print("warning: freed memory is not kept for reuse in the blindsr worker "
                  "(no glibc, or the environment sets the allocator)", flush=True)
        megapixels = size * size / 1e6
        rows = []
        for tiled in (False, True):
            t, p = (tile, pad) if tiled else (size, 0)
            for dtype in dtypes:
                ref_time, our_time, ref_out, our_out = side_by_side(
                    conns, (t, p, batch, dtype), repeats)
                rows.append({
                    "model": name, "tiled": f"{t}+{p}" if tiled else "no", "dtype": dtype,
                    "ref_ms_per_mp": ref_time * 1e3 / megapixels,
                    "ms_per_mp": our_time * 1e3 / megapixels,
                    "speedup": ref_time / our_time,
                    "max_diff_255": (our_out - ref_out).abs().max().item() * 255,
                    "ref_s": ref_time, "s": our_time,
                })
        gmac = count_macs(archs.build(name, **kwargs), (size, size)) / 1e9  # untiled work
        for row in rows:
            row["ref_gmac_s"], row["gmac_s"] = gmac / row.pop("ref_s"), gmac / row.pop("s")
        return rows
    finally:
        for conn in conns.values():
            try:
                conn.send(None)
            except OSError:  # that worker is gone already
                pass
        for process in workers:
            process.join(timeout=30)
            if process.is_alive():
                process.terminate()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny widths (smoke test)")
    parser.add_argument("--repeats", type=int, default=3, choices=range(1, 100),
                        metavar="N", help="timed runs per case (best is kept)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--sizes", type=int, nargs=2, default=(128, 64),
                        metavar=("SRRESNET", "RRDB"),
                        help="input image side for the full-size SRResNet and RRDBNet")
    parser.add_argument("--dtypes", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"],
                        help="blindsr's dtypes (the reference is always fp32)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        cases = [("srresnet", {"num_feat": 16, "num_block": 2}, 48, 32, 8, 4),
                 ("rrdbnet", {"num_feat": 16, "num_block": 1, "num_grow_ch": 8}, 48, 32, 8, 4)]
    else:
        sr_side, rrdb_side = args.sizes
        cases = [("srresnet", {}, sr_side, sr_side // 2, 16, 4),
                 ("rrdbnet", {}, rrdb_side, rrdb_side // 2, 8, 4)]
    print(f"machine: {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}")
    print(f"one 3x3 64->64 conv, channels-last, 128x128: {conv_peak():.1f} GMAC/s "
          "(fp32)")
    print("| model | tiles (tile+pad) | dtype | reference ms/MP | blindsr ms/MP | speed-up "
          "| max diff (/255) | reference GMAC/s | blindsr GMAC/s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, kwargs, size, tile, pad, batch in cases:
        for r in bench(name, kwargs, size, tile, pad, batch, args.repeats, args.threads,
                       tuple(args.dtypes)):
            print(f"| {r['model']} | {r['tiled']} | {r['dtype']} | {r['ref_ms_per_mp']:.0f} "
                  f"| {r['ms_per_mp']:.0f} | {r['speedup']:.2f}x | {r['max_diff_255']:.2f} "
                  f"| {r['ref_gmac_s']:.1f} | {r['gmac_s']:.1f} |", flush=True)


if __name__ == "__main__":
    main()
