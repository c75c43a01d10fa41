"""``blindsr analyze channels``: how the channels of one layer respond, contribute and correlate.

For each model, over the LR images of a dataset (its LR files; for HR-only folders the HR degraded
by the ``bicubic`` preset), the named layer's output ``A`` (one image at a time) gives:

- **mean response**: the mean of ``|A|`` over the pixels of each channel, averaged over images;
- **saliency**: gradient x activation, ``mean over pixels of |A * d(sum of SR output)/dA|`` per
  image and channel (an images x channels map); a channel's **contribution** is its share of an
  image's total saliency, averaged over the images;
- **similarity**: the channel-by-channel cosine similarity of the responses flattened over all
  pixels of all images (a channel that is zero everywhere has similarity 0 with every channel);
- summaries: the mean off-diagonal ``|cosine similarity|`` (redundancy between channels) and the
  Gini coefficient of the contributions (0 = every channel contributes equally, (C-1)/C = a single
  channel does everything), plus the Gini of the mean responses.

The PNGs put the models side by side with shared colour and value scales; the JSON holds every
number. This is the analysis of the EATS paper's Figs. 1, 3 and 4.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from blindsr.atomic import save_figure, write_atomic
from blindsr.errors import BlindSRError

if TYPE_CHECKING:  # torch is imported on use, so that `blindsr --help` stays light
    import torch
    from torch import Tensor, nn

_SHOWN_LAYERS = 6
ALL_LAYERS = "all"  # --layer all: every conv layer
_SUMMARY_KEYS = ("mean_abs_offdiag_similarity", "gini_saliency", "gini_response",
                 "dead_channels")


# ------------------------------------------------------------------------------------ statistics


def gini(values: Sequence[float] | Tensor) -> float:
    """Gini coefficient of non-negative values: ``sum |x_i - x_j| / (2 n^2 mean)``; 0 when all are
    equal (or all zero), ``(n - 1) / n`` when one value holds everything."""
    import torch

    x = torch.as_tensor(values, dtype=torch.float64).detach().cpu().flatten()
    if x.numel() == 0:
        raise BlindSRError("gini needs at least one value")
    if not torch.isfinite(x).all() or (x < 0).any():
        raise BlindSRError("gini needs finite, non-negative values")
    total = x.sum()
    if total == 0:
        return 0.0
    n = x.numel()
    rank = torch.arange(1, n + 1, dtype=torch.float64)
    return float(2 * (rank * x.sort().values).sum() / (n * total) - (n + 1) / n)


def cosine_from_gram(gram: Tensor) -> Tensor:
    """Cosine similarities from a Gram matrix of flattened responses (zero rows give 0; the
    diagonal of non-zero channels is 1)."""
    import torch

    norms = gram.diagonal().clamp(min=0).sqrt()
    live = norms > 0
    safe = torch.where(live, norms, torch.ones_like(norms))
    cos = (gram / safe[:, None] / safe[None, :]).clamp(-1, 1)
    cos = cos * (live[:, None] & live[None, :])
    return cos.fill_diagonal_(0) + torch.diag(live.to(cos.dtype))


def mean_offdiag_abs(matrix: Tensor) -> float | None:
    """Mean ``|m_ij|`` over ``i != j``; None for fewer than two channels."""
    n = matrix.shape[0]
    if n < 2:
        return None
    return float((matrix.abs().sum() - matrix.diagonal().abs().sum()) / (n * (n - 1)))


@dataclass
class _Accumulator:
    """Per-image numbers of one model at one layer, summed or stacked as images arrive."""

    response: list[Tensor]
    saliency: list[Tensor]
    gram: Tensor | None = None

    def add(self, act: Tensor, grad: Tensor) -> None:
        """Take one image's activation and gradient, both (1, C, H, W)."""
        a = act[0].float()
        flat = a.flatten(1)
        self.response.append(flat.abs().mean(1).double().cpu())
        self.saliency.append((a * grad[0].float()).abs().flatten(1).mean(1).double().cpu())
        gram = (flat @ flat.T).double().cpu()
        self.gram = gram if self.gram is None else self.gram + gram

    def summary(self) -> dict[str, Any]:
        """JSON-ready numbers and summaries."""
        import torch

        saliency = torch.stack(self.saliency)
        totals = saliency.sum(1, keepdim=True)
        shares = torch.where(totals > 0, saliency / totals.clamp(min=1e-300), 0.0)
        contribution = shares.mean(0)
        response = torch.stack(self.response).mean(0)
        assert self.gram is not None
        similarity = cosine_from_gram(self.gram)
        return {
            "channels": int(response.numel()),
            "mean_abs_offdiag_similarity": mean_offdiag_abs(similarity),
            "gini_saliency": gini(contribution),
            "gini_response": gini(response),
            "dead_channels": int((self.gram.diagonal() == 0).sum()),
            "mean_response": response.tolist(),
            "contribution": contribution.tolist(),
            "saliency": saliency.tolist(),
            "saliency_share": shares.tolist(),
            "similarity": similarity.tolist(),
        }


