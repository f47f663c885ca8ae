"""Label policies: raw cohort labels (1 / 0 / -1 uncertain / NaN not mentioned) → training targets (1 / 0 / NaN).

NaN in a target means "ignore this task for this image" (masked out of the loss and the metrics).
The policies of Irvin et al. 2019 (CheXpert) decide what an *uncertain* (-1) label becomes:

- ``u-ignore``: NaN (masked), ``u-zeros``: 0, ``u-ones``: 1.

A *blank* (not mentioned) label becomes 0 by default, as in CheXpert's training code (a finding the report does not
mention is taken as absent); ``blank="ignore"`` masks it instead.

Per-label mixes — a spec string (``;`` between clauses, ``,`` between labels, ``*`` = every other label)::

    u-ones:edema,atelectasis;u-zeros:*      # CheXpert paper's best mix: U-Ones for these two, U-Zeros elsewhere
    u-zeros                                 # one policy for every label (same as u-zeros:*)

Grammar: ``spec := clause (";" clause)*``, ``clause := policy [":" ("*" | label ("," label)*)]``. A label named
explicitly wins over ``*``; naming a label twice is an error; labels covered by no clause get ``u-ignore``.
The same mix as a mapping (e.g. from YAML): ``{"u-ones": ["edema", "atelectasis"], "u-zeros": "*"}`` or
``{"edema": "u-ones", "atelectasis": "u-ones", "*": "u-zeros"}``.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from cxrdistill.cohorts.schema import label_columns
from cxrdistill.errors import CxrError, InputError
from cxrdistill.registry import Registry

# name → the value an uncertain (-1) label becomes
POLICIES: Registry[float] = Registry("label policy")
BLANK_MODES = ("zero", "ignore")
DEFAULT_POLICY = "u-ignore"


@POLICIES.register("u-ignore")
def u_ignore() -> float:
    return float("nan")


@POLICIES.register("u-zeros")
def u_zeros() -> float:
    return 0.0


@POLICIES.register("u-ones")
def u_ones() -> float:
    return 1.0


PolicySpec = str | Mapping[str, object] | None


def _policy_name(name: str) -> str:
    name = name.strip().lower()
    if name not in POLICIES:
        raise CxrError(f"unknown label policy {name!r}; choose one of: {', '.join(POLICIES.names())}")
    return name


def parse_policy(spec: PolicySpec, tasks: Sequence[str]) -> dict[str, str]:
    """Resolve a policy spec (string, mapping or None) to ``{task: policy name}`` for every task."""
    if spec is None:
        spec = DEFAULT_POLICY
    clauses: list[tuple[str, list[str]]] = []
    if isinstance(spec, str):
        for part in spec.split(";"):
            part = part.strip()
            if not part:
                continue
            name, _, labels = part.partition(":")
            names = [x.strip() for x in labels.split(",") if x.strip()] if labels.strip() else ["*"]
            clauses.append((_policy_name(name), names))
        if not clauses:
            raise CxrError("empty label policy spec; e.g. 'u-ones:edema,atelectasis;u-zeros:*'")
    elif isinstance(spec, Mapping):
        for key, val in spec.items():
            key = str(key)
            if key.strip().lower() in POLICIES:  # {policy: labels}
                names = [val] if isinstance(val, str) else list(val)  # type: ignore[arg-type]
                clauses.append((_policy_name(key), [str(n).strip() for n in names]))
            else:  # {label: policy}
                clauses.append((_policy_name(str(val)), [key.strip()]))
    else:
        raise CxrError(f"a label policy is a string or a mapping, not {type(spec).__name__}")

    explicit: dict[str, str] = {}
    star: str | None = None
    for name, labels in clauses:
        for lab in labels:
            if lab == "*":
                if star is not None and star != name:
                    raise CxrError("'*' is given two label policies; keep one")
                star = name
                continue
            if lab in explicit:
                raise CxrError(f"label {lab!r} is given two label policies; name it once")
            explicit[lab] = name
    unknown = [lab for lab in explicit if lab not in tasks]
    if unknown:
        raise CxrError(f"label policy names {unknown[0]!r}, which is not a task; tasks: {', '.join(tasks)}")
    fallback = star or DEFAULT_POLICY
    return {t: explicit.get(t, fallback) for t in tasks}


def build_targets(df, tasks: Sequence[str], policy: PolicySpec = DEFAULT_POLICY, blank: str = "zero") -> np.ndarray:
    """Targets ``float32 (N, K)`` for ``tasks`` (columns of the cohort table): 1 / 0 / NaN (= ignore).

    Uncertain (-1) values follow ``policy``; blank (NaN) values become 0 (``blank="zero"``) or NaN
    (``blank="ignore"``). The cohort table itself is not changed.
    """
    if blank not in BLANK_MODES:
        raise CxrError(f"unknown blank mode {blank!r}; use 'zero' or 'ignore'")
    tasks = list(tasks)
    if not tasks:
        raise CxrError("no tasks given")
    for t in tasks:
        if t not in df.columns:
            raise InputError("no such label column in the cohort", column=t,
                             hint=f"labels here: {', '.join(label_columns(df)) or '(none)'}")
    resolved = parse_policy(policy, tasks)
    out = np.empty((len(df), len(tasks)), dtype=np.float32)
    for k, t in enumerate(tasks):
        raw = np.asarray(df[t], dtype=np.float64)
        bad = ~(np.isin(raw, (1.0, 0.0, -1.0)) | np.isnan(raw))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise InputError(f"label value {raw[i]:g} is not 1, 0, -1 or NaN", column=t, row=i + 1,
                             hint="validate the cohort with `cxrdistill cohort info`")
        y = raw.copy()
        y[raw == -1.0] = POLICIES.create(resolved[t])
        y[np.isnan(raw)] = 0.0 if blank == "zero" else np.nan
        out[:, k] = y
    return out


def describe_policy(policy: PolicySpec, tasks: Sequence[str]) -> str:
    """Canonical spec string of a resolved policy (for logs and cache keys)."""
    resolved = parse_policy(policy, tasks)
    by: dict[str, list[str]] = {}
    for t, name in resolved.items():
        by.setdefault(name, []).append(t)
    return ";".join(f"{name}:{','.join(ts)}" for name, ts in sorted(by.items()))
