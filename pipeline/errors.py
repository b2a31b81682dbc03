"""The one error type a user sees: the CLI prints it as a single line and exits non-zero."""


class UserError(Exception):
    """Bad input, a wrong config or a missing file: something the user can fix."""


class OutOfTime(UserError):
    """The time limit ended a piece of work before it could finish (a tuning trial's folds)."""
