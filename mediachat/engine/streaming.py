"""Token ids to text as they come, without breaking a character or a word's spacing.

A byte-level token can hold half of a multi-byte character, and SentencePiece tokenizers drop the
leading space of the first token they decode, so decoding each token alone gives wrong text. The
decoder keeps a window of ids already emitted before the new ones (the approach of Hugging Face's
text-generation-inference): it decodes the window with and without the new ids and emits the
difference, and holds back while the text ends in U+FFFD (an incomplete UTF-8 sequence). Joined, the
pieces equal the decoding of all the ids at once. Plain Python: no Django imports.
"""


class IncrementalDecoder:
    """Feed token ids with `push`; each call returns the new text ("" while held back); `flush` the rest."""

    def __init__(self, tokenizer, *, skip_special_tokens: bool = True) -> None:
        self.tokenizer = tokenizer
        self.skip_special_tokens = skip_special_tokens
        self.ids: list[int] = []
        self._prefix_offset = 0  # start of the window decoded for context
        self._read_offset = 0  # ids before this are emitted

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=self.skip_special_tokens)

    def push(self, token_id: int) -> str:
        """Add one generated id; returns the text it completes, possibly ""."""
        self.ids.append(token_id)
        prefix = self._decode(self.ids[self._prefix_offset : self._read_offset])
        text = self._decode(self.ids[self._prefix_offset :])
        if len(text) > len(prefix) and not text.endswith("\ufffd"):
            self._prefix_offset, self._read_offset = self._read_offset, len(self.ids)
            return text[len(prefix) :]
        return ""

    def flush(self) -> str:
        """Whatever is still held back (an incomplete character comes out as U+FFFD)."""
        prefix = self._decode(self.ids[self._prefix_offset : self._read_offset])
        text = self._decode(self.ids[self._prefix_offset :])
        self._prefix_offset = self._read_offset = len(self.ids)
        return text[len(prefix) :]