# ------------------------------------------------------------------------------------ hooking


def find_layer(model: nn.Module, layer: str, label: str = "model") -> nn.Module:
    """The sub-module called ``layer`` (a name from ``model.named_modules()``); a one-line error
    naming a few conv layers when there is none."""

    modules = dict(model.named_modules())
    if layer and layer in modules:
        return modules[layer]
    convs = conv_layers(model)
    if len(convs) > _SHOWN_LAYERS:
        shown = ", ".join([*convs[:4], "...", *convs[-2:]]) + f" ({len(convs)} in all)"
    else:
        shown = ", ".join(convs) or "none"
    raise BlindSRError(f"{label} has no layer {layer!r}; its conv layers: {shown}")


def layer_response(model: nn.Module, module: nn.Module, x: Tensor,
                   label: str = "model") -> tuple[Tensor, Tensor]:
    """``(A, dS/dA)``: the output ``A`` of ``module`` (part of ``model``) for input ``x`` and the
    gradient of the sum ``S`` of the model's output with respect to it, both (N, C, H, W).

    The activation is captured as a copy, so in-place operations after the layer do not alter
    it; ``model``'s parameters get no gradients.
    """
    name = next((n for n, m in model.named_modules() if m is module), "?")
    return layer_responses(model, {name: module}, x, label)[name]


def layer_responses(model: nn.Module, modules: Mapping[str, nn.Module], x: Tensor,
                    label: str = "model") -> dict[str, tuple[Tensor, Tensor]]:
    """:func:`layer_response` for several layers from one forward and one backward pass.

    Each captured activation stays in the graph (the input is tracked instead of the
    parameters), so ``dS/dA`` is the full derivative through every later layer, as with one
    layer at a time.
    """
    import torch

    captured: dict[str, list[Any]] = {name: [] for name in modules}

    def hook_for(name: str) -> Callable[..., Any]:
        def hook(_module: nn.Module, _inputs: Any, output: Any) -> Any:
            if not isinstance(output, torch.Tensor) or output.ndim != 4:
                captured[name].append(None)
                return None
            # in the graph where it is connected (full derivative through later hooked layers),
            # else a fresh leaf (a model that cuts the graph before the layer)
            kept = (output.clone() if output.requires_grad
                    else output.detach().clone().requires_grad_(True))
            captured[name].append(kept)
            return kept.clone()  # downstream in-place operations must not touch the copy kept

        return hook

    with _hooked([(m, hook_for(n)) for n, m in modules.items()]), torch.enable_grad():
        y = model(x.detach().requires_grad_(True))
    for name, acts in captured.items():
        if len(acts) != 1:
            raise BlindSRError(f"{label}: layer {name!r} ran {len(acts)} times in one forward "
                               "pass; choose a layer that runs exactly once")
        if acts[0] is None:
            raise BlindSRError(f"{label}: layer {name!r}'s output is not an (N, C, H, W) tensor")
    names = list(captured)
    acts = [captured[n][0] for n in names]
    grads: list[Tensor | None] = [None] * len(acts)
    if isinstance(y, torch.Tensor) and y.requires_grad:
        grads = list(torch.autograd.grad(y.sum(), acts, allow_unused=True))
    return {n: (a.detach(), g if g is not None else torch.zeros_like(a))
            for n, a, g in zip(names, acts, grads, strict=True)}


