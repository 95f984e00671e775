"""Pre-training data: documents tokenized, joined with <|end|>, packed into blocks of `block_size` tokens.

Each epoch the packing starts at a different seeded offset, so a small corpus is seen in new block
boundaries every pass; the blocks of one step remain a pure function of `(seed, step)` (resume needs it).
Plain Python and torch: no Django imports.
"""

from collections.abc import Sequence

import torch

from training.pipelines.chat_format import END
from training.pipelines.trainer import epoch_order


def texts_tokenize(tokenizer, texts: Sequence[str]) -> torch.Tensor:
    """All `texts` as one 1-D tensor of token ids, each document followed by <|end|>."""
    end_id = tokenizer.convert_tokens_to_ids(END)
    # The backend tokenizer: no special tokens added and no "longer than model_max_length" warnings.
    encodings = tokenizer.backend_tokenizer.encode_batch([t for t in texts if t.strip()], add_special_tokens=False)
    ids: list[int] = []
    for encoding in encodings:
        ids.extend(encoding.ids)
        ids.append(end_id)
    return torch.tensor(ids, dtype=torch.long)


def _batch(blocks: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    input_ids = torch.stack(blocks)
    return {"input_ids": input_ids, "labels": input_ids.clone(), "attention_mask": torch.ones_like(input_ids)}


class PretrainData:
    """Packed blocks of the training tokens for `trainer.train`, and fixed validation blocks."""

    def __init__(self, train_tokens: torch.Tensor, validation_tokens: torch.Tensor, *, block_size: int):
        if len(train_tokens) < 2:
            raise ValueError("the pre-training texts hold fewer than 2 tokens")
        self.train_tokens = train_tokens
        self.validation_tokens = validation_tokens
        # A short corpus gives one shorter block rather than none.
        self.block_size = min(block_size, len(train_tokens))
        # One block fewer than fits, so every epoch offset in [0, block_size) leaves them all whole.
        self.blocks_per_epoch = max(1, len(train_tokens) // self.block_size - 1)

    @classmethod
    def from_texts(cls, tokenizer, train_texts: Sequence[str], validation_texts: Sequence[str], *, block_size: int):
        return cls(
            texts_tokenize(tokenizer, train_texts), texts_tokenize(tokenizer, validation_texts), block_size=block_size
        )

    def _offset(self, epoch: int, seed: int) -> int:
        room = len(self.train_tokens) - self.blocks_per_epoch * self.block_size
        generator = torch.Generator().manual_seed(seed * 7_919 + epoch + 1)
        return int(torch.randint(0, room + 1, (1,), generator=generator))

    def batch(self, step: int, batch_size: int, seed: int) -> dict[str, torch.Tensor]:
        blocks = []
        for epoch, index in epoch_order(self.blocks_per_epoch, step, batch_size, seed):
            start = self._offset(epoch, seed) + index * self.block_size
            blocks.append(self.train_tokens[start : start + self.block_size])
        return _batch(blocks)

    def validation(self, batch_size: int, batches: int) -> list[dict[str, torch.Tensor]]:
        tokens = self.validation_tokens
        if len(tokens) < 2:
            return []
        size = min(self.block_size, len(tokens))
        blocks = [tokens[i : i + size] for i in range(0, len(tokens) - size + 1, size)][: batch_size * batches]
        return [_batch(blocks[i : i + batch_size]) for i in range(0, len(blocks), batch_size)]
