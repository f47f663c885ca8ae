"""Scenario configs: named registry, YAML loading with clear one-line errors, ``base:`` overrides."""
from __future__ import annotations

import pytest

from cxrdistill.errors import InputError
from cxrdistill.synth import SCENARIOS, Scenario, load_scenario


def _yaml(tmp_path, text, name="s.yaml"):
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def test_yaml_roundtrip_and_resolved_knobs(tmp_path):
    p = _yaml(tmp_path, """
name: my-scenario
attribute: race
sites:
  A: {marker: R}
  B: {contrast: 0.6, noise: 0.07, ap_share: 0.8, marker: B, marker_corner: top_right}
groups:
  White: {share: 0.7}
  Black: {share: 0.2, sites: {B: 1.0}, underdiagnosis: {all: 0.3, edema: 0.5}, prevalence: {cardiomegaly: 1.5}}
  Asian: {share: 0.1, manifestation: {pleural_effusion: laminar}, visibility: {pneumothorax: 0.5}}
""")
    sc = load_scenario(p)
    assert isinstance(sc, Scenario) and sc.name == "my-scenario"
    r = sc.resolved()
    assert r["Black"]["underdiagnosis"]["edema"] == 0.5 and r["Black"]["underdiagnosis"]["pneumothorax"] == 0.3
    assert r["White"]["underdiagnosis"]["edema"] == 0.0
    assert r["Black"]["prevalence"]["cardiomegaly"] == pytest.approx(1.5 * sc.prevalence("cardiomegaly"))
    assert r["Black"]["acquisition_mean"]["ap_share"] == 0.8 and r["White"]["acquisition_mean"]["ap_share"] == 0.3
    assert r["Asian"]["manifestation"]["pleural_effusion"] == "laminar"
    assert r["Asian"]["visibility"]["pneumothorax"] == 0.5
    assert load_scenario(sc.model_dump()) == sc


def test_base_override(tmp_path):
    p = _yaml(tmp_path, "base: underdiagnosis\nname: ud30\ngroups:\n  Female: {underdiagnosis: {all: 0.3}}\n")
    sc = load_scenario(p)
    assert sc.name == "ud30" and sc.groups["Female"].underdiagnosis == {"all": 0.3}
    assert sc.groups["Female"].share == 0.5 and "Male" in sc.groups


def test_base_override_replaces_a_groups_site_mix(tmp_path):
    """A group's ``sites`` over a base is the whole mix, not merged into the base's (which would keep site A)."""
    p = _yaml(tmp_path, "base: acquisition\ngroups:\n  Black: {sites: {B: 1.0}}\n")
    sc = load_scenario(p)
    assert sc.groups["Black"].sites == {"B": 1.0}
    assert sc.resolved()["Black"]["sites"] == {"B": 1.0}
    assert sc.groups["White"].sites == {"A": 0.95, "B": 0.05}  # groups not named keep the base's mix
    assert sc.sites["B"].contrast == 0.55  # site definitions still merge: only the mix is replaced
    p = _yaml(tmp_path, "base: acquisition\nsites: {B: {noise: 0.1}}\n")
    sc = load_scenario(p)
    assert sc.sites["B"].noise == 0.1 and sc.sites["B"].contrast == 0.55


@pytest.mark.parametrize("text, expect", [
    ("attribute: sex\ngroups:\n  Male: {share: 0.5}\n  Female: {share: 0.5, underdiagnosis: {edemaa: 0.3}}\n",
     "unknown finding 'edemaa'"),
    ("attribute: sex\ngroupz: {}\n", "groupz: unknown key"),
    ("attribute: sex\ngroups:\n  Male: {share: 0.5, sharee: 1}\n  Female: {share: 0.5}\n",
     "groups.Male.sharee: unknown key"),
    ("attribute: sex\ngroups:\n  Male: {share: 0.7}\n  Female: {share: 0.5}\n", "shares must sum to 1"),
    ("attribute: race\ngroups:\n  Male: {share: 1.0}\n", "not a value of attribute 'race'"),
    ("attribute: sex\ngroups:\n  Male: {share: 1.0, sites: {Z: 1}}\n", "site 'Z' which is not defined"),
    ("attribute: sex\ngroups:\n  Male: {share: 1.0, underdiagnosis: {all: 1.5}}\n", "must be in [0, 1]"),
    ("attribute: sex\ngroups:\n  Male: {share: 1.0, manifestation: {pleural_effusion: wavy}}\n",
     "unknown variant 'wavy'"),
    ("attribute: sex\nsites: {A: {marker: '#'}}\ngroups:\n  Male: {share: 1.0}\n", "not drawable"),
    ("attribute: sex\ngroups: [\n", "not valid YAML (line"),
    ("- just\n- a list\n", "must be a mapping"),
    ("base: nope\n", "base scenario 'nope' is unknown"),
])
def test_invalid_yaml_gives_one_clear_line(tmp_path, text, expect):
    p = _yaml(tmp_path, text)
    with pytest.raises(InputError) as e:
        load_scenario(p)
    msg = str(e.value)
    assert expect in msg and str(p) in msg and "\n" not in msg


