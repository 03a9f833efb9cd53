"""What the machine and the Python environment are, for the test header and benchmark reports.

  describe() -> list of lines: Python and package versions, the CPU model, OpenBLAS's version and
                the kernel it picks here (from the scipy-openblas32 wheel the CPU trainer links),
                and OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE as the environment sets them.
  cpu_model() -> "AMD EPYC ..." from /proc/cpuinfo (or the platform's name).
  openblas_kernel() -> (version string, kernel name), or None without the wheel.

The kernel matters: OpenBLAS's kernels round differently (the CPU trainer's bytes differ between
them, never between thread counts), so every report names it.
Run: python -m dev.environment
"""

import ctypes
import glob
import importlib.metadata
import os
import platform
import sys

PACKAGES = ("numpy", "torch", "transformers", "tiktoken", "scipy-openblas32", "nvidia-cublas",
            "pytest", "matplotlib")


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown CPU"


def openblas_kernel():
    """(config, kernel) of the scipy-openblas32 library, loaded in this process as the trainer
    loads it (the environment's OPENBLAS_CORETYPE applies); None when the wheel is missing."""
    try:
        import scipy_openblas32
    except ImportError:
        return None
    libs = sorted(glob.glob(os.path.join(scipy_openblas32.get_lib_dir(), "libscipy_openblas*.so*")))
    if not libs:
        return None
    lib = ctypes.CDLL(libs[0])
    lib.scipy_openblas_get_config.restype = ctypes.c_char_p
    lib.scipy_openblas_get_corename.restype = ctypes.c_char_p
    return lib.scipy_openblas_get_config().decode(), lib.scipy_openblas_get_corename().decode()


def describe():
    versions = []
    for name in PACKAGES:
        try:
            versions.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            versions.append(f"{name} (not installed)")
    blas = openblas_kernel()
    env = ", ".join(f"{k}={os.environ[k]}" if k in os.environ else f"{k} unset"
                    for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"))
    return [
        f"python {sys.version.split()[0]}; " + ", ".join(versions),
        f"cpu: {cpu_model()}, {os.cpu_count()} logical cores",
        (f"OpenBLAS (the CPU trainer's): {blas[0]}; kernel {blas[1]}" if blas else
         "OpenBLAS: the scipy-openblas32 wheel is not installed") + f" ({env})",
    ]


if __name__ == "__main__":
    print("\n".join(describe()))
