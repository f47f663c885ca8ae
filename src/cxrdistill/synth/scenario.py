"""Bias scenarios for the synthetic cohort: every planted mechanism is a knob per group of one attribute.

A ``Scenario`` is a pydantic model (``extra="forbid"``, so a misspelled key fails), loadable from YAML or by name
from the ``SCENARIOS`` registry. The mechanisms:

* representation — ``groups.<g>.share`` (share of patients);
* prevalence — ``groups.<g>.prevalence`` (multiplier of the base prevalence per finding, ``all`` for every one);
* underdiagnosis — ``groups.<g>.underdiagnosis`` (fraction of true positives labelled 0; Seyyed-Kalantari et al.
  2021, Nat Med 27:2176);
* acquisition shift — ``groups.<g>.sites`` (mix of sites, each with contrast, noise, AP share and a corner marker);
* spurious shortcut — ``groups.<g>.shortcut`` (a marker correlated with a finding in the ``train`` phase only);
* manifestation — ``groups.<g>.manifestation`` (finding → rendering variant) and ``visibility`` (intensity factor).
"""
from __future__ import annotations

import os
from functools import partial
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator,
                      model_validator)

from cxrdistill.cohorts.schema import CHEXPERT_FINDINGS
from cxrdistill.errors import InputError, config_problems
from cxrdistill.registry import Registry
from cxrdistill.synth.glyphs import GLYPHS

FINDINGS: list[str] = list(CHEXPERT_FINDINGS)
# Findings that can be present (``no_finding`` is derived: no disease among DISEASES).
PATHOLOGIES: list[str] = [f for f in FINDINGS if f != "no_finding"]
DISEASES: list[str] = [f for f in PATHOLOGIES if f != "support_devices"]
GROUP_VALUES: dict[str, tuple[str, ...]] = {"sex": ("Male", "Female"), "race": ("White", "Black", "Asian")}
CORNERS = ("top_left", "top_right", "bottom_left", "bottom_right")
Corner = Literal["top_left", "top_right", "bottom_left", "bottom_right"]

# Base prevalence of each finding's own component (see sample.py for how derived findings are built).
DEFAULT_PREVALENCE: dict[str, float] = {
    "enlarged_cardiomediastinum": 0.06,  # own widened mediastinum; cardiomegaly also counts
    "cardiomegaly": 0.20,
    "lung_opacity": 0.14,  # own patchy opacity; consolidation also counts
    "lung_lesion": 0.08,
    "edema": 0.16,
    "consolidation": 0.14,
    "pneumonia": 0.45,  # share of consolidations that are pneumonia (plus a few without consolidation)
    "atelectasis": 0.14,
    "pneumothorax": 0.14,
    "pleural_effusion": 0.22,
    "pleural_other": 0.04,
    "fracture": 0.05,
    "support_devices": 0.26,
}

# Rendering variants per finding; the first is the default look.
MANIFESTATIONS: dict[str, tuple[str, ...]] = {
    "pleural_effusion": ("meniscus", "laminar"),
    "pneumothorax": ("apical", "subtle"),
    "consolidation": ("lobar", "diffuse"),
    "edema": ("perihilar", "interstitial"),
    "cardiomegaly": ("globular", "subtle"),
    "lung_lesion": ("nodule", "faint"),
    "lung_opacity": ("patchy", "faint"),
    "atelectasis": ("plate", "faint"),
}


def _check_findings(d: dict[str, Any], allowed: list[str], what: str, allow_all: bool = True) -> dict[str, Any]:
    ok = set(allowed) | ({"all"} if allow_all else set())
    bad = [k for k in d if k not in ok]
    if bad:
        raise ValueError(f"unknown finding {bad[0]!r} in {what}; use one of: {', '.join(sorted(ok))}")
    return d


def _check_factors(d: dict[str, float], what: str, noun: str, hi: float) -> dict[str, float]:
    """Known findings (or ``all``) in ``what``, each value in [0, hi]; ``noun`` names one value in the error."""
    _check_findings(d, PATHOLOGIES, what)
    for k, x in d.items():
        if not 0 <= x <= hi:
            raise ValueError(f"{noun} for {k!r} must be in [0, {hi}], got {x}")
    return d


