"""Errors a user can cause, kept apart from internal failures.

Everything the user can fix (a bad model file, an unsupported operator, a target
that does not validate, inputs of the wrong shape, a corrupt program) raises a
:class:`CimcError`. The command line turns it into one message and exit status 2;
any other exception is a bug in cimc and exits with status 1.
"""


class CimcError(Exception):
    """A problem with the user's input, explained in a sentence they can act on."""


class ModelError(CimcError):
    """The ONNX model cannot be read, validated or imported."""


class UnsupportedOperatorError(ModelError):
    """The model uses an operator or attribute cimc does not implement."""


class TargetError(CimcError):
    """The target file is missing, malformed or describes an impossible chip."""


class CapacityError(CimcError):
    """The model does not fit on the target."""


class ProgramError(CimcError):
    """A .cimp file is truncated, edited, of another version, or inconsistent."""


class InputError(CimcError):
    """Run-time inputs or calibration data do not match the model."""


class MultiplierError(CimcError):
    """An unknown multiplier name, or a multiplier table file that cannot be read or is malformed."""


class SweepError(CimcError):
    """A sweep spec that does not validate, or a sweep that cannot start (executor, results folder)."""
