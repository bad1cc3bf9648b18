"""Config keys of datasets, transforms and loaders (``DATASET.*``, ``INPUT.*``, ``DATALOADER.*``).

Names follow CoOp/Dassl so their yaml files read with few changes.
"""
import os

from .config import CfgNode as CN


def _usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def add_data_config(_C):
    _C.DATASET = CN()
    _C.DATASET.ROOT = ""  # root folder holding every dataset (CoOp's $DATA)
    _C.DATASET.NAME = ""  # dataset in the DATASETS registry
    _C.DATASET.NUM_SHOTS = -1  # training items per class (val gets min(K, 4)); -1 or 0 = all items
    _C.DATASET.FEWSHOT_SEED = -1  # seed of few-shot sampling; < 0 = use SEED (CoOp's behaviour)
    _C.DATASET.SUBSAMPLE_CLASSES = "all"  # base-to-novel: all, base (first ceil(n/2) sorted labels) or new (the rest), relabelled from 0
    _C.DATASET.CACHE_FEWSHOT = True  # keep few-shot splits in <dataset>/split_fewshot/shot_K-seed_S.pkl
    _C.DATASET.TEST_DATASETS = []  # cross-dataset / domain-generalisation targets evaluated after training, read in full with all their classes

    # FGVC datasets in VPT's layout (cub, nabirds, flowers, dogs, cars; see mmprompt/data/fgvc.py)
    _C.DATASET.FGVC = CN()
    _C.DATASET.FGVC.TRAINVAL = False  # train on train + val (VPT's final runs after choosing hyperparameters on val)

    # Text tasks (bbc_news, glue_*, superglue_*; see mmprompt/data/text.py)
    _C.DATASET.TEXT = CN()
    _C.DATASET.TEXT.FORMAT = "auto"  # text_to_text (T5: one templated input, label words as classnames), pair (text/text_b + label ids), auto = text_to_text for t5 models
    _C.DATASET.TEXT.DATA_DIR = ""  # GLUE/SuperGLUE: a save_to_disk DatasetDict folder; bbc_news: a folder of class sub-folders; "" = default location
    _C.DATASET.TEXT.DATA_FILES = CN()
    _C.DATASET.TEXT.DATA_FILES.TRAIN = ""  # official GLUE .tsv / SuperGLUE .jsonl training file (offline, without the prep script)
    _C.DATASET.TEXT.DATA_FILES.VALIDATION = ""  # official validation file (dev.tsv, dev_matched.tsv or val.jsonl)
    _C.DATASET.TEXT.HUB_PATH = ""  # hub dataset id used when online; "" = nyu-mll/glue or aps/super_glue
    _C.DATASET.TEXT.TEMPLATE = ""  # str.format template of the (first) input over the task's fields, e.g. "{premise} question: {hypothesis}"; "" = the task's own
    _C.DATASET.TEXT.TEMPLATE_B = ""  # pair format: template of text_b; "" = the task's own
    _C.DATASET.TEXT.LABEL_WORDS = []  # classnames / T5 label words in label-id order; empty = the task's own
    _C.DATASET.TEXT.SPLIT_SEED = 0  # seed of the fixed train/val/test split (not of few-shot sampling)
    _C.DATASET.TEXT.NUM_VAL_FROM_TRAIN = 1000  # large GLUE/SuperGLUE tasks: training rows moved to the val split (ATTEMPT/DePT rule)

    _C.INPUT = CN()
    _C.INPUT.SIZE = (224, 224)  # (height, width) images are cropped to
    _C.INPUT.INTERPOLATION = "bicubic"  # resize interpolation: bilinear, bicubic, nearest
    _C.INPUT.PIXEL_MEAN = []  # per-channel mean; empty = auto (CLIP's for open_clip, the timm model's own for timm)
    _C.INPUT.PIXEL_STD = []  # per-channel std; empty = auto, as PIXEL_MEAN
    _C.INPUT.TRANSFORMS = ["random_resized_crop", "random_flip", "normalize"]  # train augmentation (CoOp's default); test is always resize + center crop + normalize
    _C.INPUT.RRCROP_SCALE = (0.08, 1.0)  # area range of random_resized_crop
    _C.INPUT.TEST_RESIZE_RATIO = 1.0  # test images are resized to SIZE * ratio before the center crop (CoOp: 1.0; timm ViTs often 1/0.875)

    _C.DATALOADER = CN()
    _C.DATALOADER.NUM_WORKERS = min(4, _usable_cpus())  # loader worker processes; 0 = load in the main process; default 4, or fewer on a machine with fewer usable cores (more would only warn and compete)
    _C.DATALOADER.PIN_MEMORY = True  # pin batches in page-locked memory when a GPU is used
    _C.DATALOADER.TRAIN_X = CN()
    _C.DATALOADER.TRAIN_X.BATCH_SIZE = 32  # training batch size
    _C.DATALOADER.TEST = CN()
    _C.DATALOADER.TEST.BATCH_SIZE = 100  # evaluation batch size
