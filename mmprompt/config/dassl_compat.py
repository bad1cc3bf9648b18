"""Dassl / CoOp / MaPLe config files and names, read as the authors' ``train.py`` reads them.

A CoOp or MaPLe user brings ``--config-file configs/trainers/MaPLe/vit_b16_c2_ep5_batch4_2ctx.yaml
--dataset-config-file configs/datasets/oxford_pets.yaml --trainer MaPLe`` and ``KEY VALUE``
overrides in their key space (``TRAINER.MAPLE.N_CTX 4``, ``DATASET.NUM_SHOTS 16``). This module
turns those into mmprompt's keys, so the run is the recipe of the mmprompt config of that name.

How a run's sources are read (:func:`translate_sources`):

1. A source set is *Dassl-style* when a file or override has a ``TRAINER`` node, ``--trainer`` is
   given, or ``MODEL.BACKBONE.NAME`` is one of CLIP's model names (``ViT-B/16``); otherwise the
   plain mmprompt merge runs and this module is not involved.
2. Every key of every source (dataset file, config file, flags, overrides: Dassl's order) is one of
   - a Dassl key in :data:`DASSL_KEYS`, merged in that order, then translated once (some
     translations read several keys, e.g. IVLP's two depths);
   - a ``TRAINER.<NODE>.*`` key of the trainer named by ``--trainer`` / ``TRAINER.NAME`` (or of the
     only trainer node present): the node starts from that trainer's defaults in the authors'
     ``train.py`` (``extend_cfg``), as it does there. Keys of other known trainers' nodes are
     ignored, as their code ignores them;
   - an mmprompt key (``PROMPT.*``, ``MODEL.BACKBONE.ARCH`` ...): merged after the translated
     keys, so it overrides them;
   - none of those: reported, all such keys together, in one :class:`ConfigError`.
3. Keys a Dassl-style file leaves out keep mmprompt's defaults, not Dassl's. The authors' trainer
   yamls set every key where the two differ (Dassl: OPTIM.NAME adam, LR 0.0003, LR_SCHEDULER
   single_step, INPUT.INTERPOLATION bilinear, ImageNet PIXEL_MEAN/STD, TRANSFORMS (),
   DATALOADER.TEST.BATCH_SIZE 32, SEED -1), except SEED, which their scripts pass as --seed.

The tables below are facts read from the authors' code (Dassl ``dassl/config/defaults.py``, the
``extend_cfg`` of CoOp's and MaPLe's ``train.py``, their ``configs/datasets/*.yaml`` and
``clip/clip.py``); the code here is mmprompt's own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from ..errors import ConfigError
from .config import _parse_literal as _literal  # the overrides' parsing: "(224, 224)" -> a tuple

# --------------------------------------------------------------------------- names

# Dassl's dataset registry names (CoOp / MaPLe ``configs/datasets/*.yaml``) -> mmprompt's.
DASSL_DATASET_NAMES = {
    "Caltech101": "caltech101",
    "DescribableTextures": "dtd",
    "EuroSAT": "eurosat",
    "FGVCAircraft": "fgvc_aircraft",
    "Food101": "food101",
    "ImageNet": "imagenet",
    "ImageNetA": "imagenet_a",
    "ImageNetR": "imagenet_r",
    "ImageNetSketch": "imagenet_sketch",
    "ImageNetV2": "imagenet_v2",
    "OxfordFlowers": "oxford_flowers",
    "OxfordPets": "oxford_pets",
    "StanfordCars": "stanford_cars",
    "SUN397": "sun397",
    "UCF101": "ucf101",
}

# CLIP's own model names (``clip.load``, the authors' MODEL.BACKBONE.NAME) -> open_clip architecture.
# The weights are OpenAI's (open_clip tag ``openai``). The open_clip backbone wraps ViT image
# towers only, so the ResNets map to their open_clip names and are refused when the model is built.
CLIP_BACKBONES = {
    "RN50": "RN50",
    "RN101": "RN101",
    "RN50x4": "RN50x4",
    "RN50x16": "RN50x16",
    "RN50x64": "RN50x64",
    "ViT-B/32": "ViT-B-32",
    "ViT-B/16": "ViT-B-16",
    "ViT-L/14": "ViT-L-14",
    "ViT-L/14@336px": "ViT-L-14-336",
}


def canonical_dataset_name(name: str) -> str:
    """mmprompt's registry name for a Dassl dataset name (``OxfordPets`` -> ``oxford_pets``);
    any other name is returned unchanged."""
    return DASSL_DATASET_NAMES.get(name, name)


# --------------------------------------------------------------------------- rules


class Unmapped(Exception):
    """A Dassl key or value with no mmprompt counterpart (collected, then reported together)."""


@dataclass(frozen=True)
class Fixed:
    """A Dassl key whose only accepted value is the behaviour mmprompt has built in."""

    value: Any
    why: str


@dataclass(frozen=True)
class Ignored:
    """A Dassl key that changes nothing mmprompt computes (their printing, their checkpoints)."""

    why: str


SAME = "same key"  # the Dassl key is the mmprompt key of the same name and meaning


def _dataset_name(value) -> Dict[str, Any]:
    return {"DATASET.NAME": canonical_dataset_name(value)}


def _clip_backbone(value) -> Dict[str, Any]:
    if value in CLIP_BACKBONES:
        # clip.load's models are OpenAI's, trained with QuickGELU: stated, so that a local file
        # given as MODEL.BACKBONE.PRETRAINED (offline) builds the same activation as the tag
        return {
            "MODEL.NAME": "clip_prompt_classifier",
            "MODEL.BACKBONE.NAME": "open_clip",
            "MODEL.BACKBONE.ARCH": CLIP_BACKBONES[value],
            "MODEL.BACKBONE.PRETRAINED": "openai",
            "MODEL.BACKBONE.ACTIVATION": "quick_gelu",
        }
    if value == "":
        return {}
    # An mmprompt adapter name given with Dassl keys (e.g. a mixed user file) keeps its meaning.
    return {"MODEL.BACKBONE.NAME": value}


def _backbone_pretrained(value) -> Dict[str, Any]:
    # Dassl's flag is a bool that the CLIP trainers never read (clip.load always loads OpenAI's
    # weights), so a bool changes nothing; a string is mmprompt's meaning: a tag or a local file
    # (what an offline user gives instead of the download).
    if isinstance(value, bool):
        return {}
    return {"MODEL.BACKBONE.PRETRAINED": value}


def _evaluator(value) -> Dict[str, Any]:
    if str(value).lower() == "classification":
        return {"TEST.EVALUATOR": "classification"}
    raise Unmapped(
        f"evaluator {value!r} has no mmprompt counterpart (mmprompt's EVALUATORS: classification, base_novel, mcc, ...)"
    )


def _resume(value) -> Dict[str, Any]:
    if value in ("", None):
        return {}
    raise Unmapped("mmprompt resumes from OUTPUT_DIR: pass --resume with --output-dir instead")


# Every Dassl key mmprompt accepts outside the TRAINER node. A Dassl key that is not listed here
# and is no mmprompt key either is reported as unmapped. Keys that both toolkits have under the
# same name but with another meaning (MODEL.BACKBONE.NAME/PRETRAINED, MODEL.HEAD.DROPOUT,
# TEST.EVALUATOR) must be listed, or they would pass through unchanged.
DASSL_KEYS: Dict[str, Any] = {
    "VERSION": Ignored("Dassl's config version"),
    "OUTPUT_DIR": SAME,
    "RESUME": _resume,
    "SEED": SAME,
    "USE_CUDA": SAME,
    "VERBOSE": Ignored("it only changes what Dassl prints"),
    # INPUT: the transform names and their order follow Dassl's build_transform (see mmprompt/data/build.py)
    "INPUT.SIZE": SAME,
    "INPUT.INTERPOLATION": SAME,
    "INPUT.TRANSFORMS": SAME,
    "INPUT.NO_TRANSFORM": Fixed(False, "mmprompt always transforms images to tensors"),
    "INPUT.PIXEL_MEAN": SAME,
    "INPUT.PIXEL_STD": SAME,
    "INPUT.CROP_PADDING": SAME,
    "INPUT.RRCROP_SCALE": SAME,
    # DATASET
    "DATASET.ROOT": SAME,
    "DATASET.NAME": _dataset_name,
    "DATASET.NUM_SHOTS": SAME,
    "DATASET.SUBSAMPLE_CLASSES": SAME,
    "DATASET.SOURCE_DOMAINS": Fixed((), "domain adaptation / generalisation domains are not datasets mmprompt reads"),
    "DATASET.TARGET_DOMAINS": Fixed(
        (),
        "domain adaptation / generalisation domains are not datasets mmprompt reads; "
        "use DATASET.TEST_DATASETS for cross-dataset evaluation",
    ),
    "DATASET.NUM_LABELED": Fixed(-1, "semi-supervised splits are not built by mmprompt"),
    "DATASET.VAL_PERCENT": Fixed(0.1, "semi-supervised splits are not built by mmprompt"),
    "DATASET.ALL_AS_UNLABELED": Fixed(False, "semi-supervised splits are not built by mmprompt"),
    # DATALOADER
    "DATALOADER.NUM_WORKERS": SAME,
    "DATALOADER.K_TRANSFORMS": Fixed(1, "mmprompt transforms each training image once per step"),
    "DATALOADER.RETURN_IMG0": Fixed(False, "mmprompt's batches hold the transformed image only"),
    "DATALOADER.TRAIN_X.SAMPLER": Fixed("RandomSampler", "mmprompt shuffles the training items"),
    "DATALOADER.TRAIN_X.BATCH_SIZE": SAME,
    "DATALOADER.TRAIN_X.N_DOMAIN": Ignored("it is read by Dassl's RandomDomainSampler only"),
    "DATALOADER.TRAIN_X.N_INS": Ignored("it is read by Dassl's RandomClassSampler only"),
    "DATALOADER.TEST.SAMPLER": Fixed("SequentialSampler", "mmprompt evaluates the items in order"),
    "DATALOADER.TEST.BATCH_SIZE": SAME,
    # MODEL
    "MODEL.INIT_WEIGHTS": SAME,
    "MODEL.BACKBONE.NAME": _clip_backbone,
    "MODEL.BACKBONE.PRETRAINED": _backbone_pretrained,
    "MODEL.HEAD.NAME": Fixed("", "mmprompt's task models have their own heads"),
    "MODEL.HEAD.HIDDEN_LAYERS": Fixed((), "mmprompt's task models have their own heads"),
    "MODEL.HEAD.ACTIVATION": Ignored("it is read only when MODEL.HEAD.NAME builds a Dassl head"),
    "MODEL.HEAD.BN": Ignored("it is read only when MODEL.HEAD.NAME builds a Dassl head"),
    "MODEL.HEAD.DROPOUT": Ignored("it is read only when MODEL.HEAD.NAME builds a Dassl head"),
    # OPTIM (values mmprompt lacks, e.g. adam or single_step, are refused when the optimizer is built)
    "OPTIM.NAME": SAME,
    "OPTIM.LR": SAME,
    "OPTIM.WEIGHT_DECAY": SAME,
    "OPTIM.MOMENTUM": SAME,
    "OPTIM.SGD_DAMPNING": SAME,
    "OPTIM.SGD_NESTEROV": SAME,
    "OPTIM.RMSPROP_ALPHA": Ignored("it is read by Dassl's rmsprop only, which mmprompt lacks (OPTIM.NAME says so)"),
    "OPTIM.ADAM_BETA1": SAME,
    "OPTIM.ADAM_BETA2": SAME,
    "OPTIM.STAGED_LR": Fixed(False, "per-layer-group learning rates are OPTIM.GROUP_LR in mmprompt"),
    "OPTIM.NEW_LAYERS": Fixed((), "per-layer-group learning rates are OPTIM.GROUP_LR in mmprompt"),
    "OPTIM.BASE_LR_MULT": Ignored("it is read only with OPTIM.STAGED_LR True"),
    "OPTIM.LR_SCHEDULER": SAME,
    "OPTIM.STEPSIZE": Ignored(
        "it is read by Dassl's step schedulers only, which mmprompt lacks (OPTIM.LR_SCHEDULER says so)"
    ),
    "OPTIM.GAMMA": Ignored(
        "it is read by Dassl's step schedulers only, which mmprompt lacks (OPTIM.LR_SCHEDULER says so)"
    ),
    "OPTIM.MAX_EPOCH": SAME,
    "OPTIM.WARMUP_EPOCH": SAME,
    "OPTIM.WARMUP_TYPE": SAME,
    "OPTIM.WARMUP_CONS_LR": SAME,
    "OPTIM.WARMUP_MIN_LR": SAME,
    "OPTIM.WARMUP_RECOUNT": Fixed(
        True, "mmprompt's schedule after warm-up starts at its first epoch, as Dassl's default"
    ),
    # TRAIN
    "TRAIN.CHECKPOINT_FREQ": Ignored(
        "mmprompt writes its own checkpoints (TRAIN.CHECKPOINT_PERIOD); results do not change"
    ),
    "TRAIN.PRINT_FREQ": SAME,
    "TRAIN.COUNT_ITER": Fixed("train_x", "mmprompt counts an epoch over the labelled training items"),
    # TEST
    "TEST.EVALUATOR": _evaluator,
    "TEST.PER_CLASS_RESULT": Fixed(False, "mmprompt's evaluators report overall metrics"),
    "TEST.COMPUTE_CMAT": Fixed(False, "mmprompt writes no confusion matrix"),
    "TEST.NO_TEST": SAME,
    "TEST.SPLIT": SAME,
    "TEST.FINAL_MODEL": SAME,
}


# --------------------------------------------------------------------------- trainers


@dataclass(frozen=True)
class DasslTrainer:
    """One of the authors' trainers: its name, its TRAINER node, the node's defaults from their
    ``extend_cfg``, and how the node's values become mmprompt keys."""

    name: str  # --trainer / TRAINER.NAME, as their registry spells it
    node: str  # TRAINER.<node>
    defaults: Dict[str, Any] = field(default_factory=dict)
    translate: Optional[Callable[[Dict[str, Any]], List[Tuple[str, Any, str]]]] = None
    unmapped_reason: str = ""  # set when the whole trainer has no mmprompt recipe


