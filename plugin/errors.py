"""The plugin's one error base class: every error it raises says what went wrong and how to fix it.

Standard library only (request building and the blocking driver are tested without QGIS). The
engine's own errors arrive as protocol ``error`` events and are shown as they are; these are the
plugin's side: a request it cannot build, an AOI it cannot write, a review it cannot store, an
engine call that failed to start or answered nonsense.
"""

from __future__ import annotations


class PluginError(ValueError):
    """``message`` says what and where; ``hint`` says how to fix it (may be empty)."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message + ("  Hint: " + self.hint if self.hint else "")

    def pair(self) -> "tuple[str, str]":
        return self.message, self.hint
