"""The ``cxrdistill`` command line. Thin: every command lives in ``cxrdistill.commands.<area>``."""
from __future__ import annotations

import importlib
import os
import sys

import typer

from cxrdistill import __version__
from cxrdistill.commands import MODULES
from cxrdistill.errors import CxrError

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a stray pretrained=True fails at once instead of retrying a hub


def _version(value: bool) -> None:
    if value:
        typer.echo(f"cxrdistill {__version__}")
        raise typer.Exit()


def build_app(modules: list[str] | tuple[str, ...] = tuple(MODULES)) -> typer.Typer:
    """The typer app with every command module's commands. A module that cannot be imported is an error here, at
    start-up, naming the module: a renamed or broken module never silently drops its commands."""
    app = typer.Typer(
        name="cxrdistill",
        help="Distil black-box chest X-ray foundation models into open students; audit and reduce their bias.",
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        add_completion=False,
    )

    @app.callback()
    def _root(version: bool = typer.Option(False, "--version", is_eager=True, callback=_version,
                                           help="Print the version and exit.")) -> None:
        """Distil black-box chest X-ray foundation models into open students; audit and reduce their bias.

        Every command ends its output with one JSON line: {"command", "status", "out", ...}."""

    for name in modules:
        try:
            mod = importlib.import_module(f"cxrdistill.commands.{name}")
        except ImportError as e:
            raise RuntimeError(f"command module cxrdistill.commands.{name} cannot be imported ({e}); fix it or "
                               f"remove {name!r} from cxrdistill.commands.MODULES") from e
        if not callable(getattr(mod, "register", None)):
            raise RuntimeError(f"command module cxrdistill.commands.{name} has no register(app) function")
        mod.register(app)
    return app


app = build_app()


def click_command(typer_app: typer.Typer = app):
    """The click command tree of the app, with flags shown without a value placeholder in ``--help`` and help texts
    shown as written (a default such as ``[auto]`` is not taken for rich markup and dropped)."""
    from rich.markup import escape

    cmd = typer.main.get_command(typer_app)
    stack = [cmd]
    while stack:
        c = stack.pop()
        ctx = typer.Context(c)
        for p in [*c.params, c.get_help_option(ctx)]:
            if p is not None and getattr(p, "is_flag", False):
                p.metavar = ""  # a flag takes no value: no "<bool>" beside it
            if p is not None and getattr(p, "help", None):
                p.help = escape(p.help)
        stack.extend(getattr(c, "commands", {}).values())
    return cmd


def command_path(argv: list[str], cmd=None) -> str:
    """``['fair', '--cohort', 'c']`` → ``'fair run'``: the command a command line reaches (for the error summary)."""
    from cxrdistill.commands._common import DefaultGroup

    cur = cmd if cmd is not None else typer.main.get_command(app)
    path = []
    for a in argv:
        subs = getattr(cur, "commands", None)
        if not subs:
            break
        if a not in subs:
            if isinstance(cur, DefaultGroup) and cur.default in subs:
                path.append(cur.default)
            break
        path.append(a)
        cur = subs[a]
    return " ".join(path)


def main(argv: list[str] | None = None) -> None:
    """Entry point: user errors print one line and exit 2; everything else is a bug and keeps its traceback."""
    args = list(sys.argv[1:] if argv is None else argv)
    cmd = click_command()
    try:
        rc = cmd.main(args=args, prog_name="cxrdistill", standalone_mode=False)
        if rc == 130:  # typer turns Ctrl-C into exit code 130, returned rather than raised outside standalone mode
            raise KeyboardInterrupt
    except CxrError as e:
        typer.secho(f"error: {e}", fg=typer.colors.RED, err=True)
        _error_summary(args, cmd, str(e))
        sys.exit(2)
    except KeyboardInterrupt:
        typer.secho("interrupted", err=True)
        _error_summary(args, cmd, "interrupted", status="interrupted")
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


def _error_summary(args: list[str], cmd, message: str, status: str = "error") -> None:
    from cxrdistill.commands._common import summary

    out = None
    for i, a in enumerate(args):
        if a in ("--out", "-o") and i + 1 < len(args):
            out = args[i + 1]
        elif a.startswith("--out="):
            out = a.split("=", 1)[1]
    summary(command_path(args, cmd), out, status=status, error=message)


if __name__ == "__main__":
    main()
