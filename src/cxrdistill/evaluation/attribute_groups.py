"""Protected-attribute groups: string labels per image, numeric attributes (age) binned, and the list of group pairs
to compare (all pairs of an attribute's values, or single pairs named as ``"A=x,y"``)."""
from __future__ import annotations

import itertools
import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

from cxrdistill.errors import InputError
from cxrdistill.evaluation.resample import bin_values, parse_bins as parse_edges

# Bins follow the performance audit's convention (``evaluation.resample``): full edge lists, ``[a,b)`` labels, so
# that groups carry the same names in audit.json, features_audit.json and probes.json.
DEFAULT_AGE_BINS: tuple[float, ...] = (0.0, 40.0, 60.0, 80.0, float("inf"))
MAX_GROUPS = 12  # a numeric attribute with more distinct values than this is binned (or rejected)

_BIN = re.compile(r"^\[(-?inf|-?\d+(?:\.\d+)?(?:e[+-]?\d+)?),(-?inf|-?\d+(?:\.\d+)?(?:e[+-]?\d+)?)\)$")


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def bin_numeric(values, edges) -> pd.Series:
    """Numeric values → ``[a,b)`` labels (``evaluation.resample.bin_values``); missing or outside → None."""
    v = pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(dtype=float)
    return pd.Series(bin_values(v, list(edges)), dtype=object)


def is_binned(groups) -> bool:
    """True when every label is a ``[a,b)`` bin."""
    groups = [str(g) for g in groups]
    return bool(groups) and all(_BIN.match(g) for g in groups)


def group_order(values) -> list[str]:
    """Groups in reading order: bins by their lower edge, anything else sorted."""
    vals = [str(v) for v in dict.fromkeys(values) if v is not None]
    if is_binned(vals):
        return sorted(vals, key=lambda v: float(_BIN.match(v).group(1)))
    return sorted(vals)


def parse_bins(spec: str) -> tuple[str, tuple[float, ...]]:
    """``"age=0,40,60,80,120"`` → ``("age", (0, 40, 60, 80, 120))``: strictly increasing edges (``inf`` allowed)."""
    if "=" not in spec:
        raise InputError(f"bins {spec!r} must look like ATTRIBUTE=EDGE,EDGE,…", hint='e.g. --bins "age=0,40,60,80,inf"')
    name, _, rest = spec.partition("=")
    return name.strip(), tuple(parse_edges(rest))


def parse_pair(spec: str) -> tuple[str, str, str]:
    """``"A=x,y"`` → ``(A, x, y)``. Values may contain spaces (surrounding blanks are stripped)."""
    name, eq, rest = spec.partition("=")
    parts = [s.strip() for s in rest.split(",")]
    if not eq or not name.strip() or len(parts) != 2 or not all(parts):
        raise InputError(f"pair {spec!r} must look like ATTRIBUTE=VALUE_A,VALUE_B",
                         hint='e.g. --pair "race=Black,White" (quote it when a value contains spaces)')
    if parts[0] == parts[1]:
        raise InputError(f"pair {spec!r} compares a group with itself")
    return name.strip(), parts[0], parts[1]


def group_labels(series: pd.Series, name: str, *, bins: tuple[float, ...] | None = None,
                 max_groups: int = MAX_GROUPS, path: object | None = None) -> pd.Series:
    """One string label per row (None when missing).

    Numeric attributes are binned when ``bins`` is given, or when they have more than ``max_groups`` distinct
    values (``age`` then uses ``DEFAULT_AGE_BINS``; any other such attribute needs explicit bins).
    Integer-valued floats are shown without ``.0`` so that ``--pair "sex=0,1"`` matches a 0/1 column.
    """
    s = series.reset_index(drop=True)
    if pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s):
        if bins is None and s.dropna().nunique() > max_groups:
            if name.lower() == "age":
                bins = DEFAULT_AGE_BINS
            else:
                raise InputError(f"is numeric with {s.dropna().nunique()} distinct values", path=path, column=name,
                                 hint=f'bin it, e.g. --bins "{name}=EDGE,EDGE,EDGE"')
        if bins is not None:
            return bin_numeric(s, bins)
        v = s.astype(float)
        out = pd.Series([None if np.isnan(x) else _num(x) for x in v], dtype=object)
        return out
    out = s.astype(object).where(s.notna(), None)
    return pd.Series([None if x is None else str(x).strip() for x in out], dtype=object)


@dataclass(frozen=True)
class Comparison:
    attribute: str
    group_a: str
    group_b: str


def build_comparisons(meta: pd.DataFrame, attributes: list[str], pairs: list[str], *,
                      bins: dict[str, tuple[float, ...]] | None = None, max_groups: int = MAX_GROUPS,
                      path: object | None = None) -> tuple[list[Comparison], dict[str, pd.Series]]:
    """The comparisons of one call and the group labels of every attribute involved.

    ``--attribute A`` adds every pair of A's values (sorted); ``--pair "A=x,y"`` adds x vs y. An attribute named
    only through pairs gets only those pairs. Duplicates are dropped, order is kept.
    """
    bins = bins or {}
    parsed = [parse_pair(p) for p in pairs]
    names = list(dict.fromkeys(list(attributes) + [a for a, _, _ in parsed]))
    if not names:
        raise InputError("nothing to compare", hint='give --attribute A and/or --pair "A=x,y"')
    labels: dict[str, pd.Series] = {}
    for a in names:
        if a not in meta.columns:
            raise InputError("attribute column not found", path=path, column=a,
                             hint=f"available: {', '.join(map(str, list(meta.columns)[:25]))}")
        labels[a] = group_labels(meta[a], a, bins=bins.get(a), max_groups=max_groups, path=path)
    out: list[Comparison] = []
    for a in attributes:
        values = group_order(labels[a].dropna().unique())
        if len(values) < 2:
            raise InputError(f"has {len(values)} distinct value(s); at least 2 groups are needed", path=path,
                             column=a, hint="check the column, or the --split filter")
        out.extend(Comparison(a, x, y) for x, y in itertools.combinations(values, 2))
    for a, x, y in parsed:
        present = set(labels[a].dropna().unique())
        for v in (x, y):
            if v not in present:
                shown = ", ".join(sorted(present)[:12])
                raise InputError(f"value {v!r} not found", path=path, column=a, hint=f"values present: {shown}")
        out.append(Comparison(a, x, y))
    seen: set = set()
    unique = []
    for c in out:  # x vs y and y vs x are one test
        key = (c.attribute, frozenset((c.group_a, c.group_b)))
        if key not in seen:
            seen.add(key)
            unique.append(c)
    return unique, labels
