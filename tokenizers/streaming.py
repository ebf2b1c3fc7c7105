"""Streaming decoded text while tokens are generated, for any tokenizer with ``decode``.

Decoding token by token and gluing the pieces is wrong for both families: GPT-1 joins words with
spaces only between ``</w>`` word ends (``decode`` strips the ends), and GPT-2's byte-level
tokens can end inside a UTF-8 character. The streamer instead decodes a short run of recent ids
and hands on what that text adds, so the pieces always add up to ``decode`` of all the ids.
"""

from __future__ import annotations

from collections.abc import Callable

from .checks import TokenizerError

_INCOMPLETE = "\ufffd"  # what an unfinished UTF-8 character decodes to, until its next bytes come


class TextStreamer:
    """Hands text to ``callback`` as token ids arrive (a batch of one), as Hugging Face's
    streamers do: ``generate(..., streamer=TextStreamer(tokenizer, print_piece))``.

    The pieces joined equal ``tokenizer.decode(ids)`` of every id put; with ``skip_prompt`` (the
    first ``put`` is the prompt) they equal what that decode adds to the prompt's decode. Text that
    ends in an unfinished character is held back until the next token, or ``end()``.
    """

    def __init__(self, tokenizer, callback: Callable[[str], None], skip_prompt: bool = True,
                 skip_special_tokens: bool = False, window: int = 32, context: int = 4):
        if not 1 <= context < window:
            raise TokenizerError(f"need 1 <= context < window, got context={context}, window={window}")
        self.tokenizer, self.callback = tokenizer, callback
        self.skip_prompt, self.skip_special_tokens = skip_prompt, skip_special_tokens
        self.window, self.context = window, context
        self._reset()

    def _reset(self) -> None:
        self._ids: list[int] = []  # the recent ids whose text is decoded at each step
        self._sent = 0  # characters of decode(self._ids) already handed on (or the prompt's)
        self._prompt_pending = self.skip_prompt

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=self.skip_special_tokens)

    def put(self, token_ids) -> None:
        """Take the next ids: a tensor ``[1, n]`` or ``[n]``, a list, or one int."""
        if hasattr(token_ids, "dim") and token_ids.dim() > 1 and token_ids.size(0) > 1:
            raise TokenizerError(f"TextStreamer streams one sequence at a time, got a batch of {token_ids.size(0)}")
        ids = token_ids.reshape(-1).tolist() if hasattr(token_ids, "reshape") else token_ids
        self._ids += [ids] if isinstance(ids, int) else list(ids)
        text = self._decode(self._ids)
        ready = len(text.rstrip(_INCOMPLETE))
        if self._prompt_pending:
            self._prompt_pending = False
            self._sent = ready
        elif ready > self._sent:
            self.callback(text[self._sent:ready])
            self._sent = ready
        if len(self._ids) >= self.window and self._sent == len(text):
            self._shorten(text)

    def _shorten(self, text: str) -> None:
        """Keep only the last ``context`` ids, where their text alone is how ``text`` ends: then
        what later ids add to it is what they add to the whole (a context starting inside a
        character, or of spaces only that ``decode`` strips, waits for a later step)."""
        context = self._ids[-self.context:]
        context_text = self._decode(context)
        if context_text.strip() and not context_text.endswith(_INCOMPLETE) and text.endswith(context_text):
            self._ids, self._sent = context, len(context_text)

    def end(self) -> None:
        """Hand on what was held back, and be ready for another sequence."""
        if not self._prompt_pending:
            text = self._decode(self._ids)
            if len(text) > self._sent:
                self.callback(text[self._sent:])
        self._reset()
