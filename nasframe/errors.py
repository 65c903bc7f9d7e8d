"""Errors a user can act on.

Every problem caused by what the user passed in (a flag, a file, a constraint, a model the
search cannot handle) is raised as :class:`UserInputError` with one sentence that names the
problem and the fix, so the CLI can print it without a traceback and exit with code 2.
"""


class UserInputError(ValueError):
    """A problem with what the user passed in; the message names the problem and the fix.

    The CLI prints it and exits with code 2.
    """


class InfeasibleConstraintError(UserInputError):
    """The constraint is below the smallest sub-network the search space can reach."""
