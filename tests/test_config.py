from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest
import yaml

from blindsr.config import (
    Config,
    OptimConfig,
    apply_overrides,
    bounded,
    dump_config,
    from_plain,
    load_config,
    parse_config,
    read_yaml,
    save_config,
    to_plain,
)
from blindsr.errors import BlindSRError

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))  # named after their run
ALL_CONFIGS = sorted((ROOT / "configs").rglob("*.yaml"))  # with the methods' subfolders


def raw(**sections):
    return {"name": "t", "data": {"train": [{"path": "T91"}]}, **sections}


def error(raw_cfg) -> str:
    with pytest.raises(BlindSRError) as e:
        parse_config(raw_cfg)
    message = str(e.value)
    assert len(message.splitlines()) == 1
    return message


@dataclass
class Inner:
    mode: Literal["a", "b"] = "a"
    size: int | None = bounded(None, gt=0)


@dataclass
class Outer:
    pair: tuple[float, float] = (0.0, 1.0)
    items: list[Inner] = field(default_factory=list)
    table: dict[str, Inner] = field(default_factory=dict)
    flag: bool = False


def test_generic_conversion_of_nested_types_round_trips():
    data = {"pair": [1, 2.5], "items": [{"mode": "b", "size": 3}, {}],
            "table": {"x": {"size": None}}, "flag": True}
    obj = from_plain(Outer, data)
    assert obj.pair == (1.0, 2.5) and isinstance(obj.pair, tuple)
    assert obj.items == [Inner("b", 3), Inner("a", None)]
    assert obj.table == {"x": Inner()} and obj.flag is True
    assert from_plain(Outer, to_plain(obj)) == obj


@pytest.mark.parametrize("data,expected", [
    ({"pair": [1]}, "pair: must be a list of 2 values"),
    ({"items": [{"mode": "c"}]}, "items[0].mode: must be one of a, b"),
    ({"items": [{"size": 0}]}, "items[0].size: must be > 0"),
    ({"table": {"x": {"sise": 2}}}, "unknown key 'table.x.sise' (did you mean 'size'?)"),
    ({"flag": "yes"}, "flag: must be true or false"),
    ({"items": {"mode": "a"}}, "items: must be a list"),
])
def test_generic_conversion_errors_name_the_key(data, expected):
    with pytest.raises(BlindSRError, match="config") as e:
        from_plain(Outer, data)
    assert expected in str(e.value)


def test_defaults_and_types():
    cfg = parse_config(raw())
    assert cfg.output_dir == "runs" and cfg.run_dir == Path("runs/t")
    assert cfg.optim["generator"] == OptimConfig()
    assert cfg.train.amp == "none" and cfg.train.grad_clip is None
    assert cfg.strategy_params.loss == "l1"


@pytest.mark.parametrize("section,expected", [
    ({"trian": {}}, "unknown key 'trian' (did you mean 'train'?); allowed: name,"),
    ({"train": {"iteration": 5}}, "unknown key 'train.iteration' (did you mean 'iterations'?)"),
    ({"train": {"batch": "16"}}, "config train.batch: must be an integer, got '16'"),
    ({"train": {"batch": 2.5}}, "train.batch: must be an integer"),
    ({"optim": {"generator": {"lr": -1e-4}}}, "config optim.generator.lr: must be > 0"),
    ({"optim": {"generator": {"betas": [0.9, 1.5]}}}, "optim.generator.betas: must lie in [0, 1)"),
    ({"train": {"ema": 1.0}}, "train.ema: must be < 1"),
    ({"train": {"amp": "fp61"}}, "(did you mean 'fp16'?)"),
    ({"train": {"patch": 30}}, "train.patch: must be a multiple of model.scale (4)"),
    ({"train": {"device": "gpu7"}}, "train.device: not a training device: 'gpu7'"),
    ({"train": {"device": "meta"}}, "train.device: not a training device: 'meta'"),
    ({"train": {"seed": 2**64}}, "train.seed: must be < 9223372036854775808"),
    ({"val": {"seed": -1}}, "val.seed: must be >= 0"),
    ({"strategy": {"name": "and", "params": {"seed": 2**63}}},
     "strategy.params.seed: must be < 9223372036854775808"),
    ({"strategy": {"params": {"los": "l2"}}},
     "unknown key 'strategy.params.los' (did you mean 'loss'?); allowed: loss, weight, eps"),
    ({"strategy": {"params": {"loss": "l3"}}}, "strategy.params.loss: must be one of l1, l2"),
    ({"strategy": {"name": "plian"}}, "unknown strategy 'plian' (did you mean 'plain'?)"),
    ({"degradation": {"kind": "preset", "preset": "bicbic"}},
     "config degradation.preset: unknown degradation preset 'bicbic'"),
    ({"degradation": {"random": {"stage1": {"blur": {"prob": 2}}}}},
     "degradation.random: second-order config stage1.blur.prob"),
    ({"schedule": {"type": "cosine", "periods": [10, 10], "restart_weights": [1]}},
     "schedule.restart_weights: needs one weight per period (2)"),
    ({"schedule": {"milestones": [5]}}, "schedule.milestones: does not apply"),
    ({"schedule": {"type": "cosine", "periods": [400, 500]}},
     "schedule.periods: cover 900 iterations, fewer than train.iterations (1000): the lr"),
    ({"optim": {"generator": {"schedule": {"type": "cosine", "periods": [2]}}}},
     "optim.generator.schedule.periods: cover 2 iterations"),
    ({"val": {"every": 10}}, "val.sets: list validation sets"),
    ({"model": {"kwargs": {"scale": 2}}}, "set the scale with model.scale"),
    ({"data": {"train": []}}, "data.train: list at least one dataset"),
    ({"data": None}, "data.train: list at least one dataset"),
    ({"val": {"degradations": ["clean", "bnj"]}},
     "config val.degradations[1]: unknown degradation preset 'bnj'"),
    ({"data": {"train": [{"pth": "x"}]}}, "unknown key 'data.train[0].pth' (did you mean 'path'?)"),
])
def test_bad_configs_give_one_clear_line(section, expected):
    assert expected in error({**raw(), **section})


