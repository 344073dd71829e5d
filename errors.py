"""The one exception type that means "the user asked for something impossible".

``main.py`` catches :class:`UserError`, prints its message on one line and exits with
status 2; every other exception is a bug and keeps its traceback.
"""


class UserError(Exception):
    """Bad input from the user: a missing folder, a corrupt file, a wrong option.

    The message must name the offending file or option and say what to do.
    """