def runs_once(model: nn.Module, names: Sequence[str], x: Tensor) -> list[str]:
    """The layers of ``names`` that run exactly once, with an (N, C, H, W) output, on ``x``."""
    import torch

    calls = dict.fromkeys(names, 0)
    shaped = dict.fromkeys(names, True)

    def hook_for(name: str) -> Callable[..., None]:
        def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
            calls[name] += 1
            shaped[name] &= isinstance(output, torch.Tensor) and output.ndim == 4

        return hook

    modules = dict(model.named_modules())
    with _hooked([(modules[n], hook_for(n)) for n in names if n in modules]), torch.no_grad():
        model(x)
    return [n for n in names if calls[n] == 1 and shaped[n]]


@contextmanager
def _hooked(hooks: Sequence[tuple[nn.Module, Callable[..., Any]]]) -> Iterator[None]:
    """Forward hooks (module, hook) for the duration of the block, removed however it ends."""
    handles = [m.register_forward_hook(h) for m, h in hooks]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


# ------------------------------------------------------------------------------------ data


def _lr_images(data: str, scale: int, max_images: int | None) -> tuple[str, list[str],
                                                                    list[Tensor], list[str]]:
    """(dataset name, image names, LR tensors (1, C, h, w), skipped lines)."""
    from blindsr import io
    from blindsr.data import list_pairs, resolve_dataset
    from blindsr.degrade import apply

    spec = resolve_dataset(data, scale)
    pairs = list_pairs(spec)[:max_images]
    names, images, skipped = [], [], []
    for hr_path, lr_path in pairs:
        path = lr_path if lr_path is not None else hr_path
        assert path is not None
        try:
            img = io.read_image(path).color.float()
            if lr_path is None:
                img = apply(img, "bicubic", scale)
        except BlindSRError as err:
            skipped.append(f"{path.name}: {err}")
            continue
        names.append(path.stem)
        images.append(img)
    if not images:
        why = f" ({skipped[0]})" if skipped else ""
        raise BlindSRError(f"dataset {spec.name} has no usable images{why}")
    return spec.name, names, images, skipped


def _fit_channels(img: Tensor, channels: int) -> Tensor:
    """Gray -> three equal channels, RGB -> their mean, as the model's input needs."""
    if img.shape[1] == channels:
        return img
    if img.shape[1] == 1:
        return img.expand(-1, channels, -1, -1).contiguous()
    if channels == 1:
        return img.mean(dim=1, keepdim=True)
    raise BlindSRError(f"a {img.shape[1]}-channel image cannot feed a {channels}-channel model")


def _labels(models: Mapping[str, Any] | Sequence[Any]) -> dict[str, Any]:
    """Model label -> model; labels are the names given (a suffix where two collide)."""
    if isinstance(models, Mapping):
        return {str(k): v for k, v in models.items()}
    if isinstance(models, str | Path) or not isinstance(models, Sequence):
        models = [models]
    out: dict[str, Any] = {}
    for m in models:
        base = str(m) if isinstance(m, str | Path) else getattr(m, "arch_name", type(m).__name__)
        label, k = base, 2
        while label in out:
            label, k = f"{base}-{k}", k + 1
        out[label] = m
    return out


