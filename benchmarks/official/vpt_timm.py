"""VPT-shallow / VPT-deep on a timm ViT vs KMnP/vpt's prompted ViT, on the same random weights.

Theirs: ``src/models/vit_prompt/vit.py`` ``PromptedVisionTransformer`` (built as their
``build_vit_sup_models`` builds it, ``num_classes=-1``) with their classifier
``src/models/mlp.py`` ``MLP(mlp_dims=[num_classes], special_bias=True)``, as their
``vit_models.ViT.setup_head`` does. Their ViT reads Google's ``.npz`` checkpoint layout through
its own ``load_from``; the timm model's (perturbed) weights are written into that layout and
loaded by that very function, so their loader is exercised too.

What of theirs is stubbed: ``turtle`` (their ``vit_backbones/vit.py`` imports ``forward`` from it
and never uses it), ``ml_collections`` (only a container for their ViT configs: a dict with
attribute access stands in) and ``src.utils.logging`` (``get_logger``; the real one needs
``simplejson``/``termcolor``/``iopath``). Their prompt config is passed as a namespace with the
keys ``PromptedTransformer`` reads.
"""

from __future__ import annotations

import copy
import importlib
import os
import types

import torch
import torch.nn.functional as F

from .common import (
    REPO,
    Result,
    checkout_on_path,
    grads_rel,
    perturb_norms_and_biases_,
    recipe,
    rel_diff,
    require_checkout,
    time_ratio,
)

THEIR_FILES = (
    "src/models/vit_prompt/vit.py",
    "src/models/vit_backbones/vit.py",
    "src/models/mlp.py",
    "src/configs/vit_configs.py",
)
NUM_CLASSES = 200  # CUB
BATCH = 2
#: (timm kwargs, their ViT config fields) per --size; tiny keeps the real patch/CLS layout
SIZES = {
    "base": (dict(), dict(hidden_size=768, mlp_dim=3072, num_heads=12, num_layers=12, patch=16, img=224)),
    "tiny": (
        dict(embed_dim=64, depth=3, num_heads=2, img_size=32, patch_size=8),
        dict(hidden_size=64, mlp_dim=256, num_heads=2, num_layers=3, patch=8, img=32),
    ),
}


class _AttrDict(dict):
    """Stand-in for ``ml_collections.ConfigDict``: their ViT configs only store and read fields."""

    def __getattr__(self, key):
        try:
            return self[key]
        except KeyError:
            raise AttributeError(key) from None

    def __setattr__(self, key, value):
        self[key] = value


def _stubs():
    turtle = types.ModuleType("turtle")
    turtle.forward = None
    ml_collections = types.ModuleType("ml_collections")
    ml_collections.ConfigDict = _AttrDict
    logging_stub = types.ModuleType("src.utils.logging")
    logging_stub.get_logger = lambda name=None: __import__("logging").getLogger(name or "visual_prompt")
    return {"turtle": turtle, "ml_collections": ml_collections, "src.utils.logging": logging_stub}


def load_theirs(path: str):
    with checkout_on_path(path, stubs=_stubs(), prefixes=("src",)):
        vit_prompt = importlib.import_module("src.models.vit_prompt.vit")
        mlp = importlib.import_module("src.models.mlp")
        vit_configs = importlib.import_module("src.configs.vit_configs")
    return vit_prompt, mlp, vit_configs


def their_vit_config(vit_configs, dims):
    """Their ViT-B/16 config with the comparison's sizes and every dropout 0."""
    cfg = copy.deepcopy(vit_configs.get_b16_config())
    cfg.patches = _AttrDict(size=(dims["patch"], dims["patch"]))
    cfg.hidden_size = dims["hidden_size"]
    cfg.transformer.mlp_dim = dims["mlp_dim"]
    cfg.transformer.num_heads = dims["num_heads"]
    cfg.transformer.num_layers = dims["num_layers"]
    cfg.transformer.dropout_rate = 0.0
    cfg.transformer.attention_dropout_rate = 0.0
    return cfg