Mapped = List[Tuple[str, Any, str]]  # (mmprompt key, value, the node's key it comes from; "" = the trainer itself)


def _precision(node) -> Mapped:
    # Dassl's PREC values (fp16: half-precision CLIP weights, fp32, amp: autocast) are TRAIN.PRECISION values.
    return [("TRAIN.PRECISION", node["PREC"], "PREC")]


def _coop(node) -> Mapped:
    return [
        ("PROMPT.METHODS", ["coop"], ""),
        ("PROMPT.COOP.N_CTX", node["N_CTX"], "N_CTX"),
        ("PROMPT.COOP.CSC", node["CSC"], "CSC"),
        ("PROMPT.COOP.CTX_INIT", node["CTX_INIT"], "CTX_INIT"),
        ("PROMPT.COOP.CLASS_TOKEN_POSITION", node["CLASS_TOKEN_POSITION"], "CLASS_TOKEN_POSITION"),
        *_precision(node),
    ]


def _cocoop(node) -> Mapped:
    return [
        ("PROMPT.METHODS", ["cocoop"], ""),
        ("PROMPT.COCOOP.N_CTX", node["N_CTX"], "N_CTX"),
        ("PROMPT.COCOOP.CTX_INIT", node["CTX_INIT"], "CTX_INIT"),
        *_precision(node),
    ]


