"""The harness's typed failures. Control flow branches on these types, never on message text."""
from __future__ import annotations


class HarnessError(Exception):
    """A failure of the harness itself (not of a cell): one line for the user, details in a log."""


class ConfigError(HarnessError, ValueError):
    """Input that cannot describe a run (exit code 2). The message names the problem and the valid choices."""


class UnsupportedDtype(ConfigError):
    """A dtype outside the engine's vocabulary: rejected for one cell, skipped inside a sweep that crosses
    engines with dtypes."""


class StoreError(HarnessError):
    """A record could not be written to the result store (it is kept in its result.json)."""