def _load_models(models: dict[str, Any], scale: int | None, device: Any) -> tuple[dict, int]:
    """Loaded models (eval, frozen, on ``device``) and the common scale."""
    from blindsr import zoo
    from blindsr.onnx_model import OnnxModel

    loaded = {}
    for label, m in models.items():
        model = zoo.load(m, scale or 4, device)
        if isinstance(model, OnnxModel):  # ONNX Runtime exposes no layer to hook
            raise BlindSRError(f"{label}: an ONNX file has no layers to analyse; give the "
                               ".safetensors it was exported from")
        for p in model.parameters():
            p.requires_grad_(False)
        loaded[label] = model
    scales = {label: getattr(m, "scale", None) for label, m in loaded.items()}
    if scale is not None:
        wrong = [f"{k} (x{s})" for k, s in scales.items() if s != scale]
        if wrong:
            raise BlindSRError(f"--scale is x{scale} but {', '.join(wrong)} upscale otherwise")
        return loaded, scale
    found = set(scales.values())
    if len(found) != 1 or None in found:
        shown = ", ".join(f"{k} x{s}" for k, s in scales.items())
        raise BlindSRError(f"the models do not share one scale ({shown}); give --scale")
    return loaded, int(found.pop())


# ------------------------------------------------------------------------------------ analysis


def analyze_channels(
    models: Mapping[str, str | Path | nn.Module] | Sequence[str | Path | nn.Module],
    data: str,
    layer: str,
    out: str | Path | None = None,
    scale: int | None = None,
    max_images: int | None = None,
    device: str | torch.device | None = None,
) -> dict[str, Any]:
    """Channel statistics of ``layer`` for each model over the LR images of ``data``.

    ``models``: label -> model, or a list (shipped name, checkpoint path or nn.Module; a module is
    copied, never changed). ``data``: a shared dataset name or a folder. ``scale`` defaults to the
    models' common scale. With ``out``, writes ``channels_<layer>.json`` and three PNGs there.
    Returns the JSON's content (per model: summaries and per-channel numbers) plus ``files``.
    """
    if layer == ALL_LAYERS:
        raise BlindSRError("analyze_channels takes one layer; use analyze_layers for 'all'")
    return analyze_layers(models, data, [layer], out, scale, max_images, device)["layers"][0]


def analyze_layers(
    models: Mapping[str, str | Path | nn.Module] | Sequence[str | Path | nn.Module],
    data: str,
    layers: Sequence[str],
    out: str | Path | None = None,
    scale: int | None = None,
    max_images: int | None = None,
    device: str | torch.device | None = None,
    plots: bool = True,
) -> dict[str, Any]:
    """:func:`analyze_channels` for several layers: one forward and backward pass per image and
    model covers them all.

    ``layers``: module names; ``"all"`` stands for every conv layer of the first model that every
    model has and runs exactly once (the others, missing from a model or not run exactly once, are
    listed under ``"left_out"``). Returns
    ``{"layers": [one analyze_channels result per layer], "summary": per layer and model the mean
    off-diagonal |cos|, the Gini coefficients and the dead channels, "left_out": [...], "files":
    [...]}``. With ``out``: every layer's JSON (and PNGs with ``plots``), plus
    ``channels_summary.json`` when there are several layers.
    """
    from blindsr.inference import pick_device

    if max_images is not None and (isinstance(max_images, bool) or max_images < 1):
        raise BlindSRError(f"max_images must be a positive integer, got {max_images!r}")
    if scale is not None and (isinstance(scale, bool) or not isinstance(scale, int) or scale < 1):
        raise BlindSRError(f"scale must be a positive integer, got {scale!r}")
    labelled = _labels(models)
    if not labelled:
        raise BlindSRError("no models to analyse")
    if isinstance(layers, str) or not layers:
        raise BlindSRError("layers must be a non-empty list of layer names")
    dev = pick_device(None if device is None else str(device))
    loaded, scale = _load_models(labelled, scale, dev)
    name, names, images, skipped = _lr_images(data, scale, max_images)
    layers, left_out = _expand(loaded, list(layers), images[0], dev)
    accs = {layer: {label: _Accumulator([], []) for label in loaded} for layer in layers}
    for label, model in loaded.items():
        modules = {layer: find_layer(model, layer, label) for layer in layers}
        channels = _model_in_channels(model)
        for img in images:
            x = _fit_channels(img, channels).to(dev)
            for layer, (act, grad) in layer_responses(model, modules, x, label).items():
                accs[layer][label].add(act, grad)
    results = []
    for layer in layers:
        result: dict[str, Any] = {"layer": layer, "dataset": name, "scale": scale,
                                  "images": names, "skipped": skipped, "models": {}}
        for label, model in loaded.items():
            result["models"][label] = {"arch": getattr(model, "arch_name", type(model).__name__),
                                       **accs[layer][label].summary()}
        result["files"] = write_outputs(result, out, plots) if out is not None else []
        results.append(result)
    summary = {r["layer"]: {label: {k: s[k] for k in _SUMMARY_KEYS}
                            for label, s in r["models"].items()} for r in results}
    files = []
    if out is not None and len(results) > 1:
        path = Path(out) / "channels_summary.json"
        body = {"dataset": name, "scale": scale, "images": names, "layers": summary,
                "left_out": left_out}
        write_atomic(path, json.dumps(_compact(body), indent=1) + "\n")
        files.append(str(path))
    return {"layers": results, "summary": summary, "left_out": left_out, "files": files}


