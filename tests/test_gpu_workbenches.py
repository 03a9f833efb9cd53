"""Every kernel workbench in dev/cuda/ passes its own correctness checks.

What it checks: each dev/cuda/<kernel>.cu, run as `<kernel> --check-only`, compares every numbered
version of its kernel with its CPU reference over several shapes and block sizes, and exits
non-zero on the first mismatch (worst element printed), a NaN, or an element never written (the
outputs are poisoned before each run). This test runs each workbench and requires exit 0 and its
"all checks passed" line, on both backends: gpu (skipped without a GPU) and emu (the CPU emulator,
see tests/helpers/trainers.py), which runs every thread of every block with real barriers and
warp shuffles, so indexing and synchronization bugs show up here too.
Run: python -m pytest -q tests/test_gpu_workbenches.py
"""

import glob
import os
import subprocess

import pytest

from helpers import BACKENDS, REPO, workbench

WORKBENCHES = sorted(os.path.basename(p)[:-3] for p in glob.glob(os.path.join(REPO, "dev", "cuda", "*.cu")))


def test_every_kernel_has_a_workbench():
    for name in ("encoder_forward", "encoder_backward", "layernorm_forward", "layernorm_backward",
                 "gelu_forward", "gelu_backward", "residual_forward", "attention_forward",
                 "attention_backward", "fused_classifier", "adamw", "global_norm", "matmul_backward_bias"):
        assert name in WORKBENCHES, f"dev/cuda/{name}.cu is missing"


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", WORKBENCHES)
def test_workbench_checks_pass(backend, name):
    exe = workbench(backend, name)
    r = subprocess.run([exe, "--check-only"], cwd=REPO, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, f"{name} ({backend}) exited {r.returncode}:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    assert "all checks passed" in r.stdout, r.stdout[-2000:]
    assert "MISMATCH" not in r.stdout + r.stderr
