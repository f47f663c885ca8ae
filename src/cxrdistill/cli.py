"""The ``cxrdistill`` command line. Thin: every command lives in ``cxrdistill.commands.<area>``."""
from __future__ import annotations

import importlib
import os
import sys

import typer

from cxrdistill.commands import MODULES
from cxrdistill.errors import CxrError

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a stray pretrained=True fails at once instead of retrying a hub

app = typer.Typer(
    name="cxrdistill",
    help="Distil black-box chest X-ray foundation models into open students; audit and reduce their bias.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

for _name in MODULES:
    try:
        _mod = importlib.import_module(f"cxrdistill.commands.{_name}")
    except ModuleNotFoundError as _e:  # a command module not written yet
        if _e.name != f"cxrdistill.commands.{_name}":
            raise
        continue
    _mod.register(app)


def main(argv: list[str] | None = None) -> None:
    """Entry point: user errors print one line and exit 2; everything else is a bug and keeps its traceback."""
    try:
        app(args=argv, standalone_mode=False)
    except CxrError as e:
        typer.secho(f"error: {e}", fg=typer.colors.RED, err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.secho("interrupted", err=True)
        sys.exit(130)
    except SystemExit:
        raise
    except Exception as e:  # usage errors (typer's vendored click or click) arrive here in non-standalone mode
        if callable(getattr(e, "show", None)) and isinstance(getattr(e, "exit_code", None), int):
            e.show()
            sys.exit(e.exit_code)
        if type(e).__name__ == "Abort":
            sys.exit(1)
        raise


if __name__ == "__main__":
    main()