def _expand(loaded: dict[str, nn.Module], layers: list[str], image: Tensor,
            device: Any) -> tuple[list[str], list[str]]:
    """``layers`` with ``all`` replaced by the usable conv layers (duplicates dropped), and the
    conv layers ``all`` left out."""
    if ALL_LAYERS not in layers:
        return list(dict.fromkeys(layers)), []
    first_label, first = next(iter(loaded.items()))
    convs = conv_layers(first)
    usable = convs
    for model in loaded.values():
        x = _fit_channels(image, _model_in_channels(model)).to(device)
        usable = runs_once(model, usable, x)
    if not usable:
        raise BlindSRError(f"--layer all: {first_label} has no conv layer that every model has "
                           "and runs exactly once")
    expanded = [n for layer in layers for n in (usable if layer == ALL_LAYERS else [layer])]
    return list(dict.fromkeys(expanded)), [n for n in convs if n not in usable]


def conv_layers(model: nn.Module) -> list[str]:
    """Names of the model's conv layers, in module order."""
    from torch import nn

    return [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d | nn.Conv3d)]


def _model_in_channels(model: nn.Module) -> int:
    kwargs = getattr(model, "arch_kwargs", None) or {}
    return int(kwargs.get("num_in_ch", 3))


# ------------------------------------------------------------------------------------ outputs


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", name).strip("._") or "layer"


def _short(label: str, width: int = 40) -> str:
    return label if len(label) <= width else "..." + label[-(width - 3):]


def write_outputs(result: dict[str, Any], out: str | Path, plots: bool = True) -> list[str]:
    """Write the JSON and (with ``plots``) the three PNGs of an :func:`analyze_channels` result
    into ``out``."""
    folder = Path(out)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise BlindSRError(f"cannot create output folder {folder}: {err.strerror or err}") from None
    stem = f"channels_{_safe(result['layer'])}"
    paths = [folder / f"{stem}.json", folder / f"{stem}_response.png",
             folder / f"{stem}_saliency.png", folder / f"{stem}_similarity.png"]
    body = {k: v for k, v in result.items() if k != "files"}
    write_atomic(paths[0], json.dumps(_compact(body), separators=(",", ":")) + "\n")
    if not plots:
        return [str(paths[0])]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for path, draw in zip(paths[1:], (_plot_response, _plot_saliency, _plot_similarity),
                          strict=True):
        fig = draw(plt, result)
        save_figure(fig, path)
        plt.close(fig)
    return [str(p) for p in paths]


