"""Dynamic prompting (Yang et al., "Position Really Matters"): learned position, length, pool.

Pieces, each plugging into the seams every prompt method already uses:

* placements (a method's ``POSITION``):
  ``adap_pos`` / ``adap_ins_pos`` place the prompt around the input by a learned choice j in
  ``[0, l]`` (task level: l+1 logits; instance level: Linear d -> l+1 + ReLU on the instance
  feature), in one of two arrangements (``PROMPT.DYNAMIC.ARRANGEMENT``): the paper's eq. 6
  ``[P[:j]; X; P[j:]]``, or the authors' code's ``[P[j:]; X; P[:j]]`` (Xianjun-Yang/DPT's
  ``assemble_soft_template``: the prompt rotated by j, its first j tokens after the input);
  ``adap_len`` / ``adap_ins_len`` keep a learned length ``l*`` of the prompt as a prefix, either
  with the paper's surrogate ``[0*P_before; P_after]`` or also masking the dropped tokens out
  of attention;
* a source (a method's ``SOURCE``): ``pool``, k prompts mixed per instance by
  ``softmax(act(Po(x)))``. ``adap_ins_vec_pos`` = ``pool`` + ``adap_ins_pos``,
  ``adap_pos_ins_vec`` = ``pool`` + ``adap_pos``.

The categorical choice is a straight-through Gumbel-softmax: the hard one-hot on the forward
pass (so the sequence is exactly one arrangement, built by one batched gather), the softmax's
gradient on the backward pass, and for the choice the exact gradient of the one-hot-weighted
sum of all l+1 arrangements (computed in the backward pass without building them). The
temperature follows the paper's eq. 28, in closed form or compounded per step as the authors'
code runs it, and lives in module buffers, so checkpoints carry it.

Instance features come from ``ctx.features[tower]`` (the masked mean of the input embeddings,
free). For a frozen pass (``INSTANCE_FEATURE: frozen_forward`` or ``frozen_output``) the prompt
stack keeps the prompt-free layer-0 input in ``ctx.cache`` and the first module asking runs one
pass of the tower over it, shared by every module and layer of that forward
(:func:`frozen_feature`).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..registry import PLACEMENTS, PROMPT_SOURCES
from ..tokens import TokenSeq
from .base import FROZEN_PASS_INPUT, Placement, PromptContext, TokenSource, masked_mean, prompt_node
from .placement import split_positions
from .sources import initial_tokens

#: instance features; the last two come from a prompt-free pass of the frozen tower
INSTANCE_FEATURES = ("embed_mean", "frozen_forward", "frozen_output")
FROZEN_FEATURES = ("frozen_forward", "frozen_output")
LENGTH_MODES = ("surrogate", "mask")
ARRANGEMENTS = ("paper", "dpt")
SCHEDULES = ("closed_form", "compound")
LOGIT_INITS = ("zeros", "uniform")
ACTIVATIONS = ("relu", "tanh", "none")
POOL_INITS = ("", "uniform")


def dynamic_node(cfg):
    """``cfg.PROMPT.DYNAMIC``, or the defaults' for ``cfg`` None."""
    return prompt_node(cfg, "DYNAMIC")


def check_choice(key: str, value: str, choices) -> str:
    """``value`` if it is one of ``choices``, else a ConfigError naming the key and the choices."""
    if value not in choices:
        shown = ", ".join(repr(c) if c == "" else c for c in choices)
        raise ConfigError(f"PROMPT.DYNAMIC.{key} '{value}' is unknown; choose one of {shown}.")
    return value