def _maple(node) -> Mapped:
    return [
        ("PROMPT.METHODS", ["maple"], ""),
        ("PROMPT.MAPLE.MODE", "maple", ""),
        ("PROMPT.MAPLE.N_CTX", node["N_CTX"], "N_CTX"),
        ("PROMPT.MAPLE.CTX_INIT", node["CTX_INIT"], "CTX_INIT"),
        ("PROMPT.MAPLE.PROMPT_DEPTH", node["PROMPT_DEPTH"], "PROMPT_DEPTH"),
        *_precision(node),
    ]


def _ivlp(node) -> Mapped:
    vision_depth, text_depth = node["PROMPT_DEPTH_VISION"], node["PROMPT_DEPTH_TEXT"]
    out = [
        ("PROMPT.METHODS", ["maple"], ""),
        ("PROMPT.MAPLE.N_CTX", node["N_CTX_TEXT"], "N_CTX_TEXT"),
        ("PROMPT.MAPLE.CTX_INIT", node["CTX_INIT"], "CTX_INIT"),
        *_precision(node),
    ]
    if vision_depth == 0:
        # Their image tower gets no prompts at vision depth 0 (N_CTX_VISION is then unused):
        # language-only deep prompting.
        return out + [
            ("PROMPT.MAPLE.MODE", "deep_language", "PROMPT_DEPTH_VISION"),
            ("PROMPT.MAPLE.PROMPT_DEPTH", text_depth, "PROMPT_DEPTH_TEXT"),
        ]
    if node["N_CTX_VISION"] <= 0:
        raise Unmapped(
            f"N_CTX_VISION {node['N_CTX_VISION']} with vision depth {vision_depth}: PROMPT.MAPLE.N_CTX_VISION "
            f"<= 0 means 'as many as the text' in mmprompt"
        )
    if text_depth == 0:
        raise Unmapped(
            "PROMPT_DEPTH_TEXT 0 with vision prompts: vision-only prompting is their VPT trainer "
            "(--trainer VPT), mmprompt's PROMPT.MAPLE.MODE deep_vision"
        )
    return out + [
        ("PROMPT.MAPLE.MODE", "ivlp", ""),
        ("PROMPT.MAPLE.N_CTX_VISION", node["N_CTX_VISION"], "N_CTX_VISION"),
        ("PROMPT.MAPLE.PROMPT_DEPTH", text_depth, "PROMPT_DEPTH_TEXT"),
        ("PROMPT.MAPLE.PROMPT_DEPTH_VISION", vision_depth, "PROMPT_DEPTH_VISION"),
    ]


