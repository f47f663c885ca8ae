"""The one configuration loader: defaults ← a YAML file ← command-line options ← ``--set KEY=VALUE``, validated by
a pydantic model, with one error message for an invalid configuration.

Every command family (distill / probe / finetune, study, fair, fair distill-study, pretrain) builds its settings
here, so the precedence, the ``--set`` syntax and the error texts are the same everywhere::

    cfg = load(DistillConfig, defaults=read_yaml_mapping("distill.yaml"), path="my.yaml",
               options={"train.epochs": 5, "loss": None}, sets=["train.lr=3e-4"], docs="docs/distill.md")

``options`` are dotted keys from a command's own options (``None``: not given, skipped); ``--set`` values are read
as YAML (``train.lr=3e-4`` is a number, ``loss={mse: 1}`` a mapping, text that is not YAML stays text).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterable, TypeVar

from pydantic import AfterValidator, BaseModel, ValidationError

from cxrdistill.errors import InputError, config_problems
from cxrdistill.storage.io import read_yaml_mapping

M = TypeVar("M", bound=BaseModel)

#: the ``--set`` example shown when a command does not name its own
SET_EXAMPLE = "train.lr=3e-4"


class ConfigError(InputError):
    """An invalid configuration. ``problems`` holds the ``key: what is wrong; …`` part, for a caller that reports
    it inside a larger configuration (the study's ``fair_distill.options``)."""

    problems: str = ""


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` on top of ``base``: mappings merge key by key, at every depth; anything else replaces."""
    out = dict(base)
    for k, v in over.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    """``data[a][b][c] = value`` for ``key = "a.b.c"``, creating (or replacing non-mapping) sections on the way."""
    parts = [p for p in key.split(".") if p]
    if not parts:
        raise ValueError(f"empty config key {key!r}")
    cur = data
    for p in parts[:-1]:
        nxt = cur.get(p)
        if not isinstance(nxt, dict):
            nxt = cur[p] = {}
        cur = nxt
    cur[parts[-1]] = value


def parse_set(item: str, example: str = SET_EXAMPLE) -> tuple[str, Any]:
    """One ``--set KEY=VALUE`` → ``(KEY, VALUE read as YAML)``; VALUE stays text when it is not YAML, and is None
    when empty."""
    import yaml

    key, eq, raw = item.partition("=")
    key = ".".join(p.strip() for p in key.split(".") if p.strip())
    if not eq or not key:
        raise InputError(f"--set {item!r} must look like KEY=VALUE", hint=f"e.g. --set {example}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return key, value


def layers(*, defaults: dict[str, Any] | None = None, path: str | Path | None = None,
           options: dict[str, Any] | None = None, sets: Iterable[str] | None = None, example: str = SET_EXAMPLE,
           route: Callable[[str], str] | None = None) -> dict[str, Any]:
    """The settings as a plain dict: ``defaults`` ← the YAML file ``path`` (merged key by key) ← ``options`` (dotted
    keys; None values skipped) ← ``sets`` (``KEY=VALUE`` strings). ``route`` maps a ``--set`` key to where it
    belongs (``fairdi.lam`` → ``method_params.fairdi.lam``) and may refuse it with an :class:`InputError`."""
    data = deep_merge(defaults or {}, read_yaml_mapping(path) if path else {})
    for k, v in (options or {}).items():
        if v is not None:
            set_dotted(data, k, v)
    for item in sets or []:
        key, value = parse_set(item, example)
        set_dotted(data, route(key) if route else key, value)
    return data


def validate(model: type[M], data: dict[str, Any], *, path: str | Path | None = None, docs: str,
             prefix: str = "") -> M:
    """``data`` as ``model``, or one :class:`ConfigError`: ``PATH: invalid config: key: what is wrong; … — see the
    documented keys in DOCS``. ``prefix`` is where ``data`` sits in a larger configuration (named in the keys)."""
    try:
        return model.model_validate(data)
    except ValidationError as e:
        problems = config_problems(e, prefix=prefix)
    err = ConfigError(f"invalid config: {problems}", path=path, hint=f"see the documented keys in {docs}")
    err.problems = problems
    raise err


def load(model: type[M], *, docs: str, defaults: dict[str, Any] | None = None, path: str | Path | None = None,
         options: dict[str, Any] | None = None, sets: Iterable[str] | None = None, example: str = SET_EXAMPLE,
         route: Callable[[str], str] | None = None) -> M:
    """:func:`layers`, validated by :func:`validate` (errors name the YAML file and the page ``docs``)."""
    data = layers(defaults=defaults, path=path, options=options, sets=sets, example=example, route=route)
    return validate(model, data, path=path, docs=docs)


def model_defaults(model: type[BaseModel]) -> dict[str, Any]:
    """A model's own defaults as a dict, for :func:`load`: a section given in part (``train.seed``) keeps the
    model's values for the rest (its ``train.epochs``, not the generic trainer's)."""
    return model().model_dump()


def non_empty(what: str = "value") -> AfterValidator:
    """A list that must hold at least one item (``Annotated[list[int], non_empty("seed")]``)."""

    def check(v):
        if not v:
            raise ValueError(f"give at least one {what}")
        return v

    return AfterValidator(check)
