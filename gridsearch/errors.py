"""The one exception type that reaches users as a single line and exit code 2, and the outages that stop a run
with one line and exit code 1."""

import errno

DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
"""The ``errno`` of a full disk (or quota): an outage to wait out, never a trial's fault."""


class UserError(Exception):
    """Bad input from the user (sweep file, command-line option, database URL, missing file).

    The command line prints ``error: <message>`` and exits with code 2, without a traceback.
    """


class Unavailable(Exception):
    """The database or the artifacts folder stopped working during a run, past what the run waits out.

    The run stops its workers and leaves its trials resumable; the command line prints ``error: <message>``
    and exits with code 1, without a traceback. Running the same command again resumes.
    """
