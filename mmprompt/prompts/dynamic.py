"""Dynamic prompting (Yang et al., "Position Really Matters"): learned position, length, pool.

Pieces, each plugging into the seams every prompt method already uses:

* placements (a method's ``POSITION``):
  ``adap_pos`` / ``adap_ins_pos`` split the prompt at a learned ``dpos`` in ``[0, l]`` into
  ``[P_before; X; P_after]`` (task level: l+1 logits; instance level: Linear d -> l+1 + ReLU on
  the instance feature); ``adap_len`` / ``adap_ins_len`` keep a learned length ``l*`` of the
  prompt as a prefix, either with the paper's surrogate ``[0*P_before; P_after]`` or also
  masking the dropped tokens out of attention;
* a source (a method's ``SOURCE``): ``pool``, k prompts mixed per instance by
  ``softmax(Po(x))``. ``adap_ins_vec_pos`` = ``pool`` + ``adap_ins_pos``, ``adap_pos_ins_vec`` =
  ``pool`` + ``adap_pos``.

The categorical choice is a straight-through Gumbel-softmax: the hard one-hot on the forward
pass (so the sequence is exactly one arrangement, built by one batched gather), the softmax's
gradient on the backward pass. The temperature follows the paper's schedule and lives in
module buffers, so checkpoints carry it.

Instance features come from ``ctx.features[tower]`` (the masked mean of the input embeddings,
free). For the paper's variant (``INSTANCE_FEATURE: frozen_forward``) the prompt stack runs one
prompt-free frozen pass of the tower before layer 0 and shares it (PromptStack._frozen_feature).
"""
from __future__ import annotations

import functools
import math
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..registry import PLACEMENTS, PROMPT_SOURCES
from ..tokens import TokenSeq
from .base import Placement, PromptContext, TokenSource, masked_mean
from .placement import split_positions
from .sources import initial_tokens

INSTANCE_FEATURES = ("embed_mean", "frozen_forward")
LENGTH_MODES = ("surrogate", "mask")


# --------------------------------------------------------------------------- temperature
class TemperatureSchedule(nn.Module):
    """``tau = max(tau0 * exp(-gamma * step / s), tau_min)`` (the paper's eq. 28).

    Constants and the last step/temperature used are buffers: a checkpoint restores the same
    schedule, and a resumed run continues it from the model's optimizer-step counter.
    """

    def __init__(self, tau0: float = 1.0, tau_min: float = 0.5, gamma: float = 3e-5, step_scale: float = 1.0):
        super().__init__()
        if tau0 <= 0 or tau_min <= 0 or step_scale <= 0 or gamma < 0:
            raise ConfigError(f"PROMPT.DYNAMIC temperature needs TAU0 > 0, TAU_MIN > 0, STEP_SCALE > 0 "
                              f"and GAMMA >= 0; got {tau0}, {tau_min}, {step_scale}, {gamma}.")
        self.register_buffer("tau0", torch.tensor(float(tau0), dtype=torch.float64))
        self.register_buffer("tau_min", torch.tensor(float(tau_min), dtype=torch.float64))
        self.register_buffer("gamma", torch.tensor(float(gamma), dtype=torch.float64))
        self.register_buffer("step_scale", torch.tensor(float(step_scale), dtype=torch.float64))
        self.register_buffer("last_step", torch.tensor(0, dtype=torch.long))
        self.register_buffer("tau", torch.tensor(float(tau0), dtype=torch.float64))

    @classmethod
    def from_cfg(cls, cfg) -> "TemperatureSchedule":
        d = cfg.PROMPT.DYNAMIC
        return cls(d.TAU0, d.TAU_MIN, d.GAMMA, d.STEP_SCALE)

    def value(self, step: int) -> float:
        return max(float(self.tau0) * math.exp(-float(self.gamma) * step / float(self.step_scale)),
                   float(self.tau_min))

    def update(self, step: int) -> float:
        """The temperature at optimizer step ``step``; remembered in the buffers."""
        step = int(step)
        # recomputed once per optimizer step, not per layer (the buffers start at step 0, tau0)
        if step != int(self.last_step):
            self.tau.fill_(self.value(step))
            self.last_step.fill_(step)
        return float(self.tau)


