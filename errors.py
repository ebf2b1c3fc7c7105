"""The one base class of the errors this library raises on purpose, the errors about arguments
that every part of it shares, and the checks of argument values that raise them.

Each error is also the built-in type that fits it (``ValueError`` for a bad value or file,
``TypeError`` for a wrong type, ``OSError`` for a download or the disk), so code that catches
those keeps working, and ``except GPTHubError`` catches everything this library reports.
"""

from __future__ import annotations

import difflib
import math
import numbers


class GPTHubError(Exception):
    """A bad argument, a bad file or a failed download, reported by this library."""


class InvalidArgumentError(GPTHubError, ValueError):
    """An argument's value is out of its range or does not fit the others (its name is in the message)."""


class ArgumentTypeError(GPTHubError, TypeError):
    """An argument is of the wrong type (its name is in the message)."""


class UnknownArgumentError(GPTHubError, TypeError):
    """A keyword argument that nothing takes, likely a typo (the message names close matches)."""

    @classmethod
    def naming(cls, unknown: list[str], known: list[str], where: str, more: str = "") -> UnknownArgumentError:
        """The error for ``unknown`` keywords given to ``where``, each with its close matches among
        ``known``, then ``more`` (what ``where`` does take, say)."""
        hints = []
        for name in unknown:
            close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
            hints.append(f"{name!r}" + (f" (did you mean {' or '.join(map(repr, close))}?)" if close else ""))
        return cls(f"{where} got unexpected keyword argument{'s' if len(unknown) > 1 else ''} {', '.join(hints)}{more}")


def take_neutral(kwargs: dict, neutral: dict, where: str) -> dict:
    """``kwargs`` less the options of ``neutral`` (name -> (whether a value changes nothing here,
    why another value is refused)) given at such values: transformers' options that pasted code
    passes (``use_cache=True``). At any other value one is refused by ``where``, never ignored."""
    for name in [name for name in kwargs if name in neutral]:
        value = kwargs.pop(name)
        changes_nothing, why = neutral[name]
        try:
            taken = bool(changes_nothing(value))
        except (TypeError, ValueError):  # an array, whose truth is ambiguous, is no such value
            taken = False
        if not taken:
            raise InvalidArgumentError(f"{name}={value!r}: {where} {why}")
    return kwargs


def unset_or_flag(value: object) -> bool:
    """None (transformers' default for many options) or a flag."""
    return value is None or is_flag(value)


def unset_or_off(value: object) -> bool:
    return value is None or (is_flag(value) and not value)


def is_flag(value: object) -> bool:
    """Whether ``value`` reads as True or False: a bool, a NumPy bool, 0 or 1 (not a string)."""
    try:
        return not isinstance(value, (str, bytes)) and value is not None and value in (True, False)
    except (TypeError, ValueError, RuntimeError):  # an array or a tensor of several values
        return False


def flag(name: str, value) -> bool:
    """``value`` as a bool, refused unless it is a flag (``"no"`` would read as True)."""
    if not is_flag(value):
        raise ArgumentTypeError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def integer(name: str, value, *, low: int | None = None, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ArgumentTypeError(f"{name} must be an int, got {value!r} ({type(value).__name__})")
    value = int(value)
    if (low is not None and value < low) or (high is not None and value > high):
        raise InvalidArgumentError(f"{name} must be in [{low}, {'...' if high is None else high}], got {value}")
    return value


def real(name: str, value, *, low: float, high: float = math.inf, low_open: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ArgumentTypeError(f"{name} must be a number, got {value!r} ({type(value).__name__})")
    value = float(value)
    if not math.isfinite(value) or value < low or value > high or (low_open and value == low):
        raise InvalidArgumentError(f"{name} must be a finite number in {'(' if low_open else '['}{low}, {high}"
                                   f"{']' if math.isfinite(high) else ')'}, got {value}")
    return value