# --------------------------------------------------------------------------- temperature
class TemperatureSchedule(nn.Module):
    """The Gumbel-softmax temperature at optimizer step n (the paper's eq. 28), two readings:

    * ``closed_form``: ``max(tau0 * exp(-gamma * n / s), tau_min)``;
    * ``compound``: ``tau <- max(tau * exp(-gamma * t / s), tau_min)`` applied after every
      optimizer step t = 1, 2, ..., n, as eq. 28 is written (tau on both sides) and as the
      authors' training scripts run it. The product of those factors is
      ``exp(-gamma * n(n+1) / (2s))`` and the floor, once reached, holds, so the value is
      computed directly: ``max(tau0 * exp(-gamma * n(n+1) / (2s)), tau_min)``. A resumed run
      thus continues the schedule from its step counter without replaying it.

    Constants and the last step/temperature used are buffers: a checkpoint restores the same
    schedule. (Which reading is a config choice, not a buffer, so checkpoints made before it
    existed still load.)
    """

    def __init__(
        self,
        tau0: float = 1.0,
        tau_min: float = 0.5,
        gamma: float = 3e-5,
        step_scale: float = 1.0,
        kind: str = "closed_form",
    ):
        super().__init__()
        if tau0 <= 0 or tau_min <= 0 or step_scale <= 0 or gamma < 0:
            raise ConfigError(
                f"PROMPT.DYNAMIC temperature needs TAU0 > 0, TAU_MIN > 0, STEP_SCALE > 0 "
                f"and GAMMA >= 0; got {tau0}, {tau_min}, {step_scale}, {gamma}."
            )
        self.kind = check_choice("SCHEDULE", kind, SCHEDULES)
        self.register_buffer("tau0", torch.tensor(float(tau0), dtype=torch.float64))
        self.register_buffer("tau_min", torch.tensor(float(tau_min), dtype=torch.float64))
        self.register_buffer("gamma", torch.tensor(float(gamma), dtype=torch.float64))
        self.register_buffer("step_scale", torch.tensor(float(step_scale), dtype=torch.float64))
        self.register_buffer("last_step", torch.tensor(0, dtype=torch.long))
        self.register_buffer("tau", torch.tensor(float(tau0), dtype=torch.float64))
        self._mirror()

    def _mirror(self) -> None:
        # Python copies of the buffers, so a training step reads no tensor (each read is a
        # synchronising .item()); refreshed whenever a state dict is loaded.
        self._constants = tuple(float(b) for b in (self.tau0, self.tau_min, self.gamma, self.step_scale))
        # [last step, its temperature], updated in place: a module attribute set per step goes
        # through nn.Module.__setattr__
        self._last = [int(self.last_step), float(self.tau)]

    def _load_from_state_dict(self, *args, **kwargs):
        super()._load_from_state_dict(*args, **kwargs)
        self._mirror()

    @classmethod
    def from_config(cls, cfg) -> "TemperatureSchedule":
        d = dynamic_node(cfg)
        return cls(d.TAU0, d.TAU_MIN, d.GAMMA, d.STEP_SCALE, d.SCHEDULE)

    def value(self, step: int) -> float:
        # "annealing units" elapsed after `step` optimizer steps
        tau0, tau_min, gamma, step_scale = self._constants
        units = step * (step + 1) / 2 if self.kind == "compound" else step
        return max(tau0 * math.exp(-gamma * units / step_scale), tau_min)

    @property
    def current(self) -> float:
        """The temperature last set (evaluation uses it as it is)."""
        return self._last[1]

    def update(self, step: int) -> float:
        """The temperature at optimizer step ``step``; remembered in the buffers."""
        step, last = int(step), self._last
        # recomputed once per optimizer step, not per layer (the buffers start at step 0, tau0)
        if step != last[0]:
            last[0], last[1] = step, self.value(step)
            self.tau.fill_(last[1])
            self.last_step.fill_(step)
        return last[1]


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
    """Identity on the arranged hidden states; gives the one-hot choice its straight-through gradient:
    to the one-hot itself, or through the softmax it stands for to a :class:`Choice`'s logits
    (:func:`choice_target_gradient`).

    The sequence the paper's estimator differentiates is the one-hot-weighted sum of all l+1
    arrangements, ``S = sum_j y_j A_j``, with ``A_j = [P[:j]; X; P[j:]]`` (the paper's eq. 6) or
    ``A_j = [P[j:]; X; P[:j]]`` (the authors' code, ``rotate``). With a hard ``y`` the forward
    value is the single chosen arrangement (built elsewhere by one gather) and the gradient to
    ``X`` and ``P`` flows through that gather alone; the gradient to ``y_j`` is ``<dL/dS, A_j>``
    for every j, also the ones not chosen. That is what makes the position learnable: it is the
    first-order change of the loss if the prompt were placed by j instead (merely scaling the
    chosen tokens by ``y_dpos`` would only say whether the current choice's tokens help, and
    nothing about the other positions). It is computed here without building the l+1
    arrangements. With ``G = dL/dS``, ``start``/``end`` the content span before insertion:

    * eq. 6: prompt token t sits at ``start + t`` when t < j and at ``end + t`` otherwise:
      prefix and suffix sums of ``<G[start+t], P[t]>`` and ``<G[end+t], P[t]>``;
    * rotated: token t >= j sits at ``start + (t - j)``, token t < j at ``end + (l - j) + t``:
      diagonal sums of the (l, l) products ``<G[start+s], P[t]>`` (diagonal t - s = j) and
      ``<G[end+u], P[t]>`` (diagonal t - u = j - l);
    * content token m (start <= m < end) sits at ``m + b`` with b the number of prompt tokens
      before the input (j for eq. 6, l - j rotated): the band of ``X G^T``;
    * the tokens before ``start`` and from ``end`` on do not move with j: a per-sample constant
      that the softmax Jacobian cancels (so ``grad_choice`` equals ``<dL/dS, A_j>`` up to it).
    """

    @staticmethod
    def forward(fctx, arranged, target, joined, length, start, end, rotate, soft, tau):
        fctx.save_for_backward(joined, start, end, soft)
        fctx.length, fctx.rotate, fctx.tau = int(length), bool(rotate), tau
        fctx.target_shape, fctx.target_dtype = target.shape, target.dtype
        return arranged.view_as(arranged)

    @staticmethod
    def backward(fctx, grad):
        joined, start, end, soft = fctx.saved_tensors
        grad_choice = split_choice_gradient(grad, joined, fctx.length, start, end, fctx.rotate)
        grad_target = choice_target_gradient(grad_choice, fctx.target_shape, fctx.target_dtype, soft, fctx.tau)
        return grad, grad_target, None, None, None, None, None, None, None


def choice_target_gradient(
    grad_choice: torch.Tensor, shape: torch.Size, dtype: torch.dtype, soft: Optional[torch.Tensor], tau: float
) -> torch.Tensor:
    """The gradient a choice's target gets from ``grad_choice`` (B, l+1), ``dL/dy`` of its one-hot
    ``y``: summed over the batch for a target of one row (a task-level choice), then, when the
    target is the logits of a :class:`Choice` (``soft`` given), through the softmax and the
    temperature the straight-through one-hot stands for: ``softmax((logits + g) / tau)``'s
    Jacobian, the same ops in the same order autograd runs for that expression."""
    grad = grad_choice.sum_to_size(shape) if grad_choice.shape != shape else grad_choice
    if soft is not None:
        grad = torch._softmax_backward_data(_as(grad, soft.dtype), soft, -1, soft.dtype) / tau
    return _as(grad, dtype)


