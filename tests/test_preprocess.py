"""Image preprocessing: the backbone's own configuration unless INPUT sets it, Dassl's transform
semantics, VPT's FGVC pipeline as a preset, and images of every PIL mode decoded right."""

import io
import os

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as T

from mmprompt.config import load_cfg
from mmprompt.data.build import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    build_transform,
    check_input_size,
    load_image,
    resolve_preprocess,
    to_rgb,
)
from mmprompt.errors import ConfigError

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
BASE = os.path.join(REPO, "configs", "_base_")
TINY_CLIP_JSON = os.path.join(BASE, "tiny_clip_model.json")


def image(width=61, height=47, seed=0):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8))


def same_output(ours, theirs, img, seed=0):
    torch.manual_seed(seed)
    a = ours(img)
    torch.manual_seed(seed)
    return torch.equal(a, theirs(img))


def clip_cfg(*opts):
    return load_cfg(os.path.join(BASE, "clip_vit_b16.yaml"), opts=list(opts))


def test_open_clip_preprocessing_follows_the_model():
    """Unset INPUT keys give exactly open_clip's own eval transform (tiny 32 px model built here)."""
    import open_clip

    _, _, theirs = open_clip.create_model_and_transforms(
        open_clip.add_model_config(TINY_CLIP_JSON) or "tiny_clip_model"
    )
    cfg = load_cfg(os.path.join(BASE, "tiny_clip.yaml"))
    assert resolve_preprocess(cfg).size == (32, 32)
    assert same_output(build_transform(cfg, is_train=False), theirs, image())
    # metadata only (nothing built or downloaded): sizes and the tags' own resize modes
    assert resolve_preprocess(clip_cfg("MODEL.BACKBONE.ARCH", "ViT-L-14-336")).size == (336, 336)
    siglip = resolve_preprocess(
        clip_cfg("MODEL.BACKBONE.ARCH", "ViT-B-16-SigLIP-256", "MODEL.BACKBONE.PRETRAINED", "webli")
    )
    assert (siglip.size, siglip.resize_mode, siglip.mean) == ((256, 256), "squash", (0.5, 0.5, 0.5))
    openai = resolve_preprocess(clip_cfg())
    assert (openai.size, openai.interpolation, openai.resize_size, openai.resize_mode) == (
        (224, 224),
        "bicubic",
        224,
        "shortest",
    )


def test_timm_preprocessing_follows_the_pretrained_cfg():
    from timm.data import create_transform, resolve_data_config
    from timm.models import get_pretrained_cfg

    cfg = load_cfg(os.path.join(BASE, "vit_b16.yaml"))  # vit_base_patch16_224, tag orig_in21k (VPT's weights)
    data_cfg = resolve_data_config({}, pretrained_cfg=get_pretrained_cfg("vit_base_patch16_224.orig_in21k").to_dict())
    theirs = create_transform(**data_cfg, is_training=False)
    pre = resolve_preprocess(cfg)
    assert (pre.size, pre.resize_size, pre.interpolation, pre.mean) == ((224, 224), 248, "bicubic", (0.5, 0.5, 0.5))
    assert same_output(build_transform(cfg, is_train=False), theirs, image(300, 257))
    # KWARGS img_size is the model's real input size (timm's own data config would still say 224)
    tiny = resolve_preprocess(load_cfg(os.path.join(BASE, "tiny_vit.yaml")))
    assert (tiny.size, tiny.resize_size) == ((32, 32), 35)  # floor(32 / crop_pct 0.9)


