"""The one configuration loader (cxrdistill.storage.config): every command family layers its settings the same way —
defaults < YAML < options < --set — and reports a malformed --set and an invalid key with the same messages."""
from __future__ import annotations

import pickle
import re
from pathlib import Path

import pytest
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from cxrdistill.cli import main
from cxrdistill.errors import InputError, config_problems
from cxrdistill.storage.config import (ConfigError, deep_merge, layers, load, parse_set, set_dotted,
                                       validate)

# ------------------------------------------------------------------------------------------------ the pieces


def test_deep_merge_merges_mappings_at_every_depth_and_replaces_the_rest():
    base = {"a": {"b": {"c": 1, "d": 2}, "l": [1, 2]}, "x": 1}
    out = deep_merge(base, {"a": {"b": {"c": 9}, "l": [3]}, "y": {"z": 1}})
    assert out == {"a": {"b": {"c": 9, "d": 2}, "l": [3]}, "x": 1, "y": {"z": 1}}
    assert base["a"]["b"]["c"] == 1  # the inputs are not modified


def test_set_dotted_creates_sections_and_replaces_a_value_in_the_way():
    d = {"train": 5}
    set_dotted(d, "train.lr", 0.1)
    set_dotted(d, "a.b.c", None)
    assert d == {"train": {"lr": 0.1}, "a": {"b": {"c": None}}}


@pytest.mark.parametrize("item, key, value", [
    ("train.lr=0.001", "train.lr", 0.001),
    ("train.epochs=3", "train.epochs", 3),
    ("train.lr=3e-4", "train.lr", "3e-4"),     # YAML 1.1 text; the pydantic model reads it as a number
    ("loss={mse: 1, rkd: 0.5}", "loss", {"mse": 1, "rkd": 0.5}),
    ("tasks=[edema, cardiomegaly]", "tasks", ["edema", "cardiomegaly"]),
    (" student.name = resnet18", "student.name", "resnet18"),
    ("teacher.url=", "teacher.url", None),
    ("name=[not yaml", "name", "[not yaml"),   # not YAML: kept as the text given
    ("expr=a=b", "expr", "a=b"),                # only the first '=' separates
])
def test_parse_set_reads_the_value_as_yaml(item, key, value):
    assert parse_set(item) == (key, value)


@pytest.mark.parametrize("item", ["train.lr", "=3", " . =1", ""])
def test_a_malformed_set_is_one_message_with_an_example(item):
    with pytest.raises(InputError) as e:
        parse_set(item, "fairdi.lam=0.9")
    assert str(e.value) == f"--set {item!r} must look like KEY=VALUE — e.g. --set fairdi.lam=0.9"


class _Inner(BaseModel):
    model_config = ConfigDict(extra="forbid")
    epochs: int = 3
    lr: float = 0.1


