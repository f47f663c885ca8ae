"""User-facing errors: one line that names the file, row or column and says what to do."""
from __future__ import annotations


def show_value(value) -> str:
    """A raw cell for an error message: text quoted, numbers plain (``'X'``, ``2``)."""
    if isinstance(value, str):
        return repr(value)
    try:
        return f"{float(value):g}"
    except (TypeError, ValueError):
        return repr(value)


def config_problems(error, limit: int = 3, prefix: str = "") -> str:
    """The first ``limit`` problems of an invalid configuration (a pydantic ``ValidationError``) in one line,
    ``key.sub: what is wrong; …``, with a misspelled key called an unknown key. ``prefix``: where the validated
    section sits (``distill`` → ``distill.train.lr: …``). A check that already names its key is not prefixed again."""
    parts = []
    for err in error.errors()[:limit]:
        loc = ".".join([*filter(None, [prefix]), *(str(x) for x in err["loc"])])
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key (check its spelling)"
        names_key = not loc or (msg.startswith(loc) and msg[len(loc):len(loc) + 1] in ("", ".", ":", " "))
        parts.append(msg if names_key else f"{loc}: {msg}")
    return "; ".join(parts)


class CxrError(Exception):
    """An error caused by the user's input or environment. The CLI prints it as one line (no traceback), exit 2."""


class InputError(CxrError):
    """Bad input data (file, table, image, config)."""

    def __init__(self, message: str, *, path: object | None = None, column: str | None = None, row: object | None = None,
                 hint: str | None = None):
        where = []
        if path is not None:
            where.append(str(path))
        if row is not None:
            where.append(f"row {row}")
        if column is not None:
            where.append(f"column {column!r}")
        text = (": ".join([", ".join(where), message]) if where else message)
        if hint:
            text += f" — {hint}"
        super().__init__(text)
        self.path, self.column, self.row, self.hint = path, column, row, hint
