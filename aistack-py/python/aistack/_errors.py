"""The exceptions aistack raises. Every error is an :class:`AistackError`; its ``code`` is the
stable snake_case kind (``invalid_input``, ``not_found``, ...)."""

from __future__ import annotations

from typing import Any


class AistackError(Exception):
    """Base class of every aistack error; ``code`` names its kind."""

    code: str = "internal"


class InvalidInput(AistackError, ValueError):
    """The input can never succeed as sent (empty or over-long text, bad vector, bad filter)."""


class NotFound(AistackError, LookupError):
    """A collection, record or model file does not exist."""


class Conflict(AistackError):
    """The thing being created already exists with other settings."""


class Unavailable(AistackError):
    """A dependency is not ready or not reachable (model not loaded, backend down)."""


class Overloaded(AistackError):
    """Too many requests at once; back off and retry."""


class InsufficientStorage(AistackError, OSError):
    """The store's disk is full or read-only: nothing of the write was kept; reads go on."""


class Timeout(AistackError, TimeoutError):
    """The operation did not finish within its deadline."""


class ConfigError(AistackError, ValueError):
    """The configuration is invalid."""


def _resolve(future: Any, ok: bool, value: Any) -> None:
    """Completes an asyncio future from aistack's threads, unless it was cancelled meanwhile."""
    if future.done():
        return
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)