def _vision_prompting(node) -> Mapped:
    # Their VPT trainer keeps the text fixed at "a photo of a {name}." whatever CTX_INIT says.
    if node["N_CTX_VISION"] <= 0:
        raise Unmapped(f"N_CTX_VISION {node['N_CTX_VISION']}: vision prompting needs at least one token")
    return [
        ("PROMPT.METHODS", ["maple"], ""),
        ("PROMPT.MAPLE.MODE", "deep_vision", ""),
        ("PROMPT.MAPLE.N_CTX_VISION", node["N_CTX_VISION"], "N_CTX_VISION"),
        ("PROMPT.MAPLE.PROMPT_DEPTH_VISION", node["PROMPT_DEPTH_VISION"], "PROMPT_DEPTH_VISION"),
        ("MODEL.CLIP.TEMPLATE", "a photo of a {}.", ""),
        *_precision(node),
    ]


def _zero_shot(templates: str) -> Callable[[Dict[str, Any]], Mapped]:
    # Their zero-shot trainers read no TRAINER node (the CoOp yaml they are run with is ignored).
    return lambda node: [("PROMPT.METHODS", [], ""), ("MODEL.CLIP.ZERO_SHOT_TEMPLATES", templates, "")]


# Defaults: the extend_cfg of CoOp's and MaPLe's train.py (identical where both define a node).
TRAINERS: Dict[str, DasslTrainer] = {
    t.name.lower(): t
    for t in (
        DasslTrainer(
            "CoOp",
            "COOP",
            {"N_CTX": 16, "CSC": False, "CTX_INIT": "", "PREC": "fp16", "CLASS_TOKEN_POSITION": "end"},
            _coop,
        ),
        DasslTrainer("CoCoOp", "COCOOP", {"N_CTX": 16, "CTX_INIT": "", "PREC": "fp16"}, _cocoop),
        DasslTrainer(
            "MaPLe", "MAPLE", {"N_CTX": 2, "CTX_INIT": "a photo of a", "PREC": "fp16", "PROMPT_DEPTH": 9}, _maple
        ),
        DasslTrainer(
            "IVLP",
            "IVLP",
            {
                "N_CTX_VISION": 2,
                "N_CTX_TEXT": 2,
                "CTX_INIT": "a photo of a",
                "PREC": "fp16",
                "PROMPT_DEPTH_VISION": 9,
                "PROMPT_DEPTH_TEXT": 9,
            },
            _ivlp,
        ),
        DasslTrainer(
            "VPT",
            "VPT",
            {"N_CTX_VISION": 2, "CTX_INIT": "a photo of a", "PREC": "fp16", "PROMPT_DEPTH_VISION": 1},
            _vision_prompting,
        ),
        DasslTrainer("ZeroshotCLIP", "", translate=_zero_shot("coop")),  # configs/zsclip.yaml
        DasslTrainer("ZeroshotCLIP2", "", translate=_zero_shot("coop_ensemble")),  # configs/zsclip_ensemble.yaml
    )
}
_TRAINER_NODES = {t.node: t for t in TRAINERS.values() if t.node}