def _compact(value: Any) -> Any:
    """Floats to 6 significant digits, NaN and infinities to null (valid, small JSON)."""
    if isinstance(value, float):
        return float(f"{value:.6g}") if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _compact(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_compact(v) for v in value]
    return value


def _panels(plt: Any, n: int, height: float = 3.6) -> tuple[Any, list[Any]]:
    fig, axes = plt.subplots(1, n, figsize=(5.2 * n + 0.8, height), squeeze=False,
                             layout="constrained")
    return fig, list(axes[0])


def _plot_response(plt: Any, result: dict[str, Any]) -> Any:
    models = result["models"]
    fig, axes = _panels(plt, len(models))
    top = max(max(s["mean_response"]) for s in models.values()) * 1.05 or 1.0
    for ax, (label, s) in zip(axes, models.items(), strict=True):
        ax.bar(range(s["channels"]), s["mean_response"], width=0.85, color="tab:blue")
        ax.set_ylim(0, top)
        ax.set_xlabel("channel")
        ax.set_ylabel("mean |response|")
        ax.set_title(f"{_short(label)}\nGini {s['gini_response']:.3f}", fontsize="medium")
    fig.suptitle(f"mean response per channel: {result['layer']} on {result['dataset']}")
    return fig


def _plot_saliency(plt: Any, result: dict[str, Any]) -> Any:
    models = result["models"]
    n_img = len(result["images"])
    fig, axes = _panels(plt, len(models), height=min(2.0 + 0.25 * n_img, 9.0))
    top = max(max(map(max, s["saliency_share"])) for s in models.values()) or 1.0
    image = None
    for ax, (label, s) in zip(axes, models.items(), strict=True):
        image = ax.imshow(s["saliency_share"], aspect="auto", interpolation="nearest",
                          cmap="magma", vmin=0, vmax=top)
        ax.set_xlabel("channel")
        if n_img <= 20:
            ax.set_yticks(range(n_img), result["images"], fontsize="small")
        else:
            ax.set_ylabel("image")
        ax.set_title(f"{_short(label)}\nGini of contributions {s['gini_saliency']:.3f}",
                     fontsize="medium")
    fig.colorbar(image, ax=axes, label="share of the image's saliency")
    fig.suptitle(f"channel saliency |A x dSR/dA|: {result['layer']}")
    return fig


def _plot_similarity(plt: Any, result: dict[str, Any]) -> Any:
    models = result["models"]
    fig, axes = _panels(plt, len(models), height=4.6)
    image = None
    for ax, (label, s) in zip(axes, models.items(), strict=True):
        image = ax.imshow(s["similarity"], cmap="RdBu_r", vmin=-1, vmax=1,
                          interpolation="nearest")
        ax.set_xlabel("channel")
        ax.set_ylabel("channel")
        mean = s["mean_abs_offdiag_similarity"]
        shown = "n/a" if mean is None else f"{mean:.3f}"
        ax.set_title(f"{_short(label)}\nmean off-diagonal |cos| {shown}", fontsize="medium")
    fig.colorbar(image, ax=axes, label="cosine similarity")
    fig.suptitle(f"channel similarity: {result['layer']}")
    return fig


def format_summary(result: dict[str, Any]) -> str:
    """One line per model: channels, mean |cos|, Gini of contributions and of responses."""
    lines = [f"layer {result['layer']} on {result['dataset']} x{result['scale']} "
             f"({len(result['images'])} images)"]
    for label, s in result["models"].items():
        mean = s["mean_abs_offdiag_similarity"]
        sim = "n/a" if mean is None or math.isnan(mean) else f"{mean:.4f}"
        lines.append(f"  {label}: {s['channels']} channels, mean |cos| {sim}, "
                     f"Gini(saliency) {s['gini_saliency']:.4f}, "
                     f"Gini(response) {s['gini_response']:.4f}, dead {s['dead_channels']}")
    return "\n".join(lines)


