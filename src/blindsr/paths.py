"""User-given paths checked before any work: inputs that must be files, outputs that must be
creatable. Each check raises a one-line `BlindSRError`, so a long job never fails at its end
because of a typo in ``-o``."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from blindsr.errors import BlindSRError


def user_path(path: str | os.PathLike[str]) -> Path:
    """``path`` with a leading ``~`` / ``~user`` expanded; a one-line error for an unknown user
    (``Path.expanduser`` raises a bare RuntimeError there)."""
    try:
        return Path(path).expanduser()
    except RuntimeError:
        raise BlindSRError(f"cannot expand {str(path).split(os.sep)[0]!r} in {path}: no such "
                           "user or home folder") from None


def require_file(path: str | os.PathLike[str], what: str) -> Path:
    """``path`` as a Path if it is an existing file; else a one-line error naming ``what``."""
    path = Path(path)
    if path.is_dir():
        raise BlindSRError(f"{what} {path} is a folder, not a file")
    if not path.is_file():
        raise BlindSRError(f"{what} not found: {path}")
    return path


def prepare_output(path: str | os.PathLike[str], what: str, folder: bool = False) -> Path:
    """Make sure ``path`` can be written later: create its folder (``path`` itself with
    ``folder=True``, else its parent), try a temporary file in it, and remove again the folders
    this made; a one-line error naming ``what`` if that fails or ``path`` is of the wrong kind
    (a folder where a file is wanted, or the other way round)."""
    path = Path(path)
    if folder and path.exists() and not path.is_dir():
        raise BlindSRError(f"{what} {path} exists and is not a folder")
    if not folder and path.is_dir():
        raise BlindSRError(f"{what} {path} is a folder, not a file")
    directory = path if folder else path.parent
    missing = [p for p in (directory, *directory.parents) if not p.exists()]
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory):
            pass
    except (FileExistsError, NotADirectoryError):  # a file where a folder should be
        raise BlindSRError(f"cannot create {what} {path}: a part of it is a file") from None
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise BlindSRError(f"cannot create {what} {path}: {reason}") from None
    finally:
        for made in missing:  # deepest first; the command creates them when it writes
            try:
                made.rmdir()
            except OSError:
                break
    return path


RESULT_SUFFIXES = (".json", ".csv", ".md")


def result_paths(out: str | os.PathLike[str]) -> list[Path]:
    """``OUT.json``, ``OUT.csv`` and ``OUT.md`` of an ``--out OUT`` stem (a stem given with one
    of these suffixes loses it; any other dot stays: ``v1.2`` -> ``v1.2.json``); a one-line
    error for a stem that names no file (empty, ``.``, ``..``, a folder)."""
    text = os.fspath(out)
    path = user_path(text)
    if not text.strip() or path.name in ("", ".", "..") or text.endswith(("/", os.sep)) \
            or path.is_dir():
        raise BlindSRError(f"--out {text!r}: give a file stem such as results/eval (OUT.json, "
                           "OUT.csv and OUT.md are written), not a folder")
    if path.suffix.lower() in RESULT_SUFFIXES:
        path = path.with_suffix("")
    return [path.with_name(path.name + ext) for ext in RESULT_SUFFIXES]
