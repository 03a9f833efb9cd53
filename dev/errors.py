"""User-facing errors and the CLI wrapper every entry point uses.

Contract: any problem the user can fix (missing file, bad header, bad flag
value, empty input) raises UserError (or a subclass) with a message that names
the file, the value found, what was expected and how to fix it. cli_main(fn)
runs fn(), prints `error: <message>` to stderr and exits 1 on UserError, and
exits 130 on Ctrl-C. Anything else is a bug and keeps its traceback.
require_memory(nbytes, what, fix) raises UserError, before anything is
allocated, for work that needs more than the machine's physical memory (the
kernel hands out pages lazily and would kill the process later), as
llmc/utils.h's require_memory does.
"""

import os
import sys


class UserError(Exception):
    """A problem in the user's input or environment, explained in the message."""


def physical_memory_bytes():
    """Physical memory of the machine in bytes (0 when unknown)."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 0


def require_memory(nbytes, what, fix):
    """Raise UserError when `what` needs more than the physical memory (nbytes, an estimate)."""
    phys = physical_memory_bytes()
    if phys > 0 and nbytes > phys:
        raise UserError(f"{what} needs {nbytes / 2**30:.2f} GiB of memory, more than this "
                        f"machine's {phys / 2**30:.2f} GiB. {fix}")


def cli_main(fn, argv=None):
    """Run a CLI entry point fn(argv) (or fn() when argv is None) and exit.

    Returns normally never: exits with fn's integer return (0 when None), 1 on
    UserError, 130 on KeyboardInterrupt.
    """
    try:
        rc = fn() if argv is None else fn(argv)
    except UserError as e:
        sys.stdout.flush()
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.stdout.flush()
        print("error: interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(0 if rc is None else int(rc))