def test_explicit_input_keys_win():
    cfg = clip_cfg(
        "INPUT.SIZE",
        "(160, 160)",
        "INPUT.INTERPOLATION",
        "bilinear",
        "INPUT.RESIZE_SIZE",
        "182",
        "INPUT.TEST_RESIZE_MODE",
        "squash",
        "INPUT.PIXEL_MEAN",
        "[0.5, 0.5, 0.5]",
        "INPUT.PIXEL_STD",
        "[0.5, 0.5, 0.5]",
    )
    pre = resolve_preprocess(cfg)
    assert (pre.size, pre.interpolation, pre.resize_size, pre.resize_mode, pre.mean) == (
        (160, 160),
        "bilinear",
        182,
        "squash",
        (0.5, 0.5, 0.5),
    )
    # a ratio (the key runs saved before RESIZE_SIZE carry, as 1.0) when RESIZE_SIZE is 0
    assert (
        resolve_preprocess(clip_cfg("INPUT.SIZE", "(160, 160)", "INPUT.TEST_RESIZE_RATIO", "1.25")).resize_size == 200
    )
    for bad, match in (
        (("INPUT.INTERPOLATION", "lanczos"), "INTERPOLATION"),
        (("INPUT.TEST_RESIZE_MODE", "pad"), "RESIZE_MODE"),
        (("INPUT.SIZE", "(0, 3)"), "INPUT.SIZE"),
    ):
        with pytest.raises(ConfigError, match=match):
            resolve_preprocess(clip_cfg(*bad))


def test_a_size_the_backbone_cannot_take_is_refused_before_building():
    tiny = load_cfg(os.path.join(BASE, "tiny_clip.yaml"))
    check_input_size(tiny)  # follows the model: fine
    with pytest.raises(ConfigError, match=r"takes 32x32 images.*Remove INPUT.SIZE"):
        check_input_size(load_cfg(os.path.join(BASE, "tiny_clip.yaml"), opts=["INPUT.SIZE", "(224, 224)"]))
    dynamic = load_cfg(
        os.path.join(BASE, "tiny_vit.yaml"),
        opts=["INPUT.SIZE", "(48, 48)", "MODEL.BACKBONE.KWARGS.dynamic_img_size", "True"],
    )
    check_input_size(dynamic)


def dassl_cfg(*names, **input_keys):
    cfg = clip_cfg()  # the backbone of the Dassl yamls: no crop_pct of its own (test resize = max(SIZE))
    cfg.INPUT.SIZE, cfg.INPUT.INTERPOLATION = (32, 40), "bilinear"
    cfg.INPUT.PIXEL_MEAN, cfg.INPUT.PIXEL_STD = [0.1, 0.2, 0.3], [0.5, 0.5, 0.5]
    cfg.INPUT.TRANSFORMS = list(names)
    for key, val in input_keys.items():
        cfg.INPUT[key] = val
    return cfg


def test_dassl_transform_semantics():
    """Restated from Dassl's build_transform: no crop -> Resize(SIZE) exactly; normalize only when
    listed, at test too; test = Resize(max(SIZE)) + CenterCrop(SIZE); fixed order of the steps."""
    img, bilinear = image(), T.InterpolationMode.BILINEAR
    norm = T.Normalize([0.1, 0.2, 0.3], [0.5, 0.5, 0.5])
    exact = T.Compose([T.Resize((32, 40), bilinear), T.RandomHorizontalFlip(), T.ToTensor(), norm])
    assert same_output(build_transform(dassl_cfg("normalize", "random_flip"), True), exact, img)
    assert same_output(
        build_transform(dassl_cfg("center_crop"), True), T.Compose([T.Resize((32, 40), bilinear), T.ToTensor()]), img
    )
    test = T.Compose([T.Resize(40, bilinear), T.CenterCrop((32, 40)), T.ToTensor()])
    assert same_output(build_transform(dassl_cfg("random_resized_crop"), False), test, img)
    rrc = T.Compose(
        [
            T.RandomResizedCrop((32, 40), scale=(0.08, 1.0), interpolation=bilinear),
            T.RandomHorizontalFlip(),
            T.ToTensor(),
            norm,
        ]
    )
    assert same_output(build_transform(dassl_cfg("random_flip", "normalize", "random_resized_crop"), True), rrc, img)
    padded = T.Compose([T.RandomCrop((32, 40), padding=4), T.ToTensor()])
    assert same_output(build_transform(dassl_cfg("random_crop"), True), padded, img)