def their_prompt_config(num_tokens: int, deep: bool):
    """The MODEL.PROMPT keys ``PromptedTransformer`` / ``PromptedVisionTransformer`` read, at
    their defaults (src/configs/config.py) except length, depth and dropout 0."""
    return types.SimpleNamespace(
        NUM_TOKENS=num_tokens,
        LOCATION="prepend",
        INITIATION="random",
        NUM_DEEP_LAYERS=None,
        DEEP_SHARED=False,
        PROJECT=-1,
        DEEP=deep,
        DROPOUT=0.0,
        VIT_POOL_TYPE="original",
    )


def timm_to_google_npz(vit) -> dict:
    """The timm ViT's weights in the key layout of Google's ViT .npz checkpoints (what their
    ``VisionTransformer.load_from`` reads): kernels (in, out), conv kernel HWIO."""

    def arr(t):
        return t.detach().float().cpu().contiguous().numpy()

    d = vit.embed_dim
    w = {
        "embedding/kernel": arr(vit.patch_embed.proj.weight.permute(2, 3, 1, 0)),
        "embedding/bias": arr(vit.patch_embed.proj.bias),
        "cls": arr(vit.cls_token),
        "Transformer/posembed_input/pos_embedding": arr(vit.pos_embed),
        "Transformer/encoder_norm/scale": arr(vit.norm.weight),
        "Transformer/encoder_norm/bias": arr(vit.norm.bias),
    }
    for i, blk in enumerate(vit.blocks):
        root = f"Transformer/encoderblock_{i}"
        attn = f"{root}/MultiHeadDotProductAttention_1"
        qkv_w, qkv_b = blk.attn.qkv.weight, blk.attn.qkv.bias
        for j, name in enumerate(("query", "key", "value")):
            w[f"{attn}/{name}/kernel"] = arr(qkv_w[j * d : (j + 1) * d].t())
            w[f"{attn}/{name}/bias"] = arr(qkv_b[j * d : (j + 1) * d])
        w[f"{attn}/out/kernel"] = arr(blk.attn.proj.weight.t())
        w[f"{attn}/out/bias"] = arr(blk.attn.proj.bias)
        for k, fc in (("Dense_0", blk.mlp.fc1), ("Dense_1", blk.mlp.fc2)):
            w[f"{root}/MlpBlock_3/{k}/kernel"] = arr(fc.weight.t())
            w[f"{root}/MlpBlock_3/{k}/bias"] = arr(fc.bias)
        for k, norm in (("LayerNorm_0", blk.norm1), ("LayerNorm_2", blk.norm2)):
            w[f"{root}/{k}/scale"] = arr(norm.weight)
            w[f"{root}/{k}/bias"] = arr(norm.bias)
    return w


