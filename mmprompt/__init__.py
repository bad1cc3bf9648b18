"""mmprompt: prompt learning on frozen foundation models through one token-sequence hook."""
__version__ = "0.1.0"
