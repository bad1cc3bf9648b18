"""User-facing errors.

Anything a user can cause by a config, a path or a flag raises :class:`MMPromptError` with a
message that says what was wrong and what to do. The command-line tools catch it and print the
message without a traceback (see :func:`mmprompt.utils.cli.run_cli`).
"""


class MMPromptError(Exception):
    """An error caused by the user's input, with a message meant to be read by that user."""


class ConfigError(MMPromptError):
    """A config file, key or value that cannot be used."""


class RegistryError(MMPromptError, KeyError):
    """A name that no registry entry has."""

    def __str__(self):  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class OfflineError(MMPromptError):
    """Weights or data that must be downloaded, on a machine that cannot download them."""


class NonFiniteError(MMPromptError):
    """A NaN or infinite loss, weight or metric: training stops (the message names the step and
    the last good checkpoint)."""