# --------------------------------------------------------------------------- the choice
def straight_through_gumbel(logits: torch.Tensor, tau: float, sample: bool) -> Tuple[torch.Tensor, torch.Tensor]:
    """A categorical choice over the last dimension: ``(one_hot, index)``.

    Forward: the exact one-hot of ``argmax(logits + g)`` (``g`` Gumbel noise when ``sample``,
    else plain argmax). Backward: the gradient of ``softmax((logits + g) / tau)`` (Jang et al.'s
    straight-through estimator, the paper's appendix C). Written as ``hard + (soft - soft)``
    rather than ``hard - soft + soft`` so the forward value is exactly 0/1 in floating point.
    """
    if sample:
        # g = -log(-log U) = -log(E) with E ~ Exp(1)
        logits = logits - torch.empty_like(logits).exponential_().log()
    index = logits.argmax(-1)
    hard = torch.zeros_like(logits).scatter_(-1, index[..., None], 1.0)
    if not (torch.is_grad_enabled() and logits.requires_grad):
        return hard, index
    soft = torch.softmax(logits / tau, dim=-1)
    return hard + (soft - soft.detach()), index


class _SplitChoiceGradient(torch.autograd.Function):
    """Identity on the arranged hidden states; gives the one-hot choice its straight-through gradient.

    The sequence the paper's estimator differentiates is the one-hot-weighted sum of all l+1
    arrangements, ``S = sum_j y_j A_j`` with ``A_j = [P[:j]; X; P[j:]]``. With a hard ``y`` the
    forward value is the single chosen arrangement (built elsewhere by one gather) and the
    gradient to ``X`` and ``P`` flows through that gather alone; the gradient to ``y_j`` is
    ``<dL/dS, A_j>`` for every j, also the ones not chosen. That is what makes the position
    learnable: it is the first-order change of the loss if the prompt were split at j instead
    (merely scaling the chosen tokens by ``y_dpos`` would only say whether the current choice's
    tokens help, and nothing about the other positions). It is computed here without building
    the l+1 arrangements:

    * prompt token t sits at ``start + t`` when t < j and at ``end + t`` otherwise: prefix and
      suffix sums of ``<G[start+t], P[t]>`` and ``<G[end+t], P[t]>``;
    * content token m (start <= m < end) sits at ``m + j``: the band of ``X G^T``;
    * the tokens before ``start`` and from ``end`` on do not move with j: a per-sample constant
      that the softmax Jacobian cancels (so ``grad_choice`` equals ``<dL/dS, A_j>`` up to it).
    """

    @staticmethod
    def forward(fctx, arranged, choice, base, tokens, start, end):
        fctx.save_for_backward(base, tokens, start, end)
        fctx.choice_dtype = choice.dtype
        return arranged.view_as(arranged)

    @staticmethod
    def backward(fctx, grad):
        base, tokens, start, end = fctx.saved_tensors
        B, N, D = base.shape
        k = tokens.shape[1]
        g = grad.to(base.dtype)
        offsets, band_index, m = _index_tensors(N, k, base.device)
        # <G, P_t> at the slot token t takes when it is before (start + t) or after (end + t) X:
        # sum_{t<j} a_t + sum_{t>=j} b_t = sum_t b_t + sum_{t<j} (a_t - b_t)
        slots = torch.cat([start[:, None] + offsets, end[:, None] + offsets], 1)  # (B, 2k)
        at_slots = g.gather(1, slots[..., None].expand(-1, -1, D)).view(B, 2, k, D)
        a, b = (at_slots * tokens.expand(B, -1, -1)[:, None]).sum(-1).unbind(1)
        prompt_term = F.pad((a - b).cumsum(1), (1, 0)) + b.sum(1, keepdim=True)
        # content token m (start <= m < end) sits at m + j: sum_m <G[m + j], X[m]>, read off the
        # band of one (N, N+k) product per sample
        band = torch.bmm(base, g.transpose(1, 2)).gather(2, band_index.expand(B, -1, -1))
        content = (m >= start[:, None]) & (m < end[:, None])
        content_term = (band * content[..., None]).sum(1)
        # Tokens before start and from end on sit at the same place for every j: their term is a
        # per-sample constant, which the softmax Jacobian maps to zero, so it is left out.
        return grad, (prompt_term + content_term).to(fctx.choice_dtype), None, None, None, None


@functools.lru_cache(maxsize=64)
def _index_tensors(N: int, k: int, device: torch.device):
    """Index constants of the backward pass: ``arange(k)``, the (N, k+1) band ``m + j``, ``arange(N)``."""
    m = torch.arange(N, device=device)
    return torch.arange(k, device=device), (m[:, None] + torch.arange(k + 1, device=device))[None], m


