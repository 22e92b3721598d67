"""The status taxonomy of a cell, and how an exception becomes one."""
from __future__ import annotations

import re
import signal

OK = "ok"
UNSUPPORTED = "unsupported"
ERROR = "error"
OOM = "oom"
TIMEOUT = "timeout"
CRASHED = "crashed"
STATUSES = (OK, UNSUPPORTED, ERROR, OOM, TIMEOUT, CRASHED)

_OOM_TYPES = ("OutOfMemoryError", "MemoryError")
_OOM_TEXT = re.compile(r"out of memory|CUBLAS_STATUS_ALLOC_FAILED|failed to allocate|can.t allocate memory", re.I)


def first_line(message: str) -> str:
    for line in str(message).strip().splitlines():
        if line.strip():
            return line.strip()[:500]
    return ""


def normalize_message(message: str) -> str:
    """The message with run-specific details (numbers, sizes, addresses, paths, shapes) replaced, so
    identical failures from different cells group together in the error matrix."""
    text = first_line(message)
    text = re.sub(r"0x[0-9a-fA-F]+", "<addr>", text)
    text = re.sub(r"(/[\w.\-]+)+/?", "<path>", text)
    text = re.sub(r"\b\d+(\.\d+)?\s*(GiB|MiB|KiB|GB|MB|KB|bytes|B)\b", "<size>", text)
    text = re.sub(r"\d+(\.\d+)?", "N", text)
    text = re.sub(r"cuda:N|cpu", "<device>", text)
    return re.sub(r"\s+", " ", text).strip()


def error_record(exc_type: str, message: str) -> dict:
    return {"type": exc_type, "message": first_line(message), "normalized": normalize_message(message)}


def classify_exception(exc: BaseException) -> str:
    """Status for an exception raised inside a cell. Out-of-memory is recognised first and without
    importing anything: memory may still be exhausted while the exception is handled."""
    names = {c.__name__ for c in type(exc).__mro__}
    if names & set(_OOM_TYPES) or _OOM_TEXT.search(str(exc)):
        return OOM
    from engines.base import Unsupported

    if isinstance(exc, Unsupported):
        return UNSUPPORTED
    return ERROR


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"
