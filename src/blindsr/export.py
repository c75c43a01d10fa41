"""ONNX export of any model (``blindsr export``), checked against PyTorch before it is kept.

The graph takes a float32 NCHW RGB batch in [0, 1] of any batch size, height and width (a
multiple of the model's ``size_multiple``, when it has one) and returns the SR batch at the
model's scale, not clamped: callers clamp, as `blindsr.inference` does. The file's metadata
says so, with the architecture, its arguments and the scale, so a runtime needs nothing else.
Kernel-conditioned models (AMNet) predict their code from the input they are given: run them on
whole images, or give every tile the same code in PyTorch (`Upscaler` does).

The export goes through ``torch.onnx.export(dynamo=True)``, which needs the ``onnx`` and
``onnxscript`` packages (``pip install 'blindsr[export]'``). When ``onnxruntime`` is installed
the new file is run on two batches of other sizes and compared with the PyTorch model; a file
that disagrees is not written (the export goes to ``NAME.partial`` and is renamed when it passes).
``int8=True`` (``--int8``) quantises the checked graph statically (:mod:`blindsr.quantize`).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io as _io
import json
import logging
import shutil
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from blindsr import __version__
from blindsr.errors import BlindSRError, first_line
from blindsr.paths import prepare_output, user_path

if TYPE_CHECKING:  # torch is imported on use, so that `blindsr --help` stays light
    from torch import nn

DEFAULT_OPSET = 18
TOLERANCE = 1e-3  # largest |onnxruntime - PyTorch| accepted, on [0, 1] images
INPUT, OUTPUT = "lr", "sr"


@dataclass
class ExportReport:
    """What `export_onnx` wrote and how well the file matched the model."""

    path: Path
    opset: int
    seconds: float
    max_error: float | None = None  # None: not checked (see `unchecked`)
    checked: list[tuple[int, ...]] = field(default_factory=list)  # input shapes compared
    unchecked: str = ""  # why there was no comparison
    int8_psnr: float | None = None  # int8 files: PSNR of their outputs against the float ones

    def summary(self) -> str:
        """One line for the command line."""
        size = self.path.stat().st_size / 2**20
        line = f"wrote {self.path} ({size:.1f} MiB, opset {self.opset}, {self.seconds:.0f} s)"
        if self.max_error is None:
            line += f"; float graph not checked ({self.unchecked})"
        else:
            shapes = " and ".join("x".join(map(str, s)) for s in self.checked)
            line += f"; onnxruntime matches PyTorch within {self.max_error:.1e} on {shapes}"
        if self.int8_psnr is not None:
            line += f"; int8 outputs {self.int8_psnr:.1f} dB PSNR against the float graph's"
        return line


def _require(*modules: str) -> None:
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise BlindSRError(f"ONNX export needs {' and '.join(missing)}: "
                           "pip install 'blindsr[export]'")


def _load(model: str | Path | nn.Module | None) -> nn.Module:
    """The model to export, refusing what has no graph of its own to export."""
    from torch import nn

    from blindsr import zoo
    from blindsr.ensemble import SelfEnsemble, split_name
    from blindsr.onnx_model import OnnxModel, is_onnx

    if not isinstance(model, nn.Module):
        name = str(model) if model is not None else zoo.default_model_name()
        base, ensembled = split_name(name)
        if base == "bicubic":
            raise BlindSRError("bicubic is not exported: use your runtime's own resize")
        if ensembled and not user_path(name).exists():
            raise BlindSRError(f"{name}: self-ensemble is not exported; export {base} and "
                               "average its flips and transposes in your runtime")
        if is_onnx(name):
            raise BlindSRError(f"{name} is an ONNX file already")
    net = zoo.load(model).float()
    kinds = {type(m) for m in net.modules()}
    if SelfEnsemble in kinds or OnnxModel in kinds:
        what = "a self-ensemble" if SelfEnsemble in kinds else "an ONNX model"
        raise BlindSRError(f"the model is {what}: export the network it wraps")
    return net


def _shape(multiple: int, height: int, width: int, batch: int = 1) -> tuple[int, ...]:
    return (batch, 3, -(-height // multiple) * multiple, -(-width // multiple) * multiple)


def export_onnx(model: str | Path | nn.Module | None, path: str | Path,
                opset: int = DEFAULT_OPSET, check: bool = True, int8: bool = False,
                calibration: str | None = None) -> ExportReport:
    """Write ``model`` (a name as in `blindsr.zoo.load`, a checkpoint path or a module) to an
    ONNX file at ``path`` with dynamic batch, height and width; compare it with PyTorch when
    ``check`` and onnxruntime is installed. ``int8``: quantise it statically
    (:mod:`blindsr.quantize`, calibrated on LR crops of ``calibration``, default T91) and keep
    it only if its outputs stay close to the float graph's. Nothing is written (no file, no
    folder) unless the export succeeds and passes."""
    import torch

    from blindsr.inference import model_scale

    _require("onnx", "onnxscript", *(["onnxruntime"] if int8 else []))
    path = Path(path)
    if path.suffix.lower() != ".onnx":
        raise BlindSRError(f"{path}: the output must end in .onnx")
    if isinstance(opset, bool) or not isinstance(opset, int) or not 18 <= opset <= 23:
        raise BlindSRError(f"opset (--opset) must be a whole number in 18..23, got {opset!r}")
    net = _load(model)
    prepare_output(path, "-o file")
    multiple = int(getattr(net, "size_multiple", 1))
    scale = model_scale(net, torch.device("cpu"), torch.float32, multiple)
    calibrated = _calibration(calibration, scale, multiple) if int8 else None  # before the work
    example = torch.rand(_shape(multiple, 32, 48), generator=torch.Generator().manual_seed(0))
    batch, height, width = (torch.export.Dim(n) for n in ("batch", "height", "width"))
    if multiple > 1:
        height, width = multiple * height, multiple * width
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        draft = Path(folder) / path.name
        try:
            with _quiet():
                torch.onnx.export(net, (example,), str(draft), dynamo=True,
                                  opset_version=opset, input_names=[INPUT], output_names=[OUTPUT],
                                  external_data=False,
                                  dynamic_shapes=({0: batch, 2: height, 3: width},))
        except Exception as err:  # the exporter raises many kinds; all mean "this model cannot"
            raise BlindSRError(f"cannot export {type(net).__name__} to ONNX: "
                               f"{_root_cause(err)}") from err
        _write_metadata(draft, net, scale, multiple)
        report = ExportReport(path, opset, time.perf_counter() - start)
        if not check:
            report.unchecked = "--no-check"
        elif importlib.util.find_spec("onnxruntime") is None:
            report.unchecked = "install onnxruntime to compare it with PyTorch"
        else:
            report.checked = [_shape(multiple, 40, 24, batch=2), _shape(multiple, 17, 29)]
            report.max_error = _compare(draft, net, report.checked)
            if not report.max_error <= TOLERANCE:
                raise BlindSRError(f"the exported graph differs from the model by "
                                   f"{report.max_error:.3g} (> {TOLERANCE}); nothing written")
        if calibrated is not None:
            draft = _int8(draft, net, scale, multiple, calibrated, report)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".partial")
        try:  # a copy beside the target, then a rename: `path` is whole or untouched
            shutil.copyfile(draft, partial)
            partial.replace(path)
        finally:
            partial.unlink(missing_ok=True)
    return report


@dataclass
class _Calibration:
    data: str
    inputs: list  # arrays that set the activation ranges
    check_data: str
    check: list  # other arrays, on which the int8 file must stay close to the float one


def _calibration(calibration: str | None, scale: int, multiple: int) -> _Calibration:
    """Calibration crops of ``calibration`` (default T91) and check crops (T91's when it is
    available, so that a poor calibration set cannot pass its own test)."""
    from blindsr import quantize

    data = calibration or quantize.CALIBRATION_SET
    quantize.check_calibration_set(data)
    size = -(-quantize.CALIBRATION_SIZE // multiple) * multiple
    inputs = quantize.calibration_inputs(data, scale, size=size, seed=0)
    check_data = quantize.CALIBRATION_SET
    try:
        check = quantize.calibration_inputs(check_data, scale, count=4, size=size, seed=1)
    except BlindSRError:  # no T91 here: the calibration set's other crops
        check_data = data
        check = quantize.calibration_inputs(data, scale, count=4, size=size, seed=1)
    return _Calibration(data, inputs, check_data, check)


def _int8(draft: Path, net: nn.Module, scale: int, multiple: int, calibrated: _Calibration,
          report: ExportReport) -> Path:
    """The int8 version of the float file ``draft``, beside it, checked and with metadata."""
    from blindsr import quantize

    data, inputs, held_out = calibrated.data, calibrated.inputs, calibrated.check
    quantized = draft.with_name("int8-" + draft.name)
    with _quiet():
        quantize.quantize_int8(draft, quantized, inputs, INPUT)
    report.int8_psnr = quantize.fidelity(draft, quantized, held_out, INPUT)
    if not report.int8_psnr >= quantize.MIN_PSNR:
        raise BlindSRError(f"the int8 graph's outputs are {report.int8_psnr:.1f} dB PSNR from "
                           f"the float graph's (< {quantize.MIN_PSNR}); nothing written")
    note = (f"int8 static (QDQ: int8 weights per channel, uint8 activations), calibrated on "
            f"{len(inputs)} LR crops of {data} (bicubic and first-order degraded); outputs "
            f"{report.int8_psnr:.1f} dB PSNR against the float graph's on "
            f"{len(held_out)} crops of {calibrated.check_data}")
    _write_metadata(quantized, net, scale, multiple, {"quantization": note})
    return quantized


@contextlib.contextmanager
def _quiet():
    """The exporter's progress prints, warnings, log lines and graph dumps, hidden."""
    previous = logging.root.manager.disable
    logging.disable(logging.CRITICAL)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(_io.StringIO()), \
                contextlib.redirect_stderr(_io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(previous)


def _root_cause(err: BaseException) -> str:
    """The first line of the innermost cause: the exporter wraps the reason in advice."""
    while err.__cause__ is not None:
        err = err.__cause__
    return first_line(err)


def _write_metadata(path: Path, net: nn.Module, scale: int, multiple: int,
                    extra: dict[str, str] | None = None) -> None:
    import onnx

    graph = onnx.load(str(path))
    dims = graph.graph.input[0].type.tensor_type.shape.dim
    fixed = [f"{name} at {dims[i].dim_value}" for i, name in ((0, "batch"), (2, "height"),
                                                              (3, "width"))
             if dims[i].HasField("dim_value")]
    if fixed:
        raise BlindSRError(f"the exporter fixed the {', '.join(fixed)} (the model's forward "
                           "depends on it); nothing written")
    meta = {
        "blindsr_version": __version__,
        "arch": str(getattr(net, "arch_name", type(net).__name__)),
        "arch_kwargs": json.dumps(getattr(net, "arch_kwargs", {}), sort_keys=True),
        "scale": str(scale),
        "size_multiple": str(multiple),
        "input": f"{INPUT}: float32 N x 3 x H x W, RGB in [0, 1]",
        "output": f"{OUTPUT}: float32 N x 3 x (H * scale) x (W * scale), not clamped",
        **(extra or {}),
    }
    del graph.metadata_props[:]
    for key, value in meta.items():
        graph.metadata_props.add(key=key, value=value)
    graph.doc_string = "blindsr super-resolution model; see metadata_props"
    onnx.save(graph, str(path))


def _compare(path: Path, net: nn.Module, shapes: list[tuple[int, ...]]) -> float:
    """Largest |onnxruntime - PyTorch| over random inputs of ``shapes``."""
    import onnxruntime
    import torch

    generator = torch.Generator().manual_seed(0)
    worst = 0.0
    try:
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        runs = []
        for shape in shapes:
            x = torch.rand(shape, generator=generator)
            runs.append((x, torch.from_numpy(session.run([OUTPUT], {INPUT: x.numpy()})[0])))
    except Exception as err:  # onnxruntime's own kinds
        raise BlindSRError(f"onnxruntime cannot run the exported graph: {first_line(err)}; "
                           "nothing written") from None
    for x, got in runs:
        with torch.inference_mode():
            expected = net(x)
        if got.shape != expected.shape:
            return float("inf")
        worst = max(worst, float((got - expected).abs().max()))
    return worst


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``blindsr export``."""
    p = sub.add_parser(
        "export", help="write a model as an ONNX file (checked against PyTorch)",
        description="Export a model to ONNX with dynamic batch, height and width; with "
                    "onnxruntime installed, the file is compared with the PyTorch model first.")
    p.add_argument("--model", default=None,
                   help="shipped model name or checkpoint path (default: the shipped default "
                        "model)")
    p.add_argument("-o", "--output", type=Path, required=True, help="the .onnx file to write")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET,
                   help=f"ONNX opset, 18..23 (default: {DEFAULT_OPSET})")
    p.add_argument("--no-check", action="store_true",
                   help="skip the onnxruntime comparison")
    p.add_argument("--int8", action="store_true",
                   help="quantise to int8 (static, calibrated; the shipped SRResNets: a third "
                        "of the size, 1.4-1.7x faster on an AVX2 CPU; kept only if its outputs "
                        "stay within 35 dB PSNR of the float graph's)")
    p.add_argument("--calibration", default=None, metavar="DATA",
                   help="--int8: HR images whose LR crops calibrate the ranges (a shared name "
                        "or folder; default: T91, never a test set)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """``blindsr export``."""
    if args.calibration is not None and not args.int8:
        raise BlindSRError("--calibration is for --int8")
    report = export_onnx(args.model, args.output, opset=args.opset, check=not args.no_check,
                         int8=args.int8, calibration=args.calibration)
    print(report.summary(), file=sys.stderr)
    return 0


__all__ = ["DEFAULT_OPSET", "ExportReport", "add_parser", "export_onnx", "run"]