def format_layer_table(summary: dict[str, dict[str, dict[str, Any]]]) -> str:
    """A line per layer: each model's mean |cos|; with two or more models, a last line counting
    the layers where the last model's channels are less similar than the first model's."""
    labels = list(next(iter(summary.values())))
    lines = ["mean |cos| between channels per layer: " + " | ".join(labels)]
    lower = compared = 0
    for layer, by_model in summary.items():
        values = [by_model[label]["mean_abs_offdiag_similarity"] for label in labels]
        shown = ["n/a" if v is None or math.isnan(v) else f"{v:.4f}" for v in values]
        lines.append(f"  {layer}: {' | '.join(shown)}")
        first, last = values[0], values[-1]
        if len(labels) > 1 and None not in (first, last) and not math.isnan(first + last):
            compared += 1
            lower += last < first
    if len(labels) > 1:
        lines.append(f"{labels[-1]} is lower than {labels[0]} in {lower} of {compared} layers")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------ command


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``blindsr analyze channels``."""
    p = sub.add_parser("analyze", help="analyse trained networks (channels of a layer)",
                       description="Analyses of trained networks.")
    kinds = p.add_subparsers(dest="analysis", metavar="ANALYSIS")
    c = kinds.add_parser(
        "channels", help="channel responses, saliency and similarity at one layer",
        description="Mean response per channel, gradient x activation saliency and the channel "
                    "cosine-similarity matrix of one layer, over a dataset's LR images; PNGs "
                    "side by side for several models, and a JSON file.")
    c.add_argument("--model", action="append", required=True, metavar="M",
                   help="shipped model name or checkpoint path (repeat to compare)")
    c.add_argument("--data", required=True, metavar="D",
                   help="shared dataset name (Set5, Set14, ...) or a folder")
    c.add_argument("--layer", action="append", required=True, metavar="NAME",
                   help="a module name, e.g. body.7.conv1 (a wrong name lists conv layers); "
                        "repeat for several, or 'all' for every conv layer that runs once "
                        "(JSON only, no PNGs; every layer's output is kept for one pass, so "
                        "memory grows with the layer count: use --max-images or small images "
                        "for deep networks)")
    c.add_argument("-o", "--out", default="analysis", metavar="DIR",
                   help="output folder (default: analysis)")
    c.add_argument("--max-images", type=int, default=None, metavar="N")
    c.add_argument("--scale", type=int, default=None, help="default: the models' scale")
    c.add_argument("--device", default=None, help="cpu, cuda, cuda:N or mps (default: best)")
    c.set_defaults(run=_run_channels)
    p.set_defaults(run=lambda args: _help(p))


def _help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def _run_channels(args: argparse.Namespace) -> int:
    result = analyze_layers(args.model, args.data, args.layer, out=args.out, scale=args.scale,
                            max_images=args.max_images, device=args.device,
                            plots=ALL_LAYERS not in args.layer)
    layers = result["layers"]
    for r in layers:
        print(format_summary(r))
    if len(layers) > 1:
        print(format_layer_table(result["summary"]))
    if result["left_out"]:
        print(f"left out {len(result['left_out'])} conv layers that a model lacks or does not run "
              f"exactly once: {', '.join(result['left_out'][:4])}"
              + (", ..." if len(result["left_out"]) > 4 else ""), file=sys.stderr)
    for line in layers[0]["skipped"]:
        print(f"skipped {line}", file=sys.stderr)
    files = [f for r in layers for f in r["files"]] + result["files"]
    print(f"wrote {len(files)} files to {args.out}" if len(layers) > 1
          else f"wrote {', '.join(files)}", file=sys.stderr)
    return 0
