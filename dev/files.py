"""Files and folders the tools write: checked before the work, written atomically.

Contract (the Python side of llmc/utils.h's AtomicFile and make_dirs):
- check_output_file(path, flag) and check_output_dir(path, flag) run before
  any long work and raise UserError naming the flag, the path and the fix when
  the path cannot be written: empty, a folder where a file is wanted (or the
  reverse), or under a regular file. They create nothing.
- check_free_space(path, nbytes, flag) raises UserError when the file system
  that `path` would go on has fewer than nbytes free (checked before the work;
  the write itself still reports a full disk).
- make_dirs(folder, flag) creates a folder and its parents; an OSError becomes
  a UserError naming the folder and the system's reason.
- atomic_write(path, fill) writes through `fill(f)` into `path.tmp.<pid>`
  (binary, same folder), flushes, fsyncs and renames it over `path`. On any
  failure the temporary file is removed and whatever stood under `path`
  stays as it was; an OSError becomes a UserError naming `path`, the step that
  failed and the reason, and saying to free disk space when the disk (or the
  process's file size limit) is full: ENOSPC, EDQUOT, EFBIG.
- write_error(e, path, step) is that UserError, for writers that are not one
  file (a folder built beside its final name).
"""

import errno
import os
import shutil

from dev.errors import UserError

DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def write_error(e, path, step="write"):
    """UserError for the OSError `e` raised while writing `path` (during `step`)."""
    reason = e.strerror or str(e)
    hint = ": free some disk space, or write elsewhere" if e.errno in DISK_FULL else ""
    return UserError(f"writing {path} failed ({step}: {reason}{hint}); nothing was written under "
                     f"that name, and a file there before is unchanged.")


def _blocking_file(path):
    """The nearest existing ancestor of `path` when it is not a folder (else None)."""
    parent = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(parent):
        up = os.path.dirname(parent)
        if up == parent:
            return None
        parent = up
    return None if os.path.isdir(parent) else parent


def check_output_file(path, flag, example="out/model.bin"):
    """Raise UserError unless `path` can be written as a file (see module doc)."""
    path = os.fspath(path)
    if path == "":
        raise UserError(f"{flag} is empty; pass a file path such as {example}.")
    if os.path.isdir(path):
        raise UserError(f"{flag} {path} is a folder, expected a file path; pass a file name "
                        f"inside it, such as {os.path.join(path, 'NAME')}.")
    blocker = _blocking_file(path)
    if blocker is not None:
        raise UserError(f"{flag} {path}: {blocker} is a file, not a folder, so nothing can be "
                        f"written under it; pick another path.")


def check_output_dir(path, flag, example="out/run"):
    """Raise UserError unless `path` is, or can be created as, a folder (see module doc)."""
    path = os.fspath(path)
    if path == "":
        raise UserError(f"{flag} is empty; pass a folder path such as {example}.")
    if os.path.exists(path) and not os.path.isdir(path):
        raise UserError(f"{flag} {path} is a file, not a folder; pass a folder path (or remove "
                        f"the file).")
    blocker = _blocking_file(path)
    if blocker is not None:
        raise UserError(f"{flag} {path}: {blocker} is a file, not a folder, so no folder can be "
                        f"made under it; pick another path.")


def check_free_space(path, nbytes, flag):
    """Raise UserError when the file system of `path` has fewer than nbytes bytes free."""
    folder = os.path.dirname(os.path.abspath(os.fspath(path)))
    while not os.path.exists(folder):
        folder = os.path.dirname(folder)
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return  # unknown: the write reports a full disk itself
    if nbytes > free:
        raise UserError(f"{flag} {path}: the file takes {nbytes:,} bytes but {folder} has only "
                        f"{free:,} bytes free; free some disk space, or write elsewhere.")


def make_dirs(folder, flag=None):
    """os.makedirs(folder, exist_ok=True), with a UserError naming the folder on failure."""
    folder = os.fspath(folder)
    where = f"{flag} {folder}" if flag else f"folder {folder}"
    blocker = folder if os.path.exists(folder) else _blocking_file(folder)
    if blocker is not None and not os.path.isdir(blocker):
        raise UserError(f"cannot create {where}: {blocker} is a file, not a folder; pick "
                        f"another path.")
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create {where}: {e.strerror or e}; pick a path in a folder you "
                        f"can write.") from e


def atomic_write(path, fill, mode="wb"):
    """Write `path` atomically through fill(f) (see module doc); returns nothing."""
    path = os.fspath(path)
    if os.path.isdir(path):
        raise UserError(f"cannot write {path}: it is a folder; pass a file path.")
    make_dirs(os.path.dirname(os.path.abspath(path)))
    tmp = f"{path}.tmp.{os.getpid()}"
    step = "open"
    try:
        with open(tmp, mode) as f:
            step = "write"
            fill(f)
            step = "flush"
            f.flush()
            os.fsync(f.fileno())
            step = "close"
        step = "rename"
        os.replace(tmp, path)
    except BaseException as e:
        if step != "open" and os.path.exists(tmp):
            os.remove(tmp)
        if isinstance(e, OSError):
            raise write_error(e, path, step) from e
        raise
