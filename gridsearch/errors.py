"""The one exception type that reaches users as a single line and exit code 2."""


class UserError(Exception):
    """Bad input from the user (sweep file, command-line option, database URL, missing file).

    The command line prints ``error: <message>`` and exits with code 2, without a traceback.
    """