def build_ours(config: str, size: str, seed: int):
    from mmprompt.build import build_model
    from mmprompt.config import get_cfg

    cfg = get_cfg()
    cfg.merge_from_file(os.path.join(REPO, "configs", config))
    kwargs = SIZES[size][0]
    cfg.merge_from_list(
        [
            "MODEL.BACKBONE.PRETRAINED",
            "",
            "PROMPT.VPT.DROPOUT",
            "0.0",
            "MODEL.BACKBONE.KWARGS",
            str(kwargs) if kwargs else "{}",
        ]
    )
    torch.manual_seed(seed)
    model = build_model(cfg, [f"class_{i}" for i in range(NUM_CLASSES)])
    vit = model.backbone.model
    perturb_norms_and_biases_(vit, seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():  # timm starts the class token at ~1e-6: give it a real value
        vit.cls_token.copy_(torch.randn(vit.cls_token.shape, generator=g) * 0.02)
    return cfg, model


def compare(args, config: str, deep: bool) -> Result:
    path = require_checkout(args.vpt_repo, "--vpt-repo", THEIR_FILES)
    vit_prompt, mlp, vit_configs = load_theirs(path)
    cfg, ours = build_ours(config, args.size, args.seed)
    vit = ours.backbone.model
    dims = SIZES[args.size][1]
    n_tokens = cfg.PROMPT.VPT.NUM_TOKENS

    model_type = "mmprompt_comparison"
    vit_prompt.CONFIGS[model_type] = their_vit_config(vit_configs, dims)
    enc = vit_prompt.PromptedVisionTransformer(
        their_prompt_config(n_tokens, deep), model_type, img_size=dims["img"], num_classes=-1
    )
    enc.load_from(timm_to_google_npz(vit))
    head = mlp.MLP(input_dim=dims["hidden_size"], mlp_dims=[NUM_CLASSES], special_bias=True)
    vpt = ours.prompts.methods[0]
    with torch.no_grad():  # identical prompts and head on both sides
        enc.transformer.prompt_embeddings.copy_(vpt.sources[0].tokens[None])
        if deep:
            for i in range(1, len(vpt.sources)):
                enc.transformer.deep_prompt_embeddings[i - 1].copy_(vpt.sources[i].tokens)
        head.last_layer.weight.copy_(ours.head.weight)
        head.last_layer.bias.copy_(ours.head.bias)
    for name, p in enc.named_parameters():  # their ViT.build_backbone, transfer type "prompt"
        p.requires_grad_("prompt" in name)

    g = torch.Generator().manual_seed(args.seed + 2)
    images = torch.randn(BATCH, 3, dims["img"], dims["img"], generator=g)
    labels = torch.randint(0, NUM_CLASSES, (BATCH,), generator=g)
    ours.train()  # the frozen backbone stays in eval mode; theirs: PromptedTransformer.train
    enc.train()
    head.train()

    def run_ours():
        ours.zero_grad(set_to_none=True)
        out = ours({"image": images, "label": labels})
        out["loss"].backward()
        return out["logits"]

    def run_theirs():
        enc.zero_grad(set_to_none=True)
        head.zero_grad(set_to_none=True)
        logits = head(enc(images))
        F.cross_entropy(logits, labels).backward()  # their SoftmaxLoss: sum / batch, weights 1
        return logits

    logits_theirs = run_theirs()
    logits_ours = run_ours()
    g_ours = {f"prompt layer {i}": s.tokens.grad for i, s in enumerate(vpt.sources)}
    g_theirs = {"prompt layer 0": enc.transformer.prompt_embeddings.grad[0]}
    if deep:
        for i in range(1, len(vpt.sources)):
            g_theirs[f"prompt layer {i}"] = enc.transformer.deep_prompt_embeddings.grad[i - 1]
    g_ours.update({"head.weight": ours.head.weight.grad, "head.bias": ours.head.bias.grad})
    g_theirs.update({"head.weight": head.last_layer.weight.grad, "head.bias": head.last_layer.bias.grad})
    grads = grads_rel(g_ours, g_theirs)
    if len(grads) > 6:  # 12 deep layers: report the worst prompt layer and the head
        prompt = {k: v for k, v in grads.items() if k.startswith("prompt")}
        worst = max(prompt, key=prompt.get)
        grads = {
            f"prompts ({len(prompt)} layers, worst {worst})": prompt[worst],
            **{k: v for k, v in grads.items() if k.startswith("head")},
        }
    ratio = time_ratio(run_ours, run_theirs, args.repeats)
    patch = vit.patch_embed.patch_size
    return Result(
        recipe=f"configs/{config}" + (" (tiny)" if args.size == "tiny" else ""),
        compared_with="KMnP/vpt src/models/vit_prompt/vit.py PromptedVisionTransformer + src/models/mlp.py MLP head",
        logits_rel=rel_diff(logits_ours, logits_theirs),
        grads_rel=grads,
        ratio=ratio,
        note=(
            f"timm {cfg.MODEL.BACKBONE.ARCH} ({vit.embed_dim}-d, {len(vit.blocks)} layers, patch {patch[0]}x{patch[1]}), "
            f"{n_tokens} prompts, batch {BATCH}, prompt dropout 0, weights mapped to Google's npz layout "
            f"and read by their load_from"
        ),
    )


@recipe("vpt_shallow_cub", "vpt_repo")
def vpt_shallow(args):
    return [compare(args, "vpt_shallow_cub.yaml", deep=False)]


@recipe("vpt_deep_cub", "vpt_repo")
def vpt_deep(args):
    return [compare(args, "vpt_deep_cub.yaml", deep=True)]
