"""What every command shares: one spelling and one help text per concept (outputs, seeds, attributes, bad input,
sizes, progress, bootstrap, age bins, device), the parsers behind them, and the one JSON summary line each command
prints last. Only typer and the standard library are imported here, so that ``cxrdistill --help`` stays fast.
"""
from __future__ import annotations

import inspect
import json
from typing import Any, Callable, Iterable, List, Optional

import typer
from typer.core import TyperGroup

#: bootstrap replicates for confidence intervals, the same in every command that computes them
N_BOOT = 1000
#: age-group edges (years) used when a command turns age into groups and none are given
AGE_BINS = "0,40,60,80,inf"
#: how a command treats an input it cannot use (an unreadable image, a missing file, a row without a score)
ON_ERROR = ("fail", "skip")

OUT_HELP = "Output directory."
SEED_HELP = "Random seed; the same seed gives the same result."
SEEDS_HELP = "Seeds of the repeated runs, comma-separated, e.g. 0,1,2."
ATTRIBUTE_HELP = "Sensitive attribute column, e.g. sex, race, age (repeatable)."
ON_ERROR_HELP = "Input that cannot be used (unreadable image, missing file): fail (stop) or skip (report it)."
SIZE_HELP = "Image side in pixels."
QUIET_HELP = "Print nothing on stderr but warnings and errors (a run's log file is still written)."
PROGRESS_HELP = "Show a progress bar (only on a terminal)."
N_BOOT_HELP = "Bootstrap replicates for confidence intervals (0: none)."
AGE_BINS_HELP = f"Age-group edges in years, comma-separated (inf allowed); {AGE_BINS} when age is an attribute."
DEVICE_HELP = "Where torch runs: auto (a GPU when there is one), cpu, cuda or cuda:N."


def out_option(required: bool = True, help: str = OUT_HELP, **kw) -> Any:
    """``--out / -o``: where a command writes."""
    return typer.Option(... if required else None, "--out", "-o", help=help, **kw)


def seed_option(default: Optional[int] = 0, help: str = SEED_HELP) -> Any:
    return typer.Option(default, "--seed", help=help)


def seeds_option(help: str = SEEDS_HELP) -> Any:
    return typer.Option(None, "--seeds", help=help)


def attribute_option(required: bool = True, help: str = ATTRIBUTE_HELP) -> Any:
    return typer.Option(... if required else None, "--attribute", "-a", help=help)


def on_error_option(default: str = "fail", help: str = ON_ERROR_HELP) -> Any:
    return typer.Option(default, "--on-error", help=help)


def quiet_option() -> Any:
    return typer.Option(False, "--quiet", "-q", help=QUIET_HELP)


def progress_option() -> Any:
    return typer.Option(True, "--progress/--no-progress", help=PROGRESS_HELP)


def n_boot_option(default: Optional[int] = N_BOOT, help: str = N_BOOT_HELP) -> Any:
    return typer.Option(default, "--n-boot", min=0, help=help)


def age_bins_option(help: str = AGE_BINS_HELP) -> Any:
    return typer.Option(None, "--age-bins", help=help)


def device_option(default: Optional[str] = "auto", help: str = DEVICE_HELP) -> Any:
    return typer.Option(default, "--device", help=help)


def with_options(options: dict[str, tuple[Any, Any]]) -> Callable:
    """Decorator: the command also takes ``options`` (parameter name → (type, ``typer.Option``)), after its own ones,
    in its ``**kwargs`` — one definition of a group of options that several commands share."""
    def deco(fn: Callable) -> Callable:
        sig = inspect.signature(fn, eval_str=True)
        own = [p for p in sig.parameters.values() if p.kind is not p.VAR_KEYWORD]
        extra = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=opt, annotation=kind)
                 for name, (kind, opt) in options.items()]
        fn.__signature__ = sig.replace(parameters=[*own, *extra])  # what typer reads
        return fn

    return deco


def hidden(*names: str, default: Any = None) -> Any:
    """An old spelling kept working but no longer shown in ``--help``."""
    return typer.Option(default, *names, hidden=True)


