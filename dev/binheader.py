"""The 256-int32 little-endian header every binary file of this project starts with.

Contract: write_file_atomic(path, header_values, bodies) writes header + bodies
to `path.tmp.<pid>` and renames it over `path` (a crash never leaves a half
file under the real name; a failed write removes the temporary file and is a
UserError naming the file, see dev/files.py). read_header(path, kind, magic, version) returns the
256 header ints as a numpy int32 array after checking that the file exists, is
at least 1024 bytes, and has the expected magic and version; every failure is
a UserError subclass (`error_cls`) naming the file, what was found, what was
expected and a fix. check_size(...) checks the exact file size.
"""

import os

import numpy as np

from dev.errors import UserError
from dev.files import atomic_write

HEADER_INTS = 256
HEADER_BYTES = HEADER_INTS * 4


def make_header(magic, version, values):
    """Return the (256,) int32 header: [magic, version, *values, 0, ...]."""
    header = np.zeros(HEADER_INTS, dtype="<i4")
    header[0] = magic
    header[1] = version
    for i, v in enumerate(values):
        v = int(v)
        if not (0 <= v < 2**31):
            raise ValueError(f"header slot {i + 2} value {v} does not fit in int32")
        header[2 + i] = v
    return header


def write_file_atomic(path, header, bodies):
    """Write header (256 int32) then each numpy array in `bodies` (raw bytes, C order).

    dev.files.atomic_write: a temporary file in the same folder, fsynced and
    renamed over `path`; the parent folder is created if needed. A failed
    write (disk full, a folder in the way) removes the temporary file and
    raises UserError naming `path`.
    """
    def fill(f):
        for arr in [np.ascontiguousarray(header, dtype="<i4")] + list(bodies):
            # f.write keeps the errno (ENOSPC, EFBIG) that ndarray.tofile loses
            f.write(np.ascontiguousarray(arr).reshape(-1).view(np.uint8).data)

    atomic_write(path, fill)


def read_header(path, kind, magic, version, error_cls=UserError, fix=""):
    """Read and check the header of a `kind` file (e.g. "model checkpoint").

    version None: any version (the caller checks it), as llmc/utils.h's -1.

    Returns (header int32 array (256,), file size in bytes).
    """
    path = os.fspath(path)
    hint = f" {fix}" if fix else ""
    if not os.path.exists(path):
        raise error_cls(f"{kind} file {path} does not exist.{hint}")
    if os.path.isdir(path):
        raise error_cls(f"{kind} path {path} is a folder, expected a file.{hint}")
    size = os.path.getsize(path)
    if size < HEADER_BYTES:
        raise error_cls(
            f"{kind} file {path} is truncated: {size} bytes, shorter than its "
            f"{HEADER_BYTES}-byte header.{hint}")
    header = np.fromfile(path, dtype="<i4", count=HEADER_INTS)
    if int(header[0]) != magic:
        raise error_cls(
            f"{kind} file {path} has magic number {int(header[0])}, expected "
            f"{magic}: it is not a {kind} file (or it is from another tool).{hint}")
    if version is not None and int(header[1]) != version:
        raise error_cls(
            f"{kind} file {path} has version {int(header[1])}, expected {version}.{hint}")
    return header, size


def check_size(path, kind, size, expected, what, error_cls=UserError, fix=""):
    """Raise error_cls unless the file size equals `expected` bytes.

    `what` explains the expectation, e.g. "1024 + 2*N with N=100 tokens".
    """
    if size == expected:
        return
    hint = f" {fix}" if fix else ""
    state = "truncated" if size < expected else "too long"
    raise error_cls(
        f"{kind} file {path} is {state}: {size} bytes, expected {expected} "
        f"({what}).{hint}")