# A group's per-finding factor tables: what one value is called in an error, and its upper bound.
_FACTOR_LIMITS: dict[str, tuple[str, float]] = {"prevalence": ("prevalence multiplier", 10),
                                                "underdiagnosis": ("underdiagnosis rate", 1),
                                                "visibility": ("visibility", 5)}


class Site(BaseModel):
    """An acquisition site (scanner + protocol): exposure, noise, share of AP views and a lead marker in a corner."""

    model_config = ConfigDict(extra="forbid")
    contrast: float = Field(1.0, gt=0, le=3, description="multiplier of image contrast")
    brightness: float = Field(0.0, ge=-0.5, le=0.5, description="added to the [0,1] image")
    noise: float = Field(0.025, ge=0, le=0.5, description="std of detector noise on the [0,1] image")
    blur: float = Field(0.0, ge=0, le=4, description="extra detector blur, sigma in pixels at 128 px")
    ap_share: float = Field(0.3, ge=0, le=1, description="probability of an AP (portable) view")
    marker: str = Field("", max_length=4, description="letters/digits drawn in a corner (lead marker)")
    marker_corner: Corner = "top_left"
    marker_shape: Literal["none", "box", "circle"] = "none"

    @field_validator("marker")
    @classmethod
    def _glyphs(cls, v: str) -> str:
        bad = [c for c in v.upper() if c not in GLYPHS]
        if bad:
            raise ValueError(f"marker character {bad[0]!r} is not drawable; use A-Z and 0-9")
        return v.upper()


class Shortcut(BaseModel):
    """A marker whose presence follows ``finding`` in the train phase (patients with ``synth_shortcut_phase`` =
    ``train``) and is flipped (or random) in the test phase, so that a model relying on it fails at test time."""

    model_config = ConfigDict(extra="forbid")
    finding: str
    p_positive: float = Field(0.9, ge=0, le=1, description="P(marker | finding) in the train phase")
    p_negative: float = Field(0.1, ge=0, le=1, description="P(marker | no finding) in the train phase")
    test: Literal["flip", "independent", "same"] = Field(
        "flip", description="test phase: flip = swap the two probabilities; independent = their mean for all")
    shape: Literal["disc", "square", "triangle"] = "disc"
    corner: Corner = "bottom_left"

    @field_validator("finding")
    @classmethod
    def _finding(cls, v: str) -> str:
        _check_findings({v: 1}, PATHOLOGIES, "shortcut.finding", allow_all=False)
        return v


class Group(BaseModel):
    """The knobs for one group (e.g. ``Female`` or ``Black``)."""

    model_config = ConfigDict(extra="forbid")
    share: float = Field(..., ge=0, le=1, description="share of patients in this group")
    prevalence: dict[str, float] = Field(default_factory=dict, description="finding (or all) → prevalence multiplier")
    underdiagnosis: dict[str, float] = Field(default_factory=dict, description="finding (or all: every disease) → "
                                             "fraction of true positives labelled 0")
    sites: dict[str, float] = Field(default_factory=lambda: {"A": 1.0}, description="site → weight")
    shortcut: Shortcut | None = None
    manifestation: dict[str, str] = Field(default_factory=dict, description="finding → rendering variant")
    visibility: dict[str, float] = Field(default_factory=dict, description="finding (or all) → intensity factor")

    @field_validator(*_FACTOR_LIMITS)
    @classmethod
    def _factors(cls, v: dict[str, float], info: ValidationInfo) -> dict[str, float]:
        noun, hi = _FACTOR_LIMITS[info.field_name]
        return _check_factors(v, info.field_name, noun, hi)

    @field_validator("manifestation")
    @classmethod
    def _man(cls, v: dict[str, str]) -> dict[str, str]:
        for f, var in v.items():
            if f not in MANIFESTATIONS:
                raise ValueError(f"no manifestation variants for {f!r}; findings with variants: "
                                 f"{', '.join(sorted(MANIFESTATIONS))}")
            if var not in MANIFESTATIONS[f]:
                raise ValueError(f"unknown variant {var!r} for {f}; use one of: {', '.join(MANIFESTATIONS[f])}")
        return v

    @field_validator("sites")
    @classmethod
    def _sites(cls, v: dict[str, float]) -> dict[str, float]:
        if not v or sum(v.values()) <= 0 or any(x < 0 for x in v.values()):
            raise ValueError("sites needs at least one site with a positive weight")
        return v

    def rate(self, table: dict[str, float], finding: str, default: float) -> float:
        return float(table.get(finding, table.get("all", default)))

    def underdiagnosis_rate(self, finding: str) -> float:
        """``all`` covers the diseases; support devices are underdiagnosed only when named."""
        if finding == "support_devices":
            return float(self.underdiagnosis.get(finding, 0.0))
        return self.rate(self.underdiagnosis, finding, 0.0)


