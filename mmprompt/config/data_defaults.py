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
    _C.DATASET.NUM_SHOTS = -1  # training items per class, picked as Dassl picks them for the seed (val gets min(K, 4), ImageNet keeps val = test; a smaller class is kept whole); -1 or 0 = all items
    _C.DATASET.FEWSHOT_SEED = -1  # seed of few-shot sampling; < 0 = use SEED (CoOp's --seed: the same images as CoOp/MaPLe runs with that seed)
    _C.DATASET.SUBSAMPLE_CLASSES = "all"  # base-to-novel: all, base (first ceil(n/2) sorted labels) or new (the rest), relabelled from 0
    _C.DATASET.CACHE_FEWSHOT = True  # read CoOp's <dataset>/split_fewshot/shot_K-seed_S.pkl when present, else read/write mmprompt's split_fewshot/mmprompt_shot_K-seed_S.json
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

    # Image preprocessing. Keys left at their "unset" value follow the backbone's own preprocess
    # configuration (open_clip: the model config's image_size and the pretrained tag's mean/std,
    # interpolation and resize_mode; timm: the pretrained_cfg's input_size, mean/std, interpolation
    # and crop_pct), so a 32 px or a 336 px CLIP gets images of its size.
    _C.INPUT = CN()
    _C.INPUT.SIZE = ()  # (height, width) of the images the model gets; () = the backbone's input size
    _C.INPUT.INTERPOLATION = ""  # resize interpolation: bilinear, bicubic, nearest; "" = the backbone's (CLIP and timm ViTs: bicubic)
    _C.INPUT.PIXEL_MEAN = []  # per-channel mean; empty = the backbone's (CLIP's for OpenAI CLIP, the timm model's own for timm)
    _C.INPUT.PIXEL_STD = []  # per-channel std; empty = the backbone's, as PIXEL_MEAN
    _C.INPUT.TRANSFORMS = ["random_resized_crop", "random_flip", "normalize"]  # Dassl's names and meaning (CoOp's default here): random_resized_crop, random_crop, random_flip, normalize (train and test, only when listed), center_crop; resize = shorter edge to RESIZE_SIZE before the train crop (VPT). No crop listed: train images are resized to exactly SIZE (Dassl)
    _C.INPUT.RRCROP_SCALE = (0.08, 1.0)  # area range of random_resized_crop
    _C.INPUT.CROP_PADDING = 4  # zero padding on each side before random_crop (Dassl's default; VPT pads nothing: 0)
    _C.INPUT.RESIZE_SIZE = 0  # shorter edge (pixels) images are resized to before the test center crop and the train 'resize'; 0 = round(max(SIZE) * TEST_RESIZE_RATIO)
    _C.INPUT.TEST_RESIZE_RATIO = 0.0  # RESIZE_SIZE as a multiple of max(SIZE) when RESIZE_SIZE is 0; 0 = the backbone's (timm: floor(max(SIZE) / crop_pct); open_clip and Dassl: 1.0)
    _C.INPUT.TEST_RESIZE_MODE = ""  # test resize: shortest (keep the aspect ratio, then center crop) or squash (both sides, as SigLIP); "" = the backbone's (open_clip resize_mode, timm crop_mode)

    _C.DATALOADER = CN()
    _C.DATALOADER.NUM_WORKERS = min(4, _usable_cpus())  # loader worker processes; 0 = load in the main process; default 4, or fewer on a machine with fewer usable cores (more would only warn and compete)
    _C.DATALOADER.PIN_MEMORY = True  # pin batches in page-locked memory when a GPU is used
    _C.DATALOADER.TRAIN_X = CN()
    _C.DATALOADER.TRAIN_X.BATCH_SIZE = 32  # training batch size
    _C.DATALOADER.TRAIN_X.DROP_LAST = True  # drop a short last training batch of an epoch (Dassl/CoOp); False keeps it (VPT on one GPU). A split smaller than one batch is always kept; with several processes a last batch that does not split evenly over them is dropped
    _C.DATALOADER.TEST = CN()
    _C.DATALOADER.TEST.BATCH_SIZE = 100  # evaluation batch size