def test_transform_names_are_checked():
    with pytest.raises(ConfigError, match=r"\['cutout'\] are Dassl transforms mmprompt does not implement"):
        build_transform(dassl_cfg("cutout", "normalize"), True)
    with pytest.raises(ConfigError, match="'resize' needs a crop"):
        build_transform(dassl_cfg("resize", "random_flip"), True)
    resized = build_transform(dassl_cfg("resize", "center_crop", RESIZE_SIZE=50), True)
    assert same_output(
        resized, T.Compose([T.Resize(50, T.InterpolationMode.BILINEAR), T.CenterCrop((32, 40)), T.ToTensor()]), image()
    )


def test_vpt_fgvc_preset_is_vpts_pipeline(tmp_path):
    """VPT's src/data/transforms.py at crop 224, restated: train Resize(256) + RandomCrop(224) + flip,
    test Resize(256) + CenterCrop(224), ImageNet mean/std, torchvision's default bilinear."""
    recipe = tmp_path / "vpt_recipe.yaml"
    recipe.write_text(f"_BASE_: [{os.path.join(BASE, 'vit_b16.yaml')}, {os.path.join(BASE, 'vpt_fgvc_input.yaml')}]\n")
    cfg = load_cfg(str(recipe))
    norm = T.Normalize(IMAGENET_MEAN, IMAGENET_STD)
    train = T.Compose([T.Resize(256), T.RandomCrop(224), T.RandomHorizontalFlip(0.5), T.ToTensor(), norm])
    test = T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor(), norm])
    for seed, img in enumerate([image(300, 257), image(241, 333, seed=1)]):
        assert same_output(build_transform(cfg, True), train, img, seed)
        assert same_output(build_transform(cfg, False), test, img, seed)


def saved(img, fmt="PNG", **info):
    buf = io.BytesIO()
    img.info.update(info)
    img.save(buf, fmt)
    buf.seek(0)
    return Image.open(buf)


def test_sixteen_bit_images_are_scaled_not_clipped(tmp_path):
    ramp = (np.arange(64 * 64, dtype=np.uint32).reshape(64, 64) * 16).astype(np.uint16)
    path = tmp_path / "ramp16.png"
    Image.fromarray(ramp).save(path)
    assert Image.open(path).mode == "I;16"
    rgb = np.asarray(load_image(str(path)))
    expected = np.rint(ramp * (255.0 / 65535.0)).astype(np.uint8)
    assert rgb.shape == (64, 64, 3) and np.array_equal(rgb[..., 0], expected) and np.array_equal(rgb[..., 2], expected)
    assert np.asarray(Image.open(path).convert("RGB")).mean() > 250  # what convert("RGB") alone gives: white
    pgm = tmp_path / "ramp16.pgm"  # PIL opens 16-bit PGM as mode "I"
    pgm.write_bytes(b"P5\n64 64\n65535\n" + ramp.astype(">u2").tobytes())
    assert Image.open(pgm).mode == "I" and np.array_equal(np.asarray(load_image(str(pgm)))[..., 1], expected)


@pytest.mark.parametrize("mode", ["RGBA", "LA", "P with transparency", "CMYK", "L", "1", "YCbCr", "F"])
def test_other_modes_decode_as_dassl_does(mode):
    """Dassl / CoOp read images with Image.open(path).convert("RGB"): alpha dropped, PIL's conversions."""
    rgb = image(23, 17)
    alpha = Image.fromarray(np.random.default_rng(1).integers(0, 256, (17, 23), dtype=np.uint8))
    made = {
        "RGBA": lambda: Image.merge("RGBA", (*rgb.split(), alpha)),
        "LA": lambda: Image.merge("LA", (rgb.convert("L"), alpha)),
        "P with transparency": lambda: saved(rgb.convert("P"), transparency=0),
        "CMYK": lambda: saved(rgb.convert("CMYK"), "JPEG"),
        "L": lambda: rgb.convert("L"),
        "1": lambda: rgb.convert("1"),
        "YCbCr": lambda: rgb.convert("YCbCr"),
        "F": lambda: Image.fromarray(np.asarray(rgb.convert("L"), dtype=np.float32)),
    }[mode]()
    out = to_rgb(made)
    assert out.mode == "RGB" and out.size == (23, 17)
    assert np.array_equal(np.asarray(out), np.asarray(made.convert("RGB")))
