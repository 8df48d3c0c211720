"""Files the project keeps between runs only to save time (decoded images, converted weights, features).

Such a file is optional: one that cannot be written is a warning and the
run goes on without it; one that is damaged (a write interrupted by a crash,
a full disk, a kill) is a warning, deleted and made again. Writes go to a
temporary file in the same folder, flushed to disk and renamed into place,
so a reader never sees half a file.
"""

import os
import pathlib
import warnings
from collections.abc import Callable
from typing import Any, BinaryIO


def _reason(e: BaseException) -> str:
    return getattr(e, "strerror", None) or str(e) or type(e).__name__


def read(path: pathlib.Path, load: Callable[[BinaryIO], Any], what: str, redo: str = "making it again"):
    """`load(file)` of `path`; None when it is absent or damaged (then deleted, with one warning).

    `what` names the file for the warning, e.g. "weights cache", and `redo` what happens instead. Any
    exception of `load` but MemoryError counts as damage (a truncated .npz fails as BadZipFile, EOFError,
    KeyError, ValueError, ...).
    """
    if not path.exists():
        return None
    try:
        with open(path, "rb") as f:
            return load(f)
    except MemoryError:
        raise
    except Exception as e:
        warnings.warn(f"{what} {path} is unreadable ({type(e).__name__}: {_reason(e)}); deleted, {redo}", stacklevel=3)
        try:
            path.unlink(missing_ok=True)
        except OSError:
            pass
        return None


def write(path: pathlib.Path, save: Callable[[BinaryIO], None], what: str) -> bool:
    """Writes `path` atomically with `save(file)`; False, with one warning, when it cannot be written."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{os.urandom(4).hex()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "xb") as f:
            save(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        return True
    except OSError as e:
        warnings.warn(f"cannot write the {what} {path} ({_reason(e)}); continuing without it", stacklevel=3)
        return False
    finally:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
