"""Every `cxrdistill …` command shown in README.md and docs/*.md is valid against the CLI: its subcommands exist and
every option it uses is one of that command's options (parsed with the CLI's own click tree, nothing is run)."""
from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from cxrdistill.cli import click_command

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELL_BLOCK = re.compile(r"^```(bash|sh|shell|console)?[ \t]*\n(.*?)^```", re.M | re.S)
INLINE = re.compile(r"(?<!`)`(cxrdistill [^`\n]+)`(?!`)")
SEPARATORS = {"&&", "||", "|", ";", "&"}


def _lines(text: str) -> list[tuple[int, str]]:
    """(line number, command text) of every line that may call cxrdistill: shell blocks (continuations joined)
    and inline code spans that start with ``cxrdistill ``."""
    out = []
    for m in SHELL_BLOCK.finditer(text):
        if m.group(1) is None and "cxrdistill" not in m.group(2):
            continue
        start = text.count("\n", 0, m.start(2)) + 1
        joined, first = "", None
        for k, line in enumerate(m.group(2).splitlines()):
            first = start + k if first is None else first
            if line.rstrip().endswith("\\"):
                joined += line.rstrip()[:-1] + " "
                continue
            out.append((first, joined + line))
            joined, first = "", None
    for m in INLINE.finditer(text):
        out.append((text.count("\n", 0, m.start()) + 1, m.group(1)))
    return out


def _words(line: str) -> list[str]:
    try:
        return shlex.split(line, comments=True)
    except ValueError:  # an unbalanced quote in prose: split on blanks
        return line.split("#")[0].split()


def invocations(text: str) -> list[tuple[int, list[str]]]:
    """Each call of the CLI in the text: (line, arguments after ``cxrdistill``)."""
    calls = []
    for lineno, line in _lines(text):
        if "cxrdistill" not in line:
            continue
        words = _words(line)
        for i, w in enumerate(words):
            is_cli = w in ("cxrdistill", "cxrdistill.cli") or w.endswith("/cxrdistill")
            if w in ("cxrdistill", "cxrdistill.cli") and i > 0 and words[i - 1] not in ("-m",) and i != 0 \
                    and not (words[i - 1] in SEPARATORS or "=" in words[i - 1] or words[i - 1].endswith(("nice",
                                                                                                         "time"))):
                # "cxrdistill" as a plain word (e.g. `pip install cxrdistill`) is not a call, except after a
                # separator, an environment assignment or a wrapper command
                if not (i >= 2 and words[i - 2] == "nice"):
                    is_cli = w.endswith("/cxrdistill")
            if not is_cli:
                continue
            args = []
            for a in words[i + 1:]:
                if a in SEPARATORS or a.startswith((">", "2>")):
                    break
                args.append(a)
            calls.append((lineno, args))
    return calls


ROOT_COMMAND = click_command()


def _placeholder(word: str) -> bool:
    """``…``, ``COMMAND``, ``<name>``: a command elided in prose."""
    return word in ("…", "...") or bool(re.fullmatch(r"[A-Z][A-Z_]*|<.*>", word))


def check(args: list[str]) -> list[str]:
    """Problems with one command line: an unknown command or an option the command does not have."""
    cmd = ROOT_COMMAND
    path, k = [], 0
    while hasattr(cmd, "commands"):
        if k >= len(args) or args[k] in ("--help", "-h", "--version") or _placeholder(args[k]):
            return []
        name = args[k]
        sub = cmd.commands.get(name)
        if sub is None:
            default = getattr(cmd, "default", None)
            if default and default in cmd.commands and name.startswith("-"):
                sub, name = cmd.commands[default], None
            else:
                return [f"unknown command {' '.join(path + [name])!r}"]
        if name is not None:
            path.append(name)
            k += 1
        if getattr(sub, "hidden", False):  # kept so that old scripts run; the docs show the current spelling
            return [f"{' '.join(path)!r} is an old spelling (a hidden alias): show the current command"]
        cmd = sub
    params = {o: p for p in cmd.params for o in (*getattr(p, "opts", ()), *getattr(p, "secondary_opts", ()))
              if o.startswith("-")}
    problems = []
    for a in args[k:]:
        if a == "--":
            break
        if a.startswith("-") and len(a) > 1 and not re.fullmatch(r"-[\d.]+", a):
            name = a.split("=", 1)[0]
            if name in ("--help", "-h"):
                continue
            if name not in params:
                problems.append(f"{' '.join(path)}: no option {name!r}")
            elif getattr(params[name], "hidden", False):
                problems.append(f"{' '.join(path)}: {name!r} is an old spelling (a hidden alias)")
    return problems


def _all_calls():
    for page in PAGES:
        for lineno, args in invocations(page.read_text(encoding="utf-8")):
            yield pytest.param(args, id=f"{page.name}:{lineno}")


CALLS = list(_all_calls())


@pytest.mark.parametrize("args", CALLS)
def test_documented_command_is_valid(args):
    assert check(args) == [], " ".join(["cxrdistill", *args])


def test_the_docs_show_many_commands():
    pages = {c.id.split(":")[0] for c in CALLS}
    assert len(CALLS) > 100 and "README.md" in pages and "index.md" in pages


def test_the_checker_catches_mistakes():
    assert check(["audit", "p.csv", "--attribute", "sex", "--out", "o"]) == []
    assert check(["audti", "p.csv"]) == ["unknown command 'audti'"]
    assert check(["audit", "p.csv", "--atribute", "sex"]) == ["audit: no option '--atribute'"]
    assert check(["cohort", "import", "chexpert", "--csv=x.csv", "--out", "o"]) == []
    assert check(["cohort", "imprt"]) == ["unknown command 'cohort imprt'"]
    assert check(["cohort", "…"]) == [] and check(["COMMAND", "--help"]) == []
    assert invocations("```bash\n.venv/bin/cxrdistill synth out \\\n  --nn 3  # comment --x\n```\n") == \
        [(2, ["synth", "out", "--nn", "3"])]
    assert invocations("see `cxrdistill embed --teacher T` and `pip install cxrdistill`") == \
        [(1, ["embed", "--teacher", "T"])]