class Scenario(BaseModel):
    """A complete description of a synthetic cohort's planted bias."""

    model_config = ConfigDict(extra="forbid")
    name: str = "custom"
    description: str = ""
    attribute: Literal["sex", "race"] = "sex"
    groups: dict[str, Group]
    sites: dict[str, Site] = Field(default_factory=lambda: {"A": Site(marker="R")})
    base_prevalence: dict[str, float] = Field(default_factory=dict, description="overrides of DEFAULT_PREVALENCE")
    shortcut_train_fraction: float = Field(0.7, gt=0, lt=1, description="share of patients in the train phase")
    female_share: float = Field(0.5, ge=0, le=1, description="P(Female) when the attribute is race")
    race_shares: dict[str, float] = Field(default_factory=lambda: {"White": 0.7, "Black": 0.15, "Asian": 0.15},
                                          description="race mix when the attribute is sex")
    studies_per_patient: float = Field(1.6, ge=1, le=5, description="mean number of studies per patient")
    label_noise: float = Field(1.0, ge=0, le=3, description="scale of the uncertain (-1) label rates")
    demographics: float = Field(1.0, ge=0, le=3, description="how visible sex, race and age are in the images "
                                "(body habitus, breasts, bone density and shape); 1 ≈ as in real radiographs, "
                                "0 = barely")

    @field_validator("base_prevalence")
    @classmethod
    def _base(cls, v: dict[str, float]) -> dict[str, float]:
        _check_findings(v, PATHOLOGIES, "base_prevalence", allow_all=False)
        for k, x in v.items():
            if not 0 <= x <= 0.95:
                raise ValueError(f"base prevalence of {k!r} must be in [0, 0.95], got {x}")
        return v

    @field_validator("race_shares")
    @classmethod
    def _races(cls, v: dict[str, float]) -> dict[str, float]:
        bad = [k for k in v if k not in GROUP_VALUES["race"]]
        if bad:
            raise ValueError(f"unknown race {bad[0]!r}; use {', '.join(GROUP_VALUES['race'])}")
        if abs(sum(v.values()) - 1) > 0.01 or any(x < 0 for x in v.values()):
            raise ValueError(f"race_shares must be non-negative and sum to 1 (got {sum(v.values()):.3f})")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> "Scenario":
        allowed = GROUP_VALUES[self.attribute]
        bad = [g for g in self.groups if g not in allowed]
        if bad:
            raise ValueError(f"group {bad[0]!r} is not a value of attribute {self.attribute!r}; "
                             f"use {', '.join(allowed)}")
        total = sum(g.share for g in self.groups.values())
        if not self.groups or abs(total - 1) > 0.01:
            raise ValueError(f"group shares must sum to 1 (got {total:.3f})")
        for gname, g in self.groups.items():
            missing = [s for s in g.sites if s not in self.sites]
            if missing:
                raise ValueError(f"group {gname!r} uses site {missing[0]!r} which is not defined in sites "
                                 f"({', '.join(self.sites)})")
        return self

    # ------------------------------------------------------------------ derived values
    def prevalence(self, finding: str) -> float:
        return float(self.base_prevalence.get(finding, DEFAULT_PREVALENCE[finding]))

    def resolved(self) -> dict[str, Any]:
        """Every knob with its effective value per group (what ``scenario.json`` records)."""
        out: dict[str, Any] = {}
        for gname, g in self.groups.items():
            w = {k: v / sum(g.sites.values()) for k, v in g.sites.items()}
            mix = {key: sum(w[s] * getattr(self.sites[s], key) for s in w)
                   for key in ("contrast", "brightness", "noise", "blur", "ap_share")}
            out[gname] = {
                "share": g.share / sum(x.share for x in self.groups.values()),
                "prevalence_multiplier": {f: g.rate(g.prevalence, f, 1.0) for f in PATHOLOGIES},
                "prevalence": {f: min(0.95, self.prevalence(f) * g.rate(g.prevalence, f, 1.0)) for f in PATHOLOGIES},
                "underdiagnosis": {f: g.underdiagnosis_rate(f) for f in PATHOLOGIES},
                "sites": w,
                "acquisition_mean": mix,
                "shortcut": g.shortcut.model_dump() if g.shortcut else None,
                "manifestation": {f: g.manifestation.get(f, MANIFESTATIONS[f][0]) for f in MANIFESTATIONS},
                "visibility": {f: g.rate(g.visibility, f, 1.0) for f in PATHOLOGIES},
            }
        return out

    def mechanisms(self) -> list[dict[str, str]]:
        """The planted mechanisms as rows ``{group, mechanism, planted}`` — only knobs that differ from neutral."""
        def pct(x: float) -> str:
            return f"{100 * x:.0f}%"

        def per_finding(table: dict[str, float], fmt) -> str:
            return ", ".join(f"{'every disease' if f == 'all' else f} {fmt(v)}" for f, v in table.items())

        rows = []
        for gname, g in self.groups.items():
            rows.append({"group": gname, "mechanism": "representation", "planted": f"{pct(g.share)} of patients"})
            if any(v != 1 for v in g.prevalence.values()):
                rows.append({"group": gname, "mechanism": "prevalence",
                             "planted": per_finding(g.prevalence, lambda v: f"×{v:g}")})
            if any(v for v in g.underdiagnosis.values()):
                rows.append({"group": gname, "mechanism": "underdiagnosis",
                             "planted": per_finding(g.underdiagnosis, lambda v: f"{pct(v)} of positives labelled 0")})
            if len(self.sites) > 1:
                rows.append({"group": gname, "mechanism": "acquisition sites",
                             "planted": " · ".join(f"site {k} {pct(v / sum(g.sites.values()))}"
                                                   for k, v in g.sites.items())})
            if g.shortcut:
                sc = g.shortcut
                rows.append({"group": gname, "mechanism": "shortcut",
                             "planted": f"{sc.shape} marker ({sc.corner.replace('_', ' ')}) on "
                                        f"{pct(sc.p_positive)} of {sc.finding} positives vs {pct(sc.p_negative)} of "
                                        f"negatives in training; at test {_SHORTCUT_TEST[sc.test]}"})
            if g.manifestation:
                rows.append({"group": gname, "mechanism": "manifestation",
                             "planted": ", ".join(f"{f} drawn {v} (others: {MANIFESTATIONS[f][0]})"
                                                  for f, v in g.manifestation.items())})
            if any(v != 1 for v in g.visibility.values()):
                rows.append({"group": gname, "mechanism": "visibility",
                             "planted": per_finding(g.visibility, lambda v: f"intensity ×{v:g}")})
        if self.demographics != 1:
            rows.append({"group": "all", "mechanism": "demographics",
                         "planted": f"sex, race and age drawn at strength {self.demographics:g} (1 = as visible as "
                                    "in real radiographs; 0 = race not readable from the image)"})
        if len(self.sites) > 1:
            for name, site in self.sites.items():
                rows.append({"group": f"site {name}", "mechanism": "acquisition",
                             "planted": f"contrast {site.contrast:g}, brightness {site.brightness:+g}, noise "
                                        f"{site.noise:g}, blur {site.blur:g}, AP views {pct(site.ap_share)}, "
                                        f"marker '{site.marker}' {site.marker_corner.replace('_', ' ')}"})
        return rows


