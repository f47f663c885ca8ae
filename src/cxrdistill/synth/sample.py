"""Sample the synthetic cohort's metadata: patients, studies, ground-truth findings, observed labels, mechanisms.

Everything here is drawn from one cohort-level random stream (``SeedSequence([seed, COHORT_STREAM])``), so the
table depends only on (n, seed, scenario); images are rendered afterwards from per-patient and per-image streams.
"""
from __future__ import annotations

import io

import numpy as np
import pandas as pd

from cxrdistill.synth.scenario import DISEASES, FINDINGS, MANIFESTATIONS, PATHOLOGIES, Scenario

COHORT_STREAM = 0x5EED
VAL_SHARE = 0.15  # share of train-phase patients put in the suggested validation split
CHEXPERT_LABELS: dict[str, str] = {
    "no_finding": "No Finding", "enlarged_cardiomediastinum": "Enlarged Cardiomediastinum",
    "cardiomegaly": "Cardiomegaly", "lung_opacity": "Lung Opacity", "lung_lesion": "Lung Lesion", "edema": "Edema",
    "consolidation": "Consolidation", "pneumonia": "Pneumonia", "atelectasis": "Atelectasis",
    "pneumothorax": "Pneumothorax", "pleural_effusion": "Pleural Effusion", "pleural_other": "Pleural Other",
    "fracture": "Fracture", "support_devices": "Support Devices",
}
CHEXPERT_COLUMNS: list[str] = ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA"] + [CHEXPERT_LABELS[f] for f in FINDINGS]

# Per finding: P(-1 | true positive), P(-1 | true negative), P(explicit 0 | true negative); the rest of the
# negatives are left blank ("not mentioned"). Rough orders of magnitude of the CheXpert labeler's output
# (Irvin et al. 2019, Table 1): many uncertain atelectasis/consolidation/pneumonia, few uncertain devices.
_LABEL_RATES_TABLE = """
finding                      uncertain_pos  uncertain_neg  zero_neg
enlarged_cardiomediastinum   0.25           0.03           0.15
cardiomegaly                 0.12           0.02           0.20
lung_opacity                 0.05           0.01           0.05
lung_lesion                  0.10           0.01           0.05
edema                        0.18           0.03           0.25
consolidation                0.20           0.04           0.15
pneumonia                    0.35           0.05           0.05
atelectasis                  0.30           0.04           0.03
pneumothorax                 0.06           0.01           0.40
pleural_effusion             0.10           0.02           0.35
pleural_other                0.20           0.005          0.02
fracture                     0.08           0.005          0.05
support_devices              0.01           0.005          0.05
"""
LABEL_RATES: dict[str, tuple[float, float, float]] = {
    f: tuple(map(float, row))
    for f, row in pd.read_csv(io.StringIO(_LABEL_RATES_TABLE), sep=r"\s+", index_col=0).iterrows()}
# Sicker patients are imaged AP (portable): view factors, normalised per site so that prevalence knobs stay exact.
VIEW_FACTOR: dict[str, tuple[float, float]] = {  # (AP, PA)
    "support_devices": (2.4, 0.5), "edema": (1.5, 0.8), "pleural_effusion": (1.3, 0.85),
    "atelectasis": (1.4, 0.8), "consolidation": (1.2, 0.9),
}


def _norm_factor(fac: tuple[float, float], ap: np.ndarray, ap_share: np.ndarray) -> np.ndarray:
    mean = ap_share * fac[0] + (1 - ap_share) * fac[1]
    return np.where(ap, fac[0], fac[1]) / mean


def _dep(parent: np.ndarray, p_parent: np.ndarray, ratio: float) -> np.ndarray:
    """Multiplier that makes a child ``ratio`` times likelier with the parent, keeping its marginal unchanged."""
    return np.where(parent, ratio, 1.0) / (1 + (ratio - 1) * p_parent)


