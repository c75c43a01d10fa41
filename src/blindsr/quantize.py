"""Static int8 quantisation of an exported ONNX model (``blindsr export --int8``).

ONNX Runtime's ``quantize_static`` in the QDQ format: int8 weights per output channel, uint8
activations whose ranges (min / max) come from calibration inputs. The calibration inputs are
LR crops made from the HR images of a training set (T91 by default, never a test set): half by
clean bicubic downscaling, half by random first-order degradations (blur, noise, JPEG;
:func:`blindsr.degrade.first_order`), so that the ranges cover what a blind model is given.
The quantised file is then compared with the float one on other crops, from T91 when it is
available whatever the calibration set (so a poor calibration set cannot pass its own test),
and kept only if its outputs stay within :data:`MIN_PSNR` dB of them.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from blindsr.errors import BlindSRError, first_line

if TYPE_CHECKING:
    import numpy as np

CALIBRATION_SET = "T91"
CALIBRATION_IMAGES = 16
CALIBRATION_SIZE = 48  # LR pixels a side
MIN_PSNR = 35.0  # dB of the int8 outputs against the float ones; below it the file is refused
MIN_SIDE = 16  # LR pixels: smaller HR images are not used for calibration
MAX_IMAGES = 200  # HR images read from the calibration set at most
TEST_SETS = ("set5", "set14")  # calibrating on these would tune the file to the benchmark


def calibration_inputs(data: str, scale: int, count: int = CALIBRATION_IMAGES,
                       size: int = CALIBRATION_SIZE, seed: int = 0) -> list[np.ndarray]:
    """``count`` LR crops (1 x 3 x size x size float32 arrays in [0, 1]) from the HR images of
    ``data``: random crops, alternately bicubic and first-order degraded, seeded by ``seed``."""
    import torch

    from blindsr import data as datasets
    from blindsr import degrade, io

    if count < 1 or size < 8:
        raise BlindSRError(f"calibration needs at least 1 image of 8 pixels or more, got "
                           f"{count} of {size}")
    spec = datasets.resolve_dataset(data, scale)
    paths = [hr for hr, _ in datasets.list_pairs(spec) if hr is not None]
    if not paths:
        raise BlindSRError(f"{data} has no HR images to calibrate with")
    g = torch.Generator().manual_seed(seed)
    crop = size * scale
    inputs = []
    images = [io.read_image(p).color for p in paths[:MAX_IMAGES]]
    images = [im for im in images if min(im.shape[-2:]) >= MIN_SIDE * scale]
    if not images:
        raise BlindSRError(f"{data}: no HR image of at least {MIN_SIDE * scale} pixels a side "
                           "to calibrate with")
    for k in range(count):
        hr = images[int(torch.randint(len(images), (1,), generator=g))]
        hr = hr.float().expand(-1, 3, -1, -1)
        h, w = hr.shape[-2:]
        if h < crop or w < crop:  # a small image: the largest whole crop it holds
            side = min(h, w) // scale * scale
            hr = hr[..., :side, :side]
        else:
            top = int(torch.randint(h - crop + 1, (1,), generator=g))
            left = int(torch.randint(w - crop + 1, (1,), generator=g))
            hr = hr[..., top:top + crop, left:left + crop]
        lr = (degrade.apply(hr, "bicubic", scale) if k % 2 == 0 else
              degrade.first_order(hr.contiguous(), scale, generator=seed * 1000 + k))
        inputs.append(lr.contiguous().numpy())
    return inputs


def check_calibration_set(data: str) -> None:
    """Warn when ``data`` names a benchmark test set."""
    import warnings

    name = data.split("[", 1)[0].strip().lower()
    if name in TEST_SETS:
        warnings.warn(f"calibrating on {data}, a test set: its scores will flatter the int8 "
                      "file; use training images (T91, BSD200 or your own)", stacklevel=2)


def quantize_int8(fp32: Path, out: Path, inputs: list[np.ndarray], input_name: str) -> None:
    """Write the int8 (QDQ) version of the ONNX file ``fp32`` to ``out``, calibrated on
    ``inputs`` (min / max of every activation)."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.feeds = iter({input_name: x} for x in inputs)

        def get_next(self) -> dict | None:
            return next(self.feeds, None)

    try:
        quantize_static(str(fp32), str(out), Reader(), quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        per_channel=True)
    except Exception as err:  # onnxruntime's own kinds
        raise BlindSRError(f"onnxruntime cannot quantise this graph to int8 "
                           f"({first_line(err)}); the float export works without --int8") from None


def fidelity(fp32: Path, int8: Path, inputs: list[np.ndarray], input_name: str) -> float:
    """PSNR (dB, on [0, 1] outputs clamped as the upscaler clamps them) of the int8 model's
    outputs against the float model's, over ``inputs``."""
    import numpy as np
    import onnxruntime

    sessions = [onnxruntime.InferenceSession(str(p), providers=["CPUExecutionProvider"])
                for p in (fp32, int8)]
    errors = []
    for x in inputs:
        ref, got = (np.clip(s.run(None, {input_name: x})[0], 0, 1) for s in sessions)
        errors.append(float(np.mean((ref - got) ** 2)))
    mse = sum(errors) / len(errors)
    return float("inf") if mse == 0 else float(10 * np.log10(1 / mse))


__all__ = ["CALIBRATION_IMAGES", "CALIBRATION_SET", "CALIBRATION_SIZE", "MIN_PSNR",
           "calibration_inputs", "check_calibration_set", "fidelity", "quantize_int8"]
