"""Training configuration: YAML -> typed dataclasses, validated with one-line errors.

One generic converter (:func:`from_plain` / :func:`to_plain`) maps nested dicts onto the
dataclasses below (and onto a strategy's own ``Params``): unknown keys get a "did you mean"
suggestion, wrong types and out-of-range numbers name the offending key. ``key=value`` overrides
from the command line are applied to the raw YAML before conversion (values parsed as YAML).

Distributed training (``torchrun --nproc_per_node=N``): ``train.batch`` is the batch of ONE
process, so the effective batch of an optimiser step is ``train.batch x N``; the learning rate is
not rescaled automatically.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from blindsr.errors import BlindSRError

# ---------------------------------------------------------------------------------------------
# Field helpers


def bounded(default: Any = dataclasses.MISSING, *, gt: float | None = None,
            ge: float | None = None, lt: float | None = None, le: float | None = None,
            **kw: Any) -> Any:
    """A dataclass field whose numeric value (when not None) must satisfy the given bounds."""
    bounds = {k: v for k, v in (("gt", gt), ("ge", ge), ("lt", lt), ("le", le)) if v is not None}
    return field(default=default, metadata={"bounds": bounds}, **kw)


_BOUND_TEXT = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}
_BOUND_OK = {
    "gt": lambda v, b: v > b,
    "ge": lambda v, b: v >= b,
    "lt": lambda v, b: v < b,
    "le": lambda v, b: v <= b,
}


def fail(path: str, message: str) -> BlindSRError:
    """A one-line config error about the key at ``path``."""
    return BlindSRError(f"config {path}: {message}" if path else f"config: {message}")


def _join(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)


# ---------------------------------------------------------------------------------------------
# Generic conversion


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is not None:
        return getattr(origin, "__name__", str(origin))
    return "null" if tp is type(None) else getattr(tp, "__name__", str(tp))


def _scalar(tp: type, value: Any, path: str) -> Any:
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise fail(path, f"must be true or false, got {value!r}")
    if tp is int:
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise fail(path, f"must be an integer, got {value!r}")
    if tp is float:
        if isinstance(value, str):  # PyYAML reads 1e-4 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                raise fail(path, f"must be a number, got {value!r}") from None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise fail(path, f"must be a finite number, got {value!r}")
            return float(value)
        raise fail(path, f"must be a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise fail(path, f"must be a string, got {value!r}")
    raise fail(path, f"unsupported field type {tp!r}")  # a programming error, said plainly


def _union(args: tuple, value: Any, path: str) -> Any:
    if value is None:
        if type(None) in args:
            return None
        raise fail(path, f"must be {' or '.join(_type_name(a) for a in args)}, got null")
    options = [a for a in args if a is not type(None)]
    first_error = None
    for option in options:
        try:
            return from_plain(option, value, path)
        except BlindSRError as e:
            first_error = first_error or e
    if len(options) == 1:
        raise first_error
    raise fail(path, f"must be {' or '.join(_type_name(a) for a in args)}, got {value!r}")


def _literal(args: tuple, value: Any, path: str) -> Any:
    if value in args and not isinstance(value, bool):
        return value
    hint = ""
    if isinstance(value, str):
        close = difflib.get_close_matches(value, [str(a) for a in args], n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise fail(path, f"must be one of {', '.join(map(str, args))}, got {value!r}{hint}")


def _sequence(tp: Any, value: Any, path: str) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if not isinstance(value, (list, tuple)):
        raise fail(path, f"must be a list, got {value!r}")
    if origin is tuple and args and args[-1] is not Ellipsis:
        if len(value) != len(args):
            raise fail(path, f"must be a list of {len(args)} values, got {list(value)!r}")
        pairs = enumerate(zip(args, value, strict=True))
        return tuple(from_plain(a, v, f"{path}[{i}]") for i, (a, v) in pairs)
    item = args[0] if args else Any
    out = [from_plain(item, v, f"{path}[{i}]") for i, v in enumerate(value)]
    return tuple(out) if origin is tuple else out


def _mapping(tp: Any, value: Any, path: str) -> dict:
    if not isinstance(value, Mapping):
        raise fail(path, f"must be a mapping, got {value!r}")
    args = typing.get_args(tp)
    item = args[1] if len(args) == 2 else Any
    return {str(k): from_plain(item, v, _join(path, k)) for k, v in value.items()}


def unknown_key(path: str, key: Any, allowed: list[str]) -> BlindSRError:
    """'unknown key' error with a difflib suggestion and the allowed keys."""
    close = difflib.get_close_matches(str(key), allowed, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return fail("", f"unknown key {_join(path, key)!r}{hint}; allowed: {', '.join(allowed)}")


def _check_bounds(f: dataclasses.Field, value: Any, path: str) -> None:
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    for kind, bound in f.metadata.get("bounds", {}).items():
        if not _BOUND_OK[kind](value, bound):
            raise fail(path, f"must be {_BOUND_TEXT[kind]} {bound}, got {value!r}")


def _dataclass(cls: type, value: Any, path: str) -> Any:
    if isinstance(value, cls):
        return value
    if value is None:
        value = {}
    if not isinstance(value, Mapping):
        keys = ", ".join(f.name for f in dataclasses.fields(cls))
        raise fail(path, f"must be a mapping of {keys}, got {value!r}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    hints = typing.get_type_hints(cls)
    for key in value:
        if key not in fields:
            raise unknown_key(path, key, list(fields))
    kwargs = {}
    for name, f in fields.items():
        sub = _join(path, name)
        if name not in value:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise fail(sub, "missing (required)")
            continue
        kwargs[name] = from_plain(hints[name], value[name], sub)
        _check_bounds(f, kwargs[name], sub)
    obj = cls(**kwargs)
    check = getattr(obj, "check", None)
    if callable(check):
        check(path)
    return obj


def from_plain(tp: Any, value: Any, path: str = "") -> Any:
    """Convert plain YAML data ``value`` to type ``tp`` (dataclasses, lists, tuples, dicts,
    Optional / unions, Literal, bool / int / float / str, Any), raising a one-line
    BlindSRError that names ``path`` on any mismatch."""
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return _dataclass(tp, value, path)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return _union(args, value, path)
    if origin is Literal:
        return _literal(args, value, path)
    if origin in (list, tuple) or tp in (list, tuple):
        return _sequence(tp, value, path)
    if origin is dict or tp is dict:
        return _mapping(tp, value, path)
    if value is None:
        raise fail(path, f"must be {_type_name(tp)}, got null")
    return _scalar(tp, value, path)


def to_plain(obj: Any) -> Any:
    """Dataclasses -> dicts, tuples -> lists, recursively (the inverse of :func:`from_plain`)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {str(k): to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


# ---------------------------------------------------------------------------------------------
# Sections


@dataclass
class ModelConfig:
    """The generator: a registered architecture, optionally initialised from a checkpoint."""

    arch: str = "srresnet"
    scale: int = bounded(4, ge=1)
    kwargs: dict[str, Any] = field(default_factory=dict)  # constructor arguments except scale
    init: str | None = None  # checkpoint whose weights start the training

    def check(self, path: str) -> None:
        if "scale" in self.kwargs:
            raise fail(_join(path, "kwargs.scale"), "set the scale with model.scale instead")


@dataclass
class DataSource:
    """One training folder (or shared dataset name) and its sampling weight."""

    path: str
    weight: float = bounded(1.0, gt=0)


@dataclass
class DataConfig:
    train: list[DataSource] = field(default_factory=list)
    workers: int = bounded(0, ge=0)  # DataLoader worker processes
    pool_size: int = bounded(0, ge=0)  # training-pair shuffle pool (0: none; Real-ESRGAN: 180)
    usm: bool = False  # unsharp-mask the HR targets (Real-ESRGAN)

    def check(self, path: str) -> None:
        if not self.train:
            raise fail(_join(path, "train"), "list at least one dataset, e.g. [{path: T91}]")


@dataclass
class DegradationConfig:
    """How LR is made for HR-only samples: random second order, a named preset, or none."""

    kind: Literal["random", "preset", "none"] = "random"
    preset: str = "bicubic"
    random: dict[str, Any] = field(default_factory=dict)  # SecondOrderConfig overrides
    # kind random: the fraction of samples that get `preset` instead (e.g. clean bicubic LR, so a
    # blind model also keeps the detail of clean inputs); 0 = the pipeline alone.
    preset_prob: float = bounded(0.0, ge=0, le=1)

    def check(self, path: str) -> None:
        from blindsr.degrade import SecondOrderConfig
        from blindsr.degrade.presets import resolve

        try:
            if self.kind == "preset":
                resolve(self.preset)
            if self.kind == "random":
                SecondOrderConfig.from_dict(self.random)
        except BlindSRError as e:
            key = "preset" if self.kind == "preset" else "random"
            raise fail(_join(path, key), str(e)) from None

    def second_order(self) -> Any:
        """The validated :class:`SecondOrderConfig` of ``kind: random``."""
        from blindsr.degrade import SecondOrderConfig

        return SecondOrderConfig.from_dict(self.random)


@dataclass
class StrategyConfig:
    name: str = "plain"
    params: dict[str, Any] = field(default_factory=dict)  # the strategy's Params dataclass

    def check(self, path: str) -> None:
        from blindsr.strategies import get_strategy

        try:
            get_strategy(self.name).parse_params(self.params, _join(path, "params"))
        except BlindSRError as e:
            msg = str(e)
            raise (e if msg.startswith("config") else fail(_join(path, "name"), msg)) from None


@dataclass
class ScheduleConfig:
    """Learning-rate schedule: a factor of the base lr as a function of the iteration.

    ``warmup`` iterations of linear ramp multiply any type. ``cosine`` anneals to ``eta_min``
    over ``periods`` (restarts between them, each peak scaled by ``restart_weights``; default:
    one period of ``train.iterations``). ``multistep`` multiplies by ``gamma`` at each milestone.
    """

    type: Literal["constant", "cosine", "multistep"] = "constant"
    warmup: int = bounded(0, ge=0)
    periods: list[int] = field(default_factory=list)
    restart_weights: list[float] = field(default_factory=list)
    eta_min: float = bounded(0.0, ge=0)
    milestones: list[int] = field(default_factory=list)
    gamma: float = bounded(0.5, gt=0)

    def check(self, path: str) -> None:
        if any(p <= 0 for p in self.periods):
            raise fail(_join(path, "periods"), f"must be positive, got {self.periods}")
        if self.restart_weights and len(self.restart_weights) != len(self.periods):
            raise fail(_join(path, "restart_weights"),
                       f"needs one weight per period ({len(self.periods)}), "
                       f"got {len(self.restart_weights)}")
        if any(w < 0 for w in self.restart_weights):
            raise fail(_join(path, "restart_weights"), "must be >= 0")
        if list(self.milestones) != sorted(self.milestones) or any(m <= 0 for m in self.milestones):
            raise fail(_join(path, "milestones"),
                       f"must be increasing positive iterations, got {self.milestones}")
        wrong = [k for k, used in (("periods", self.periods), ("restart_weights",
                 self.restart_weights)) if used and self.type != "cosine"]
        wrong += ["milestones"] * (bool(self.milestones) and self.type != "multistep")
        if wrong:
            raise fail(_join(path, wrong[0]), f"does not apply to schedule type {self.type!r}")


@dataclass
class OptimConfig:
    """One optimiser; ``schedule`` (optional) replaces the top-level schedule for it."""

    type: Literal["adam", "adamw"] = "adam"
    lr: float = bounded(2e-4, gt=0)
    betas: tuple[float, float] = (0.9, 0.99)
    weight_decay: float = bounded(0.0, ge=0)
    schedule: ScheduleConfig | None = None

    def check(self, path: str) -> None:
        if not all(0 <= b < 1 for b in self.betas):
            raise fail(_join(path, "betas"), f"must lie in [0, 1), got {list(self.betas)}")


@dataclass
class TrainConfig:
    iterations: int = bounded(1000, gt=0)
    batch: int = bounded(16, gt=0)  # per process: effective batch = batch x world size
    patch: int = bounded(128, gt=0)  # HR patch side; a multiple of model.scale
    ema: float = bounded(0.999, ge=0, lt=1)  # EMA decay (ramped up early); 0 disables
    amp: Literal["none", "bf16", "fp16"] = "none"
    channels_last: bool = False
    grad_clip: float | None = bounded(None, gt=0)  # max total gradient norm per optimiser
    seed: int = bounded(0, ge=0)
    device: str | None = None  # None: cuda when available, else cpu
    checkpoint_every: int = bounded(1000, ge=0)  # 0: only at the end
    keep_checkpoints: int = bounded(3, ge=1)
    max_bad_steps: int = bounded(10, ge=1)  # consecutive NaN/Inf iterations before stopping

    def check(self, path: str) -> None:
        if self.device is not None:
            import torch

            try:
                torch.device(self.device)
            except (RuntimeError, ValueError):
                raise fail(_join(path, "device"),
                           f"not a device name: {self.device!r} (cpu, cuda, cuda:N, mps)") from None


@dataclass
class ValConfig:
    every: int = bounded(0, ge=0)  # 0: no validation
    sets: list[str] = field(default_factory=list)
    degradations: list[str] = field(default_factory=lambda: ["clean"])
    crop_border: int | None = bounded(None, ge=0)  # None: the scale
    max_images: int | None = bounded(None, gt=0)
    seed: int = bounded(0, ge=0)

    def check(self, path: str) -> None:
        if self.every and not self.sets:
            raise fail(_join(path, "sets"), "list validation sets (e.g. [Set5]) or set every: 0")
        if self.every and not self.degradations:
            raise fail(_join(path, "degradations"), "list at least one preset (e.g. [clean])")


@dataclass
class LoggingConfig:
    every: int = bounded(100, gt=0)  # iterations between log lines / metrics.jsonl rows
    tensorboard: bool = True
    images_every: int = bounded(1000, ge=0)  # TensorBoard LR | SR | HR samples; 0: never


@dataclass
class Config:
    """A whole training run. The run folder is ``output_dir / name``."""

    name: str = ""
    output_dir: str = "runs"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    degradation: DegradationConfig = field(default_factory=DegradationConfig)
    strategy: StrategyConfig = field(default_factory=StrategyConfig)
    optim: dict[str, OptimConfig] = field(default_factory=lambda: {"generator": OptimConfig()})
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    val: ValConfig = field(default_factory=ValConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)

    def check(self, path: str) -> None:
        if not self.name or any(c in self.name for c in "/\\") or self.name in (".", ".."):
            raise fail("name", f"must be a plain folder name, got {self.name!r}")
        self.optim.setdefault("generator", OptimConfig())
        if self.train.patch % self.model.scale:
            raise fail("train.patch", f"must be a multiple of model.scale "
                                      f"({self.model.scale}), got {self.train.patch}")
        if self.train.amp == "fp16" and self.train.device == "cpu":
            raise fail("train.amp", "fp16 is not supported on the CPU; use bf16 or none")

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir) / self.name

    @property
    def strategy_params(self) -> Any:
        """The strategy's validated Params instance."""
        from blindsr.strategies import get_strategy

        return get_strategy(self.strategy.name).parse_params(self.strategy.params)


