"""Atomic file output and the project's one on-disk array format.

Every array file motifpipe writes is a safetensors file: named float64/int arrays
plus one JSON document of metadata under the header key ``"motifpipe"``. The
format holds no code (nothing is unpickled on load) and its bytes are a pure
function of the arrays and metadata, so the same seed gives the same file.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from motifpipe.errors import MotifpipeError

META_KEY = "motifpipe"


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` on success.

    On any exception the temporary file is removed, so a failed job never leaves
    a half-written output under the final name.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    # mkstemp creates 0600 files; outputs should get the usual umask-derived mode.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp_path, 0o666 & ~umask)
    try:
        yield tmp_path
        os.replace(tmp_path, final)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | os.PathLike, obj: object) -> None:
    """Write ``obj`` as indented, key-sorted JSON atomically."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_jsonable) + "\n")


def read_json(path: str | os.PathLike) -> dict:
    """Read a JSON file, with a one-line error naming the file if it is unusable."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise MotifpipeError(f"cannot read JSON file {path}: {exc}") from None


def save_arrays(path: str | os.PathLike, arrays: dict[str, np.ndarray], meta: dict) -> None:
    """Save named arrays and a JSON-able metadata dict to a safetensors file, atomically."""
    from safetensors.numpy import save_file

    contiguous = {k: np.ascontiguousarray(v) for k, v in arrays.items()}
    header = {META_KEY: json.dumps(meta, sort_keys=True, default=_jsonable)}
    with atomic_path(path) as tmp:
        save_file(contiguous, str(tmp), metadata=header)


def load_arrays(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict]:
    """Load a file written by :func:`save_arrays`: ``(arrays, meta)``."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="numpy") as f:
            meta = json.loads((f.metadata() or {}).get(META_KEY, "{}"))
            arrays = {k: f.get_tensor(k) for k in f.keys()}
    except (OSError, ValueError, json.JSONDecodeError) as exc:
        raise MotifpipeError(f"cannot read motifpipe array file {path}: {exc}") from None
    except Exception as exc:  # safetensors raises its own SafetensorError type
        raise MotifpipeError(f"cannot read motifpipe array file {path}: {exc}") from None
    return arrays, meta


def _jsonable(obj: object) -> object:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
