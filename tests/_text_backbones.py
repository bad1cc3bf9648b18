"""Tiny configs of the real text architectures and a minimal prompt, for the text backbone tests."""

from __future__ import annotations

import torch
from torch import nn

from mmprompt.config import get_cfg
from mmprompt.prompts.base import PromptModule
from mmprompt.tokens import new_owner_id

TINY_T5 = dict(d_model=32, d_ff=64, num_layers=2, num_heads=4, d_kv=8, vocab_size=384)
TINY_BERT = dict(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    vocab_size=120,
    max_position_embeddings=64,
)
MINILM = "sentence-transformers/all-MiniLM-L6-v2"
TEXTS = ["a short one", "hi", "a somewhat longer sentence than the others here"]


def tiny_t5_cfg(**kwargs):
    cfg = get_cfg()
    cfg.MODEL.BACKBONE.NAME = "t5"
    cfg.MODEL.BACKBONE.ARCH = "t5"
    cfg.MODEL.BACKBONE.KWARGS.update({**TINY_T5, **kwargs})
    cfg.MODEL.TEXT.TOKENIZER = "byt5"
    return cfg


def tiny_encoder_cfg(arch="bert", **kwargs):
    cfg = get_cfg()
    cfg.MODEL.NAME = "text_classifier"
    cfg.MODEL.BACKBONE.NAME = "hf_encoder"
    cfg.MODEL.BACKBONE.ARCH = arch
    cfg.MODEL.BACKBONE.KWARGS.update({**TINY_BERT, **kwargs})
    return cfg


def padded_ids(batch, length, pad_id, lengths, vocab, low=5):
    """Random ids with right padding to ``lengths`` and a distinct last real token (the separator)."""
    ids = torch.randint(low, vocab, (batch, length))
    mask = torch.arange(length)[None] < torch.tensor(lengths)[:, None]
    ids[~mask] = pad_id
    return ids, mask


class InsertPrompt(PromptModule):
    """k trainable tokens inserted once, before layer 0, at an anchor; ``mask`` switches some off."""

    def __init__(self, k, width, at="start", mask=None):
        super().__init__()
        self.tokens = nn.Parameter(torch.randn(k, width))
        self.owner = new_owner_id()
        self.at = at
        self.mask = mask

    def before_layer(self, tower, i, seq, ctx):
        if i == 0:
            return seq.insert(self.tokens, self.at, self.owner, mask=self.mask)
        return seq