class _Cfg(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = "a"
    low: int = 0
    high: int = 1
    train: _Inner = _Inner()

    @model_validator(mode="after")
    def _order(self):
        if self.low > self.high:
            raise ValueError("low must not exceed high")
        return self


def test_layers_keep_the_precedence_and_skip_options_not_given(tmp_path):
    y = tmp_path / "c.yaml"
    y.write_text("name: yaml\ntrain: {epochs: 5}\nlow: 1\n")
    data = layers(defaults={"name": "default", "high": 7, "train": {"lr": 0.5}}, path=y,
                  options={"name": "option", "low": None, "train.epochs": 6}, sets=["name=set"])
    assert data == {"name": "set", "high": 7, "low": 1, "train": {"lr": 0.5, "epochs": 6}}
    # route sends a --set key elsewhere
    assert layers(sets=["fairdi.lam=0.9"], route=lambda k: f"method_params.{k}") == \
        {"method_params": {"fairdi": {"lam": 0.9}}}


def test_validate_names_the_file_every_key_and_the_docs_page(tmp_path):
    y = tmp_path / "c.yaml"
    y.write_text("nmae: x\ntrain: {epochs: many}\nlow: 3\nhigh: 2\n")
    with pytest.raises(ConfigError) as e:
        load(_Cfg, path=y, docs="docs/x.md")
    assert str(e.value) == (f"{y}: invalid config: train.epochs: Input should be a valid integer, unable to parse "
                            "string as an integer; nmae: unknown key (check its spelling) — see the documented keys "
                            "in docs/x.md")
    assert e.value.problems in str(e.value)
    with pytest.raises(ConfigError) as e:  # a check across keys already names its key: not prefixed again
        validate(_Cfg, {"low": 3, "high": 2}, docs="docs/x.md")
    assert str(e.value) == "invalid config: low must not exceed high — see the documented keys in docs/x.md"
    with pytest.raises(ConfigError) as e:  # a section inside a larger configuration
        validate(_Cfg, {"train": {"lrr": 1}}, prefix="fair_distill.options", docs="docs/x.md")
    assert e.value.problems == "fair_distill.options.train.lrr: unknown key (check its spelling)"


def test_a_config_error_survives_pickling():
    """Study stages run in worker processes: their errors cross a process boundary."""
    with pytest.raises(ConfigError) as e:
        validate(_Cfg, {"nmae": 1}, docs="docs/x.md")
    back = pickle.loads(pickle.dumps(e.value))
    assert isinstance(back, ConfigError) and str(back) == str(e.value) and back.problems == e.value.problems


def test_config_problems_agrees_with_pydantic():
    with pytest.raises(ValidationError) as e:
        _Cfg.model_validate({"low": "x", "train": {"lr": "y"}, "extra": 1})
    errors = e.value.errors()
    text = config_problems(e.value, limit=10)
    assert text.count("; ") == len(errors) - 1
    for err in errors:
        assert ".".join(map(str, err["loc"])) in text


# ------------------------------------------------------------------------------- every command family, one key
def _yaml(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "cfg.yaml"
    p.write_text(text)
    return p


def _distill(tmp_path, layer):
    from cxrdistill.training.run_config import load_config

    path = _yaml(tmp_path, "train: {epochs: 3}\n") if layer >= 1 else None
    cfg = load_config("distill", path, {"train.epochs": 4 if layer >= 2 else None},
                      ["train.epochs=5"] if layer >= 3 else None)
    return cfg.train.epochs


def _probe(tmp_path, layer):
    from cxrdistill.training.run_config import load_config

    path = _yaml(tmp_path, "head: mlp3\n") if layer >= 1 else None
    return load_config("probe", path, {"head": "mlp5" if layer >= 2 else None},
                       ["head=linear2"] if layer >= 3 else None).head


def _finetune(tmp_path, layer):
    from cxrdistill.training.run_config import load_config

    path = _yaml(tmp_path, "backbone: resnet34\n") if layer >= 1 else None
    return load_config("finetune", path, {"backbone": "resnet50" if layer >= 2 else None},
                       ["backbone=densenet121"] if layer >= 3 else None).backbone


def _study(tmp_path, layer):
    from cxrdistill.commands.study import _overrides
    from cxrdistill.study.config import load_config

    path = _yaml(tmp_path, "seed: 3\n") if layer >= 1 else None
    return load_config(path, _overrides(["seed=5"] if layer >= 3 else None, 4 if layer >= 2 else None)).seed


def _fair(tmp_path, layer):
    from cxrdistill.commands.fair import _build_config

    path = _yaml(tmp_path, "seeds: [3]\n") if layer >= 1 else None
    run = {"config": path, "set_": ["seeds=[5]"] if layer >= 3 else None, "epochs": None, "batch_size": None,
           "lr": None}
    return _build_config(run, [], "4" if layer >= 2 else None, None, {}).seeds


def _fairkd(tmp_path, layer):
    from cxrdistill.commands.fairkd import build_settings
    from cxrdistill.fairkd.experiment import make_config

    path = _yaml(tmp_path, "teacher: {epochs: 3}\n") if layer >= 1 else None
    data = build_settings(path, {"teacher.epochs": 4 if layer >= 2 else None, "methods": []},
                          ["teacher.epochs=5"] if layer >= 3 else None)
    return make_config(data, path=path).teacher.epochs


def _pretrain(tmp_path, layer):
    from cxrdistill.pretraining.config import PretrainFinetuneConfig, load_config

    path = _yaml(tmp_path, "train: {epochs: 13}\n") if layer >= 1 else None
    cfg = load_config(PretrainFinetuneConfig, path, {"train.epochs": 14 if layer >= 2 else None},
                      ["train.epochs=15"] if layer >= 3 else None)
    assert cfg.train.batch_size == 32  # the rest of a partly given section keeps the model's own defaults
    return cfg.train.epochs


FAMILIES = {  # family → (settings of one key at layer 0..3: defaults, YAML, option, --set)
    "distill": (_distill, [10, 3, 4, 5]),
    "probe": (_probe, ["linear", "mlp3", "mlp5", "linear2"]),
    "finetune": (_finetune, ["resnet18", "resnet34", "resnet50", "densenet121"]),
    "study": (_study, [0, 3, 4, 5]),
    "fair": (_fair, [[0, 1, 2], [3], [4], [5]]),
    "fairkd": (_fairkd, [6, 3, 4, 5]),
    "pretrain": (_pretrain, [3, 13, 14, 15]),
}


@pytest.mark.parametrize("family", FAMILIES)
def test_defaults_yaml_options_set_in_this_order(family, tmp_path):
    get, expected = FAMILIES[family]
    assert [get(tmp_path, layer) for layer in range(4)] == expected


# --------------------------------------------------------------------------- the same errors from the real CLI
def _argv(family: str, tmp: Path, *extra: str) -> list[str]:
    out = str(tmp / "out")
    cohort, root = str(tmp / "cohort.parquet"), str(tmp / "images")
    return {
        "distill": ["distill", "--cohort", cohort, "--images-root", root, "--embeddings", str(tmp / "s"), "--out", out],
        "probe": ["probe", "--cohort", cohort, "--embeddings", str(tmp / "s"), "--out", out],
        "finetune": ["finetune", "--cohort", cohort, "--images-root", root, "--out", out],
        "study": ["study", str(tmp / "study.yaml"), "--out", out],
        "fair": ["fair", "run", "--cohort", cohort, "--embeddings", str(tmp / "s"), "--attribute", "sex",
                 "--tasks", "edema", "--out", out],
        "fairkd": ["fair", "distill-study", "--out", out],
        "pretrain": ["pretrain", "run", "--cohort", cohort, "--images-root", root, "--out", str(tmp / "x.safetensors")],
    }[family] + list(extra)


def _error(argv, capsys) -> str:
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("family", FAMILIES)
def test_a_malformed_set_gives_the_one_message(family, tmp_path, capsys):
    (tmp_path / "study.yaml").write_text("name: t\n")
    err = _error(_argv(family, tmp_path, "--set", "train.lr"), capsys)
    assert re.search(r"--set 'train\.lr' must look like KEY=VALUE — e\.g\. --set [\w.]+=\S+$", err), err


DOCS = {"distill": "docs/distill.md", "probe": "docs/distill.md", "finetune": "docs/distill.md",
        "study": "docs/study.md, 'Study configuration'", "fair": "docs/fairness.md", "fairkd": "docs/fairkd.md",
        "pretrain": "docs/pretraining.md"}
KEY = {"study": "distill.train.lrr", "fairkd": "student.lrr"}  # keys that are misspelt in each family


@pytest.mark.parametrize("family", FAMILIES)
def test_a_misspelt_key_gives_the_same_message_from_set_and_from_yaml(family, tmp_path, capsys):
    key = KEY.get(family, "train.lrr")
    head, leaf = key.rsplit(".", 1)
    expected = f"invalid config: {key}: unknown key (check its spelling) — see the documented keys in {DOCS[family]}"
    (tmp_path / "study.yaml").write_text("name: t\n")
    assert _error(_argv(family, tmp_path, "--set", f"{key}=1"), capsys).endswith(expected)
    nested = "".join(f"{p}: {{" for p in head.split(".")) + f"{leaf}: 1" + "}" * len(head.split("."))
    yaml_file = _yaml(tmp_path, nested + "\n")
    if family == "study":
        yaml_file.write_text(f"name: t\n{nested}\n")
        argv = _argv(family, tmp_path)
        argv[1] = str(yaml_file)
    else:
        argv = _argv(family, tmp_path, "--config", str(yaml_file))
    assert _error(argv, capsys).endswith(f"{yaml_file}: {expected}")
