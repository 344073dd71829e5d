"""The one exception type that means "the user asked for something impossible".

``main.py`` catches :class:`UserError`, prints its message on one line and exits with
status 2; every other exception is a bug and keeps its traceback.
"""


class UserError(Exception):
    """Bad input from the user: a missing folder, a corrupt file, a wrong option.

    The message must name the offending file or option and say what to do.
    """


def exit_status(action, *args) -> int:
    """Run ``action(*args)`` for a command line: 0 on success, 2 after printing one
    ``error:`` line for a UserError, 130 on Ctrl-C. Other exceptions propagate."""
    import sys

    try:
        action(*args)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


def require(module: str):
    """Import an optional export dependency, or raise UserError saying how to install it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise UserError(f"{module} is not installed; install the export dependencies with "
                        "`python -m pip install -r requirements-export.txt`") from error
