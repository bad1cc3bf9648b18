"""Config keys of datasets, transforms and loaders (``DATASET.*``, ``INPUT.*``, ``DATALOADER.*``)."""
from .config import CfgNode as CN


def add_data_config(_C):
    _C.DATASET = CN()
    _C.DATASET.ROOT = ""  # root folder holding every dataset (CoOp's $DATA)
    _C.DATASET.NAME = ""  # dataset in the DATASETS registry