class _StraightThroughKeep(torch.autograd.Function):
    """``keep = y.flip(-1).cumsum(-1)[..., :l]`` of the straight-through one-hot ``y`` in one node.

    Forward: ``keep_t = 1`` where ``index >= l - t``, else 0 (the hard one-hot's value). Backward:
    ``dL/dy_j = sum_{t >= l - j} dL/dkeep_t`` (the last j entries: one product with a cached 0/1
    matrix), handed to the target as :func:`choice_target_gradient` does: what
    ``hard + (soft - soft.detach())`` followed by the flipped cumulative sum gives it.
    """

    @staticmethod
    def forward(fctx, target, index, length, soft, tau):
        fctx.save_for_backward(soft)
        fctx.tau, fctx.target_shape, fctx.target_dtype = tau, target.shape, target.dtype
        return kept_mask(index, length, target.dtype)

    @staticmethod
    def backward(fctx, grad):
        (soft,) = fctx.saved_tensors
        grad_choice = grad @ _kept_by_choice(grad.shape[-1], grad.device, grad.dtype)
        grad_target = choice_target_gradient(grad_choice, fctx.target_shape, fctx.target_dtype, soft, fctx.tau)
        return grad_target, None, None, None, None


def kept_mask(index: torch.Tensor, length: int, dtype: torch.dtype) -> torch.Tensor:
    """(B, length) ``keep_t = 1`` where ``index >= length - t`` (the last ``index`` tokens), else 0;
    a 0-d ``index`` (a task-level choice) gives one row."""
    return (index.view(-1, 1) >= _kept_thresholds(length, index.device)).to(dtype)


@functools.lru_cache(maxsize=64)
def _kept_thresholds(length: int, device: torch.device) -> torch.Tensor:
    """(1, length) ``length - t``: token t is kept by the lengths j >= length - t."""
    return length - _arange(length, device)[None]