def test_unknown_name_and_missing_file(tmp_path):
    with pytest.raises(InputError, match="unknown scenario 'nope'.*underdiagnosis"):
        load_scenario("nope")
    with pytest.raises(InputError, match="not found"):
        load_scenario(tmp_path / "missing.yaml")


def test_named_scenarios_plant_what_they_say():
    def mech(name):
        return SCENARIOS.create(name).resolved()

    assert all(v == 0 for g in mech("none").values() for v in g["underdiagnosis"].values())
    assert mech("underdiagnosis")["Female"]["underdiagnosis"]["edema"] > 0.3
    acq = mech("acquisition")
    assert acq["Black"]["acquisition_mean"]["contrast"] < acq["White"]["acquisition_mean"]["contrast"] - 0.2
    assert mech("shortcut")["Female"]["shortcut"]["finding"] == "pneumothorax"
    assert mech("manifestation")["Black"]["manifestation"]["pleural_effusion"] == "laminar"
    mixed = mech("mixed")
    assert mixed["Black"]["share"] < 0.3 and mixed["Black"]["underdiagnosis"]["edema"] > 0
    pre = SCENARIOS.create("pretrain")
    assert set(pre.sites).isdisjoint(SCENARIOS.create("acquisition").sites)


def test_mechanisms_list_every_planted_knob_and_nothing_neutral():
    rows = SCENARIOS.create("mixed").mechanisms()
    by = {(r["group"], r["mechanism"]): r["planted"] for r in rows}
    assert by[("Black", "underdiagnosis")] == "every disease 30% of positives labelled 0"
    assert by[("Black", "acquisition sites")] == "site A 30% · site B 70%"
    assert "pneumothorax" in by[("White", "shortcut")] and "swapped" in by[("White", "shortcut")]
    assert by[("Asian", "manifestation")].startswith("pleural_effusion drawn laminar")
    assert ("White", "underdiagnosis") not in by and ("site B", "acquisition") in by
    neutral = SCENARIOS.create("none").mechanisms()
    assert {r["mechanism"] for r in neutral} == {"representation"}


def test_the_built_in_scenarios_file_is_the_user_format():
    """Every named scenario comes from configs/synth_scenarios.yaml and loads from that file as a user's would;
    the known-answer controls share one cue and one faint effusion (YAML anchors), and conflict_hidden is conflict
    with race hidden."""
    import yaml

    from cxrdistill.synth.scenario import NAMED_SCENARIOS_FILE, scenario_from_dict

    entries = yaml.safe_load(NAMED_SCENARIOS_FILE.read_text(encoding="utf-8"))
    assert sorted(entries) == SCENARIOS.names()
    for name, entry in entries.items():
        sc = scenario_from_dict({"name": name, **entry})
        assert sc == SCENARIOS.create(name) and sc.name == name and sc.description
    conflict, hidden = SCENARIOS.create("conflict"), SCENARIOS.create("conflict_hidden")
    assert hidden.demographics == 0 and conflict.demographics == 1
    assert hidden.model_dump(exclude={"name", "description", "demographics"}) == \
        conflict.model_dump(exclude={"name", "description", "demographics"})
    white, black = conflict.groups["White"].shortcut, conflict.groups["Black"].shortcut
    assert (white.p_positive, white.p_negative, black.p_positive, black.p_negative) == (0.1, 0.5, 0.9, 0.1)
    assert white.model_dump(exclude={"p_positive", "p_negative"}) == black.model_dump(exclude={"p_positive",
                                                                                                "p_negative"})
    assert black.test == "same" and black.shape == "triangle"
    assert SCENARIOS.create("spurious").groups["Black"].visibility == {"pleural_effusion": 0.45}
