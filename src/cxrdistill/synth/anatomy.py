"""Frontal chest anatomy as implicit shapes on a coordinate grid: body, lungs, heart, mediastinum, bones.

Body coordinates: x to the image right (the patient's left), y downwards, both about [-1, 1] over the field of
view. Shapes are functions of (x, y) arrays, so the same patient renders identically at any size and positioning
(shift, rotation, scale) is a change of the grid only. ``s`` is the lateral distance from the midline on one side.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

F32 = np.float32


def smoothstep(x: np.ndarray, width: float) -> np.ndarray:
    """0 → 1 as x goes from -width to +width (a soft step, used for soft shape edges)."""
    t = x * (0.5 / width) + 0.5
    if not isinstance(t, np.ndarray):
        t = min(max(float(t), 0.0), 1.0)
        return t * t * (3 - 2 * t)
    np.minimum(np.maximum(t, 0.0, out=t), 1.0, out=t)  # ufuncs in place: cheaper than np.clip on small arrays
    u = 3 - 2 * t
    u *= t
    u *= t
    return u


@dataclass
class Anatomy:
    """Patient anatomy parameters (body coordinates)."""

    W: float = 0.70  # lateral lung edge at its widest (half the internal thoracic width)
    apex: float = -0.70  # lung apex
    base_R: float = 0.38  # costophrenic angle level, patient's right (image left)
    base_L: float = 0.42
    dome_R: float = 0.14  # dome height above the costophrenic angle
    dome_L: float = 0.12
    s_apex: float = 0.33  # lateral position of the apex
    med_w: float = 0.075  # upper mediastinal half-width
    ctr: float = 0.44  # cardiothoracic ratio as projected
    heart_shift: float = 0.0  # shift of the heart to the image right
    body_w: float = 0.86  # torso half-width
    soft: float = 0.9  # soft-tissue density
    bone: float = 1.0  # bone density factor (age, sex, race)
    breast: float = 0.0  # breast size (0 = none)
    breast_y: float = 0.32
    breast_density: float = 0.18  # density added at the centre of a breast shadow
    pectoral: float = 0.05  # density of the pectoral shadow (drawn when there are no breasts)
    rib_gap: float = 0.105  # spacing of posterior ribs
    rib_w: float = 0.030  # rib half-thickness
    rib_phase: float = 0.0
    clav_y: float = -0.72  # clavicle level at the medial end
    clav_slope: float = -0.10
    scapula: float = 0.3  # overlap of the scapulae over the lung fields (AP: more)
    knob: float = 0.05  # aortic knob size
    hilum_y: float = -0.08
    extra: dict = field(default_factory=dict)


@dataclass
class Chest:
    """Shapes evaluated on one image grid."""

    x: np.ndarray
    y: np.ndarray
    a: Anatomy
    lung_R: np.ndarray  # bool, image left
    lung_L: np.ndarray  # bool, image right (heart excluded)
    heart: np.ndarray  # bool
    heart_prof: np.ndarray  # heart thickness profile in [0, 1]
    torso: np.ndarray  # float soft mask
    below_dome: np.ndarray  # float soft mask (abdomen)
    med: np.ndarray  # float soft mask (mediastinum)
    px: float  # one pixel in body units

    @property
    def lungs(self) -> np.ndarray:
        return self.lung_R | self.lung_L

    _cache: dict = field(default_factory=dict)

    def soft_lung(self, right: bool) -> np.ndarray:
        """One lung field as a soft mask (heart not excluded), for painting findings; cached."""
        key = ("soft", right)
        if key not in self._cache:
            self._cache[key] = lung_shape(self.a, self.s(right), self.y, right, soft=0.012)
        return self._cache[key]

    def soft_lungs(self) -> np.ndarray:
        return self.soft_lung(True) + self.soft_lung(False)

    def side(self, right: bool) -> np.ndarray:
        return self.lung_R if right else self.lung_L

    def s(self, right: bool) -> np.ndarray:
        return -self.x if right else self.x


def dome_y(a: Anatomy, s: np.ndarray, right: bool) -> np.ndarray:
    """Diaphragm: peak ``dome`` above the costophrenic angle at 0.5 W, back down at the lateral wall."""
    base = a.base_R if right else a.base_L
    h = (a.dome_R if right else a.dome_L) + a.extra.get("dome_raise_R" if right else "dome_raise_L", 0.0)
    peak = 0.5 * a.W
    lat = np.clip((s - peak) / (a.W - peak + 1e-6), 0, None)
    med = np.clip((peak - s) / (peak + 0.25), 0, 1)
    shape = np.where(s >= peak, 1 - lat ** 2, 1 - med ** 2)
    return base - h * np.clip(shape, 0, 1)


def lung_lateral(a: Anatomy, t: np.ndarray) -> np.ndarray:
    """Lateral lung edge as a function of the height fraction t (0 apex, 1 costophrenic angle)."""
    return a.s_apex + (a.W - a.s_apex) * np.sqrt(np.clip(1 - (1 - np.clip(t, 0, 1)) ** 2.2, 0, 1))


def lung_shape(a: Anatomy, s: np.ndarray, y: np.ndarray, right: bool, soft: float = 0.0) -> np.ndarray:
    """One lung field (heart not excluded). ``soft`` > 0 gives a soft mask with that edge width."""
    base = a.base_R if right else a.base_L
    H = base - a.apex
    t = (y - a.apex) / H
    tc = np.clip(t, 0, 1)
    m = a.med_w + a.extra.get("ecm", 0.0) * np.exp(-((y + 0.2) / 0.25) ** 2)
    if right:
        m = m + 0.015 * np.exp(-((y + 0.25) / 0.12) ** 2)  # SVC
    else:
        m = m + a.knob * np.exp(-((y + 0.36) / 0.07) ** 2) + 0.03 * np.exp(-((y + 0.18) / 0.06) ** 2)
    lat = lung_lateral(a, tc)
    mt = np.clip(tc / 0.32, 0, 1)
    medial = a.s_apex - (a.s_apex - m) * np.sqrt(np.clip(1 - (1 - mt) ** 2, 0, 1))
    d = dome_y(a, s, right)
    if soft <= 0:
        return (t > 0) & (s < lat) & (s > medial) & (y < d)
    return (smoothstep(y - a.apex, soft) * smoothstep(lat - s, soft) * smoothstep(s - medial, soft)
            * smoothstep(d - y, soft))


def heart_borders(a: Anatomy, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cardiac silhouette borders (x_right, x_left) per row and the height fraction t (0 at the top of the heart).

    Right border (image left): the right atrium bulges most at t≈0.7; left border: the left ventricle reaches its
    widest low, near the diaphragm (the apex). Both start at the mediastinum, so the heart merges into it.
    """
    width = a.ctr * 2 * a.W
    r_r = 0.33 * width - a.heart_shift
    r_l = width - r_r
    y_top = a.hilum_y + 0.02
    y_bot = a.base_L - a.dome_L
    t = (y - y_top) / (y_bot - y_top)
    m0 = a.med_w
    br = np.sin(np.pi / 2 * np.clip(t / 0.7, 0, 1)) ** 0.7 * (1 - 0.12 * np.clip((t - 0.7) / 0.5, 0, 1) ** 2)
    bl = np.sin(np.pi / 2 * np.clip(t / 0.92, 0, 1)) ** 0.9 * (1 - 0.25 * np.clip((t - 0.92) / 0.4, 0, 1) ** 2)
    return -(m0 + (r_r - m0) * br), m0 + (r_l - m0) * bl, t


