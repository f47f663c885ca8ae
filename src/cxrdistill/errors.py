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
