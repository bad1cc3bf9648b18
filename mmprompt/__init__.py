"""mmprompt: prompt learning on frozen foundation models through one token-sequence hook.

The Python API (docs/api.md)::

    model = mmprompt.wrap(vit, "vpt", num_classes=10, num_tokens=10, deep=True)
    model = mmprompt.create_model("maple_adap_pos", classnames=names)
    model.save_pretrained("out/")
    model = mmprompt.from_pretrained("out/", model=vit)

Names other than ``__version__`` and ``list_recipes`` are imported on first use, so that
``import mmprompt`` (and every command-line tool's flag parsing) stays free of torch and the
backbone libraries.
"""

__version__ = "0.1.0"

from .recipes import list_recipes  # noqa: E402

#: public name -> module that defines it (imported lazily by __getattr__)
_LAZY = {
    "wrap": "api",
    "create_model": "api",
    "from_pretrained": "api",
    "get_cfg": "config",
}

__all__ = ["__version__", "list_recipes", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'mmprompt' has no attribute '{name}'")
