"""Training configuration: YAML -> typed dataclasses, validated with one-line errors.

The generic converter of :mod:`blindsr.schema` maps nested dicts onto the sections below: unknown
keys get a "did you mean" suggestion, wrong types and out-of-range numbers name the offending key.
``key=value`` overrides from the command line are applied to the raw YAML before conversion
(values parsed as YAML).

Distributed training (``torchrun --nproc_per_node=N``): ``train.batch`` is the batch of ONE
process, so the effective batch of an optimiser step is ``train.batch x N``; the learning rate is
not rescaled automatically.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from blindsr.atomic import write_atomic
from blindsr.errors import BlindSRError
from blindsr.paths import require_file, user_path
from blindsr.schema import SEED_LIMIT, bounded, fail, from_plain, join_path, to_plain

# ---------------------------------------------------------------------------------------------
# Sections


@dataclass
class ModelConfig:
    """The generator: a registered architecture, optionally initialised from a checkpoint."""

    arch: str = "srresnet"
    scale: int = bounded(4, ge=1)
    kwargs: dict[str, Any] = field(default_factory=dict)  # constructor arguments except scale
    init: str | None = None  # checkpoint (or shipped model name) whose weights start training
    # init is a smaller net of the same arch (fewer features/blocks): grow it into this one,
    # computing the same function at step 0 (blindsr.archs.grow)
    grow: bool = False

    def check(self, path: str) -> None:
        if "scale" in self.kwargs:
            raise fail(join_path(path, "kwargs.scale"), "set the scale with model.scale instead")
        if self.grow and not self.init:
            raise fail(join_path(path, "grow"), "needs model.init, the smaller net to grow")

    def init_file(self) -> Path | None:
        """The file ``init`` names: a path, or a shipped model's weights (``blindsr-x4``)."""
        if self.init is None:
            return None
        from blindsr.checkpoint import checkpoint_file

        return checkpoint_file(self.init)


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
    usm: bool = False  # unsharp-mask the HR (Real-ESRGAN): LR and targets; D sees it unsharpened

    def check(self, path: str) -> None:
        if not self.train:
            raise fail(join_path(path, "train"), "list at least one dataset, e.g. [{path: T91}]")


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
            raise fail(join_path(path, key), str(e)) from None

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
            get_strategy(self.name).parse_params(self.params, join_path(path, "params"))
        except BlindSRError as e:
            msg = str(e)
            raise (e if msg.startswith("config") else fail(join_path(path, "name"), msg)) from None


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
            raise fail(join_path(path, "periods"), f"must be positive, got {self.periods}")
        if self.restart_weights and len(self.restart_weights) != len(self.periods):
            raise fail(join_path(path, "restart_weights"),
                       f"needs one weight per period ({len(self.periods)}), "
                       f"got {len(self.restart_weights)}")
        if any(w < 0 for w in self.restart_weights):
            raise fail(join_path(path, "restart_weights"), "must be >= 0")
        if list(self.milestones) != sorted(self.milestones) or any(m <= 0 for m in self.milestones):
            raise fail(join_path(path, "milestones"),
                       f"must be increasing positive iterations, got {self.milestones}")
        wrong = [k for k, used in (("periods", self.periods), ("restart_weights",
                 self.restart_weights)) if used and self.type != "cosine"]
        wrong += ["milestones"] * (bool(self.milestones) and self.type != "multistep")
        if wrong:
            raise fail(join_path(path, wrong[0]), f"does not apply to schedule type {self.type!r}")


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
            raise fail(join_path(path, "betas"), f"must lie in [0, 1), got {list(self.betas)}")


@dataclass
class TrainConfig:
    iterations: int = bounded(1000, gt=0)
    batch: int = bounded(16, gt=0)  # per process: effective batch = batch x world size
    patch: int = bounded(128, gt=0)  # HR patch side; a multiple of model.scale
    ema: float = bounded(0.999, ge=0, lt=1)  # EMA decay (ramped up early); 0 disables
    amp: Literal["none", "bf16", "fp16"] = "none"
    channels_last: bool = False
    grad_clip: float | None = bounded(None, gt=0)  # max total gradient norm per optimiser
    seed: int = bounded(0, ge=0, lt=SEED_LIMIT)
    device: str | None = None  # None: cuda when available, else cpu
    checkpoint_every: int = bounded(1000, ge=0)  # 0: only at the end
    keep_checkpoints: int = bounded(3, ge=1)
    max_bad_steps: int = bounded(10, ge=1)  # consecutive NaN/Inf iterations before stopping

    def check(self, path: str) -> None:
        if self.device is not None:
            import torch

            try:
                kind = torch.device(self.device).type
            except (RuntimeError, ValueError):
                kind = None
            if kind not in ("cpu", "cuda", "mps"):
                raise fail(join_path(path, "device"), f"not a training device: {self.device!r} "
                                                      "(cpu, cuda, cuda:N, mps)")


