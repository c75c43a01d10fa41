"""User-facing errors: the CLI prints them as one line and exits non-zero."""

import re


class BlindSRError(Exception):
    """An error caused by the user's input or environment, reported without a traceback."""


def first_line(e: BaseException) -> str:
    """First line of an exception's message, without terminal colour codes, at most 200 chars
    (the exception's type name when it has no message): a library error quoted in one line."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(e)).strip()
    return text.splitlines()[0][:200] if text else type(e).__name__