# --------------------------------------------------------------------------- reading sources

Source = Tuple[str, dict]  # (where it came from, nested dict of keys)


def flatten(data: dict, prefix: str = "") -> Dict[str, Any]:
    """``{"A": {"B": 1}}`` -> ``{"A.B": 1}``."""
    out: Dict[str, Any] = {}
    for key, value in data.items():
        full = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, full + "."))
        else:
            out[full] = value
    return out


def nest(flat: Dict[str, Any]) -> dict:
    out: dict = {}
    for key, value in flat.items():
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return out


def is_dassl_style(sources: Sequence[Source], trainer: str = "") -> bool:
    """True for the authors' trainer yamls and overrides: a TRAINER node, a --trainer flag, or a
    CLIP model name as MODEL.BACKBONE.NAME."""
    if trainer:
        return True
    for _, data in sources:
        if "TRAINER" in data:
            return True
        if flatten(data).get("MODEL.BACKBONE.NAME") in CLIP_BACKBONES:
            return True
    return False


def _same_value(a, b) -> bool:
    a, b = _literal(a), _literal(b)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return list(a) == list(b)
    return a == b


@dataclass
class Translation:
    """What :func:`translate_sources` hands to the merge: translated keys (each with the Dassl key
    and source it came from), then each source's own mmprompt keys, to merge in that order."""

    translated: List[Tuple[str, Any, str]]  # (mmprompt key, value, origin)
    native: List[Source]  # (source, nested mmprompt keys)
    trainer: Optional[DasslTrainer]