@dataclass
class ValConfig:
    every: int = bounded(0, ge=0)  # 0: no validation
    sets: list[str] = field(default_factory=list)
    degradations: list[str] = field(default_factory=lambda: ["clean"])
    crop_border: int | None = bounded(None, ge=0)  # None: the scale
    max_images: int | None = bounded(None, gt=0)
    seed: int = bounded(0, ge=0, lt=SEED_LIMIT)

    def check(self, path: str) -> None:
        if self.every and not self.sets:
            raise fail(join_path(path, "sets"),
                       "list validation sets (e.g. [Set5]) or set every: 0")
        if self.every and not self.degradations:
            raise fail(join_path(path, "degradations"), "list at least one preset (e.g. [clean])")
        from blindsr.degrade.presets import resolve

        for i, name in enumerate(self.degradations):
            try:
                resolve(name)
            except BlindSRError as e:
                raise fail(f"{join_path(path, 'degradations')}[{i}]", str(e)) from None


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
        schedules = [("schedule", self.schedule)] + [
            (f"optim.{name}.schedule", o.schedule) for name, o in self.optim.items() if o.schedule]
        for where, schedule in schedules:
            total = sum(schedule.periods)
            if schedule.periods and total < self.train.iterations:
                raise fail(f"{where}.periods", f"cover {total} iterations, fewer than "
                           f"train.iterations ({self.train.iterations}): the lr would stay at "
                           "eta_min for the rest")

    @property
    def run_dir(self) -> Path:
        """``output_dir / name``, a leading ``~`` expanded (configs pass no shell)."""
        return user_path(self.output_dir) / self.name

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
        if raw.lstrip().startswith(("[", "{")):  # meant as a list or mapping: say what broke it
            raise BlindSRError(
                f"override {text!r}: the value is not valid YAML; quote items that hold "
                f"brackets or colons, e.g. val.sets='[\"Set5[:2]\"]'") from None
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


class _StrictLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (plain YAML keeps the
    last one silently, so a second ``train:`` section would replace the first whole)."""


def _unique_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":  # "<<: *base": merged keys may be reset
            continue
        key = loader.construct_object(key_node, deep=True)
        try:
            duplicate = key in seen
            seen.add(key)
        except TypeError:  # an unhashable key: the base loader says so itself
            continue
        if duplicate:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark)
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)


def read_yaml(path: str | Path) -> dict:
    """A YAML mapping from a file, with one-line errors."""
    path = require_file(path, "config file")
    try:
        data = yaml.load(path.read_text(), Loader=_StrictLoader)  # a SafeLoader
    except UnicodeDecodeError:
        raise BlindSRError(f"{path}: not a text file (a YAML config was expected)") from None
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
    """Validate a raw (YAML-like) mapping into a :class:`Config`. An ``optim`` entry set to
    null (``optim.dual=null``) drops that network's settings."""
    raw = dict(raw)
    if isinstance(raw.get("optim"), Mapping):
        raw["optim"] = {k: v for k, v in raw["optim"].items() if v is not None}
    return from_plain(Config, raw)


def check_paths(cfg: Config) -> None:
    """Every training and validation dataset resolves (shared name or existing folder)."""
    from blindsr.data import list_pairs, resolve_dataset

    for i, src in enumerate(cfg.data.train):
        try:
            resolve_dataset(src.path, cfg.model.scale)
        except BlindSRError as e:
            raise fail(f"data.train[{i}].path", str(e)) from None
    for i, name in enumerate(cfg.val.sets if cfg.val.every else []):
        try:
            spec = resolve_dataset(name, cfg.model.scale)
        except BlindSRError as e:
            raise fail(f"val.sets[{i}]", str(e)) from None
        if spec.kind == "lr":
            raise fail(f"val.sets[{i}]", f"{name} has LR images only; validation scores "
                                         "PSNR/SSIM against HR images")
        try:  # an empty folder or subset would only fail at the first validation
            list_pairs(spec)
        except BlindSRError as e:
            raise fail(f"val.sets[{i}]", str(e)) from None
    if cfg.model.init is not None:
        _check_init(cfg)


def _check_init(cfg: Config) -> None:
    """``model.init`` names a checkpoint file or a shipped model (a run that resumes does not
    read it, so it may be gone then)."""
    from blindsr.shipped import shipped_models
    from blindsr.train_state import latest_checkpoint

    try:
        init = cfg.model.init_file()
    except BlindSRError as e:
        if cfg.model.init != "bicubic":  # a path that cannot be expanded
            raise fail("model.init", str(e)) from None
        raise fail("model.init", f"{cfg.model.init} has no weights to start from (leave "
                                 "model.init out to train from scratch)") from None
    if init.is_file() or latest_checkpoint(cfg.run_dir) is not None:
        return
    if cfg.model.init.endswith("+"):
        raise fail("model.init", f"{cfg.model.init}: self-ensemble ('+') is for upscale and "
                                 "eval; name the model without it")
    what = "a folder, not a checkpoint file" if init.is_dir() else "checkpoint not found"
    raise fail("model.init", f"{what}: {cfg.model.init} (a .safetensors / .pth file, or a "
                             f"shipped model: {', '.join(shipped_models())})")


def load_config(path: str | Path, overrides: list[str] | tuple[str, ...] = (),
                paths: bool = True) -> Config:
    """Read, override and validate a YAML config; ``name`` defaults to the file's stem.

    ``paths``: also check that datasets and the init checkpoint exist.
    """
    if isinstance(overrides, str):
        raise BlindSRError(f"overrides must be a list of key=value strings, got the string "
                           f"{overrides!r}")
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
    return write_atomic(path, dump_config(cfg))
