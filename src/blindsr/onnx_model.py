"""ONNX files as models: ``--model model.onnx`` in ``blindsr upscale`` and ``blindsr eval``.

So an exported (or converted, or quantised) file is checked with the same commands and the same
numbers as the PyTorch model it came from. `OnnxModel` runs an ONNX Runtime session inside an
``nn.Module``: tensors go to the host as float32 (or float16, if that is what the graph takes)
and come back on the caller's device and dtype. The scale comes from the metadata that
``blindsr export`` writes; for other files (e.g. Real-ESRGAN's exports) the caller measures it
(`blindsr.inference.model_scale`). The graph must take one N x 3 x H x W image batch in [0, 1].
ONNX files are protobuf, not pickles: nothing in them runs as Python.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch
from torch import nn

from blindsr.errors import BlindSRError, first_line

SUFFIX = ".onnx"
_FLOAT_TYPES = {"tensor(float)": torch.float32, "tensor(float16)": torch.float16}


def is_onnx(path: str | Path) -> bool:
    """Whether ``path`` names an ONNX file (by its suffix)."""
    return Path(path).suffix.lower() == SUFFIX


class OnnxModel(nn.Module):
    """An ONNX file run by ONNX Runtime (CPU, or CUDA when that provider is installed)."""

    arch_name = "onnx"

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        super().__init__()
        if importlib.util.find_spec("onnxruntime") is None:
            raise BlindSRError(f"{path}: ONNX models need onnxruntime: "
                               "pip install 'blindsr[export]'")
        import onnxruntime

        self.path = Path(path)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.log_severity_level = 3  # errors only
        wanted = ("CUDAExecutionProvider", "CPUExecutionProvider")
        providers = [p for p in wanted if p in onnxruntime.get_available_providers()]
        try:
            self.session = onnxruntime.InferenceSession(str(self.path), options,
                                                        providers=providers)
        except Exception as err:  # onnxruntime raises its own kinds for bad files
            raise BlindSRError(f"{path}: not a usable ONNX model: {first_line(err)}") from None
        inputs = self.session.get_inputs()
        shape = inputs[0].shape if len(inputs) == 1 else []
        channels = shape[1] if len(shape) == 4 else 0  # a name or None when dynamic
        if channels not in (3, None) and not isinstance(channels, str) \
                or inputs[0].type not in _FLOAT_TYPES:
            found = ", ".join(f"{i.name} {i.type} {i.shape}" for i in inputs) or "no inputs"
            raise BlindSRError(f"{path}: an SR model takes one float N x 3 x H x W input; this "
                               f"graph takes {found}")
        self.input_name = inputs[0].name
        self.input_dtype = _FLOAT_TYPES[inputs[0].type]
        batch = shape[0]
        self.fixed_batch = batch if isinstance(batch, int) and batch > 0 else None
        meta = self.session.get_modelmeta().custom_metadata_map
        self.source_arch = meta.get("arch")  # the exported architecture, when blindsr wrote it
        if meta.get("scale", "").isdigit():
            self.scale = int(meta["scale"])
        if meta.get("size_multiple", "").isdigit():
            self.size_multiple = int(meta["size_multiple"])
        self.activation_width = _widest_conv(self.path)

    def __deepcopy__(self, memo: dict) -> OnnxModel:
        return self  # nothing in it can change (no parameters; the session is read-only)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """SR of ``x``, run in chunks of the graph's batch size when that is fixed."""
        feed = x.detach().to("cpu", self.input_dtype).contiguous()
        step = self.fixed_batch or feed.shape[0]
        if feed.shape[0] % step:
            raise RuntimeError(f"{self.path.name} takes batches of exactly {step} images, "
                               f"not {feed.shape[0]}")
        outs = [self._run(feed[i:i + step].numpy()) for i in range(0, feed.shape[0], step)]
        return torch.cat(outs).to(x.device, x.dtype)

    def _run(self, batch: np.ndarray) -> torch.Tensor:
        try:
            out = self.session.run(None, {self.input_name: batch})[0]
        except Exception as err:  # RuntimeError for the caller: out of memory halves the tile
            size = "x".join(map(str, batch.shape))
            raise RuntimeError(f"{self.path.name}: onnxruntime failed on a {size} input: "
                               f"{first_line(err)}") from None
        return torch.from_numpy(np.ascontiguousarray(out))


def _widest_conv(path: Path) -> int:
    """The most output channels of any Conv in the graph (64 when none is found): what the
    automatic tile size assumes the model holds at output resolution, since an ONNX session,
    unlike a PyTorch module, shows no intermediate sizes (`blindsr.inference.bytes_per_pixel`)."""
    if importlib.util.find_spec("onnx") is None:
        return 64
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    weights = {t.name: list(t.dims) for t in graph.initializer}
    widths = [weights[node.input[1]][0] for node in graph.node
              if node.op_type == "Conv" and len(node.input) > 1 and node.input[1] in weights]
    return max(widths, default=64)


__all__ = ["OnnxModel", "is_onnx"]
