"""Every study config shown in the docs validates, and the packaged demo config is valid."""
import re
from importlib.resources import files
from pathlib import Path

import pytest
import yaml

from cxrdistill.errors import InputError
from cxrdistill.study.config import load_config

DOCS = Path(__file__).resolve().parents[2] / "docs"


def _study_blocks():
    text = "\n".join(p.read_text(encoding="utf-8") for p in sorted(DOCS.glob("*.md")))
    blocks = re.findall(r"```yaml\n(.*?)```", text, flags=re.S)
    return [b for b in blocks if re.search(r"^name:", b, flags=re.M) and re.search(r"^cohort:", b, flags=re.M)]


def test_docs_have_the_demo_and_the_real_study_examples():
    names = [yaml.safe_load(b)["name"] for b in _study_blocks()]
    assert "demo" in names and "chexpert-cxrfm" in names


@pytest.mark.parametrize("block", _study_blocks())
def test_documented_study_configs_validate(block, tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text(block)
    cfg = load_config(p)
    assert cfg.tasks


def test_packaged_demo_config_validates():
    cfg = load_config(str(files("cxrdistill") / "configs" / "demo.yaml"))
    assert cfg.cohort.source == "synth" and cfg.teacher.serve


@pytest.mark.parametrize("override, where", [({"distill.train.lrr": 1}, "distill.train.lrr"),
                                             ({"teacher.pretrain.epochz": 1}, "teacher.pretrain.epochz"),
                                             ({"split.fractions": [0.5, 0.5, 0.5]},
                                              "invalid config: split.fractions must sum to 1"),
                                             ({"cohort.source": "chexpert"}, "reader_args"),
                                             ({"fair_distill.options": {"n": 100}},
                                              "invalid config: fair_distill.options: n is only for the synthetic"),
                                             ({"fair_distill.options": {"student": {"epochz": 2}}}, "student.epochz"),
                                             ({"distill_pool.source": "synth"}, "distill_pool.n: give the number"),
                                             ({"distill_pool.source": "dir"}, "distill_pool.dir"),
                                             ({"distill_pool.sorce": "dir"}, "distill_pool.sorce"),
                                             ({"jobs": 0}, "jobs")])
def test_bad_configs_name_the_key(override, where):
    with pytest.raises(InputError, match=re.escape(where)):
        load_config(None, override)
