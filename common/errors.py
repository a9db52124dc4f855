"""User-facing errors: one clear line on stderr and a non-zero exit, never a traceback."""
from __future__ import annotations

import os
import sys
from typing import Callable, Sequence

# Exit status for bad input (argparse uses 2 for usage errors too).
EXIT_USER_ERROR = 2
# Exit status when the machine, not the input, failed us (the disk filled up).
EXIT_FAULT = 1


class UserError(Exception):
    """Something the user can fix: bad flag, missing file, mismatched checkpoint.

    The message is one line saying what was wrong and how to fix it.
    """

    exit_status = EXIT_USER_ERROR


class DiskFullError(UserError):
    """A write ran out of disk space: the file being written was left as it was."""

    exit_status = EXIT_FAULT


def run_cli(main: Callable[[Sequence[str] | None], object], argv: Sequence[str] | None = None,
            broken_pipe_ok: bool = False) -> None:
    """Run a CLI entry point, turning a UserError into `error: ...` and its exit status
    (2 for bad input, 1 for a full disk). Any other exception is a bug: its traceback stays.
    `broken_pipe_ok`: a reader that stops early (`| head`) ends the program quietly."""
    try:
        main(argv)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(error.exit_status)
    except BrokenPipeError:
        if not broken_pipe_ok:
            raise
        # Python's recipe (docs of signal, "Note on SIGPIPE"): stdout's flush at exit would fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)
