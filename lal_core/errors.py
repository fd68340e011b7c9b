"""User-facing errors.

Every problem a user can cause (a bad flag, a missing file, a foreign checkpoint) is raised as a
`LalError` whose message is one line saying what is wrong and what to do. The command line and
the dashboard print that line; anything else is a bug and may show a traceback.
"""


class LalError(Exception):
    """A problem with the user's input or environment, explained in one line."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()))


class ConfigError(LalError):
    """An unknown config name or an invalid hyperparameter."""


class DataError(LalError):
    """A corpus that is missing, unreadable, or too short."""


class TokenizerError(LalError):
    """The tokenizer's encoding file could not be loaded."""


class CheckpointError(LalError):
    """A checkpoint or run folder that cannot be read or does not match."""


class DeviceError(LalError):
    """A device or backend that is not available on this machine."""


class RankLost(LalError):
    """Another rank of a distributed run is gone (it died or was killed): this rank cannot go
    on. The run is left as it was at its last saved state (it reads as interrupted)."""


def describe_failure(exc: BaseException) -> str:
    """One line for an exception that ended a run: a LalError as it is, anything else with its
    type (a bug), Ctrl-C as "interrupted"."""
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted"
    if isinstance(exc, LalError):
        return str(exc)
    text = " ".join(str(exc).split()) or "no details"
    return f"{type(exc).__name__}: {text}"
