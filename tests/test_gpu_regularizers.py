"""The research regularizers on the CUDA trainer: the CPU trainer's checks (tests/test_regularizers.py)
on each backend (gpu: the real binary, skipped without a GPU; emu: the CPU emulator), --tf32 0.

What it checks:
  - dropout 0.1: one forward/backward (--parity-out) equals the PyTorch reference with the
    trainers' counter-based masks (logits 1e-4, loss 1e-5 relative, gradients 1e-4 * max|g|) and
    the CPU trainer's result on the same batch; --attention auto takes the cuBLAS attention (the
    only one with attention dropout) and the fused kinds refuse --dropout with a clear message;
  - 10 AdamW steps with dropout, with weight decay toward init, with weight noise, with all three,
    and with the QKV bias off: losses within 1e-4 and parameters within 2e-5 of torch.optim.AdamW
    (near-zero-gradient elements within lr * steps, as on the CPU);
  - resume with all three on: 10 steps = 5 + resume 5 bit for bit, and a run started by the CPU
    trainer and resumed by the CUDA one (and the other way) matches the CPU trainer's straight run
    (losses 1e-4, parameters 1e-4; see tests/test_gpu_train.py for the tolerance).
Run: python -m pytest -q tests/test_gpu_regularizers.py
"""

import dataclasses

import numpy as np
import pytest

from dev.configs import NAMED_CONFIGS
from helpers import (assert_fp32_accurate, assert_run_within_spread, BACKENDS, check_parity, compare_params,
                     cuda_trainer, FP32_PERTURBATION_SEEDS, log_values, make_checkpoint, near_zero_gradients,
                     parity_case, read_log, reference_steps, reference_with_dropout, REG_CASES, run_trainer,
                     same_files, step_records, token_data, train_parity_steps, write_perturbed_checkpoint)

TF32_OFF = ["--tf32", "0"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_dropout_forward_backward_matches_reference_and_cpu(tmp_path, backend):
    binary = cuda_trainer(backend)
    config, p, seed = NAMED_CONFIGS["tiny"], 0.1, 4242
    extra = ["--dropout", p, "--seed", seed]
    model_path, x, y, got = parity_case(tmp_path, config, 7, 3, 64, extra + TF32_OFF, binary=binary)
    ref = reference_with_dropout(model_path, x, y, p, seed)
    check_parity(got, ref, f"CUDA {backend}, dropout 0.1")
    cpu_dir = tmp_path / "cpu"
    cpu_dir.mkdir()
    _, _, _, cpu = parity_case(cpu_dir, config, 7, 3, 64, extra)
    check_parity(cpu, ref, "CPU trainer, dropout 0.1")  # both within the rule: they agree


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("attention", ["fused", "fused-tf32"])
def test_fused_attention_refuses_dropout(tmp_path, backend, attention):
    binary = cuda_trainer(backend)
    config = NAMED_CONFIGS["tiny"]
    make_checkpoint(tmp_path / "model.bin", config, 0)
    r = run_trainer("--model", tmp_path / "model.bin", *token_data(tmp_path, config), "--steps", 1,
                    "--dropout", 0.1, "--attention", attention, binary=binary, check=False)
    assert r.returncode == 1 and "has no attention dropout" in r.stderr, r.stderr


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", list(REG_CASES))
def test_adamw_steps_with_regularizers_match_torch(tmp_path, backend, case):
    binary = cuda_trainer(backend)
    config = NAMED_CONFIGS["tiny"]
    if case == "no-qkv-bias":
        config = dataclasses.replace(config, qkv_bias=False)
    reg = REG_CASES[case]
    model_path, xy, losses, params = train_parity_steps(tmp_path, config, reg, binary=binary, extra=TF32_OFF)
    ref64, runs32 = reference_steps(model_path, xy, reg)
    assert_fp32_accurate(f"losses (CUDA {backend}, {case})", losses, ref64, runs32, key="losses")
    compare_params(params, ref64, runs32, config, f"CUDA {backend}, {case}", near_zero_gradients(model_path, *xy, **reg))
    if case == "no-qkv-bias":
        assert np.all(params["qkvb"] == 0), "qkvb must stay exactly zero without a QKV bias"


FLAGS = ["-l", 3e-3, "--warmup", 2, "--weight-decay", 0.1, "-v", 3, "-m", 2, "-s", 0,
         "--dropout", 0.1, "--decay-toward-init", 1, "--weight-noise", 0.01, "--seed", 42]


def setup_run(tmp_path):
    config = NAMED_CONFIGS["tiny"]
    make_checkpoint(tmp_path / "model.bin", config, 0)
    return token_data(tmp_path, config)


@pytest.mark.parametrize("backend", BACKENDS)
def test_resume_is_bit_identical_with_all_regularizers(tmp_path, backend):
    binary = cuda_trainer(backend)
    data = setup_run(tmp_path)
    full, part = tmp_path / "full", tmp_path / "part"
    run_trainer("--model", tmp_path / "model.bin", *data, "-o", full, "--steps", 10, *FLAGS, *TF32_OFF,
                binary=binary)
    # the same run (--steps 10: the same schedule) stopped after the step-5 checkpoint
    run_trainer("--model", tmp_path / "model.bin", *data, "-o", part, "--steps", 10, "--save-every", 5,
                *FLAGS, *TF32_OFF, binary=binary)
    for f in part.glob("*_000010.bin"):
        f.unlink()
    run_trainer("--resume", part / "state_000005.bin", *data, *FLAGS, *TF32_OFF, binary=binary)
    for name in ("model_000010.bin", "state_000010.bin"):
        assert same_files(full / name, part / name), f"{name} differs after resume ({backend})"
    assert log_values(full / "log.jsonl") == log_values(part / "log.jsonl")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("first", ["cpu", "cuda"])
def test_resume_across_trainers_with_all_regularizers(tmp_path, backend, first):
    cuda = cuda_trainer(backend)
    binaries = {"cpu": None, "cuda": cuda}
    second = "cuda" if first == "cpu" else "cpu"
    data = setup_run(tmp_path)
    ref, part = tmp_path / "ref", tmp_path / "part"
    run_trainer("--model", tmp_path / "model.bin", *data, "-o", ref, "--steps", 10, *FLAGS)
    extra = {"cpu": [], "cuda": TF32_OFF}
    run_trainer("--model", tmp_path / "model.bin", *data, "-o", part, "--steps", 10, "--save-every", 5,
                *FLAGS, *extra[first], binary=binaries[first])
    for f in part.glob("*_000010.bin"):
        f.unlink()
    run_trainer("--resume", part / "state_000005.bin", *data, *FLAGS, *extra[second], binary=binaries[second])
    assert [r["step"] for r in step_records(read_log(part / "log.jsonl"))] == list(range(1, 11))
    spread = []
    for seed in FP32_PERTURBATION_SEEDS:  # the CPU trainer's straight run from starts one ulp away
        write_perturbed_checkpoint(tmp_path / "model.bin", tmp_path / f"model{seed}.bin", seed)
        run_trainer("--model", tmp_path / f"model{seed}.bin", *data, "-o", tmp_path / f"spread{seed}",
                    "--steps", 10, *FLAGS)
        spread.append(tmp_path / f"spread{seed}")
    assert_run_within_spread(f"{first} -> {second}", part, ref, spread, 10, 3e-3)
