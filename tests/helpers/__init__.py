"""Everything the tests share, under one import root: `from helpers import run_trainer, ...`.

pytest puts tests/ on sys.path (it holds conftest.py and the test files, and no __init__.py), so
`helpers` is this package; fixtures live in tests/conftest.py instead. No test file imports
another test file. The modules, in the order the data flows:
  files        checkpoint, shard and log writers and readers (random_params, make_checkpoint,
               token_data, example_data, same_files, read_log, step_records, log_values, check_png)
  trainers     building and running the CPU and CUDA trainers (REPO, trainer, asan_trainer,
               run_trainer, file_size_limit, BACKENDS, gpu_available, cuda_trainer, workbench,
               compute_sanitizer, make_targets) and check_samples_print_valid_utf8
  reference    the optimizer's reference: lr_at, optimizer_flags, torch_train_steps, ADAMW_OPT
  compare      assert_close, grad_tolerance, the float64 rule (FP32_*, fp32_reference,
               assert_fp32_accurate, perturb_one_ulp, write_perturbed_checkpoint,
               assert_run_within_spread) and the one-pass checks (reference_pass,
               transformers_pass, check_one_pass, hf_grads)
  adamw        the 10-step AdamW comparison both trainers run (check_adamw_steps_match_torch)
  regularizers the regularizer parity procedures of tests/test_regularizers.py and
               tests/test_gpu_regularizers.py (REG_CASES, train_parity_steps, compare_params, ...)
  bad_inputs   the bad-input table of tests/test_cpu_errors.py and tests/test_gpu_errors.py
               (BAD_INPUT_CASES, case_args, base_args, assert_clear_error)
Each module's docstring lists what it provides. The helpers' own tests are tests/test_helpers.py.
`python -m tests.helpers FP32_ERROR_LOG...` (from the repository root) summarizes the error logs
written with FP32_ERROR_LOG=file (see compare.FP32_ERROR_FACTOR).
"""

from .adamw import check_adamw_steps_match_torch
from .bad_inputs import BAD_INPUT_CASES, assert_clear_error, base_args, case_args, corrupt_model
from .compare import (FP32_ERROR_FACTOR, FP32_FLOOR_ULPS, FP32_PERTURBATION_SEEDS, assert_close,
                      assert_fp32_accurate, assert_run_within_spread, check_one_pass, fp32_reference,
                      grad_tolerance, hf_grads, perturb_one_ulp, reference_pass, transformers_pass,
                      write_perturbed_checkpoint)
from .files import (check_png, example_data, log_values, make_checkpoint, random_params, read_log,
                    same_files, step_records, token_data)
from .reference import ADAMW_OPT, ADAMW_STEPS, lr_at, optimizer_flags, torch_train_steps
from .regularizers import (REG_CASES, REG_OPT, REG_SEED, REG_STEPS, check_parity, compare_params,
                           near_zero_gradients, parity_case, reference_steps, reference_with_dropout,
                           train_parity_steps)
from .trainers import (BACKENDS, EMU_DIR, REPO, asan_trainer, check_samples_print_valid_utf8,
                       compute_sanitizer, cuda_trainer, file_size_limit, gpu_available, make_targets,
                       run_trainer, skip_without_gpu, trainer, workbench)

__all__ = [
    "check_adamw_steps_match_torch",
    "BAD_INPUT_CASES", "assert_clear_error", "base_args", "case_args", "corrupt_model",
    "FP32_ERROR_FACTOR", "FP32_FLOOR_ULPS", "FP32_PERTURBATION_SEEDS", "assert_close",
    "assert_fp32_accurate", "assert_run_within_spread", "check_one_pass", "fp32_reference",
    "grad_tolerance", "hf_grads", "perturb_one_ulp", "reference_pass", "transformers_pass",
    "write_perturbed_checkpoint",
    "check_png", "example_data", "log_values", "make_checkpoint", "random_params", "read_log",
    "same_files", "step_records", "token_data",
    "ADAMW_OPT", "ADAMW_STEPS", "lr_at", "optimizer_flags", "torch_train_steps",
    "REG_CASES", "REG_OPT", "REG_SEED", "REG_STEPS", "check_parity", "compare_params",
    "near_zero_gradients", "parity_case", "reference_steps", "reference_with_dropout",
    "train_parity_steps",
    "BACKENDS", "EMU_DIR", "REPO", "asan_trainer", "check_samples_print_valid_utf8",
    "compute_sanitizer", "cuda_trainer", "file_size_limit", "gpu_available", "make_targets",
    "run_trainer", "skip_without_gpu", "trainer", "workbench",
]
