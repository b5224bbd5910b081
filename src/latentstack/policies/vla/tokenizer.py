"""Word-level tokenizer for task instructions, built from the training instructions.

Lower-cases, splits words and punctuation (``"Close the drawer!"`` -> ``close the drawer !``),
maps unknown words to ``<unk>`` and pads with ``<pad>`` (id 0). The vocabulary is a plain
list stored in the policy config, so checkpoints need no separate tokenizer files.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import torch

PAD = "<pad>"
UNK = "<unk>"
PAD_ID = 0
UNK_ID = 1
_TOKEN_RE = re.compile(r"[a-z0-9]+|[^a-z0-9\s]")


def split_words(text: str) -> list[str]:
    """``"Press the button-top."`` -> ``["press", "the", "button", "-", "top", "."]``."""
    return _TOKEN_RE.findall(text.lower())


class WordTokenizer:
    def __init__(self, vocab: Sequence[str], max_len: int = 12) -> None:
        vocab = list(vocab)
        if vocab[:2] != [PAD, UNK]:
            raise ValueError(f"vocab must start with {[PAD, UNK]}, got {vocab[:2]}")
        if len(set(vocab)) != len(vocab):
            raise ValueError("vocab has duplicate entries")
        if max_len < 1:
            raise ValueError("max_len must be >= 1")
        self.vocab: list[str] = vocab
        self.max_len = int(max_len)
        self._ids = {w: i for i, w in enumerate(vocab)}

    @classmethod
    def build(cls, texts: Iterable[str], max_len: int = 12) -> WordTokenizer:
        words = sorted({w for t in texts for w in split_words(t)} - {PAD, UNK})
        return cls([PAD, UNK, *words], max_len=max_len)

    def __len__(self) -> int:
        return len(self.vocab)

    def encode(self, text: str) -> list[int]:
        """Token ids, truncated to ``max_len``, not padded."""
        return [self._ids.get(w, UNK_ID) for w in split_words(text)][: self.max_len]

    def decode(self, ids: Iterable[int]) -> str:
        return " ".join(self.vocab[i] for i in ids if int(i) != PAD_ID)

    def __call__(
        self, texts: str | Sequence[str], device: torch.device | str = "cpu"
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Batch-encode: returns ``(ids (B, max_len) long, mask (B, max_len) bool)``, mask True = real token.
        The ids are built as a host list and copied once, straight onto ``device``."""
        if isinstance(texts, str):
            texts = [texts]
        rows = []
        for t in texts:
            enc = self.encode(t)
            rows.append(enc + [PAD_ID] * (self.max_len - len(enc)))
        ids = torch.tensor(rows, dtype=torch.long, device=device).reshape(len(rows), self.max_len)
        return ids, ids != PAD_ID
