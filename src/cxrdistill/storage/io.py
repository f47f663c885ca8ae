"""Atomic writes (temp file + rename) and table reading with clear errors."""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

from cxrdistill.errors import InputError


def fsync_dir(d: str | os.PathLike) -> None:
    """Flush a directory's entries to disk (after a rename or link into it), where the platform allows it."""
    with contextlib.suppress(OSError):
        fd = os.open(d, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it is renamed over ``path``, on failure removed.

    Readers never see a half-written file, and a crash leaves only a ``.tmp`` file that is ignored.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp_path, 0o666 & ~umask)  # mkstemp makes 0600; outputs get the usual permissions
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", **kwargs: Any):
    """``open`` for writing, made atomic."""
    with atomic_path(path) as tmp:
        with open(tmp, mode, **kwargs) as fh:
            yield fh


def stable_hash(obj: Any) -> str:
    """A short, stable key of a JSON-able configuration (sha256 of its sorted JSON, 16 hex digits): the cache and
    resume key of runs and study stages."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def write_json(obj: Any, path: str | os.PathLike) -> None:
    with atomic_open(path, "w", encoding="utf-8") as fh:
        json.dump(obj, fh, indent=2, sort_keys=False, default=_json_default, allow_nan=False)
        fh.write("\n")


def _json_default(o: Any) -> Any:
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def clean_json(obj: Any) -> Any:
    """Replace NaN/inf by None recursively so that JSON stays standard."""
    import math

    import numpy as np

    if isinstance(obj, dict):
        return {str(k): clean_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean_json(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return clean_json(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write_parquet(df, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False)


def write_table(df, path: str | os.PathLike) -> None:
    """Write Parquet or CSV by extension, atomically."""
    p = Path(path)
    if p.suffix == ".csv":
        with atomic_path(p) as tmp:
            df.to_csv(tmp, index=False)
    else:
        write_parquet(df, p)


def read_table(path: str | os.PathLike, **csv_kwargs: Any):
    """Read a CSV (optionally .gz), Parquet or Excel table, with a clear error when it cannot be read."""
    import pandas as pd

    p = Path(path)
    if not p.exists():
        raise InputError("file not found", path=p, hint="check the path")
    if p.stat().st_size == 0:
        raise InputError("file is empty", path=p, hint="provide a non-empty table")
    name = p.name.lower()
    try:
        if name.endswith(".parquet") or name.endswith(".pq"):
            return pd.read_parquet(p)
        if name.endswith((".xlsx", ".xls")):
            return pd.read_excel(p)
        try:
            return pd.read_csv(p, **csv_kwargs)
        except UnicodeDecodeError:
            raise InputError("is not UTF-8 text", path=p, hint="re-save the file as UTF-8 CSV") from None
    except InputError:
        raise
    except pd.errors.EmptyDataError:
        raise InputError("table has no columns", path=p, hint="provide a CSV with a header row") from None
    except (pd.errors.ParserError, ValueError, OSError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise InputError(f"cannot be read as a table ({msg})", path=p,
                         hint="provide CSV (optionally .gz), Parquet or Excel") from None


def read_yaml_mapping(path: str | os.PathLike) -> dict[str, Any]:
    """Read a YAML config file that must hold a mapping; errors name the file and the line."""
    import yaml

    p = Path(path)
    if not p.exists():
        raise InputError("config file not found", path=p)
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise InputError("is not UTF-8 text", path=p, hint="save the config as UTF-8") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        what = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise InputError(f"is not valid YAML{where} ({what})", path=p) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InputError("a config file must hold a mapping of keys", path=p)
    return data
