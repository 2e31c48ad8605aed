"""The errors a user can act on, each carrying one line of explanation.

The command line turns an `InputError` into exit code 2 and a `ValidationError` into exit
code 1, printing only the message: a user never sees a traceback for a problem with their
input.
"""


class LbylError(Exception):
    """Base of every error the tool reports as a one-line message.

    `report` is the CompressionReport of the run so far, once the model was read (the pipeline
    sets it), so a refusal or a failed validation can still be written out with --report."""

    exit_code = 1
    report = None


class InputError(LbylError):
    """The input model, a path or an option is unusable: the user must change something."""

    exit_code = 2


class NothingToPruneError(InputError):
    """The model holds no chain the tool knows how to prune."""


class ValidationError(LbylError):
    """The pruned model failed a check; nothing was written."""

    exit_code = 1


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message: what a one-line error can quote of it."""
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]
