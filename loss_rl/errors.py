"""Typed errors of loss_rl. Only these escape the library on bad input."""

from __future__ import annotations


class LossRLError(Exception):
    """Base class of every error loss_rl raises on purpose."""


class LossSpecError(LossRLError, ValueError):
    """A loss expression or spec is invalid (unknown primitive, wrong arity, bad JSON, ...).

    Args:
        message: What is wrong and how to fix it.
        field: The part of the spec at fault (e.g. ``"operator"``, ``"schema"``).
    """

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class LossSyntaxError(LossSpecError):
    """A loss expression string cannot be parsed.

    Args:
        message: What was expected.
        text: The expression text.
        position: 0-based character offset of the problem.
    """

    def __init__(self, message: str, text: str, position: int) -> None:
        pointer = f"\n  {text}\n  {' ' * position}^"
        super().__init__(f"{message} at position {position}{pointer}", field="expression")
        self.text = text
        self.position = position


class ConfigError(LossRLError, ValueError):
    """A preset or configuration value is invalid.

    Args:
        message: What is wrong and how to fix it.
        field: Dotted path of the offending field (e.g. ``"task.corruption.rate"``).
    """

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field


class RunError(LossRLError):
    """A run folder is missing, incomplete or from an incompatible version."""
