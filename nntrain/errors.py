"""Errors with messages fit for users; `cli.py` turns them into exit codes."""


class NntrainError(Exception):
    """Base class: the message is shown to the user as is."""

    exit_code = 1


class ConfigError(NntrainError):
    """A bad config, override or command-line usage (exit code 2)."""

    exit_code = 2


class DataError(NntrainError):
    """Data that is missing or doesn't fit the config (exit code 2)."""

    exit_code = 2


class CheckpointError(NntrainError):
    """A checkpoint that is missing, damaged or not nntrain's (exit code 2)."""

    exit_code = 2


class RunError(NntrainError):
    """A failure while training (exit code 1)."""

    exit_code = 1


class Interrupted(NntrainError):
    """SIGINT (exit 130) or SIGTERM (exit 143) stopped training after saving `last.pt`."""

    def __init__(self, message: str, signum: int, run_dir: str):
        super().__init__(message)
        self.exit_code = 128 + signum
        self.run_dir = run_dir


class ConfigWarning(UserWarning):
    """An option that has no effect, or a bad effect, where the run happens (CUDA-only options on
    the CPU); shown as one line on stderr, and the run goes on."""