def translate_sources(sources: Sequence[Source], trainer: str, is_mmprompt_key: Callable[[str], bool]) -> Translation:
    """Read Dassl-style sources (in Dassl's order) into mmprompt keys; see the module docstring.

    ``is_mmprompt_key(key)`` tells whether a dotted key exists in mmprompt's config. Every key
    without a counterpart, and every value that has none, is reported in one ConfigError.
    """
    unmapped: List[str] = []
    dassl: Dict[str, Any] = {}
    origin: Dict[str, str] = {}
    native: List[Source] = []
    trainer_keys: Dict[str, Any] = {}
    for label, data in sources:
        own: Dict[str, Any] = {}
        for key, value in flatten(data).items():
            if key in DASSL_KEYS:
                dassl[key], origin[key] = value, label
            elif key == "TRAINER.NAME" or key.startswith("TRAINER."):
                trainer_keys[key], origin[key] = value, label
            elif is_mmprompt_key(key):
                own[key] = value
            else:
                unmapped.append(f"{key} (from {label}): neither a Dassl key mmprompt maps nor an mmprompt key")
        if own:
            native.append((label, nest(own)))

    chosen = _choose_trainer(trainer or trainer_keys.get("TRAINER.NAME", ""), trainer_keys, origin)
    translated: List[Tuple[str, Any, str]] = []

    for key, value in dassl.items():
        rule, where = DASSL_KEYS[key], f"{key} from {origin[key]}"
        if rule is SAME:
            translated.append((key, value, where))
        elif isinstance(rule, Ignored):
            continue
        elif isinstance(rule, Fixed):
            if not _same_value(value, rule.value):
                unmapped.append(f"{key} {value!r} (from {origin[key]}): only {rule.value!r} is accepted, {rule.why}")
        else:
            try:
                translated += [(k, v, where) for k, v in rule(value).items()]
            except Unmapped as e:
                unmapped.append(f"{key} {value!r} (from {origin[key]}): {e}")

    for key in trainer_keys:
        if key == "TRAINER.NAME":
            continue
        parts = key.split(".")
        node = _TRAINER_NODES.get(parts[1]) if len(parts) == 3 else None
        if node is None:
            unmapped.append(
                f"{key} (from {origin[key]}): not a key of the trainers mmprompt reads "
                f"({', '.join(f'TRAINER.{n}' for n in _TRAINER_NODES)})"
            )
        elif parts[2] not in node.defaults:
            unmapped.append(
                f"{key} (from {origin[key]}): TRAINER.{node.node} has no key {parts[2]} "
                f"(its keys: {', '.join(node.defaults)})"
            )
        # keys of other known trainers' nodes: ignored, as their train.py ignores them

    if chosen is not None:
        if chosen.unmapped_reason:
            unmapped.append(f"trainer {chosen.name}: {chosen.unmapped_reason}")
        else:
            values, where_from = dict(chosen.defaults), {}
            for name in chosen.defaults:
                key = f"TRAINER.{chosen.node}.{name}"
                where_from[name] = f"{key} from {origin[key]}" if key in trainer_keys else f"{key} (their default)"
                if key in trainer_keys:
                    # CTX_INIT is a phrase: never read "1" or "None" in it as a literal
                    values[name] = trainer_keys[key] if name == "CTX_INIT" else _literal(trainer_keys[key])
            try:
                mapped = chosen.translate(values)
            except Unmapped as e:
                unmapped.append(f"TRAINER.{chosen.node} (trainer {chosen.name}): {e}")
                mapped = []
            translated += [(k, v, where_from[name] if name else f"trainer {chosen.name}") for k, v, name in mapped]

    # A translation whose mmprompt key this build lacks (a method added later) is unmapped too.
    for key, _, where in translated:
        if not is_mmprompt_key(key):
            unmapped.append(f"{where}: its counterpart {key} is not in this mmprompt's config")
    if unmapped:
        raise ConfigError(
            "These Dassl/CoOp config keys have no mmprompt counterpart:\n  - "
            + "\n  - ".join(unmapped)
            + "\nRemove them or set them to the accepted value; mmprompt's own keys "
            "(see mmprompt/config/*defaults.py) may be given beside Dassl's."
        )
    return Translation(translated, native, chosen)


