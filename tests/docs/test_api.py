"""The public API at the package top: fast to import, every function documented in one style, and working."""
from __future__ import annotations

import inspect
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

import cxrdistill
from cxrdistill.errors import InputError

FUNCTIONS = [n for n in cxrdistill.__all__ if n != "__version__"]


def test_import_is_light():
    code = ("import sys, cxrdistill\n"
            "f = cxrdistill.audit\n"
            "print([m for m in ('torch', 'pandas', 'timm', 'sklearn') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", out


@pytest.mark.parametrize("name", FUNCTIONS)
def test_public_function_docstring(name):
    fn = getattr(cxrdistill, name)
    assert callable(fn) and fn.__module__ == "cxrdistill.api"
    doc = inspect.getdoc(fn)
    for section in ("Parameters\n----------", "Returns\n-------", "Raises\n------"):
        assert section in doc, (name, section)
    documented = set(re_names(doc.split("Returns\n-------")[0]))
    for p in inspect.signature(fn).parameters:
        assert p in documented, (name, p)
    assert not any(w in doc for w in ("GUIDE", "issue ", "seed 00")), name


def re_names(text: str) -> list[str]:
    """Parameter names of a numpy-style section: lines ``name`` or ``a, b`` or ``**kw`` at the section's indent."""
    out = []
    for line in text.splitlines():
        if line and not line.startswith(" ") and not line.startswith("-"):
            out += [w.strip().lstrip("*") for w in line.split(":")[0].split(",")]
    return out


def test_unknown_attribute_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        cxrdistill.nope  # noqa: B018
    assert set(FUNCTIONS) <= set(dir(cxrdistill))


def test_audit_from_a_dataframe_matches_sklearn(tmp_path):
    rng = np.random.default_rng(0)
    n = 600
    sex = rng.choice(["F", "M"], n)
    y = rng.binomial(1, 0.3, n)
    p = rng.normal(size=n) + y * np.where(sex == "F", 0.6, 1.6)
    df = pd.DataFrame({"image_id": [f"i{k}" for k in range(n)], "sex": sex, "y_eff": y, "p_eff": p})
    res = cxrdistill.audit(df, ["sex"], n_boot=50, out=tmp_path / "a")
    auc = res.by_group.query("metric == 'auc' and attribute == 'sex'").set_index("group")["value"]
    for g in ("F", "M"):
        assert auc[g] == pytest.approx(roc_auc_score(y[sex == g], p[sex == g]), abs=1e-12)
    assert auc["M"] > auc["F"]
    assert (tmp_path / "a" / "audit.json").is_file() and (tmp_path / "a" / "report.html").is_file()
    df.loc[3, "image_id"] = df.loc[4, "image_id"]
    with pytest.raises(InputError, match="duplicate image_id"):
        cxrdistill.audit(df, ["sex"], n_boot=0)


def test_synthetic_cohort_is_what_synthesize_writes(tmp_path):
    table = cxrdistill.synthetic_cohort(30, seed=1, scenario="underdiagnosis")
    csv = cxrdistill.synthesize(tmp_path / "s", n=30, size=16, seed=1, scenario="underdiagnosis")
    cohort = cxrdistill.import_cohort("chexpert", csv=csv, images_root=csv.parent)
    assert sorted(cohort["image_id"]) == sorted(table["image_id"])
    merged = cohort.merge(table, on="image_id", suffixes=("", "_t"))
    assert (merged["sex"] == merged["sex_t"]).all()
    assert merged["pleural_effusion"].fillna(-9).eq(merged["pleural_effusion_t"].fillna(-9)).all()
    split = cxrdistill.split_cohort(cohort, fractions=(0.5, 0.25, 0.25), seed=0, out=tmp_path / "c.parquet")
    assert set(split["split"]) == {"train", "val", "test"}
    assert split.groupby("patient_id")["split"].nunique().max() == 1
    assert pd.read_parquet(tmp_path / "c.parquet")["split"].tolist() == split["split"].tolist()
    with pytest.raises(InputError):
        cxrdistill.synthetic_cohort(10, scenario="no_such_scenario")


def test_docstring_examples_run(tmp_path, monkeypatch):
    """The examples in the public functions' docstrings run and print what they show."""
    import doctest

    from cxrdistill import api

    monkeypatch.chdir(tmp_path)
    tests = [t for t in doctest.DocTestFinder().find(api) if t.examples]
    assert len(tests) >= 6
    runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE)
    for t in tests:
        runner.run(t)
    assert runner.failures == 0, runner.summarize()


def test_every_function_reaches_its_implementation():
    """The functions import their implementation when called: every such import names a module and attribute that
    exist (a renamed function fails here, not in a user's session)."""
    import ast
    import importlib

    from cxrdistill import api

    tree = ast.parse(inspect.getsource(api))
    targets = [(node.module, a.name) for fn in tree.body if isinstance(fn, ast.FunctionDef)
               for node in ast.walk(fn) if isinstance(node, ast.ImportFrom) and node.module
               and node.module.startswith("cxrdistill") for a in node.names]
    assert len(targets) >= 10
    for module, name in targets:
        assert hasattr(importlib.import_module(module), name), f"{module}.{name}"


@pytest.mark.parametrize("call, impls", [
    (lambda: cxrdistill.run_study("s.yaml", "out", overrides={"size": 32}, jobs=1),
     ["cxrdistill.study.run:run_study"]),
    (lambda: cxrdistill.distill("c.parquet", "emb", "out", images_root="img", student="resnet18", epochs=1, size=32,
                                seed=1, device="cpu"),
     ["cxrdistill.training.run_config:load_config", "cxrdistill.training.runs:run_distill"]),
    (lambda: cxrdistill.probe("c.parquet", "out", embeddings="emb", head="linear", epochs=1, seed=1),
     ["cxrdistill.training.run_config:load_config", "cxrdistill.training.runs:run_probe"]),
    (lambda: cxrdistill.evaluate("c.parquet", "p.parquet", embeddings="emb", head="h.safetensors"),
     ["cxrdistill.training.runs:run_evaluate"]),
    (lambda: cxrdistill.embed("timm:resnet10t", "c.parquet", "img", "out", size=32, splits=["test"]),
     ["cxrdistill.teachers.client:embed_cohort"]),
    (lambda: cxrdistill.compare(["a", "b"], ["teacher", "student"]), ["cxrdistill.evaluation.compare:compare_dirs"]),
])
def test_functions_call_their_implementation_with_valid_arguments(call, impls, monkeypatch):
    """Each wrapper's call matches its implementation's signature (checked by binding, without running it)."""
    import importlib

    calls = []
    for spec in impls:
        module, name = spec.split(":")
        mod = importlib.import_module(module)
        real = getattr(mod, name)

        def stub(*args, _real=real, _name=name, **kwargs):
            inspect.signature(_real).bind(*args, **kwargs)  # raises TypeError on a bad argument
            calls.append(_name)
            return {}

        monkeypatch.setattr(mod, name, stub)
    call()
    assert calls == [s.split(":")[1] for s in impls]
