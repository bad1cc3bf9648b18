"""A small test double of a backbone: towers built from nn.TransformerEncoderLayer.

It implements the TokenTower contract (embed / layer / pool, anchors, a vocabulary for text
towers) and records the sequence each layer receives, so prompt tests can check exactly which
tokens sit where before every layer without depending on a real library backbone.
"""

from __future__ import annotations

from typing import List

import torch
from torch import nn

from mmprompt.backbones.base import TokenBackbone, TokenTower
from mmprompt.tokens import TokenSeq

PAD, SOT, EOT = 0, 1, 2


class RecordingTower(TokenTower):
    """Base of the fake towers: a stack of encoder layers that records its inputs."""

    def __init__(self, name: str, width: int, depth: int, dropout: float = 0.1):
        super().__init__()
        self.name = name
        self._width = width
        self.blocks = nn.ModuleList(
            [
                nn.TransformerEncoderLayer(width, nhead=2, dim_feedforward=2 * width, dropout=dropout, batch_first=True)
                for _ in range(depth)
            ]
        )
        self.seen: List[TokenSeq] = []  # the sequence each layer received, in call order

    @property
    def width(self):
        return self._width

    @property
    def num_layers(self):
        return len(self.blocks)

    def layer(self, i, seq):
        self.seen.append(seq)
        return seq.with_x(self.blocks[i](seq.x, src_key_padding_mask=~seq.mask))

    def pool(self, seq):
        return seq.gather_anchor("pool")


class FakeVisionTower(RecordingTower):
    """[CLS, patches] from (B, 3, H, W) images with a linear patch projection; pools CLS."""

    patch_size = 4

    def __init__(self, width=16, depth=3, dropout=0.1):
        super().__init__("vision", width, depth, dropout)
        self.patch_embed = nn.Linear(3 * self.patch_size**2, width)
        self.cls_token = nn.Parameter(torch.randn(1, 1, width) * 0.02)

    def embed(self, images):
        B = images.shape[0]
        p = self.patch_size
        patches = images.unfold(2, p, p).unfold(3, p, p)  # B, 3, h, w, p, p
        patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(B, -1, 3 * p * p)
        x = torch.cat([self.cls_token.expand(B, -1, -1), self.patch_embed(patches)], 1)
        return TokenSeq.from_embeddings(x, tower=self.name, anchors={"start": 1, "end": x.shape[1], "pool": 0})


class FakeTextTower(RecordingTower):
    """[SOT, words, EOT, pad...] with a word-level vocabulary; pools EOT like CLIP's text tower."""

    def __init__(self, width=12, depth=3, vocab_size=64, dropout=0.1, name="text"):
        super().__init__(name, width, depth, dropout)
        self.token_embedding = nn.Embedding(vocab_size, width)
        self.vocab = {}

    def input_embeddings(self):
        return self.token_embedding

    def special_token_ids(self):
        return {PAD, SOT, EOT}

    def word_id(self, word):
        if word not in self.vocab:
            self.vocab[word] = 3 + len(self.vocab) % (self.token_embedding.num_embeddings - 3)
        return self.vocab[word]

    def tokenize(self, texts):
        rows = [[SOT] + [self.word_id(w) for w in t.split()] + [EOT] for t in texts]
        n = max(len(r) for r in rows)
        ids = torch.tensor([r + [PAD] * (n - len(r)) for r in rows])
        return ids, ids != PAD

    def embed(self, texts):
        ids, mask = self.tokenize(texts)
        eot = mask.long().sum(1) - 1
        return TokenSeq.from_embeddings(
            self.token_embedding(ids), mask, tower=self.name, anchors={"start": 1, "end": eot, "pool": eot}
        )


class FakeBackbone(TokenBackbone):
    def __init__(self, towers):
        super().__init__()
        self.towers = nn.ModuleDict({t.name: t for t in towers})
        self.model = self.towers

    def clear_records(self):
        for t in self.towers.values():
            t.seen.clear()


def fake_clip(width_text=12, width_vision=16, depth=3):
    return FakeBackbone([FakeTextTower(width_text, depth), FakeVisionTower(width_vision, depth)]).freeze().eval()


def fake_vit(width=16, depth=3):
    return FakeBackbone([FakeVisionTower(width, depth)]).freeze().eval()


def fake_encoder(width=12, depth=3):
    """A text encoder named like T5's/BERT's tower."""
    return FakeBackbone([FakeTextTower(width, depth, name="encoder")]).freeze().eval()


def images(batch=2, size=8):
    return torch.randn(batch, 3, size, size)


def check_training_step(backbone, stack, loss_fn, head=None):
    """One SGD step on ``loss_fn()``: backbone weights get no gradient and stay bit-identical,
    every trainable prompt (and head) parameter gets a gradient. Returns the prompt grads."""
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    trainable = [p for p in stack.parameters() if p.requires_grad] + (list(head.parameters()) if head else [])
    assert trainable, "the prompt stack has no trainable parameters"
    optimizer = torch.optim.SGD(trainable, lr=0.5)
    loss = loss_fn()
    loss.backward()
    assert all(p.grad is None for p in backbone.parameters()), "a backbone weight received a gradient"
    missing = [n for n, p in stack.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"prompt parameters without gradient: {missing}"
    grads = {n: p.grad.clone() for n, p in stack.named_parameters() if p.requires_grad}
    assert any(bool(g.abs().sum() > 0) for g in grads.values()), "every prompt gradient is zero"
    optimizer.step()
    after = backbone.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "backbone weights changed"
    return grads


def prompt_ids(seq, owner_id):
    """(B, k) positions of one owner's tokens in a recorded sequence."""
    return seq.positions_of(owner_id)


def tokens_at(seq, owner_id):
    """(B, k, D) the tokens one owner put in a recorded sequence."""
    pos = seq.positions_of(owner_id)
    return seq.x.gather(1, pos[..., None].expand(-1, -1, seq.width))


def scalar_loss(features):
    """A loss whose gradient is not zero: a plain sum of LayerNorm outputs is constant."""
    weights = torch.linspace(-1, 1, features.shape[-1])
    return (features * weights).sum() + features.pow(2).mean()