def csv_list(values: Optional[Iterable[str]]) -> list[str]:
    """Repeatable options that also take comma-separated lists: ``--tasks a,b --tasks c`` → ``[a, b, c]``."""
    if isinstance(values, str):
        values = [values]
    return [t.strip() for v in (values or []) for t in str(v).split(",") if t.strip()]


def parse_seeds(values: Optional[Iterable[str] | str], option: str = "--seeds") -> Optional[List[int]]:
    """``0,1,2`` (or the option repeated) → ``[0, 1, 2]``; None when not given."""
    from cxrdistill.errors import InputError

    items = csv_list(values)
    if not items:
        return None
    try:
        return [int(s) for s in items]
    except ValueError:
        raise InputError(f"{option} {','.join(items)!r} must be integers separated by commas",
                         hint=f"e.g. {option} 0,1,2") from None


def on_error_mode(on_error: str, *, skip_alias: bool = False, option: str = "--on-error") -> str:
    """Checks ``--on-error`` and returns ``fail`` or ``skip`` (``skip_alias``: an old boolean spelling was set)."""
    from cxrdistill.errors import InputError

    mode = {"raise": "fail", "error": "fail", "drop": "skip"}.get(on_error, on_error)
    if mode not in ON_ERROR:
        raise InputError(f"{option} must be one of {', '.join(ON_ERROR)}, not {on_error!r}")
    return "skip" if skip_alias else mode


def merge_alias(value: Any, old: Any, default: Any = None) -> Any:
    """The value of an option that also has a hidden old spelling: the old one counts when the new one was not set."""
    return old if (value == default and old is not None) else value


def single_attribute(attributes: Optional[List[str]], command: str) -> Optional[str]:
    """Commands that train with one group attribute at a time take ``--attribute`` once."""
    from cxrdistill.errors import InputError

    attrs = list(dict.fromkeys(attributes or []))
    if len(attrs) > 1:
        raise InputError(f"{command} uses one attribute per run, got {', '.join(attrs)}",
                         hint="run it once per attribute (with a different --out)")
    return attrs[0] if attrs else None


def summary(command: str, out: Any = None, status: str = "ok", **fields: Any) -> dict:
    """Print the one-line JSON summary every command ends with: ``{"command", "status", "out", ...}``.

    It is the last line on stdout, so scripts read ``stdout.splitlines()[-1]``; human-readable output comes
    before it (and progress on stderr)."""
    doc = {"command": command, "status": status, "out": None if out is None else str(out)}
    doc.update(fields)
    typer.echo(json.dumps(_plain(doc), separators=(", ", ": "), allow_nan=False))
    return doc


def _plain(v: Any) -> Any:
    """JSON-safe copy: paths and other objects as strings, NaN/inf as null, numpy scalars as numbers."""
    import math

    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple, set)):
        return [_plain(x) for x in v]
    if isinstance(v, bool) or v is None or isinstance(v, (int, str)):
        return v
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    item = getattr(v, "item", None)  # numpy / torch scalars
    if callable(item) and getattr(v, "ndim", 0) == 0:
        return _plain(item())
    return str(v)


class DefaultGroup(TyperGroup):
    """A command family (``fair run|seg|distill-study``) whose first command is also reached without its name, so
    that the family's old one-word spelling (``cxrdistill fair --cohort …``) keeps working."""

    default = "run"

    def parse_args(self, ctx, args):
        if args and args[0] not in self.commands and args[0] not in ctx.help_option_names:
            args = [self.default, *args]
        return super().parse_args(ctx, args)


FAMILIES = {
    "fair": "Fairness methods compared over seeds: on a classification task (run, the default), on segmentation "
            "(seg), and in distillation from a biased teacher (distill-study).",
    "pretrain": "In-domain pretraining (run, the default), fine-tuning from any initialisation (finetune), and the "
                "init x label policy x aux x seed grid (grid).",
}
_GROUPS: dict[tuple[int, str], typer.Typer] = {}


def family(app: typer.Typer, name: str) -> typer.Typer:
    """The sub-app of a command family, created (and added to ``app``) by the first module that asks for it."""
    key = (id(app), name)
    if key not in _GROUPS:
        _GROUPS[key] = typer.Typer(cls=DefaultGroup, help=FAMILIES[name], no_args_is_help=True)
        app.add_typer(_GROUPS[key], name=name)
    return _GROUPS[key]
