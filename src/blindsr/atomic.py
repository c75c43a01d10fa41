"""Whole-file writes: a reader sees the old file or the new one, never half of one.

Every file blindsr writes for a user (images, models, configs, result tables, assets, logs
rewritten on resume) goes through :func:`write_atomic`: the bytes go to a hidden temporary file
in the same folder, which is then renamed over the target. A kill or a full disk mid-write leaves
the previous file (or none) and no temporary file behind.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from io import BytesIO
from pathlib import Path
from typing import Any

from blindsr.errors import BlindSRError


def write_atomic(path: str | os.PathLike[str], data: bytes | str, *, durable: bool = False) -> Path:
    """Write ``data`` (text is UTF-8) to ``path``, creating its folder; ``durable=True`` also
    flushes the bytes to disk before the rename (checkpoints). A one-line error on failure."""
    path = Path(path)
    if isinstance(data, str):
        data = data.encode()
    if path.is_dir():
        raise BlindSRError(f"cannot write {path}: it is a folder")
    tmp = path.with_name(f".{path.name[:100]}.{secrets.token_hex(4)}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                if durable:
                    f.flush()
                    os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            raise
    except (FileExistsError, NotADirectoryError):
        raise BlindSRError(f"cannot write {path}: a part of its folder is a file") from None
    except OSError as err:
        raise BlindSRError(f"cannot write {path}: {err.strerror or err}") from None
    return path


def save_figure(fig: Any, path: str | os.PathLike[str], dpi: int = 100) -> Path:
    """Write a matplotlib figure atomically, in the format its file extension names."""
    buf = BytesIO()
    fig.savefig(buf, format=Path(path).suffix.lstrip(".").lower(), dpi=dpi)
    return write_atomic(path, buf.getvalue())