def _choose_trainer(name: str, trainer_keys: Dict[str, Any], origin: Dict[str, str]) -> Optional[DasslTrainer]:
    """The trainer named by --trainer / TRAINER.NAME, else the only trainer node present, else None."""
    known = ", ".join(t.name for t in TRAINERS.values())
    if name:
        chosen = TRAINERS.get(str(name).lower())
        if chosen is None:
            raise ConfigError(
                f"Trainer {name!r} is not one mmprompt reads; use one of {known} (their --trainer names)."
            )
        return chosen
    nodes = sorted({k.split(".")[1] for k in trainer_keys if k.count(".") == 2 and k.split(".")[1] in _TRAINER_NODES})
    if len(nodes) > 1:
        raise ConfigError(
            f"The config sets the nodes {', '.join('TRAINER.' + n for n in nodes)}; pass --trainer NAME "
            f"to say which trainer runs ({known})."
        )
    return _TRAINER_NODES[nodes[0]] if nodes else None


def requires_method_message() -> str:
    return (
        "This Dassl/CoOp config names no trainer (their scripts pass it as --trainer): pass --trainer "
        f"{'|'.join(t.name for t in TRAINERS.values() if t.node)}, or PROMPT.METHODS with mmprompt's keys."
    )


__all__ = [
    "CLIP_BACKBONES",
    "DASSL_DATASET_NAMES",
    "DASSL_KEYS",
    "TRAINERS",
    "Translation",
    "canonical_dataset_name",
    "flatten",
    "is_dassl_style",
    "nest",
    "translate_sources",
]
