"""User-facing errors. Each message says what is wrong and how to fix it.

The CLI prints a `TengineError` as one or more lines (no traceback) and exits with its
`exit_code`: 2 for bad input caught before any work (config, names, missing files), 1 for a
failure during work (a run that went non-finite, a checkpoint that cannot be read).
"""

from __future__ import annotations

# `tengine train` of a run that stopped resumably (SIGTERM, training.max_time): EX_TEMPFAIL,
# "a temporary failure: run the same command again". Here so the control plane (no torch) knows it.
PREEMPTED_EXIT_CODE = 75


class TengineError(Exception):
    """Base of every failure a user can fix; `str(err)` is the message shown to them."""

    exit_code = 1


class ConfigError(TengineError):
    """A config that cannot run. Carries one line per problem: `path: value: what is allowed`."""

    exit_code = 2

    def __init__(self, problems: list[str] | str):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


class UnknownNameError(ConfigError):
    """A name looked up in a registry (model, loss, source, ...) that is not registered."""


class DataError(TengineError):
    """Data that is missing or unusable (no files match, empty corpus, bad JSONL line)."""

    exit_code = 2


class CheckpointError(TengineError):
    """A checkpoint that cannot be used (asked for explicitly and invalid, or unreadable)."""


class ArtifactMismatch(CheckpointError):
    """A registered model (or checkpoint) whose files no longer match their recorded sha256."""


class ModelError(TengineError):
    """A model that cannot be trained as built (its outputs have no logits, its weights do not
    fit `model.init_from`)."""


class NonFiniteError(TengineError):
    """Training produced non-finite losses/gradients too many steps in a row."""


class ControlError(TengineError):
    """A control-plane request that cannot be done; `code` tells clients and the CLI what kind."""

    code = "error"
    exit_code = 2


class NotFound(ControlError):
    code = "not_found"


class AlreadyExists(ControlError):
    code = "already_exists"


class Invalid(ControlError):
    code = "invalid"


class Conflict(ControlError):
    code = "conflict"
