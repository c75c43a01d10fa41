"""`blindsr degrade`: make LR images from HR files with a preset or the random pipeline."""

from __future__ import annotations

from pathlib import Path

import torch

from blindsr import io
from blindsr.errors import BlindSRError
from blindsr.files import Report, process_files


def load_random_config(path: str | Path | None):
    """The random second-order pipeline's settings, overridden by a YAML file when given."""
    import yaml

    from blindsr.degrade import SecondOrderConfig

    if path is None:
        return SecondOrderConfig()
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as err:
        raise BlindSRError(f"{path}: cannot read the degradation config ({err})") from None
    if not isinstance(data, dict):
        raise BlindSRError(f"{path}: the degradation config must be a mapping of keys to values")
    return SecondOrderConfig.from_dict(data)


def degrade_files(inputs: list[str], output: str | Path, preset: str = "bicubic", scale: int = 4,
                  seed: int = 0, random: bool = False, config: str | Path | None = None,
                  max_pixels: int | None = None, progress: bool = True) -> Report:
    """Degrade every input image (the same seed for each file) and write PNGs into ``output``.

    Colour is degraded; alpha is dropped; grayscale stays grayscale. The HR image is cropped to a
    multiple of ``scale`` first, as the SR benchmarks do.
    """
    from blindsr import degrade

    if scale < 1:
        raise BlindSRError("--scale must be a positive integer")
    random_config = load_random_config(config) if random else None
    if not random:
        degrade.apply(torch.zeros(1, 3, scale * 4, scale * 4), preset, scale)  # validates the name

    def job(image: io.ImageData, _advance) -> io.ImageData:
        h, w = image.height // scale * scale, image.width // scale * scale
        if h == 0 or w == 0:
            raise BlindSRError(f"{image.path}: smaller than the scale factor {scale}")
        hr = image.color[:, :, :h, :w].expand(-1, 3, -1, -1).contiguous()
        if random:
            generator = torch.Generator().manual_seed(seed)
            lr = degrade.second_order(hr, scale, random_config, generator=generator)
        else:
            lr = degrade.apply(hr, preset, scale, seed=seed)
        if image.gray:
            lr = lr.mean(dim=1, keepdim=True)
        return io.ImageData(color=lr, alpha=None, bit_depth=8)

    return process_files(inputs, output, job, verb="degraded", ext="png", max_pixels=max_pixels,
                         progress=progress)
