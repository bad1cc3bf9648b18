"""Scripts that turn the official dataset downloads into the layouts mmprompt reads.

The bodies live in :mod:`mmprompt.cli.prep` (``mmprompt-prep`` once installed); each file here is
a shim for checkouts that are not installed, with the same flags, built by :func:`stand_in`."""

import importlib
import sys


def stand_in(name: str, body: str, namespace: dict) -> None:
    """Make the shim module ``name`` stand for ``mmprompt.cli.prep.<body>``.

    Imported, ``name`` becomes that module itself in ``sys.modules``, so attributes set on it
    (tests monkeypatch them) reach the code that reads them; loaded from its path, the shim's
    ``namespace`` holds that module's names, and run as a script it runs that module's ``main``.
    """
    module = importlib.import_module(f"mmprompt.cli.prep.{body}")
    namespace.update({k: v for k, v in vars(module).items() if not k.startswith("__")})
    if name == "__main__":
        from mmprompt.utils.cli import run_cli

        run_cli(module.main)
    else:
        sys.modules[name] = module
