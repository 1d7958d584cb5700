"""The errors recsys-embed raises on purpose, each naming the file, column, row or key at fault.

``InputError`` and its subclasses are ``ValueError``\\ s: the input (data, config, artifact,
run directory) is at fault and the message says what was expected. The CLI prints any of them
as one line ``recsys-embed: error: ...`` and exits with :data:`EXIT_BAD_INPUT`.

* :class:`ConfigError`: a run config or schema value (a key of ``run.yaml``, a trainer
  setting, a feature spec); :class:`ConfigTypeError` one of the wrong type (also a ``TypeError``).
* :class:`DataError`: the content of a data file (a label outside {0, 1}, bytes that are not
  UTF-8, no rows to evaluate); :class:`ColumnTypeError` a column of the wrong type (also a
  ``TypeError``, as it was before).
* :class:`ArtifactError`: a saved model that is missing, edited, corrupt or of another version;
  :class:`IntegrityError` one whose bytes no longer match the checksums recorded at save.
* :class:`RunDirError`: a run directory in use by another run, or holding a checkpoint the
  command was not told what to do with.
* :class:`TrainingDiverged`: the training loss stopped being finite (also a
  ``FloatingPointError``); the learning rates are the usual cause.
* :class:`InputWarning` (a ``UserWarning``, printed by the CLI as ``recsys-embed: warning: ...``):
  the input is usable but likely not what was meant: :class:`VocabularyCoverageWarning` (a
  fitted vocabulary sends most values to OOV), :class:`UndefinedMetricWarning` (AUC of data
  with one class).
* :class:`WriteError`: a file could not be written (disk full, no permission); an ``OSError``
  naming the file, raised after the partial file was removed.
"""

from __future__ import annotations

EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report a Ctrl-C


class InputError(ValueError):
    """The input is at fault; the message names it and says what was expected."""


class ConfigError(InputError):
    """A config value is missing, of the wrong type or out of range."""


class ConfigTypeError(ConfigError, TypeError):
    """A config or schema value of the wrong type (also a ``TypeError``, as it was before)."""


class DataError(InputError):
    """A data file holds values the job cannot use."""


class ColumnTypeError(DataError, TypeError):
    """A column's type cannot feed the feature (or label, or group) that reads it."""


class ArtifactError(InputError):
    """A saved model (artifact directory) cannot be loaded as written."""


class IntegrityError(ArtifactError):
    """An artifact's bytes differ from the checksums recorded when it was saved."""


class RunDirError(InputError):
    """A run directory is in use, or holds state the command must be told what to do with."""


class TrainingDiverged(InputError, FloatingPointError):
    """The training loss became NaN or infinite."""


class WriteError(OSError):
    """A file could not be written; nothing half-written is left behind."""

    def __str__(self) -> str:
        return f"cannot write {self.filename}: {self.strerror}"


class InputWarning(UserWarning):
    """The input is usable but likely not what was meant; the message says what to change."""


class VocabularyCoverageWarning(InputWarning):
    """A fitted vocabulary keeps a small share of the values it was fitted on (the rest are OOV)."""


class UndefinedMetricWarning(InputWarning):
    """A metric is undefined on the data (AUC with one class) and is left out."""