def sample_cohort(n: int, seed: int, scenario: Scenario) -> pd.DataFrame:
    """One row per image with demographics, view, ``true_*``, observed labels (snake_case) and ``synth_*`` knobs."""
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), COHORT_STREAM]))
    n = int(n)
    # ---- patients and studies
    k = np.minimum(rng.geometric(1.0 / scenario.studies_per_patient, size=n), 6)
    n_pat = int(np.searchsorted(np.cumsum(k), n) + 1)
    k = k[:n_pat].copy()
    k[-1] -= int(k.sum() - n)
    pat = np.repeat(np.arange(n_pat), k)
    study = np.concatenate([np.arange(1, kk + 1) for kk in k]) if n else np.zeros(0, int)

    groups = list(scenario.groups)
    shares = np.array([scenario.groups[g].share for g in groups], dtype=float)
    g_idx_p = rng.choice(len(groups), size=n_pat, p=shares / shares.sum())
    group_p = np.array(groups, dtype=object)[g_idx_p]
    if scenario.attribute == "sex":
        sex_p = group_p
        races = list(scenario.race_shares)
        rs = np.array([scenario.race_shares[r] for r in races])
        race_p = np.array(races, dtype=object)[rng.choice(len(races), size=n_pat, p=rs / rs.sum())]
    else:
        race_p = group_p
        sex_p = np.where(rng.random(n_pat) < scenario.female_share, "Female", "Male").astype(object)
    age0 = np.clip(np.round(rng.normal(58, 17, n_pat)), 18, 90)
    frailty_p = rng.lognormal(-0.045, 0.3, n_pat)
    habitus_p = np.clip(rng.lognormal(0.0, 0.12, n_pat), 0.75, 1.45)
    phase_p = np.where(rng.random(n_pat) < scenario.shortcut_train_fraction, "train", "test").astype(object)
    site_p = np.empty(n_pat, dtype=object)
    for gi, g in enumerate(groups):
        sel = np.flatnonzero(g_idx_p == gi)
        names = list(scenario.groups[g].sites)
        w = np.array([scenario.groups[g].sites[s] for s in names], dtype=float)
        site_p[sel] = np.array(names, dtype=object)[rng.choice(len(names), size=sel.size, p=w / w.sum())]

    # ---- images
    gi = g_idx_p[pat]
    age = np.minimum(age0[pat] + np.maximum(study - 1, 0) * rng.integers(0, 2, n), 90)
    site = site_p[pat]
    ap_share = np.array([scenario.sites[s].ap_share for s in site], dtype=float)
    ap = rng.random(n) < ap_share
    agef = np.exp(0.015 * (age - 58))
    risk = frailty_p[pat] * agef
    risk = risk / risk.mean() if n else risk

    def group_mult(table: str, f: str, default: float) -> np.ndarray:
        vals = np.array([scenario.groups[g].rate(getattr(scenario.groups[g], table), f, default) for g in groups])
        return vals[gi]

    def prev(f: str) -> np.ndarray:
        return scenario.prevalence(f) * group_mult("prevalence", f, 1.0)

    def draw(f: str, extra: np.ndarray | float = 1.0, base: np.ndarray | None = None) -> np.ndarray:
        p = (prev(f) if base is None else base) * risk * extra
        if f in VIEW_FACTOR:
            p = p * _norm_factor(VIEW_FACTOR[f], ap, ap_share)
        return rng.random(n) < np.clip(p, 0, 0.95)

    true: dict[str, np.ndarray] = {}
    true["cardiomegaly"] = draw("cardiomegaly")
    true["edema"] = draw("edema", _dep(true["cardiomegaly"], prev("cardiomegaly"), 2.0))
    true["pleural_effusion"] = draw("pleural_effusion", _dep(true["edema"], prev("edema"), 1.8))
    for f in ("consolidation", "atelectasis", "lung_lesion", "pneumothorax", "pleural_other", "fracture",
              "support_devices"):
        true[f] = draw(f)
    # pneumonia: a share of consolidations, plus a few with only subtle signs
    true["pneumonia"] = (true["consolidation"] & (rng.random(n) < np.clip(prev("pneumonia"), 0, 1))) | (
        rng.random(n) < 0.015 * group_mult("prevalence", "pneumonia", 1.0))
    own_opacity = draw("lung_opacity")
    true["lung_opacity"] = own_opacity | true["consolidation"]
    own_ecm = draw("enlarged_cardiomediastinum")
    true["enlarged_cardiomediastinum"] = own_ecm | true["cardiomegaly"]
    true["no_finding"] = ~np.any([true[f] for f in DISEASES], axis=0)

    # ---- observed labels: underdiagnosis, then uncertainty and blanks
    obs: dict[str, np.ndarray] = {}
    under: dict[str, np.ndarray] = {}
    for f in PATHOLOGIES:
        u_pos, u_neg, mention = LABEL_RATES[f]
        u_pos, u_neg = min(1.0, u_pos * scenario.label_noise), min(1.0, u_neg * scenario.label_noise)
        r_ud, r_unc, r_neg = rng.random(n), rng.random(n), rng.random(n)
        ud_rate = np.array([scenario.groups[g].underdiagnosis_rate(f) for g in groups])[gi]
        ud = true[f] & (r_ud < ud_rate)
        y = np.full(n, np.nan)
        pos = true[f] & ~ud
        y[pos] = np.where(r_unc[pos] < u_pos, -1.0, 1.0)
        y[ud] = 0.0
        neg = ~true[f]
        y[neg] = np.where(r_neg[neg] < u_neg, -1.0, np.where(r_neg[neg] < u_neg + mention, 0.0, np.nan))
        obs[f], under[f] = y, ud
    any_pos = np.any([(obs[f] == 1) | (obs[f] == -1) for f in DISEASES], axis=0)
    obs["no_finding"] = np.where(any_pos, np.nan, 1.0)

    # ---- acquisition and shortcut
    def site_val(key: str) -> np.ndarray:
        return np.array([getattr(scenario.sites[s], key) for s in site], dtype=float)

    contrast = site_val("contrast") * np.exp(rng.normal(0, 0.06, n))
    noise = site_val("noise") * np.exp(rng.normal(0, 0.15, n)) * (0.85 + 0.3 * (habitus_p[pat] - 0.85))
    brightness = site_val("brightness") + rng.normal(0, 0.025, n)
    shortcut = np.zeros(n, dtype=bool)
    r_sc = rng.random(n)
    phase = phase_p[pat]
    for j, g in enumerate(groups):
        sc = scenario.groups[g].shortcut
        if sc is None:
            continue
        sel = gi == j
        lab = true[sc.finding]
        p_train = np.where(lab, sc.p_positive, sc.p_negative)
        if sc.test == "flip":
            p_test = np.where(lab, sc.p_negative, sc.p_positive)
        elif sc.test == "independent":
            p_test = np.full(n, (sc.p_positive + sc.p_negative) / 2)
        else:
            p_test = p_train
        p = np.where(phase == "train", p_train, p_test)
        shortcut |= sel & (r_sc < p)
    manif = np.full(n, "", dtype=object)
    for j, g in enumerate(groups):
        m = scenario.groups[g].manifestation
        if not m:
            continue
        for i in np.flatnonzero(gi == j):
            manif[i] = ";".join(f"{f}={v}" for f, v in sorted(m.items()) if true[f][i])

    # a suggested patient-level split that respects the phase: train phase → train/val, test phase → test
    val_p = rng.random(n_pat) < VAL_SHARE
    split_p = np.where(phase_p == "test", "test", np.where(val_p, "val", "train")).astype(object)

    pid = np.array([f"patient{p + 1:05d}" for p in pat], dtype=object)
    path = np.array([f"synth/train/{p}/study{s}/view1_frontal.png" for p, s in zip(pid, study)], dtype=object)
    df = pd.DataFrame({
        "path": path, "patient_id": pid, "study": study, "sex": sex_p[pat], "age": age.astype(int),
        "race": race_p[pat], "view": np.where(ap, "AP", "PA"),
    })
    for f in FINDINGS:
        df[f] = obs[f]
    for f in FINDINGS:
        df[f"true_{f}"] = true[f].astype(int)
    df["synth_index"] = np.arange(n)
    df["synth_patient_index"] = pat
    df["synth_attribute"] = scenario.attribute
    df["synth_group"] = group_p[pat]
    df["synth_site"] = site
    df["synth_marker"] = [scenario.sites[s].marker for s in site]
    df["synth_contrast"] = np.round(contrast, 4)
    df["synth_noise"] = np.round(noise, 4)
    df["synth_brightness"] = np.round(brightness, 4)
    df["synth_blur"] = site_val("blur")
    df["synth_habitus"] = np.round(habitus_p[pat], 4)
    df["synth_shortcut"] = shortcut.astype(int)
    df["synth_shortcut_phase"] = phase
    df["synth_split"] = split_p[pat]
    df["synth_manifestation"] = manif
    for f in PATHOLOGIES:
        df[f"synth_underdiagnosed_{f}"] = under[f].astype(int)
    return df


def manifestation_of(row_value: str) -> dict[str, str]:
    """Parse ``synth_manifestation`` ("pleural_effusion=laminar;...") back to a dict."""
    out = {}
    for part in (row_value or "").split(";"):
        if "=" in part:
            f, v = part.split("=", 1)
            if f in MANIFESTATIONS:
                out[f] = v
    return out
