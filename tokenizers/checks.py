"""The tokenizers' errors and the checks on their arguments.

Every error a tokenizer raises on purpose is a ``GPTHubError`` and the built-in that fits
(``ValueError`` for a bad value or file, ``TypeError`` for a wrong type), so code that catches
the built-ins keeps working.
"""

from __future__ import annotations

import numbers
from typing import Any

from ..errors import GPTHubError


class TokenizerError(GPTHubError, ValueError):
    """A value a tokenizer cannot use: text, ids, settings or a vocabulary file."""


class TokenizerTypeError(GPTHubError, TypeError):
    """An argument of the wrong type given to a tokenizer."""


def check_text(text: Any, what: str = "text") -> str:
    """Refuse what is not a str, and text that is not valid unicode (lone surrogates)."""
    if not isinstance(text, str):
        raise TokenizerTypeError(f"{what} must be a str, got {type(text).__name__}")
    if text.isascii():  # O(1) in CPython; ASCII cannot hold a surrogate
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise TokenizerError(
            f"{what} holds a lone surrogate {text[err.start]!r} at index {err.start}, which is not "
            "valid unicode and cannot be encoded (was it decoded with errors='surrogateescape'?)"
        ) from None
    return text


def check_decode_errors(errors: Any) -> str:
    """Refuse, when the tokenizer is made, an ``errors`` handler that ``bytes.decode`` rejects
    (unknown, or one for encoding only such as ``xmlcharrefreplace``): otherwise it fails only
    at the first decode of ids that end mid-character, which may come much later."""
    if not isinstance(errors, str):
        raise TokenizerTypeError(f"errors must be the name of a decode error handler (a str), got {type(errors).__name__}")
    try:
        b"\xff".decode("utf-8", errors)  # a byte that is never UTF-8, so the handler runs
    except UnicodeDecodeError:
        pass  # 'strict' (or a handler that raises): a valid choice
    except (LookupError, TypeError):
        raise TokenizerError(
            f"errors={errors!r} is not an error handler bytes.decode accepts; use one such as "
            "'replace', 'strict', 'ignore', 'backslashreplace' or 'surrogateescape'"
        ) from None
    return errors


MATCH_FLAGS = ("lstrip", "rstrip", "single_word")  # AddedToken's flags that change matching


def token_content(token, what: str = "a token") -> tuple[str, dict[str, bool]]:
    """The text of a token given as a str or as an ``AddedToken`` (Hugging Face's, or anything
    with a str ``content``), and for the latter its flags: ``MATCH_FLAGS`` and ``special``."""
    if isinstance(token, str):
        return token, {}
    content = getattr(token, "content", None)
    if not isinstance(content, str):
        raise TokenizerTypeError(f"{what} must be a str or an AddedToken, got {type(token).__name__}")
    return content, {name: bool(getattr(token, name, False)) for name in (*MATCH_FLAGS, "special")}


def check_count(name: str, value: Any) -> int:
    """A length or count (``max_length``, ``stride``): an int >= 0, a NumPy one too."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise TokenizerError(f"{name} must be an int >= 0, got {value!r}")
    return int(value)


def parse_special(parse_special_tokens: bool | None, kwargs: dict) -> bool | None:
    """``parse_special_tokens``, or transformers' ``split_special_tokens`` (its opposite) taken
    from ``kwargs`` where given instead."""
    split = kwargs.pop("split_special_tokens", None)
    if split is None:
        return parse_special_tokens
    if parse_special_tokens is not None:
        raise TokenizerTypeError("give parse_special_tokens or transformers' split_special_tokens (its opposite), not both")
    return not split