def insert_split(seq: TokenSeq, tokens: torch.Tensor, dpos: torch.Tensor, owner_id: int,
                 choice: Optional[torch.Tensor] = None) -> TokenSeq:
    """``[P[:dpos]; X; P[dpos:]]`` per sample (``dpos`` (B,)) with one gather.

    ``choice`` (B or 1, l+1), the straight-through one-hot that picked ``dpos``, receives the
    gradient of the weighted sum of all arrangements (see :class:`_SplitChoiceGradient`).
    """
    tokens = seq._batch_tokens(tokens)
    length = tokens.shape[1]
    out = seq.insert_at(tokens, split_positions(seq, length, dpos), owner_id)
    if choice is None or not torch.is_grad_enabled() or not choice.requires_grad:
        return out
    x = _SplitChoiceGradient.apply(out.x, choice.expand(seq.batch_size, -1), seq.x.detach(),
                                   tokens.detach(), seq.anchors["start"], seq.anchors["end"])
    return out.with_x(x)


# --------------------------------------------------------------------------- logits
class TaskLogits(nn.Module):
    """One learned vector of ``n`` logits for the whole task (adap_pos: n = l+1 parameters)."""

    def __init__(self, n: int):
        super().__init__()
        self.logits = nn.Parameter(torch.zeros(n))

    def forward(self, feature: Optional[torch.Tensor]) -> torch.Tensor:
        return self.logits[None]


class InstanceLogits(nn.Module):
    """Linear d -> n (+ ReLU, the paper's one-layer network) on the instance feature."""

    def __init__(self, d: int, n: int, bias: bool = False, relu: bool = True):
        super().__init__()
        self.linear = nn.Linear(d, n, bias=bias)
        self.relu = relu

    def forward(self, feature: torch.Tensor) -> torch.Tensor:
        if feature.shape[-1] != self.linear.in_features:
            raise ConfigError(f"Instance feature of width {feature.shape[-1]} does not fit a dynamic "
                              f"prompt network made for width {self.linear.in_features}; the prompt "
                              f"and the tower it conditions on must have the same width.")
        out = self.linear(feature.to(self.linear.weight.dtype))
        return F.relu(out) if self.relu else out


def check_feature_mode(mode: str) -> str:
    if mode not in INSTANCE_FEATURES:
        raise ConfigError(f"PROMPT.DYNAMIC.INSTANCE_FEATURE '{mode}' is unknown; choose one of {', '.join(INSTANCE_FEATURES)}.")
    return mode


def instance_feature(tower: str, ctx: PromptContext, mode: str = "embed_mean",
                     seq: Optional[TokenSeq] = None) -> torch.Tensor:
    """The tower's instance feature for this pass.

    ``embed_mean``: ``ctx.features[tower]``, which the prompt stack sets before layer 0 (or the
    masked mean of ``seq`` when a placement runs outside a stack). ``frozen_forward``: the
    feature :func:`prepare_instance_features` stored; a model that never called it is refused
    rather than silently given the other feature.
    """
    if mode == "frozen_forward":
        key = ("dynamic.frozen_forward", tower)
        if key not in ctx.cache:
            raise ConfigError(f"PROMPT.DYNAMIC.INSTANCE_FEATURE is frozen_forward, but no frozen pass of the "
                              f"'{tower}' tower ran: the prompt stack runs it before layer 0 once it knows "
                              f"the backbone (mmprompt.build.build_prompts does that; a hand-built "
                              f"PromptStack needs .setup(backbone) or .attach(backbone)).")
        return ctx.cache[key]
    if tower not in ctx.features:
        if seq is None:
            raise ConfigError(f"No instance feature for the '{tower}' tower: dynamic prompt modules must run "
                              f"inside a PromptStack, which sets it before layer 0.")
        ctx.features[tower] = masked_mean(seq.x, seq.mask)
    return ctx.features[tower]