def heart_shape(a: Anatomy, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Heart mask (clipped at the diaphragm) and a thickness profile in [0, 1] (thicker in the middle)."""
    xr, xl, t = heart_borders(a, y)
    below = np.where(x < 0, dome_y(a, -x, True), dome_y(a, x, False))
    mask = (t > 0) & (x > xr) & (x < xl) & (y < below + 0.01)
    half = np.maximum((xl - xr) / 2, 1e-3)
    prof = np.sqrt(np.clip(1 - ((x - (xl + xr) / 2) / half) ** 2, 0, 1))
    return mask, prof


def build_chest(a: Anatomy, x: np.ndarray, y: np.ndarray, px: float) -> Chest:
    s_r, s_l = -x, x
    heart, heart_prof = heart_shape(a, x, y)
    lung_r = lung_shape(a, s_r, y, True) & ~heart
    lung_l = lung_shape(a, s_l, y, False) & ~heart
    # body outline: neck, sloping shoulders, chest wall widest at the lower chest
    ax = np.abs(x)
    top = -1.0 + 0.32 * np.clip((ax - 0.2) / 0.8, 0, 1) ** 1.5
    bw = a.body_w * (0.93 + 0.07 * np.clip((y + 0.6) / 0.9, 0, 1))
    neck = smoothstep(0.2 - ax, 0.04)
    torso = np.clip(smoothstep(bw - ax, 0.06) * smoothstep(y - top, 0.05) + neck, 0, 1)
    below = np.where(x < 0, smoothstep(y - dome_y(a, s_r, True), 0.012), smoothstep(y - dome_y(a, s_l, False), 0.012))
    below = below * smoothstep(a.W + 0.03 - np.abs(x), 0.06)  # liver/spleen only inside the rib cage
    m = a.med_w + a.extra.get("ecm", 0.0) * np.exp(-((y + 0.2) / 0.25) ** 2)
    med = smoothstep(m + 0.01 - np.abs(x), 0.03)
    return Chest(x=x, y=y, a=a, lung_R=lung_r, lung_L=lung_l, heart=heart, heart_prof=heart_prof, torso=torso, below_dome=below, med=med,
                 px=px)


# How strongly sex, race and age show in the anatomy at ``demographics = 1`` (the scenario default). Real chest
# radiographs reveal them to a model with AUC ≈ 0.9-0.99 (race: Gichoya et al. 2022, Lancet Digit Health 4:e406;
# sex ≈ 0.99): through body habitus and soft-tissue thickness, breast shadows, bone density and thoracic shape. Each
# entry is a shift of a mean, in body units, per unit of strength; at strength 0 the anatomy is the generator's
# earlier one (sex only through breasts, lung width and bone loss; race only through a little bone density). At 1,
# attribute probes on the default synthetic teacher's embeddings of a `mixed` cohort reach race AUC 0.94 and sex 0.98
# (at 0.5: 0.84 and 0.93).
DEMOGRAPHIC_SHIFTS: dict[str, dict[str, float]] = {
    "Female": {"breast_density": 0.20, "body_w": -0.06, "rib_w": -0.006, "bone": -0.08, "pectoral": -0.10},
    "Male": {"body_w": 0.04, "pectoral": 0.12, "rib_w": 0.004},
    "Black": {"bone": 0.24, "soft": 0.20, "body_w": 0.06, "ctr": 0.03, "rib_w": 0.006, "clav_slope": 0.08},
    "Asian": {"W": -0.06, "body_w": -0.10, "soft": -0.16, "apex": 0.08, "bone": -0.08, "clav_slope": -0.10},
    "White": {},
}
AGE_BONE_PER_YEAR = 0.006  # extra bone loss per year over 45 at strength 1 (on top of the base 0.004)


def sample_anatomy(rng: np.random.Generator, sex: str, age: float, race: str, habitus: float,
                   demographics: float = 1.0) -> Anatomy:
    """A patient's anatomy (drawn from the per-patient stream, so it is the same in all of their studies).

    ``demographics`` scales how visible sex, race and age are (``DEMOGRAPHIC_SHIFTS``); the random draws do not
    depend on it, so it changes each patient's anatomy smoothly and 0 gives the plain anatomy."""
    female = sex == "Female"
    k = float(demographics)
    shift = dict.fromkeys(("W", "apex", "body_w", "soft", "bone", "ctr", "rib_w", "clav_slope", "breast_density",
                           "pectoral"), 0.0)
    for who in (sex, race):
        for key, v in DEMOGRAPHIC_SHIFTS.get(who, {}).items():
            shift[key] += k * v
    a = Anatomy()
    a.W = float(rng.normal(0.665 if female else 0.705, 0.022)) * (0.97 if race == "Asian" else 1.0) + shift["W"]
    a.apex = float(rng.normal(-0.72, 0.02)) + shift["apex"]
    a.base_R = float(rng.normal(0.48, 0.025))
    a.base_L = a.base_R + float(rng.normal(0.035, 0.012))
    a.dome_R = float(rng.normal(0.15, 0.015))
    a.dome_L = float(rng.normal(0.13, 0.015))
    a.s_apex = float(rng.normal(0.32, 0.02))
    a.med_w = float(rng.normal(0.10, 0.008))
    a.ctr = float(np.clip(rng.normal(0.44, 0.03) + shift["ctr"], 0.36, 0.485))
    a.heart_shift = float(rng.normal(0.0, 0.015))
    a.body_w = a.W + 0.12 + 0.22 * (habitus - 0.85) + float(rng.normal(0, 0.02)) + shift["body_w"]
    a.soft = 0.78 + 0.35 * (habitus - 1.0) + float(rng.normal(0, 0.03)) + shift["soft"]
    bone = 1.0 - 0.004 * (age - 45) - (0.005 * max(0.0, age - 50) if female else 0.0)
    bone -= k * AGE_BONE_PER_YEAR * max(0.0, age - 45)
    bone += (0.07 if race == "Black" else 0.0) + shift["bone"]
    a.bone = float(np.clip(bone + rng.normal(0, 0.05), 0.45, 1.35))
    if female:
        a.breast = float(np.clip(rng.normal(0.30, 0.05) * (0.75 + 0.5 * (habitus - 0.8)), 0.15, 0.5))
        a.breast_y = float(rng.normal(0.24, 0.03))
    a.breast_density = 0.18 + shift["breast_density"]
    a.pectoral = max(0.0, 0.05 + shift["pectoral"])
    a.rib_gap = float(rng.normal(0.112, 0.004))
    a.rib_w = float(rng.normal(0.031, 0.002)) + shift["rib_w"]
    a.rib_phase = float(rng.uniform(-0.2, 0.2))
    a.extra["rib_offsets"] = (rng.normal(0, 0.008, 11) + 0.004 * np.arange(11) ** 1.3).astype(np.float32)
    a.clav_y = float(rng.normal(-0.70, 0.02))
    a.clav_slope = float(rng.normal(-0.10, 0.02)) + shift["clav_slope"]
    a.knob = float(np.clip(0.035 + 0.0006 * (1 + 2 * k) * (age - 40) + rng.normal(0, 0.008), 0.02, 0.09))
    a.hilum_y = float(rng.normal(-0.05, 0.02))
    return a