def test_numbers_written_without_a_dot_are_accepted():
    # PyYAML reads 1e-4 as a string; a float field takes it
    cfg = parse_config(yaml.safe_load("name: t\ndata: {train: [{path: T91}]}\n"
                                      "optim: {generator: {lr: 1e-4}}"))
    assert cfg.optim["generator"].lr == pytest.approx(1e-4)


def test_overrides_set_nested_keys_lists_and_items():
    data = raw()
    apply_overrides(data, ["train.iterations=7", "optim.generator.lr=3e-4", "val.sets=[Set5, x]",
                           "data.train.0.weight=2", "model.kwargs.num_feat=8", "name=other"])
    cfg = parse_config(data)
    assert cfg.train.iterations == 7 and cfg.optim["generator"].lr == pytest.approx(3e-4)
    assert cfg.val.sets == ["Set5", "x"] and cfg.data.train[0].weight == 2.0
    assert cfg.model.kwargs == {"num_feat": 8} and cfg.name == "other"
    for bad, message in [("iterations", "key.sub=value"), ("data.train.5.weight=1", "no item 5"),
                         ("name.x=1", "is not a mapping")]:
        with pytest.raises(BlindSRError, match=message):
            apply_overrides(raw(), [bad])


def test_load_config_names_run_after_file_and_checks_paths(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text(f"data:\n  train: [{{path: {tmp_path}}}]\n")
    cfg = load_config(path, ["train.batch=4"])
    assert cfg.name == "exp" and cfg.train.batch == 4
    with pytest.raises(BlindSRError, match=r"data.train\[0\].path: dataset .*not found"):
        load_config(path, [f"data.train=[{{path: {tmp_path / 'missing'}}}]"])
    with pytest.raises(BlindSRError, match="model.init: checkpoint not found"):
        load_config(path, ["model.init=nope.safetensors"])
    with pytest.raises(BlindSRError, match="config file not found"):
        load_config(tmp_path / "none.yaml")
    (tmp_path / "bad.yaml").write_text("train: [1,\n")
    with pytest.raises(BlindSRError, match="invalid YAML at line"):
        load_config(tmp_path / "bad.yaml")
    with pytest.raises(BlindSRError, match="is a folder, not a file"):
        load_config(tmp_path)
    (tmp_path / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe\x00")
    with pytest.raises(BlindSRError, match="not a text file"):
        load_config(tmp_path / "image.png")


def test_overrides_given_as_one_string_are_refused(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text("data: {train: [{path: T91}]}\n")
    with pytest.raises(BlindSRError, match="overrides must be a list of key=value strings, got "
                                           "the string 'train.iterations=2'"):
        load_config(path, "train.iterations=2", paths=False)


def test_a_key_given_twice_is_refused(tmp_path):
    path = tmp_path / "twice.yaml"
    path.write_text("train:\n  batch: 2\nval: {every: 0}\ntrain:\n  iterations: 2\n")
    with pytest.raises(BlindSRError, match="twice.yaml: invalid YAML at line 4: duplicate "
                                           "key 'train'"):
        load_config(path, paths=False)
    path.write_text("base: &b {every: 0, seed: 1}\nval:\n  <<: *b\n  seed: 2\n")
    assert read_yaml(path)["val"] == {"every": 0, "seed": 2}  # a merged key may be set again


def test_validation_sets_without_images_are_refused_before_training(tmp_path, shared):
    path = tmp_path / "exp.yaml"
    path.write_text(f"data:\n  train: [{{path: {tmp_path}}}]\n")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BlindSRError, match=r"val.sets\[0\]: dataset folder .*empty has no"):
        load_config(path, ["val.every=10", f"val.sets=[{tmp_path / 'empty'}]"])
    with pytest.raises(BlindSRError, match=r"val.sets\[0\]: dataset Set5\[5:9\] selects none"):
        load_config(path, ["val.every=10", "val.sets=['Set5[5:9]']"])


def test_home_folders_expand_in_paths_and_unknown_users_are_one_line(tmp_path, monkeypatch):
    path = tmp_path / "exp.yaml"
    path.write_text(f"data:\n  train: [{{path: {tmp_path}}}]\n")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert load_config(path, ["output_dir=~/runs"]).run_dir == tmp_path / "runs" / "exp"
    with pytest.raises(BlindSRError, match="model.init: cannot expand '~nosuchuser' in "
                                           "~nosuchuser/x.safetensors: no such user"):
        load_config(path, ["model.init=~nosuchuser/x.safetensors"])


def test_a_config_that_leaves_out_data_names_the_missing_section(tmp_path):
    path = tmp_path / "empty.yaml"
    path.write_text("")
    with pytest.raises(BlindSRError, match=r"^config data.train: list at least one dataset"):
        load_config(path)


def test_resolved_config_round_trips(tmp_path):
    cfg = parse_config(raw(optim={"generator": {"schedule": {"type": "multistep",
                                                             "milestones": [3]}}}))
    path = save_config(cfg, tmp_path / "config.yaml")
    again = parse_config(yaml.safe_load(path.read_text()))
    assert again == cfg and dump_config(again) == dump_config(cfg)
    assert isinstance(again, Config) and again.optim["generator"].schedule.milestones == [3]


@pytest.mark.parametrize("path", ALL_CONFIGS,
                         ids=[str(p.relative_to(ROOT / "configs")) for p in ALL_CONFIGS])
def test_shipped_configs_are_valid(path):
    assert path.read_text().startswith("#"), "each config starts with a comment saying its use"
    cfg = load_config(path, paths=False)
    if path in CONFIGS:
        assert cfg.name == path.stem


def test_configs_sharing_a_run_name_are_the_same_run():
    by_name: dict[str, set[str]] = {}
    for path in ALL_CONFIGS:
        cfg = load_config(path, paths=False)
        by_name.setdefault(cfg.name, set()).add(dump_config(cfg))
    clashes = [name for name, dumps in by_name.items() if len(dumps) > 1]
    assert not clashes, f"different configs write the same run folder: {clashes}"


def test_configs_that_start_from_a_shipped_model_fit_its_weights():
    from blindsr.shipped import shipped_models
    from blindsr.train import build_generator

    inits = {p: load_config(p, paths=False).model.init for p in ALL_CONFIGS}
    # a shipped model by name (works from any folder and any install) or a run trained first
    odd = {p.name: i for p, i in inits.items()
           if i is not None and i not in shipped_models() and not str(i).startswith("runs/")}
    assert not odd, odd
    starting = [p for p, init in inits.items() if init in shipped_models()]
    assert len(starting) >= 6  # finetune_x4, andgan (andnet-x4), AMGAN / AMNet-RL (amnet-x4)
    for path in starting:
        cfg = load_config(path, paths=False)
        shipped = shipped_models()[cfg.model.init].weights
        net = build_generator(cfg)  # a strict load: the config's model is the shipped one's
        assert net.arch_name == load_config(path, paths=False).model.arch, (path, shipped)


def test_shipped_configs_find_the_shared_data(shared, generated_data, monkeypatch):
    monkeypatch.setenv("BLINDSR_DATA", str(shared / "datasets"))
    # every dataset and validation set resolves (model.init, and the growth from it, points at
    # the run of an earlier stage: absent in a checkout)
    for path in ALL_CONFIGS:
        load_config(path, ["model.init=null", "model.grow=false"])