class _LearnedChoice(Placement):
    """Shared machinery: one categorical choice over l+1 values per layer group and pass."""

    kind = "dpos"

    def __init__(self, cfg, *, length: int, width: int, instance: bool):
        super().__init__()
        if length is None or width is None:
            raise ConfigError(f"{type(self).__name__} needs the prompt length and width.")
        d = cfg.PROMPT.DYNAMIC
        depth = int(d.CHOICE_DEPTH)
        if depth < 1:
            raise ConfigError(f"PROMPT.DYNAMIC.CHOICE_DEPTH must be >= 1 (1 = one choice for all layers); got {depth}.")
        self.length = int(length)
        self.instance = instance
        self.sample_noise = bool(d.NOISE)
        self.record_choices = bool(d.RECORD)
        self.feature_mode = check_feature_mode(d.INSTANCE_FEATURE)
        if instance:
            heads = [InstanceLogits(width, self.length + 1, bool(d.INSTANCE_BIAS), bool(d.INSTANCE_RELU))
                     for _ in range(depth)]
        else:
            heads = [TaskLogits(self.length + 1) for _ in range(depth)]
        self.heads = nn.ModuleList(heads)
        self.temperature = TemperatureSchedule.from_cfg(cfg)

    def choose(self, seq: TokenSeq, ctx: PromptContext) -> Tuple[torch.Tensor, torch.Tensor, int]:
        """``(one_hot (B or 1, l+1), index (B,), head)`` for this layer, drawn once per pass and head."""
        layer = getattr(ctx, "layer", 0)
        layers_seen = ctx.cache.setdefault(("dynamic.layers", id(self), seq.tower), [])
        if layer not in layers_seen:
            layers_seen.append(layer)
        head = min(layers_seen.index(layer), len(self.heads) - 1)
        key = ("dynamic.choice", id(self), seq.tower, head)
        if key not in ctx.cache:
            tau = self.temperature.update(ctx.step) if self.training else float(self.temperature.tau)
            feature = instance_feature(seq.tower, ctx, self.feature_mode, seq) if self.instance else None
            one_hot, index = straight_through_gumbel(self.heads[head](feature), tau,
                                                     sample=self.training and self.sample_noise)
            ctx.cache[key] = (one_hot, index.expand(seq.batch_size))
        one_hot, index = ctx.cache[key]
        if self.record_choices:
            ctx.record(f"{seq.tower}.layer{layer}.{self.kind}", index)
        return one_hot, index, head

    def keeps_slots(self, seq: TokenSeq, owner_id: int, head: int, ctx: PromptContext) -> bool:
        """Whether this layer's tokens just overwrite the previous layer's (same choice).

        A deeper layer that shares the choice keeps the slots its tokens already hold, also when
        another method inserted words next to them meanwhile (MaPLe's fixed words); the
        position/length gradient then comes from the layer that made the arrangement. A layer
        with its own choice removes the previous tokens and arranges anew.
        """
        key = ("dynamic.placed", id(self), seq.tower, owner_id)
        placed = ctx.cache.get(key)
        ctx.cache[key] = head
        return placed == head and seq.has(owner_id)


@PLACEMENTS.register("adap_pos")
class AdaptivePosition(_LearnedChoice):
    """``[P_before; X; P_after]`` split at a task-level learned ``dpos`` (l+1 parameters).

    ``P_before`` goes to the ``start`` anchor (after CLS / SOT / [CLS]), ``P_after`` to the
    ``end`` anchor (before EOT / [SEP] / </s>, right after each sample's last real token in
    padded batches); pooled anchors move with the insertion. At deeper layers the previous
    layer's tokens are overwritten in place when the layer shares the choice
    (``PROMPT.DYNAMIC.CHOICE_DEPTH``), else removed and inserted at that layer's own split.
    """

    def __init__(self, cfg, *, length=None, width=None, instance: bool = False):
        super().__init__(cfg, length=length, width=width, instance=instance)

    def place(self, seq: TokenSeq, tokens: torch.Tensor, owner_id: int, ctx: PromptContext) -> TokenSeq:
        tokens = seq._batch_tokens(tokens)
        if tokens.shape[1] != self.length:
            raise ConfigError(f"{type(self).__name__} was built for {self.length} prompt tokens but got "
                              f"{tokens.shape[1]}.")
        one_hot, dpos, head = self.choose(seq, ctx)
        if self.keeps_slots(seq, owner_id, head, ctx):
            return seq.replace(owner_id, tokens)
        if seq.has(owner_id):
            seq = seq.remove(owner_id)
        return insert_split(seq, tokens, dpos, owner_id, one_hot)


@PLACEMENTS.register("adap_ins_pos")
class AdaptiveInstancePosition(AdaptivePosition):
    """``adap_pos`` with ``dpos`` per instance from Linear d -> l+1 (+ ReLU): d*(l+1) parameters
    (plus l+1 with PROMPT.DYNAMIC.INSTANCE_BIAS)."""

    def __init__(self, cfg, *, length=None, width=None):
        super().__init__(cfg, length=length, width=width, instance=True)


