"""The errors KCES raises for bad input: a ``ValueError`` and a ``TypeError`` of its own, so
that callers (the command line) can tell a refused input from a failure inside the work."""


class InputError(ValueError):
    """An input or option KCES refuses; the message names the problem."""


class InputTypeError(TypeError):
    """An input or option of a type KCES does not accept; the message names it."""