# ---------------------------------------------------------------------------------------------
# Files and overrides


def _parse_override(text: str) -> tuple[list[str], Any]:
    key, sep, raw = text.partition("=")
    if not sep or not key.strip() or any(not part for part in key.strip().split(".")):
        raise BlindSRError(f"override {text!r} must look like key.sub=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw  # not valid YAML: take the text as is
    return key.strip().split("."), value


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Set ``a.b.c=value`` entries (value parsed as YAML; list items by index) in ``raw``."""
    for text in overrides:
        keys, value = _parse_override(text)
        node: Any = raw
        for i, key in enumerate(keys):
            last = i == len(keys) - 1
            where = ".".join(keys[:i]) or "the top level"
            if isinstance(node, list):
                if not key.isdigit() or int(key) >= len(node):
                    raise BlindSRError(f"override {text!r}: {where} has no item {key}")
                key = int(key)
            elif not isinstance(node, dict):
                raise BlindSRError(f"override {text!r}: {where} is not a mapping")
            if last:
                node[key] = value
            else:
                if isinstance(node, dict) and node.get(key) is None:
                    node[key] = {}
                node = node[key]
    return raw


def read_yaml(path: str | Path) -> dict:
    """A YAML mapping from a file, with one-line errors."""
    path = Path(path)
    if not path.is_file():
        raise BlindSRError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise BlindSRError(f"{path}: invalid YAML{where}: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise BlindSRError(f"{path}: a config must be a YAML mapping, got {type(data).__name__}")
    return data


def parse_config(raw: Mapping[str, Any]) -> Config:
    """Validate a raw (YAML-like) mapping into a :class:`Config`."""
    return from_plain(Config, dict(raw))


def check_paths(cfg: Config) -> None:
    """Every training and validation dataset resolves (shared name or existing folder)."""
    from blindsr.data import resolve_dataset

    for i, src in enumerate(cfg.data.train):
        try:
            resolve_dataset(src.path, cfg.model.scale)
        except BlindSRError as e:
            raise fail(f"data.train[{i}].path", str(e)) from None
    for i, name in enumerate(cfg.val.sets if cfg.val.every else []):
        try:
            resolve_dataset(name, cfg.model.scale)
        except BlindSRError as e:
            raise fail(f"val.sets[{i}]", str(e)) from None
    if cfg.model.init is not None and not Path(cfg.model.init).is_file():
        raise fail("model.init", f"checkpoint not found: {cfg.model.init}")


def load_config(path: str | Path, overrides: list[str] | tuple[str, ...] = (),
                paths: bool = True) -> Config:
    """Read, override and validate a YAML config; ``name`` defaults to the file's stem.

    ``paths``: also check that datasets and the init checkpoint exist.
    """
    raw = apply_overrides(read_yaml(path), list(overrides))
    if not raw.get("name"):
        raw["name"] = Path(path).stem
    cfg = parse_config(raw)
    if paths:
        check_paths(cfg)
    return cfg


def dump_config(cfg: Config) -> str:
    """The resolved config as YAML text (every default written out)."""
    return yaml.safe_dump(to_plain(cfg), sort_keys=False, default_flow_style=None)


def save_config(cfg: Config, path: str | Path) -> Path:
    """Write the resolved config to ``path`` (atomically)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(dump_config(cfg))
    tmp.replace(path)
    return path
