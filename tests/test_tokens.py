import pytest
import torch

from mmprompt.tokens import TokenSeq, new_owner_id


def make_seq(B=2, N=5, D=3, lengths=None):
    x = torch.arange(B * N * D, dtype=torch.float).reshape(B, N, D)
    mask = None
    anchors = {"start": 1, "pool": 0}
    if lengths is not None:
        mask = torch.arange(N)[None] < torch.tensor(lengths)[:, None]
        anchors["end"] = torch.tensor(lengths) - 1  # like a [SEP]/EOT at the last real token
    return TokenSeq.from_embeddings(x, mask, tower="t", anchors=anchors)


def test_prefix_insert_moves_anchors_after_it():
    seq = make_seq()
    oid = new_owner_id()
    p = torch.full((2, 4, 3), -1.0)
    out = seq.insert(p, "start", oid)
    assert out.length == 9
    assert torch.equal(out.x[:, 0], seq.x[:, 0])  # CLS untouched
    assert torch.equal(out.x[:, 1:5], p)
    assert torch.equal(out.x[:, 5:], seq.x[:, 1:])
    assert out.anchors["pool"].tolist() == [0, 0]
    assert out.anchors["start"].tolist() == [5, 5]
    assert out.positions_of(oid).tolist() == [[1, 2, 3, 4]] * 2


def test_per_sample_insert_before_end_keeps_padding_last():
    seq = make_seq(N=6, lengths=[4, 6])
    oid = new_owner_id()
    p = -torch.ones(2, 2, 3)
    out = seq.insert(p, "end", oid)
    # sample 0: tokens 0..2, prompt, EOT(3), pads; sample 1: tokens 0..4, prompt, EOT(5)
    assert out.positions_of(oid).tolist() == [[3, 4], [5, 6]]
    assert out.anchors["end"].tolist() == [5, 7]
    assert torch.equal(out.gather_anchor("end"), seq.gather_anchor("end"))
    assert out.mask.tolist() == [[True] * 6 + [False] * 2, [True] * 8]


def test_split_insert_then_replace_then_remove_roundtrip():
    seq = make_seq(B=3, N=4)
    oid = new_owner_id()
    l = 3
    dpos = torch.tensor([0, 2, 3])
    k = torch.arange(l)
    start, end = seq.anchors["start"][:, None], seq.anchors["end"][:, None]
    positions = torch.where(k[None] < dpos[:, None], start, end)
    p = torch.randn(3, l, 3)
    out = seq.insert_at(p, positions, oid)
    # sample 1: [CLS, p0, p1, x1, x2, x3, p2]
    assert torch.equal(out.x[1, 1:3], p[1, :2]) and torch.equal(out.x[1, 6], p[1, 2])
    assert torch.equal(out.x[0, 4:], p[0])
    q = torch.randn(3, l, 3)
    rep = out.replace(oid, q)
    assert torch.equal(rep.positions_of(oid), out.positions_of(oid))
    assert torch.equal(rep.x[rep.owner == oid].reshape(3, l, 3), q)
    back = rep.remove(oid)
    assert torch.equal(back.x, seq.x)
    for name in seq.anchors:
        assert torch.equal(back.anchors[name], seq.anchors[name])


def test_insert_with_a_token_order_places_the_permuted_tokens_by_the_same_gather():
    """``token_order`` inserts ``tokens[b, order[b, t]]`` as token t (the rotated dynamic prompt),
    from ``[x; tokens]`` built here or given as ``joined``; the mask is indexed like the tokens and
    each token's gradient comes from the slot it went to."""
    seq = make_seq(B=2, N=4)
    oid = new_owner_id()
    p = torch.randn(2, 3, 3, requires_grad=True)
    order = torch.tensor([[1, 2, 0], [2, 0, 1]])
    positions = torch.tensor([[1, 1, 4], [1, 4, 4]])
    mask = torch.tensor([[True, False, True], [True, True, False]])
    permuted = p.gather(1, order[..., None].expand(-1, -1, 3))
    want = seq.insert_at(permuted, positions, oid, mask=mask.gather(1, order))
    for joined in (None, torch.cat([seq.x, p], 1)):
        got = seq.insert_at(p, positions, oid, mask=mask, joined=joined, token_order=order)
        assert torch.equal(got.x, want.x) and torch.equal(got.mask, want.mask)
        assert torch.equal(got.owner, want.owner)
        for name in seq.anchors:
            assert torch.equal(got.anchors[name], want.anchors[name])
    weights = torch.randn_like(want.x)
    (grad_want,) = torch.autograd.grad((want.x * weights).sum(), p)
    got = seq.insert_at(p, positions, oid, mask=mask, joined=torch.cat([seq.x, p], 1), token_order=order)
    (grad_got,) = torch.autograd.grad((got.x * weights).sum(), p)
    assert torch.equal(grad_got, grad_want)
    with pytest.raises(ValueError, match="token_order must be"):
        seq.insert_at(p, positions, oid, token_order=order[:, :2])


def test_insert_is_differentiable_wrt_prompt():
    seq = make_seq()
    p = torch.zeros(1, 2, 3, requires_grad=True)
    out = seq.insert(p, 1, new_owner_id())
    out.x.sum().backward()
    assert torch.equal(p.grad, torch.full_like(p, 2.0))  # shared by the 2 samples


def test_shape_mismatch_is_explained():
    seq = make_seq()
    with pytest.raises(ValueError, match="do not fit"):
        seq.insert(torch.zeros(2, 4), 1, new_owner_id())


def test_static_placements_insert_then_replace():
    from mmprompt.prompts.base import PromptContext
    from mmprompt.prompts.placement import build_placement

    seq = make_seq(N=6, lengths=[4, 6])
    ctx = PromptContext()
    for name, first in (("prefix", [1, 1]), ("suffix", [3, 5])):
        oid = new_owner_id()
        place = build_placement(name, None, length=2, width=3)
        out = place.place(seq, torch.ones(1, 2, 3), oid, ctx)
        assert out.positions_of(oid)[:, 0].tolist() == first
        again = place.place(out, torch.full((1, 2, 3), 5.0), oid, ctx)
        assert again.length == out.length  # deep prompts replace, not accumulate
        assert bool((again.x[again.owner == oid] == 5.0).all())
    oid = new_owner_id()
    mid = build_placement("middle", None, length=4, width=3).place(seq, torch.ones(1, 4, 3), oid, ctx)
    assert mid.positions_of(oid).tolist() == [[1, 2, 5, 6], [1, 2, 7, 8]]
