"""Every config key, with its default and what it means.

Sections owned by one part of the toolkit live beside this file (``prompt_defaults.py``,
``data_defaults.py``, ``engine_defaults.py``) and are added here, so the whole tree is still
built in one place.
"""
from .config import CfgNode as CN
from .data_defaults import add_data_config
from .engine_defaults import add_engine_config
from .prompt_defaults import add_prompt_config

_C = CN()

_C.OUTPUT_DIR = "output"  # where checkpoints, metrics.json, logs and the merged config go
_C.SEED = 1  # random seed for weights of prompts, data sampling and shuffling; < 0 means random
_C.USE_CUDA = True  # use a GPU when one is available

_C.MODEL = CN()
_C.MODEL.NAME = "image_classifier"  # task model in the MODELS registry (image_classifier, clip_prompt_classifier, text_classifier, t5_verbalizer)
_C.MODEL.INIT_WEIGHTS = ""  # checkpoint of trainable weights to load before training or evaluation

_C.MODEL.BACKBONE = CN()
_C.MODEL.BACKBONE.NAME = "timm_vit"  # adapter in the BACKBONES registry (timm_vit, open_clip, t5, hf_encoder)
_C.MODEL.BACKBONE.ARCH = "vit_base_patch16_224_in21k"  # architecture: timm model name, open_clip model name or config JSON path, HF config name or folder
_C.MODEL.BACKBONE.PRETRAINED = ""  # "" = random init; a library tag (open_clip 'openai', timm 'True'), a hub id, or a local file/folder
_C.MODEL.BACKBONE.ACTIVATION = "auto"  # open_clip MLP activation: auto (a tag's own: QuickGELU for openai; random weights: the architecture's; a checkpoint file: refused unless the architecture names it), quick_gelu (OpenAI's CLIP weights), gelu (most LAION weights); other backbones ignore it
_C.MODEL.BACKBONE.KWARGS = CN(new_allowed=True)  # extra architecture arguments passed to the library (e.g. embed_dim, depth, img_size for tiny test models)
_C.MODEL.BACKBONE.FREEZE = True  # freeze every backbone weight (prompt learning); False fine-tunes it
_C.MODEL.BACKBONE.DROPOUT_OFF = False  # keep the frozen backbone's dropout off while training (SuperPos-Prompt finding)
_C.MODEL.BACKBONE.TRIM_TEXT = True  # text towers run only on the tokens that can change a feature: CLIP's causal text tower up to the batch's last EOT, BERT-family and T5 encoders without the trailing padding their mask hides (exact: same logits and gradients); False runs the full padded length
_C.MODEL.BACKBONE.SKIP_UNUSED_ROWS = True  # ViT and CLIP towers compute no layer outputs no one reads: the last layer only the pooled class/EOT token (when only pooling follows), a layer before deep prompts are replaced not those prompts' rows; keys and values still from every token (exact: same logits and gradients); False computes every row
_C.MODEL.BACKBONE.CACHE_DIR = ""  # where library downloads go; "" = the library's default cache

_C.MODEL.HEAD = CN()
_C.MODEL.HEAD.NUM_CLASSES = 0  # classes of a linear head; 0 = take it from the dataset
_C.MODEL.HEAD.POOL = "default"  # feature the head reads: default (the backbone's own: CLS/EOT/mean), cls, mean, pooler (BERT's dense+tanh on [CLS])
_C.MODEL.HEAD.DROPOUT = 0.0  # dropout on the pooled feature before the head
_C.MODEL.HEAD.INIT = "default"  # image_classifier's linear head: default (nn.Linear's init) or vpt (KMnP/vpt's head: kaiming-normal fan-out weights, biases -log(99), a 1% prior per class)
_C.MODEL.HEAD.BIAS_WEIGHT_DECAY = True  # image_classifier: False exempts the head's bias from OPTIM.WEIGHT_DECAY, as KMnP/vpt's SGD does for its last_layer.bias

_C.MODEL.TEXT = CN()
_C.MODEL.TEXT.MAX_LENGTH = 128  # longest tokenized text (longer ones are truncated); prompt tokens come on top of it
_C.MODEL.TEXT.TOKENIZER = ""  # text models' tokenizer: "" = the backbone's own (beside its weights or config), 'byt5' = byte tokenizer needing no files, or a folder / hub id
_C.MODEL.TEXT.HEAD_INIT_STD = 0.0  # text_classifier: > 0 starts the linear head at normal(0, this std) with bias 0, as transformers and P-tuning v2 initialise a new classifier (the model's initializer_range, 0.02 for BERT/RoBERTa); 0 = torch's nn.Linear default (uniform +-1/sqrt(d))

_C.MODEL.CLIP = CN()
_C.MODEL.CLIP.TEMPLATE = "a photo of a {}."  # class prompt when no prompt method edits the text tower (zero-shot CLIP); {} = class name
_C.MODEL.CLIP.PROMPT_TEMPLATE = "{}."  # class prompt when a prompt method edits the text tower (CoOp: learned context + "name.")
_C.MODEL.CLIP.ZERO_SHOT_TEMPLATES = ""  # class prompts of a CLIP no method prompts in the text tower: "" = TEMPLATE; coop = CoOp's ZeroshotCLIP template of DATASET.NAME; coop_ensemble = ZeroshotCLIP2 (7 ImageNet templates + the dataset's own, features normalised and averaged); coop_ensemble_80 = the same with the 80 ImageNet templates
_C.MODEL.CLIP.MAX_TEXT_PROMPTS_PER_PASS = 1024  # image-conditioned text prompts (CoCoOp: images x classes prompts): most prompts one text-tower pass holds, whole images per pass (at least one); 0 = all in one pass

add_prompt_config(_C)
add_data_config(_C)
add_engine_config(_C)
