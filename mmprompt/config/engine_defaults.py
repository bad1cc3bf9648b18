"""Config keys of training and evaluation (``OPTIM.*``, ``TRAIN.*``, ``TEST.*``)."""
from .config import CfgNode as CN


def add_engine_config(_C):
    _C.OPTIM = CN()
    _C.OPTIM.NAME = "sgd"  # optimizer: sgd, adamw, adafactor
    _C.OPTIM.LR = 0.002  # base learning rate
