"""`blindsr degrade`: make LR images from HR files with a preset or the random pipeline, or (preset
``and``) a grid of what AND's adversarial neural degradation produces."""

from __future__ import annotations

from pathlib import Path

import torch

from blindsr import io
from blindsr.errors import BlindSRError
from blindsr.evaluate import image_seed
from blindsr.files import Report, process_files


def load_random_config(path: str | Path | None):
    """The random second-order pipeline's settings, overridden by a YAML file when given."""
    from blindsr.config import read_yaml
    from blindsr.degrade import SecondOrderConfig

    if path is None:
        return SecondOrderConfig()
    return SecondOrderConfig.from_dict(read_yaml(path))  # one-line errors, as for configs


AND_SAMPLES = 3  # adversarial and random samples per grid
AND_CROP = 128  # side of the HR crop of the grid
# The grid's params without --config: the CPU configs' prior (configs/and/andnet.yaml, its radius
# calibrated by benchmarks/and_radius.py). The paper's epsilon 20 is in units it does not
# publish; in ours it saturates the attacked LR to a flat colour, which shows nothing.
AND_GRID_PARAMS = {"epsilon": 0.3, "alpha": 0.09, "channels": 32}


def and_grid(hr: torch.Tensor, restorer: torch.nn.Module, scale: int, seed: int,
             params: dict | None = None, n: int = AND_SAMPLES,
             crop: int = AND_CROP) -> torch.Tensor:
    """(1, 3, 2 S, (n + 1) S) grid for HR ``hr`` (1, 3, H, W): its centre crop (S = the side) and
    ``n`` LRs of the ``and`` strategy with ``params`` (none: :data:`AND_GRID_PARAMS`) attacking
    ``restorer`` on top; the identity LR (BlurPool) and ``n`` random LRs of the same ball below.

    The attack maximises the restorer's pixel loss (perceptual and GAN terms are dropped). LRs
    are nearest-upsampled; tiles have a 1-pixel white border.
    """
    from blindsr.ops.blurpool import blurpool
    from blindsr.strategies.and_ import AND

    side = min(crop, hr.shape[-2], hr.shape[-1]) // scale * scale
    if side < 4 * scale:
        raise BlindSRError(f"image of {hr.shape[-2]}x{hr.shape[-1]} is too small for an AND grid "
                           f"(at least {4 * scale} pixels a side)")
    top, left = (hr.shape[-2] - side) // 2, (hr.shape[-1] - side) // 2
    hr = hr[..., top:top + side, left:left + side].contiguous()
    base = {**(params or AND_GRID_PARAMS), "perceptual_weight": 0.0, "gan_weight": 0.0}
    rows = []
    for perturbation in (None, "random"):
        raw = base if perturbation is None else {**base, "perturbation": perturbation}
        strategy = AND(restorer, AND.parse_params(raw), scale, hr.device)
        strategy.rng.manual_seed(seed)
        first = hr if perturbation is None else blurpool(hr, scale, strategy.degradation.pool.taps)
        rows.append([first, *(strategy.degrade(hr)[0] for _ in range(n))])

    def tile(x: torch.Tensor) -> torch.Tensor:
        x = torch.nn.functional.interpolate(x, scale_factor=side // x.shape[-1], mode="nearest")
        return torch.nn.functional.pad(x.clamp(0, 1), (1, 1, 1, 1), value=1.0)

    return torch.cat([torch.cat([tile(t) for t in row], dim=-1) for row in rows], dim=-2)


def load_and_params(path: str | Path | None) -> dict:
    """``and`` strategy params from a YAML file: a training config (its ``strategy.params``) or
    a plain mapping of params; ``{}`` without a file."""
    from blindsr.config import read_yaml

    if path is None:
        return {}
    data = read_yaml(path)
    if isinstance(data, dict) and isinstance(data.get("strategy"), dict):
        strategy = data["strategy"].get("name")
        if strategy not in (None, "and"):
            raise BlindSRError(f"{path}: a training config of strategy {strategy}, not and: give "
                               "an AND config (e.g. configs/and/andnet.yaml) or a mapping of "
                               "and params")
        data = data["strategy"].get("params") or {}
    if not isinstance(data, dict):
        raise BlindSRError(f"{path}: the AND params must be a mapping of keys to values")
    from blindsr.strategies.and_ import AND

    AND.parse_params(data)  # one-line error now rather than per file
    return data


def _restorer(model: str | None, scale: int) -> torch.nn.Module:
    from blindsr import zoo
    from blindsr.onnx_model import OnnxModel

    restorer = zoo.load(model or "bicubic", scale=scale)
    if any(isinstance(m, OnnxModel) for m in restorer.modules()):
        raise BlindSRError(f"--model {model}: the AND attack needs the restorer's gradients; "
                           "give its PyTorch checkpoint, not an ONNX file")
    if int(getattr(restorer, "scale", scale)) != scale:
        raise BlindSRError(f"--model {model} upscales x{restorer.scale}, not x{scale} (--scale)")
    return restorer


def degrade_files(inputs: list[str], output: str | Path, preset: str = "bicubic", scale: int = 4,
                  seed: int = 0, random: bool = False, config: str | Path | None = None,
                  max_pixels: int | None = None, progress: bool = True,
                  model: str | None = None) -> Report:
    """Degrade every input image and write PNGs into ``output``.

    Input file k (in the order the inputs expand to: folders sorted by name) is degraded with
    ``seed + k``, the rule of ``blindsr eval``, so a folder of HR images gets the LR images eval
    makes of it, and no two images share a noise field. Colour is degraded; alpha is dropped;
    grayscale stays grayscale (degraded on its one channel). The HR image is cropped to a
    multiple of ``scale`` first, as the SR benchmarks do. Preset ``and`` writes an
    :func:`and_grid` per input instead, attacking ``model`` (default: bicubic), with the ``and``
    params of ``config`` (a training config or a mapping of params; the strategy's defaults fill
    what it leaves out), else :data:`AND_GRID_PARAMS`.
    """
    from blindsr import degrade
    from blindsr.ops.noise import as_generator

    if scale < 1:
        raise BlindSRError("--scale must be a positive integer")
    as_generator(seed)  # one error for a bad seed, before any file
    index = {io.input_key(p): k for k, p in enumerate(io.expand_inputs(inputs)[0])}

    def seed_of(image: io.ImageData) -> int:
        return image_seed(seed, index[io.input_key(Path(image.path))])
    if random and preset != "bicubic":
        raise BlindSRError(f"--random and --preset {preset}: choose one (--random draws every "
                           "degradation from the second-order pipeline)")
    if config is not None and not random and preset != "and":
        raise BlindSRError(f"--config {config} is for --random (the pipeline's settings) or "
                           f"--preset and (its params); --preset {preset} takes none")
    if model is not None and preset != "and":
        raise BlindSRError(f"--model {model}: only --preset and attacks a model; --preset "
                           f"{preset} does not use one")
    if preset == "and":
        restorer = _restorer(model, scale)
        params = load_and_params(config)

        def grid_job(image: io.ImageData, _advance) -> io.ImageData:
            hr = image.color.expand(-1, 3, -1, -1).contiguous()
            grid = and_grid(hr, restorer, scale, seed_of(image), params)
            return io.ImageData(color=grid, alpha=None, bit_depth=8)

        return process_files(inputs, output, grid_job, verb="sampled (AND grid)", ext="png",
                             max_pixels=max_pixels, progress=progress)
    random_config = load_random_config(config) if random else None
    if not random:
        degrade.apply(torch.zeros(1, 3, scale * 4, scale * 4), preset, scale)  # validates the name

    def job(image: io.ImageData, _advance) -> io.ImageData:
        h, w = image.height // scale * scale, image.width // scale * scale
        if h == 0 or w == 0:
            raise BlindSRError(f"{image.path}: smaller than the scale factor {scale}")
        hr = image.color[:, :, :h, :w]
        # a gray image is degraded on its one channel (its noise at the configured strength)
        if random:
            generator = torch.Generator().manual_seed(seed_of(image))
            lr = degrade.second_order(hr.contiguous(), scale, random_config, generator=generator)
        else:
            lr = degrade.apply(hr.contiguous(), preset, scale, seed=seed_of(image))
        return io.ImageData(color=lr, alpha=None, bit_depth=8, icc_profile=image.icc_profile)

    return process_files(inputs, output, job, verb="degraded", ext="png", max_pixels=max_pixels,
                         progress=progress)
