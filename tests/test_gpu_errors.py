"""Bad input to the CUDA trainer: the same clear errors as the CPU trainer's.

Both trainers run the one training driver of llmc/train_driver.h, so every check on flags,
files and the batch geometry holds for both. What it checks: each case of
tests/test_cpu_errors.py (bad files, flags, hostile headers, batch geometry, resume states,
tokenizers), run through the CUDA trainer on each backend, exits 1 with an `error:` line that
names the same things, and no crash or sanitizer output. Left out: the CPU trainer's memory
estimate ("batch that cannot fit in memory"; the CUDA trainer's allocations check GPU memory
one by one, tests/test_gpu_train.py).
Run: python -m pytest -q tests/test_gpu_errors.py   (the gpu variants need a GPU)
"""

import pytest

from helpers import assert_clear_error, BACKENDS, BAD_INPUT_CASES, case_args, cuda_trainer, run_trainer

CPU_ONLY = {"batch that cannot fit in memory"}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", [c for c in BAD_INPUT_CASES if c not in CPU_ONLY])
def test_bad_input_is_the_same_clear_error(bad_input_files, backend, name):
    binary = cuda_trainer(backend)
    args, want = case_args(bad_input_files, name)
    r = run_trainer(*args, binary=binary, check=False)
    assert_clear_error(r, name, want)
