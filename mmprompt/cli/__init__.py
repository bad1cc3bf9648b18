"""The command-line tools, installed as console scripts (see ``[project.scripts]`` in pyproject.toml):

* ``mmprompt-train`` = :mod:`mmprompt.cli.train` (also ``python tools/train_net.py``);
* ``mmprompt-zoo`` = :mod:`mmprompt.cli.zoo` (also ``python tools/model_zoo.py``);
* ``mmprompt-prep {clip,fgvc,fashion-mnist,text}`` = :mod:`mmprompt.cli.prep` (also
  ``python datasets_prep/prepare_*.py``).

Each follows the contract of :mod:`mmprompt.utils.cli` (exit 2 and one ``error:`` line for input
the user must fix). The scripts under ``tools/`` and ``datasets_prep/`` are shims with the same
flags, for checkouts that are not installed.
"""