@PLACEMENTS.register("adap_len")
class AdaptiveLength(_LearnedChoice):
    """A prefix prompt of learned length ``l*`` in ``[0, l]``: the last ``l*`` tokens are kept.

    The shape stays fixed. Token t is scaled by ``keep_t = sum_{j >= l-t} y_j`` (y the
    straight-through one-hot over lengths): exactly 1 or 0 on the forward pass, the paper's
    surrogate ``[0*P_before; P_after]``, while the gradient of ``y_j`` is the sum of
    ``<dL/dP_t, P_t>`` over the tokens length j would keep. In ``mask`` mode the dropped tokens
    are also masked out of attention (weight exactly 0 where the backbone honours the mask),
    so the gradient only sees the kept tokens: it can learn to shorten, and to lengthen only
    through the noise of the Gumbel sampling.
    """

    kind = "length"

    def __init__(self, cfg, *, length=None, width=None, instance: bool = False):
        super().__init__(cfg, length=length, width=width, instance=instance)
        self.mode = cfg.PROMPT.DYNAMIC.LENGTH_MODE
        if self.mode not in LENGTH_MODES:
            raise ConfigError(f"PROMPT.DYNAMIC.LENGTH_MODE '{self.mode}' is unknown; choose one of {', '.join(LENGTH_MODES)}.")

    def place(self, seq: TokenSeq, tokens: torch.Tensor, owner_id: int, ctx: PromptContext) -> TokenSeq:
        tokens = seq._batch_tokens(tokens)
        one_hot, _, head = self.choose(seq, ctx)
        keep = one_hot.flip(-1).cumsum(-1)[..., : self.length].expand(seq.batch_size, -1)
        tokens = tokens * keep[..., None].to(tokens.dtype)
        mask = keep.detach() > 0.5 if self.mode == "mask" else None
        if self.keeps_slots(seq, owner_id, head, ctx):
            return seq.replace(owner_id, tokens, mask)
        if seq.has(owner_id):
            seq = seq.remove(owner_id)
        positions = seq.anchors["start"][:, None].expand(-1, self.length)
        return seq.insert_at(tokens, positions, owner_id, mask=mask)


@PLACEMENTS.register("adap_ins_len")
class AdaptiveInstanceLength(AdaptiveLength):
    """``adap_len`` with ``l*`` per instance from Linear d -> l+1 (+ ReLU)."""

    def __init__(self, cfg, *, length=None, width=None):
        super().__init__(cfg, length=length, width=width, instance=True)


# --------------------------------------------------------------------------- prompt pool
@PROMPT_SOURCES.register("pool")
class PromptPool(TokenSource):
    """adap_ins_vec: ``P_new = sum_i beta_i P^(i)``, ``beta = softmax(ReLU(Po(x)))``.

    k prompts of (length, width) and Po: Linear d -> k (d*k parameters without bias, the
    paper's Table 9; + ReLU as its one-layer networks). The mixing weights are computed once per
    pass and tower, so deep methods that draw tokens at every layer reuse them.
    """

    def __init__(self, cfg, *, length: int, width: int, tower=None, init: str = "normal",
                 init_text: str = "", patch_size: Optional[int] = None):
        super().__init__()
        d = cfg.PROMPT.DYNAMIC
        k = int(d.POOL_SIZE)
        if k < 1:
            raise ConfigError(f"PROMPT.DYNAMIC.POOL_SIZE must be >= 1; got {k}.")
        self.length, self.width, self.size = length, width, k
        self.record_choices = bool(d.RECORD)
        self.feature_mode = check_feature_mode(d.INSTANCE_FEATURE)
        members = []
        for i in range(k):
            if init == "vocab" and tower is not None and tower.input_embeddings() is not None:
                # k different vocabulary windows: identical members would receive identical
                # updates and the mixing could never tell them apart.
                weight = tower.input_embeddings().weight.detach()
                ids = (torch.arange(length) + i * length) % weight.shape[0]
                members.append(weight[ids].clone().float())
            else:
                members.append(initial_tokens(length, width, tower, init, init_text, patch_size))
        self.prompts = nn.Parameter(torch.stack(members))
        self.router = InstanceLogits(width, k, bool(d.INSTANCE_BIAS), bool(d.INSTANCE_RELU))

    def mixing_weights(self, ctx: PromptContext, tower: str) -> torch.Tensor:
        key = ("dynamic.pool", id(self), tower)
        if key not in ctx.cache:
            beta = torch.softmax(self.router(instance_feature(tower, ctx, self.feature_mode)), -1)
            ctx.cache[key] = beta
            if self.record_choices:
                ctx.record(f"{tower}.pool.top", beta.argmax(-1))
        return ctx.cache[key]

    def forward(self, ctx: PromptContext, tower: str) -> torch.Tensor:
        beta = self.mixing_weights(ctx, tower)
        return torch.einsum("bk,kld->bld", beta.to(self.prompts.dtype), self.prompts)