_SHORTCUT_TEST = {"flip": "the two rates are swapped", "independent": "it no longer follows the finding",
                  "same": "it stays as in training"}

SCENARIOS: Registry[Scenario] = Registry("synthetic scenario")


# Mappings that describe one whole mix: given over a ``base:``, they replace the base's instead of merging into it
# (merging ``Black: {sites: {B: 1.0}}`` into a base's ``{A: 0.1, B: 0.9}`` would silently keep site A).
_REPLACED = {("groups", "*", "sites")}


def _deep_merge(base: dict, over: dict, path: tuple[str, ...] = ()) -> dict:
    out = dict(base)
    for k, v in over.items():
        here = (*path, str(k))
        whole = any(len(r) == len(here) and all(a in ("*", b) for a, b in zip(r, here)) for r in _REPLACED)
        if isinstance(v, dict) and isinstance(out.get(k), dict) and not whole:
            out[k] = _deep_merge(out[k], v, here)
        else:
            out[k] = v
    return out


def scenario_from_dict(data: dict[str, Any], *, source: object = None) -> Scenario:
    """Validate a scenario mapping. ``base: NAME`` starts from a registered scenario and deep-merges the given keys
    over it (so ``groups: {Female: {underdiagnosis: {all: 0.3}}}`` changes just that knob); a group's ``sites`` mix
    is replaced whole (``Black: {sites: {B: 1.0}}`` means all at site B)."""
    if not isinstance(data, dict):
        raise InputError("a scenario must be a mapping of keys (name, attribute, groups, ...)", path=source)
    data = dict(data)
    base = data.pop("base", None)
    if base is not None:
        if base not in SCENARIOS:
            raise InputError(f"base scenario {base!r} is unknown", path=source,
                             hint=f"use one of: {', '.join(SCENARIOS.names())}")
        base_d = SCENARIOS.create(base).model_dump(exclude_none=True)
        if data.get("attribute", base_d["attribute"]) != base_d["attribute"]:
            base_d.pop("groups")  # another attribute: the base's groups do not apply
        data = _deep_merge(base_d, data)
    try:
        return Scenario.model_validate(data)
    except ValidationError as e:
        raise InputError(f"invalid scenario: {config_problems(e)}", path=source,
                         hint="see docs/synth.md for the scenario keys") from None


