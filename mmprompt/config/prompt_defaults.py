"""Config keys of the prompt methods (``PROMPT.*``)."""
from .config import CfgNode as CN


def add_prompt_config(_C):
    _C.PROMPT = CN()
    _C.PROMPT.METHODS = []  # prompt modules to compose, in order, by PROMPTS registry name; [] = frozen backbone only (linear probe)
