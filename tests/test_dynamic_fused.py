"""The one-node straight-through paths of dynamic prompting (``Choice``: the split's choice gradient
and the kept-length mask) give what the reference composition gives: ``straight_through_gumbel``'s
``hard + (soft - soft.detach())`` one-hot, then the split's choice gradient or ``flip().cumsum()``;
the pool's one-product mixing gives what the explicit weighted sum gives."""

import pytest
import torch

from mmprompt.prompts.base import PromptContext
from mmprompt.prompts.dynamic import Choice, PromptPool, insert_split, straight_through_gumbel
from mmprompt.tokens import TokenSeq

B, N, D, L = 3, 9, 8, 4


def sequence():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(B, N, D, generator=g, dtype=torch.float64)
    mask = torch.arange(N)[None] <= torch.tensor([8, 5, 6])[:, None]
    return TokenSeq.from_embeddings(x, mask, tower="text", anchors={"start": 1, "end": torch.tensor([8, 5, 6])})


def logits_for(level):
    g = torch.Generator().manual_seed(1)
    rows = 1 if level == "task" else B
    return torch.randn(rows, L + 1, generator=g, dtype=torch.float64).requires_grad_()


@pytest.mark.parametrize("rotate", [False, True])
@pytest.mark.parametrize("level", ["task", "instance"])
def test_split_choice_gradient_in_one_node_equals_the_reference(level, rotate):
    seq = sequence()
    tokens = torch.randn(1, L, D, dtype=torch.float64, requires_grad=True)
    weights = torch.randn(B, N + L, D, dtype=torch.float64)
    results = []
    for fused in (True, False):
        logits = logits_for(level)
        torch.manual_seed(5)
        if fused:
            choice = Choice.draw(logits, 0.7, sample=True)
            index = choice.index.expand(B)
            out = insert_split(seq, tokens, index, 42, choice, rotate=rotate)
        else:
            one_hot, index = straight_through_gumbel(logits, 0.7, sample=True)
            index = index.expand(B)
            out = insert_split(seq, tokens, index, 42, choice=one_hot, rotate=rotate)
        tokens.grad = None
        (out.x * weights).sum().backward()
        results.append((index.clone(), out.x.detach(), logits.grad.clone(), tokens.grad.clone()))
    (i1, x1, gl1, gt1), (i2, x2, gl2, gt2) = results
    assert torch.equal(i1, i2) and torch.equal(x1, x2)  # the same noise draw, the same arrangement
    torch.testing.assert_close(gl1, gl2, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gt1, gt2, rtol=0, atol=0)
    assert gl1.abs().max() > 1e-3


@pytest.mark.parametrize("level", ["task", "instance"])
def test_kept_length_mask_in_one_node_equals_the_reference(level):
    weights = torch.randn(B, L, dtype=torch.float64)
    results = []
    for fused in (True, False):
        logits = logits_for(level)
        torch.manual_seed(6)
        if fused:
            keep = Choice.draw(logits, 0.5, sample=True).kept(L)
        else:
            one_hot, _ = straight_through_gumbel(logits, 0.5, sample=True)
            keep = one_hot.flip(-1).cumsum(-1)[..., :L]
        keep = keep.expand(B, -1)
        (keep * weights).sum().backward()
        results.append((keep.detach(), logits.grad.clone()))
    (k1, g1), (k2, g2) = results
    assert torch.equal(k1, k2) and set(k1.unique().tolist()) <= {0.0, 1.0}
    torch.testing.assert_close(g1, g2, rtol=1e-12, atol=1e-12)
    assert g1.abs().max() > 1e-3


def test_no_gradient_wanted_builds_no_graph():
    logits = logits_for("task")
    with torch.no_grad():
        choice = Choice.draw(logits, 1.0, sample=False)
    assert choice.soft is None and not choice.kept(L).requires_grad
    assert int(choice.index) == int(logits.argmax())


def test_pool_mixing_in_one_product_equals_the_weighted_sum_of_its_prompts():
    """``P_new = sum_i beta_i P^(i)`` per sample (the pool's one (B, k) x (k, l*d) product): the
    same tokens and the same gradients to the prompts and the router as the explicit sum."""
    pool = PromptPool(length=L, width=D, pool_size=5, pool_activation="tanh").double()
    feature = torch.randn(B, D, dtype=torch.float64)
    weights = torch.randn(B, L, D, dtype=torch.float64)
    results = []
    for fused in (True, False):
        pool.zero_grad()
        ctx = PromptContext(features={"text": feature})
        if fused:
            tokens = pool(ctx, "text")
        else:
            beta = pool.mixing_weights(ctx, "text")
            tokens = torch.stack([sum(beta[b, i] * pool.prompts[i] for i in range(pool.size)) for b in range(B)])
        (tokens * weights).sum().backward()
        results.append((tokens.detach(), pool.prompts.grad.clone(), pool.router.linear.weight.grad.clone()))
    for fast, slow in zip(*results):
        torch.testing.assert_close(fast, slow, rtol=1e-12, atol=1e-12)
    assert results[0][2].abs().max() > 1e-3