def load_scenario(spec: "str | os.PathLike | Scenario | dict | None") -> Scenario:
    """A scenario from a registered name, a YAML/JSON file, a mapping or a ``Scenario`` (returned as is)."""
    if spec is None:
        return SCENARIOS.create("none")
    if isinstance(spec, Scenario):
        return spec
    if isinstance(spec, dict):
        return scenario_from_dict(spec)
    text = str(spec)
    if text in SCENARIOS:
        return SCENARIOS.create(text)
    p = Path(text)
    if p.suffix.lower() not in (".yaml", ".yml", ".json") and not p.exists():
        raise InputError(f"unknown scenario {text!r}", hint=f"use one of: {', '.join(SCENARIOS.names())} "
                                                            "or a YAML file")
    if not p.exists():
        raise InputError("scenario file not found", path=p)
    return scenario_from_dict(_read_yaml(p), source=p)


_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml's when built with it: ~10× faster


def _read_yaml(p: Path) -> Any:
    try:
        return yaml.load(p.read_text(encoding="utf-8"), Loader=_YAML_LOADER)
    except UnicodeDecodeError:
        raise InputError("is not UTF-8 text", path=p) from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise InputError(f"is not valid YAML{where}: {getattr(e, 'problem', None) or e}", path=p) from None


# ---------------------------------------------------------------------------------------------- named scenarios
# Written as data, in the scenario YAML format users write (a ``base:`` entry builds on an earlier one).
NAMED_SCENARIOS_FILE = Path(__file__).resolve().parents[1] / "configs" / "synth_scenarios.yaml"


def _register_named(path: Path) -> None:
    for name, entry in _read_yaml(path).items():
        SCENARIOS.register(name)(partial(scenario_from_dict, {"name": name, **entry}, source=path))


_register_named(NAMED_SCENARIOS_FILE)