@functools.lru_cache(maxsize=64)
def _kept_by_choice(length: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """(length, length + 1) 0/1: entry (t, j) is 1 where length j keeps token t (t >= length - j)."""
    return (_arange(length, device)[:, None] >= length - _arange(length + 1, device)).to(dtype)


def _as(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return t if t.dtype == dtype else t.to(dtype)


def split_choice_gradient(
    grad: torch.Tensor, joined: torch.Tensor, k: int, start: torch.Tensor, end: torch.Tensor, rotate: bool
) -> torch.Tensor:
    """(B, k+1) ``<dL/dS, A_j>`` up to a per-sample constant (see :class:`_SplitChoiceGradient`):
    ``grad`` (B, N+k, D) = dL/dS, ``joined`` (B, N+k, D) ``Z = [X; P]``, the sequence before
    insertion followed by the k prompt tokens in their own order, ``start``/``end`` (B,) the
    content span of X.

    Every term is a product ``<Z_i, G_r>`` of a token of Z and an output slot, so one (N+k, N+k)
    product per sample holds them all; the rest reads it off: a strided view for the content
    band, one gather for the prompt's slots, one product with a cached 0/1 matrix that sums them
    per choice. (The per-step cost of the choice is the number of these small ops.)
    """
    B, N = joined.shape[0], joined.shape[1] - k
    from_position = _from_position(N, joined.device, joined.dtype)
    prompt_sums = _prompt_sums(k, bool(rotate), joined.device, joined.dtype)
    products = torch.bmm(joined, _as(grad, joined.dtype).transpose(1, 2))  # (B, N+k, N+k): <Z_i, G_r>
    # content token m (start <= m < end) sits at m + b with b the prompt tokens before X (j for
    # eq. 6, l - j rotated): the band products[m, m + b], b = 0..k, a view of the product,
    # summed over the content as its sum from start on minus its sum from end on
    band = products.as_strided((B, N, k + 1), (products.stride(0), N + k + 1, 1))
    slots = torch.stack([start, end], 1)
    from_start, from_end = torch.bmm(from_position[slots], band).unbind(1)
    content_term = from_start - from_end
    if rotate:  # choice j puts l - j tokens before the input
        content_term = content_term.flip(-1)
        # every prompt token t against the l slots from start on and the l from end on
        columns = (slots[:, :, None] + _arange(k, joined.device)).view(B, 1, 2 * k).expand(B, k, 2 * k)
        prompt_products = products[:, N:].gather(2, columns)
    else:
        # prompt token t against its own two slots, start + t and end + t: columns start and end
        # of the prompt rows' band products[N + t, t + d], a view
        prompt_band = products[:, N:].as_strided((B, k, N + 1), (products.stride(0), N + k + 1, 1))
        prompt_products = prompt_band.gather(2, slots[:, None, :].expand(B, k, 2))
    # Tokens before start and from end on sit at the same place for every j: their term is a
    # per-sample constant, which the softmax Jacobian maps to zero, so it is left out.
    return torch.addmm(content_term, prompt_products.reshape(B, -1), prompt_sums)


@functools.lru_cache(maxsize=64)
def _arange(n: int, device: torch.device) -> torch.Tensor:
    """``arange(n)``, made once per length and device (the choice runs every pass)."""
    return torch.arange(n, device=device)


@functools.lru_cache(maxsize=16)
def _from_position(N: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """(N+1, N) 0/1: row i selects the tokens m >= i (a content mask is the difference of two
    rows). One per padded length seen lately (at most 16, a few MB for long sequences)."""
    return (_arange(N, device) >= _arange(N + 1, device)[:, None]).to(dtype)


@functools.lru_cache(maxsize=64)
def _prompt_sums(k: int, rotate: bool, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """The 0/1 matrix of :func:`split_choice_gradient` whose column j sums the prompt products of
    choice j. Eq. 6 (rows ``(t, h)``, h = 0 the slot ``start + t``, 1 the slot ``end + t``): token t
    sits at ``start + t`` when t < j, else at ``end + t``. Rotated (rows ``(t, h, s)``, the slot
    ``start + s`` or ``end + s``): token t >= j sits at ``start + (t - j)``, token t < j at
    ``end + (l - j) + t``.
    """
    offsets, choices = _arange(k, device), _arange(k + 1, device)
    if rotate:
        t, s = offsets[:, None, None], offsets[None, :, None]
        sums = torch.stack([(s == t - choices) & (t >= choices), (s == k - choices + t) & (t < choices)], 1)
    else:
        t = offsets[:, None]
        sums = torch.stack([t < choices, t >= choices], 1)
    return sums.reshape(-1, k + 1).to(dtype)


def arrange_tokens(tokens: torch.Tensor, index: torch.Tensor, rotate: bool) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(tokens in sequence order (B, l, D), tokens before the input (B,))`` for choice ``index``.

    Eq. 6 keeps the order and puts ``index`` tokens before the input; the rotated arrangement
    ``[P[j:]; X; P[:j]]`` orders them ``[P[j:], P[:j]]`` with ``l - j`` before the input.
    """
    if not rotate:
        return tokens, index
    B, k, D = tokens.shape
    order = _rotations(k, tokens.device)[index]
    return tokens.gather(1, order[..., None].expand(-1, -1, D)), k - index


@functools.lru_cache(maxsize=64)
def _rotations(k: int, device: torch.device) -> torch.Tensor:
    """(k+1, k): row j is the token order ``(t + j) % k`` of the rotated arrangement of choice j."""
    return (_arange(k, device) + _arange(k + 1, device)[:, None]) % k


def insert_split(
    seq: TokenSeq,
    tokens: torch.Tensor,
    index: torch.Tensor,
    owner_id: int,
    choice=None,
    rotate: bool = False,
) -> TokenSeq:
    """The arrangement of choice ``index`` ((B,) in [0, l]) per sample, with one gather:
    ``[P[:j]; X; P[j:]]``, or ``[P[j:]; X; P[:j]]`` with ``rotate``.

    ``choice``, the :class:`Choice` that picked ``index`` (its logits receive the gradient), or a
    (B or 1, l+1) straight-through one-hot, receives the gradient of the weighted sum of all
    arrangements (see :class:`_SplitChoiceGradient`).
    """
    tokens = seq.batch_tokens(tokens)
    length = tokens.shape[1]
    if length == 0:
        return seq
    # the rotated arrangement takes token (t + j) % l to slot t: the insertion's gather reads it
    # from the prompt in its own order
    order = _rotations(length, tokens.device)[index] if rotate else None
    positions = split_positions(seq, length, length - index if rotate else index)
    target, soft, tau = _choice_target(choice)
    if target is None:
        return seq.insert_at(tokens, positions, owner_id, token_order=order)
    # [X; P] with the prompt in its own order: the insertion gathers from it and the choice
    # gradient reads it
    joined = torch.cat([seq.x, tokens.to(seq.x.dtype)], 1)
    out = seq.insert_at(tokens, positions, owner_id, joined=joined, token_order=order)
    x = _SplitChoiceGradient.apply(
        out.x, target, joined, length, seq.anchors["start"], seq.anchors["end"], rotate, soft, tau
    )
    return out.with_x(x)


def _choice_target(choice) -> Tuple[Optional[torch.Tensor], Optional[torch.Tensor], float]:
    """``(target, soft, tau)`` for a choice gradient: a :class:`Choice`'s logits with its softmax and
    temperature, or a one-hot tensor itself (soft None); target None where no gradient is wanted."""
    if isinstance(choice, Choice):
        return (choice.logits, choice.soft, choice.tau) if choice.soft is not None else (None, None, 1.0)
    if choice is None or not (torch.is_grad_enabled() and choice.requires_grad):
        return None, None, 1.0
    return choice, None, 1.0


@dataclass
class Choice:
    """One categorical choice of a pass, by a straight-through Gumbel-softmax.

    ``index`` (B,) or () long, ``argmax(logits + g)``. When the logits get a gradient, ``soft`` is
    ``softmax((logits + g) / tau)``, computed outside autograd, and ``logits`` are kept: the
    straight-through one-hot ``hard + (soft - soft.detach())`` has the hard value and exactly the
    softmax's gradient, so the placements use the hard value through ``index`` and the node that
    uses it (:func:`insert_split`, :meth:`kept`) hands the logits the one-hot's gradient through
    the softmax Jacobian, the temperature and, for one row of logits, the batch sum itself
    (:func:`choice_target_gradient`): one autograd node per choice. ``soft`` and ``logits`` are
    None when no gradient is wanted. ``dtype`` is the logits' dtype.
    """

    index: torch.Tensor
    soft: Optional[torch.Tensor]
    dtype: torch.dtype
    logits: Optional[torch.Tensor] = None
    tau: float = 1.0

    @classmethod
    def draw(cls, logits: torch.Tensor, tau: float, sample: bool) -> "Choice":
        """The choice of ``argmax(logits + g)`` (same noise draw as :func:`straight_through_gumbel`)."""
        wants_grad = torch.is_grad_enabled() and logits.requires_grad
        with torch.no_grad():
            # g = -log(-log U) = -log(E) with E ~ Exp(1)
            noisy = logits - torch.empty_like(logits).exponential_().log_() if sample else logits
            index = noisy.argmax(-1)
            if not wants_grad:
                return cls(index, None, logits.dtype)
            return cls(index, torch.softmax(noisy / tau, dim=-1), logits.dtype, logits, float(tau))

    def kept(self, length: int) -> torch.Tensor:
        """(B or 1, length) ``keep_t = sum_{j >= length - t} y_j`` for the one-hot ``y`` of this
        choice (a prefix prompt of learned length keeps its last ``index`` tokens): exactly 0/1,
        with the straight-through gradient (:class:`_StraightThroughKeep`)."""
        if self.soft is None:
            return kept_mask(self.index, length, self.dtype)
        return _StraightThroughKeep.apply(self.logits, self.index, length, self.soft, self.tau)


# --------------------------------------------------------------------------- logits
class TaskLogits(nn.Module):
    """One learned vector of ``n`` logits for the whole task (adap_pos: n = l+1 parameters).

    ``init``: ``zeros`` (every choice equally likely at the start) or ``uniform``
    (U(-init_range, init_range), the authors' code's ``position_emb``).
    """

    def __init__(self, n: int, init: str = "zeros", init_range: float = 0.5):
        super().__init__()
        logits = torch.zeros(n)
        if check_choice("LOGIT_INIT", init, LOGIT_INITS) == "uniform":
            logits.uniform_(-init_range, init_range)
        self.logits = nn.Parameter(logits)

    def forward(self, feature: Optional[torch.Tensor]) -> torch.Tensor:
        return self.logits  # (n,): the choice is drawn once for the batch


class InstanceLogits(nn.Module):
    """Linear d -> n, then an activation (the paper's one-layer networks: ReLU), on the
    instance feature."""

    def __init__(self, d: int, n: int, bias: bool = False, activation: str = "relu"):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ConfigError(
                f"Instance network activation '{activation}' is unknown; choose one of {', '.join(ACTIVATIONS)}."
            )
        self.linear = nn.Linear(d, n, bias=bias)
        self.activation = activation

    def forward(self, feature: torch.Tensor) -> torch.Tensor:
        if feature.shape[-1] != self.linear.in_features:
            raise ConfigError(
                f"Instance feature of width {feature.shape[-1]} does not fit a dynamic "
                f"prompt network made for width {self.linear.in_features}; the prompt "
                f"and the tower it conditions on must have the same width."
            )
        out = self.linear(feature.to(self.linear.weight.dtype))
        if self.activation == "relu":
            return F.relu(out)
        return torch.tanh(out) if self.activation == "tanh" else out


# --------------------------------------------------------------------------- instance features
def check_feature_mode(mode: str) -> str:
    return check_choice("INSTANCE_FEATURE", mode, INSTANCE_FEATURES)


def frozen_pass_mode(feature_mode: str, instance: bool = True) -> Optional[str]:
    """The frozen pass a module needs (the prompt stack's ``frozen_pass_mode`` contract), or None."""
    return feature_mode if instance and feature_mode in FROZEN_FEATURES else None


def frozen_feature(tower: str, ctx: PromptContext, mode: str, feature_length: int = 0) -> torch.Tensor:
    """The instance feature from a prompt-free pass of the frozen tower, once per forward.

    The prompt stack stores the backbone and the tower's layer-0 input, before any prompt acted,
    under ``ctx.cache[(FROZEN_PASS_INPUT, tower)]`` when one of its modules declares a
    ``frozen_pass_mode``; the first module asking for ``mode`` runs the pass, the others reuse it.

    * ``frozen_forward``: the masked mean of the last layer's states, in eval mode (no dropout);
    * ``frozen_output``: what the authors' code conditions on (``torch.mean(encoder_last_hidden_state,
      1)`` of a full T5 forward): the mean over every position, padding included, of the tower's
      output after its final norm, in the backbone's own train/eval mode (its dropout as in the
      prompted pass). ``feature_length`` > 0 pads the input to that many tokens first, as
      OpenPrompt pads every input to ``max_seq_length``, so the mean divides by it.
    """
    key = ("dynamic." + mode, tower, feature_length)
    if key in ctx.cache:
        return ctx.cache[key]
    stored = ctx.cache.get((FROZEN_PASS_INPUT, tower))
    if stored is None:
        raise ConfigError(
            f"PROMPT.DYNAMIC.INSTANCE_FEATURE is {mode}, but no frozen pass of the "
            f"'{tower}' tower ran: the prompt stack runs it before layer 0 once it knows "
            f"the backbone (mmprompt.build.build_prompts does that; a hand-built "
            f"PromptStack needs .setup(backbone) or .attach(backbone))."
        )
    backbone, seq = stored
    module = backbone.tower(tower)
    with torch.no_grad():
        if mode == "frozen_forward":
            # eval mode for the whole backbone: a tower's library modules (T5, BERT) belong to
            # the backbone's module tree, not to the tower's
            switched = backbone if isinstance(backbone, nn.Module) else module
            was_training = switched.training
            switched.eval()
            try:
                out = module.run_layers(seq)
            finally:
                switched.train(was_training)
            feature = masked_mean(out.x, out.mask)
        else:
            final = getattr(module, "final", None)
            if final is None:
                raise ConfigError(
                    f"PROMPT.DYNAMIC.INSTANCE_FEATURE frozen_output reads the tower's output "
                    f"after its final norm, which the '{tower}' tower does not expose "
                    f"(only T5's encoder does); use frozen_forward or embed_mean."
                )
            feature = final(module.run_layers(_pad_to(seq, feature_length, module))).x.mean(1)
    ctx.cache[key] = feature
    return feature


def _pad_to(seq: TokenSeq, length: int, tower) -> TokenSeq:
    """``seq`` with padding tokens (the pad id's embedding, mask off) appended up to ``length``."""
    missing = length - seq.length
    if missing <= 0:
        return seq
    embeddings = tower.input_embeddings()
    pad_id = getattr(getattr(getattr(tower, "hf", None), "config", None), "pad_token_id", None)
    if embeddings is None or pad_id is None:
        raise ConfigError(
            f"PROMPT.DYNAMIC.FEATURE_LENGTH pads the frozen pass with the padding token, "
            f"which the '{seq.tower}' tower does not name; set FEATURE_LENGTH 0."
        )
    B = seq.batch_size
    pad = embeddings.weight[pad_id].to(seq.x.dtype).expand(B, missing, -1)
    off = torch.zeros(B, missing, dtype=torch.bool, device=seq.x.device)
    return TokenSeq(
        torch.cat([seq.x, pad], 1),
        torch.cat([seq.mask, off], 1),
        torch.cat([seq.owner, off.long()], 1),
        dict(seq.anchors),
        seq.tower,
        {},
    )


def instance_feature(
    tower: str, ctx: PromptContext, mode: str = "embed_mean", seq: Optional[TokenSeq] = None, feature_length: int = 0
) -> torch.Tensor:
    """The tower's instance feature for this pass.

    ``embed_mean``: ``ctx.features[tower]``, which the prompt stack sets before layer 0 (or the
    masked mean of ``seq`` when a placement runs outside a stack). ``frozen_forward`` /
    ``frozen_output``: :func:`frozen_feature`; a model whose stack never stored the prompt-free
    input is refused rather than silently given another feature.
    """
    if mode in FROZEN_FEATURES:
        return frozen_feature(tower, ctx, mode, feature_length)
    if tower not in ctx.features:
        if seq is None:
            raise ConfigError(
                f"No instance feature for the '{tower}' tower: dynamic prompt modules must run "
                f"inside a PromptStack, which sets it before layer 0."
            )
        ctx.features[tower] = masked_mean(seq.x, seq.mask)
    return ctx.features[tower]


class _LearnedChoice(Placement):
    """Shared machinery: one categorical choice over l+1 values per layer group and pass."""

    kind = "dpos"
    # a deeper layer replaces the tokens (same choice) or removes them and inserts its own (own
    # choice); the choice reads the instance feature of layer 0 or of the frozen pass, never
    # the previous layer's prompt states
    overwrites_in_full = True

    def __init__(
        self,
        *,
        length: int,
        width: int,
        instance: bool,
        choice_depth: int = 1,
        noise: bool = True,
        eval_noise: bool = False,
        record: bool = True,
        instance_feature: str = "embed_mean",
        feature_length: int = 0,
        instance_relu: bool = True,
        instance_bias: bool = False,
        logit_init: str = "zeros",
        init_range: float = 0.5,
        temperature: Optional[TemperatureSchedule] = None,
    ):
        """Keywords are the PROMPT.DYNAMIC keys in lower case (their meaning is documented there);
        ``temperature`` None is the default schedule."""
        super().__init__()
        if length is None or width is None:
            raise ConfigError(f"{type(self).__name__} needs the prompt length and width.")
        depth = int(choice_depth)
        if depth < 1:
            raise ConfigError(f"PROMPT.DYNAMIC.CHOICE_DEPTH must be >= 1 (1 = one choice for all layers); got {depth}.")
        self.length = int(length)
        self.instance = instance
        self.sample_noise = bool(noise)
        self.eval_noise = bool(eval_noise)
        self.record_choices = bool(record)
        self.feature_mode = check_feature_mode(instance_feature)
        self.feature_length = int(feature_length)
        if instance:
            activation = "relu" if instance_relu else "none"
            heads = [InstanceLogits(width, self.length + 1, bool(instance_bias), activation) for _ in range(depth)]
        else:
            heads = [TaskLogits(self.length + 1, logit_init, float(init_range)) for _ in range(depth)]
        self.heads = nn.ModuleList(heads)
        self.temperature = temperature if temperature is not None else TemperatureSchedule()

    @staticmethod
    def choice_kwargs(cfg) -> dict:
        """The keywords PROMPT.DYNAMIC sets for every learned choice."""
        d = dynamic_node(cfg)
        return dict(
            choice_depth=d.CHOICE_DEPTH,
            noise=d.NOISE,
            eval_noise=d.EVAL_NOISE,
            record=d.RECORD,
            instance_feature=d.INSTANCE_FEATURE,
            feature_length=d.FEATURE_LENGTH,
            instance_relu=d.INSTANCE_RELU,
            instance_bias=d.INSTANCE_BIAS,
            logit_init=d.LOGIT_INIT,
            init_range=d.INIT_RANGE,
            temperature=TemperatureSchedule.from_config(cfg),
        )

    @property
    def frozen_pass_mode(self) -> Optional[str]:
        return frozen_pass_mode(self.feature_mode, self.instance)

    def recorded(self, index: torch.Tensor) -> torch.Tensor:
        """What the records hold for a choice (the choice itself; positions override)."""
        return index

    def choose(self, seq: TokenSeq, ctx: PromptContext) -> Tuple[Choice, torch.Tensor, int]:
        """``(choice, index (B,), head)`` for this layer, drawn once per pass and head."""
        layer = getattr(ctx, "layer", 0)
        head = 0
        if len(self.heads) > 1:  # the i-th layer this module acts on uses head min(i, depth - 1)
            layers_seen = ctx.cache.setdefault(("dynamic.layers", id(self), seq.tower), [])
            if layer not in layers_seen:
                layers_seen.append(layer)
            head = min(layers_seen.index(layer), len(self.heads) - 1)
        key = ("dynamic.choice", id(self), seq.tower, head)
        if key not in ctx.cache:
            tau = self.temperature.update(ctx.step) if self.training else self.temperature.current
            feature = (
                instance_feature(seq.tower, ctx, self.feature_mode, seq, self.feature_length) if self.instance else None
            )
            sample = self.sample_noise if self.training else self.eval_noise
            choice = Choice.draw(self.heads[head](feature), tau, sample=sample)
            ctx.cache[key] = (choice, choice.index.expand(seq.batch_size))
        choice, index = ctx.cache[key]
        if self.record_choices:
            ctx.record(f"{seq.tower}.layer{layer}.{self.kind}", self.recorded(index))
        return choice, index, head

    def held_slots(self, seq: TokenSeq, owner_id: int, head: int, ctx: PromptContext) -> Tuple[bool, bool]:
        """``(keep, held)``: whether this layer's tokens just overwrite the previous layer's (same
        choice), and whether ``seq`` holds this module's tokens at all (to be removed otherwise).

        A deeper layer that shares the choice keeps the slots its tokens already hold, also when
        another method inserted words next to them meanwhile (MaPLe's fixed words); the
        position/length gradient then comes from the layer that made the arrangement. A layer
        with its own choice removes the previous tokens and arranges anew. Before this module's
        first placement of the pass (``ctx``) the sequence holds none of its tokens (its owner id
        is its own), so the sequence is not searched.
        """
        key = ("dynamic.placed", id(self), seq.tower, owner_id)
        placed = ctx.cache.get(key)
        ctx.cache[key] = head
        if placed is None:
            return False, False
        held = seq.has(owner_id)
        return held and placed == head, held


@PLACEMENTS.register("adap_pos")
class AdaptivePosition(_LearnedChoice):
    """The prompt placed around the input by a task-level learned choice j (l+1 parameters):
    ``[P[:j]; X; P[j:]]`` (eq. 6) or, with ``PROMPT.DYNAMIC.ARRANGEMENT dpt``, the authors'
    code's ``[P[j:]; X; P[:j]]``.

    The tokens before the input go to the ``start`` anchor (after CLS / SOT / [CLS]), the others
    to the ``end`` anchor (before EOT / [SEP] / </s>, right after each sample's last real token
    in padded batches); pooled anchors move with the insertion. At deeper layers the previous
    layer's tokens are overwritten in place when the layer shares the choice
    (``PROMPT.DYNAMIC.CHOICE_DEPTH``), else removed and inserted at that layer's own choice.
    Records (``<tower>.layer<i>.dpos``) hold the number of tokens before the input.
    """

    instance_level = False

    def __init__(self, *, length=None, width=None, arrangement: str = "paper", **choice):
        super().__init__(length=length, width=width, instance=self.instance_level, **choice)
        self.rotate = check_choice("ARRANGEMENT", arrangement, ARRANGEMENTS) == "dpt"

    @classmethod
    def from_config(cls, cfg, *, length=None, width=None) -> "AdaptivePosition":
        return cls(length=length, width=width, arrangement=dynamic_node(cfg).ARRANGEMENT, **cls.choice_kwargs(cfg))

    def recorded(self, index: torch.Tensor) -> torch.Tensor:
        return self.length - index if self.rotate else index

    def place(self, seq: TokenSeq, tokens: torch.Tensor, owner_id: int, ctx: PromptContext) -> TokenSeq:
        tokens = seq.batch_tokens(tokens)
        if tokens.shape[1] != self.length:
            raise ConfigError(
                f"{type(self).__name__} was built for {self.length} prompt tokens but got {tokens.shape[1]}."
            )
        choice, index, head = self.choose(seq, ctx)
        keep, held = self.held_slots(seq, owner_id, head, ctx)
        if keep:
            # the slots hold the tokens in sequence order, which the rotation permutes
            return seq.replace(owner_id, arrange_tokens(tokens, index, self.rotate)[0])
        if held:
            seq = seq.remove(owner_id)
        return insert_split(seq, tokens, index, owner_id, choice, rotate=self.rotate)


@PLACEMENTS.register("adap_ins_pos")
class AdaptiveInstancePosition(AdaptivePosition):
    """``adap_pos`` with the choice per instance from Linear d -> l+1 (+ ReLU) on the instance
    feature: d*(l+1) parameters (plus l+1 with PROMPT.DYNAMIC.INSTANCE_BIAS)."""

    instance_level = True


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

    instance_level = False

    def __init__(self, *, length=None, width=None, length_mode: str = "surrogate", **choice):
        super().__init__(length=length, width=width, instance=self.instance_level, **choice)
        self.mode = length_mode
        if self.mode not in LENGTH_MODES:
            raise ConfigError(
                f"PROMPT.DYNAMIC.LENGTH_MODE '{self.mode}' is unknown; choose one of {', '.join(LENGTH_MODES)}."
            )

    @classmethod
    def from_config(cls, cfg, *, length=None, width=None) -> "AdaptiveLength":
        return cls(length=length, width=width, length_mode=dynamic_node(cfg).LENGTH_MODE, **cls.choice_kwargs(cfg))

    def place(self, seq: TokenSeq, tokens: torch.Tensor, owner_id: int, ctx: PromptContext) -> TokenSeq:
        tokens = seq.batch_tokens(tokens)
        choice, _, head = self.choose(seq, ctx)
        keep = choice.kept(self.length).expand(seq.batch_size, -1)
        tokens = tokens * keep[..., None].to(tokens.dtype)
        mask = keep.detach() > 0.5 if self.mode == "mask" else None
        keep_slots, held = self.held_slots(seq, owner_id, head, ctx)
        if keep_slots:
            return seq.replace(owner_id, tokens, mask)
        if held:
            seq = seq.remove(owner_id)
        positions = seq.anchors["start"][:, None].expand(-1, self.length)
        return seq.insert_at(tokens, positions, owner_id, mask=mask)


@PLACEMENTS.register("adap_ins_len")
class AdaptiveInstanceLength(AdaptiveLength):
    """``adap_len`` with ``l*`` per instance from Linear d -> l+1 (+ ReLU)."""

    instance_level = True


# --------------------------------------------------------------------------- prompt pool
@PROMPT_SOURCES.register("pool")
class PromptPool(TokenSource):
    """adap_ins_vec: ``P_new = sum_i beta_i P^(i)``, ``beta = softmax(act(Po(x)))``.

    k prompts of (length, width) and Po: Linear d -> k (d*k parameters without bias, the
    paper's Table 9) with ``PROMPT.DYNAMIC.POOL_ACTIVATION`` (relu as the paper's one-layer
    networks; the authors' code uses none in adap_ins_vec_pos / adap_pos_ins_vec, tanh in
    adap_ins_vec). The mixing weights are computed once per pass and tower, so deep methods that
    draw tokens at every layer reuse them.
    """

    def __init__(
        self,
        *,
        length: int,
        width: int,
        tower=None,
        init: str = "normal",
        init_text: str = "",
        patch_size: Optional[int] = None,
        pool_size: int = 8,
        pool_activation: str = "relu",
        pool_init: str = "",
        init_range: float = 0.5,
        instance_bias: bool = False,
        record: bool = True,
        instance_feature: str = "embed_mean",
        feature_length: int = 0,
    ):
        """Keywords after ``patch_size`` are the PROMPT.DYNAMIC keys in lower case."""
        super().__init__()
        k = int(pool_size)
        if k < 1:
            raise ConfigError(f"PROMPT.DYNAMIC.POOL_SIZE must be >= 1; got {k}.")
        self.length, self.width, self.size = length, width, k
        self.record_choices = bool(record)
        self.feature_mode = check_feature_mode(instance_feature)
        self.feature_length = int(feature_length)
        if check_choice("POOL_INIT", pool_init, POOL_INITS) == "uniform":
            bound = float(init_range)
            self.prompts = nn.Parameter(torch.empty(k, length, width).uniform_(-bound, bound))
        else:
            self.prompts = nn.Parameter(
                torch.stack([self._member(i, init, tower, init_text, patch_size) for i in range(k)])
            )
        activation = check_choice("POOL_ACTIVATION", pool_activation, ACTIVATIONS)
        self.router = InstanceLogits(width, k, bool(instance_bias), activation)

    @classmethod
    def from_config(cls, cfg, **sizes) -> "PromptPool":
        d = dynamic_node(cfg)
        return cls(
            **sizes,
            pool_size=d.POOL_SIZE,
            pool_activation=d.POOL_ACTIVATION,
            pool_init=d.POOL_INIT,
            init_range=d.INIT_RANGE,
            instance_bias=d.INSTANCE_BIAS,
            record=d.RECORD,
            instance_feature=d.INSTANCE_FEATURE,
            feature_length=d.FEATURE_LENGTH,
        )

    def _member(self, i: int, init: str, tower, init_text: str, patch_size: Optional[int]) -> torch.Tensor:
        if init == "vocab" and tower is not None and tower.input_embeddings() is not None:
            # k different vocabulary windows: identical members would receive identical
            # updates and the mixing could never tell them apart.
            weight = tower.input_embeddings().weight.detach()
            ids = (torch.arange(self.length) + i * self.length) % weight.shape[0]
            return weight[ids].clone().float()
        return initial_tokens(self.length, self.width, tower, init, init_text, patch_size)

    @property
    def frozen_pass_mode(self) -> Optional[str]:
        return frozen_pass_mode(self.feature_mode)

    def mixing_weights(self, ctx: PromptContext, tower: str) -> torch.Tensor:
        key = ("dynamic.pool", id(self), tower)
        if key not in ctx.cache:
            feature = instance_feature(tower, ctx, self.feature_mode, feature_length=self.feature_length)
            beta = torch.softmax(self.router(feature), -1)
            ctx.cache[key] = beta
            if self.record_choices:
                ctx.record(f"{tower}.pool.top", beta.argmax(-1))
        return ctx.cache[key]

    def forward(self, ctx: PromptContext, tower: str) -> torch.Tensor:
        beta = self.mixing_weights(ctx, tower)
        k, length, width = self.prompts.shape
        # one (B, k) x (k, l*d) product: einsum's permutes and batched product cost more small ops
        return torch.mm(beta.to(self.prompts.dtype), self.prompts.view(k, length * width)).view(-1, length, width)
