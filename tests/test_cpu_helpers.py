"""Helpers shared by the CPU-trainer tests (tests/test_cpu_*.py, tests/test_dataloader.py),
plus tests of the helpers themselves.

What it provides:
  trainer()                 path of ./train_gpt2, built once per session with `make train_gpt2`
                            (or $TRAIN_GPT2 when set)
  run_trainer(*args, binary=None, check=True, timeout=...)
                            run a trainer binary, return the CompletedProcess; with check=True a
                            non-zero exit fails the test showing the trainer's stdout and stderr
  assert_close(name, got, ref, atol)
                            max-abs comparison whose failure message names the tensor, the worst
                            element (index, both values) and the tolerance
  grad_tolerance(ref)       the one-pass gradient tolerance: 1e-4 * max|g|
  fp32_reference(load, run) a float64 reference and an ensemble of PyTorch fp32 runs of the same
                            computation (run(model) -> dict of arrays), for
  assert_fp32_accurate(name, got, ref64, runs32, keep=None, key=None)
                            our error against float64 at most FP32_ERROR_FACTOR times PyTorch
                            fp32's own (worst over the ensemble) plus a few ulp: the tolerance of
                            multi-step comparisons, where AdamW amplifies rounding differences
  lr_at(step, ...)          Python mirror of llmc/schedule.h (the tests compare the log against it)
  read_log(path)            the JSONL log as a list of dicts
  step_records(log)         only the per-step records ({"step", "train_loss", ...})
  hf_grads(hf_model)        a transformers GPT2LMHeadModel's gradients in our 16-tensor layout
  optimizer_flags(**opt)    the trainer flags for the keyword settings torch_train_steps takes
                            (lr, warmup, schedule, ..., dropout, weight_noise, decay_toward_init),
                            so a test configures the trainer and the reference from one dict
  torch_train_steps(...)    N AdamW steps with torch.optim.AdamW + our clipping rule, the reference
                            for the C trainer's optimizer; optionally with the research
                            regularizers of dev/regularizers.py (counter-based dropout masks,
                            weight noise, decay toward the initialization)

The tests of this file check the helpers that other tests rely on to be able to fail:
assert_close really fails and names the worst element, and lr_at matches hand-computed values.
Run: python -m pytest -q tests/test_cpu_helpers.py
"""

import functools
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TRAINER = os.path.join(REPO, "train_gpt2")


@functools.lru_cache(maxsize=None)
def _build(target):
    r = subprocess.run(["make", "-s", target], cwd=REPO, capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        pytest.fail(f"`make {target}` failed (exit {r.returncode}):\n{r.stdout}\n{r.stderr}")
    return os.path.join(REPO, target)


def trainer():
    """Path of ./train_gpt2, rebuilt (if stale) once per test session; the environment variable
    TRAIN_GPT2 points the tests at another build instead (e.g. `make train_gpt2 USE_BLAS=0` output
    copied elsewhere, or a deliberately broken one to see the tests fail)."""
    return os.environ.get("TRAIN_GPT2") or _build("train_gpt2")


def asan_trainer():
    """Path of ./train_gpt2_asan (AddressSanitizer + UBSan), built once per session ($TRAIN_GPT2_ASAN
    points the tests at another sanitizer build, e.g. one of an older commit)."""
    return os.environ.get("TRAIN_GPT2_ASAN") or _build("train_gpt2_asan")


def run_trainer(*args, binary=None, check=True, timeout=300, env=None):
    """Run the trainer with string-converted args; fail the test on a non-zero exit when check."""
    cmd = [binary or trainer(), *map(str, args)]
    full_env = dict(os.environ, **(env or {}))
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout, env=full_env)
    if check and r.returncode != 0:
        pytest.fail(f"trainer exited {r.returncode}: {' '.join(cmd)}\n--- stdout ---\n{r.stdout[-4000:]}"
                    f"\n--- stderr ---\n{r.stderr[-4000:]}")
    return r


def assert_close(name, got, ref, atol):
    """Fail unless max |got - ref| <= atol; the message names the tensor and the worst element."""
    got = np.asarray(got, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    assert got.shape == ref.shape, f"{name}: shape {got.shape} != reference {ref.shape}"
    if got.size == 0:
        return 0.0
    diff = np.abs(got - ref)
    if not np.all(np.isfinite(got)):
        idx = np.unravel_index(int(np.argmax(~np.isfinite(got))), got.shape)
        raise AssertionError(f"{name}: non-finite value {got[idx]} at index {idx}")
    worst = np.unravel_index(int(np.argmax(diff)), diff.shape)
    err = float(diff[worst])
    if os.environ.get("FP32_ERROR_LOG"):  # see FP32_ERROR_FACTOR
        with open(os.environ["FP32_ERROR_LOG"], "a") as f:
            f.write(json.dumps(dict(name=name, err=err, atol=float(atol))) + "\n")
    if not err <= atol:
        raise AssertionError(
            f"{name} max abs diff {err:.3e} > {atol:.3e} at index {tuple(int(i) for i in worst)}: "
            f"got {got[worst]:.9g}, reference {ref[worst]:.9g}")
    return err


def grad_tolerance(ref):
    """The issue's gradient tolerance: max abs error <= 1e-4 * max|g| (fp32 sums in another order
    differ by a few ulp of the largest terms; 1e-4 leaves room for ~1000 ulp)."""
    return 1e-4 * float(np.max(np.abs(ref))) if np.size(ref) else 0.0


# ---- tolerances from a float64 reference ---------------------------------------------------------
#
# Ten AdamW steps amplify rounding: where a gradient is small, m / sqrt(v) turns a relative error of
# 1e-7 into a sizeable part of a step, so the parameters of two correct fp32 implementations drift
# apart by an amount that depends on the summation order of every matmul (a BLAS kernel change
# moves it by 2-3x). A fixed tolerance for that drift holds only for the kernels it was tuned on.
# Instead both sides are measured against the same computation in float64 (dev.model.GPT and
# torch.optim.AdamW in double precision): our error must be at most FP32_ERROR_FACTOR times PyTorch
# fp32's own error on the same problem, plus FP32_FLOOR_ULPS ulp of the tensor's largest value (for
# tensors that PyTorch happens to get exactly right). PyTorch's error is taken as the worst of an
# ensemble: the run from the given parameters and runs from parameters each moved by one ulp, up or
# down at random; a rounding error is equivalent to such a relative perturbation of the inputs, so
# these are as correct as the first and sample how far the rounding can carry the result.
# To re-measure, run the tests with FP32_ERROR_LOG=file (one JSON line per comparison) and
# summarize with `python tests/test_cpu_helpers.py file`.
# Measured on 2026-12-03 (Intel Xeon; OpenBLAS's Haswell, SkylakeX and Zen kernels and its default;
# USE_BLAS=0), over every tensor of every test that uses the rule: our error / the ensemble's was at
# most 1.8 (one pass: at most 1.0), so FP32_ERROR_FACTOR = 8 leaves 4x. A wrong optimizer detail is
# far outside it: the trainer run with lr 0.1% off, beta2 0.951 or eps 1e-7 gives 14, 12 and 270
# (tests/test_regularizers.py checks that these fail), dropout masks of another seed ~1e6.
# The same rule compares two of our trainers (a run resumed by the other trainer against a
# straight run), with the spread of CPU-trainer runs from starts one ulp away as the ensemble
# (tests/test_gpu_helpers.assert_run_within_spread).
FP32_ERROR_FACTOR = 8.0
FP32_FLOOR_ULPS = 4
FP32_PERTURBATION_SEEDS = (1, 2, 3, 4)


def perturb_one_ulp(model, seed):
    """Move every parameter element of `model` (a torch module: dev.model.GPT or a transformers
    model) by one ulp, up or down as drawn from `seed`."""
    import torch
    rng = np.random.default_rng(seed)
    with torch.no_grad():
        for p in model.parameters():
            up = torch.from_numpy(rng.random(tuple(p.shape)) < 0.5)
            p.copy_(torch.nextafter(p, torch.where(up, torch.tensor(float("inf"), dtype=p.dtype),
                                                   torch.tensor(float("-inf"), dtype=p.dtype))))
    return model


def write_perturbed_checkpoint(src, dst, seed):
    """dst = the checkpoint src with every parameter moved by one ulp, up or down as drawn from
    `seed` (wte's padded rows stay zero): a start as correct as src's, for measuring how far
    rounding carries a run of our own trainers."""
    from dev.checkpoint import read_checkpoint, write_checkpoint
    config, params = read_checkpoint(src)
    rng = np.random.default_rng(seed)
    out = {}
    for name, p in params.items():
        up = rng.random(p.shape) < 0.5
        q = np.nextafter(p, np.where(up, np.float32(np.inf), np.float32(-np.inf))).astype(np.float32)
        out[name] = np.where(p == 0, p, q)  # exact zeros (padding, a disabled bias) stay zero
    write_checkpoint(dst, config, out)


def fp32_reference(load, run):
    """(ref64, runs32): run(model) on load().double() and on fp32 models (load() as is, and
    perturbed by one ulp with each of FP32_PERTURBATION_SEEDS); run returns dict name -> array."""
    def as64(d):
        return {k: np.asarray(v, dtype=np.float64) for k, v in d.items()}
    ref64 = as64(run(load().double()))
    runs32 = [as64(run(load()))]
    runs32 += [as64(run(perturb_one_ulp(load(), s))) for s in FP32_PERTURBATION_SEEDS]
    return ref64, runs32


def assert_fp32_accurate(name, got, ref64, runs32, keep=None, key=None, factor=FP32_ERROR_FACTOR,
                         against="float64", spread_of="PyTorch fp32"):
    """Fail unless max|got - ref64[key]| <= factor * (PyTorch fp32's worst error) + floor over the
    elements where `keep` (a bool mask, default all) is true (key defaults to name); the message
    names the tensor and gives both errors. With ref64 an fp32 run of our own and runs32 runs from
    perturbed starts (write_perturbed_checkpoint), it compares two of our trainers the same way
    (against, spread_of name them in the message)."""
    key = name if key is None else key
    ref = np.asarray(ref64[key], dtype=np.float64)
    got = np.asarray(got, dtype=np.float64)
    assert got.shape == ref.shape, f"{name}: shape {got.shape} != reference {ref.shape}"
    keep = np.ones(ref.shape, dtype=bool) if keep is None else np.asarray(keep, dtype=bool)
    if not keep.any():
        return
    if not np.all(np.isfinite(got[keep])):
        raise AssertionError(f"{name}: non-finite values")
    torch_err = max(float(np.abs(r[key] - ref)[keep].max()) for r in runs32)
    floor = FP32_FLOOR_ULPS * 2.0 ** -23 * float(np.abs(ref[keep]).max())
    budget = factor * torch_err + floor
    if os.environ.get("FP32_ERROR_LOG"):  # for re-measuring the ratios (see FP32_ERROR_FACTOR)
        with open(os.environ["FP32_ERROR_LOG"], "a") as f:
            f.write(json.dumps(dict(name=name, err=float(np.abs(got - ref)[keep].max()),
                                    torch_err=torch_err, floor=floor)) + "\n")
    diff = np.where(keep, np.abs(got - ref), -1.0)
    worst = np.unravel_index(int(np.argmax(diff)), diff.shape)
    err = float(diff[worst])
    if not err <= budget:
        raise AssertionError(
            f"{name}: error against {against} {err:.3e} > {budget:.3e} = {factor:g} x {spread_of}'s "
            f"{torch_err:.3e} + {floor:.1e} at index {tuple(int(i) for i in worst)}: got "
            f"{got[worst]:.9g}, {against} reference {ref[worst]:.9g}")


def lr_at(step, lr, warmup, total_steps, schedule="cosine", min_lr_frac=0.1):
    """Learning rate of optimizer step `step` (1-based); mirrors llmc/schedule.h."""
    s0 = step - 1
    if warmup > 0 and s0 < warmup:
        return lr * (s0 + 1) / warmup
    if schedule == "constant":
        return lr
    min_lr = lr * min_lr_frac
    span = total_steps - warmup
    r = (s0 - warmup) / span if span > 0 else 0.0
    r = min(max(r, 0.0), 1.0)
    if schedule == "cosine":
        return min_lr + (lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * r))
    return lr - (lr - min_lr) * r


def read_log(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def step_records(log):
    return [r for r in log if "train_loss" in r and "error" not in r]


class _GradHolder:
    """Looks like a transformers model to dev.model.from_hf, but its state_dict holds gradients."""

    def __init__(self, hf_model):
        self.config = hf_model.config
        self._grads = {n: (p.grad if p.grad is not None else p.detach() * 0)
                       for n, p in hf_model.named_parameters()}

    def state_dict(self):
        return self._grads


def hf_grads(hf_model):
    """Gradients of a transformers GPT2LMHeadModel as dict name -> numpy array in our layout
    (Conv1D weights transposed, layers stacked, wte padded to Vp with zero rows)."""
    from dev.model import from_hf
    return from_hf(_GradHolder(hf_model)).params_numpy()


DECAY_MATRICES = ("wte", "wpe", "qkvw", "attprojw", "fcw", "fcprojw")

# torch_train_steps keyword -> trainer flag (llmc/train_config.h)
_OPTIMIZER_FLAGS = {
    "lr": "-l", "warmup": "--warmup", "schedule": "--lr-schedule", "min_lr_frac": "--min-lr-frac",
    "beta1": "--beta1", "beta2": "--beta2", "eps": "--eps", "weight_decay": "--weight-decay",
    "grad_clip": "--grad-clip", "decay_params": "--decay-params", "seed": "--seed",
    "dropout": "--dropout", "weight_noise": "--weight-noise", "decay_toward_init": "--decay-toward-init",
}


def optimizer_flags(**opt):
    """Trainer flags for the settings of torch_train_steps (booleans as 0/1)."""
    flags = []
    for key, value in opt.items():
        flags += [_OPTIMIZER_FLAGS[key], int(value) if isinstance(value, bool) else value]
    return flags



def torch_train_steps(model, inputs, targets, steps, lr, warmup, schedule, min_lr_frac, beta1, beta2,
                      eps, weight_decay, grad_clip, decay_params="all", mask=None, seed=None,
                      dropout=0.0, weight_noise=0.0, decay_toward_init=False):
    """Train `model` (dev.model.GPT) for `steps` AdamW steps on one batch, as the C trainer does.

    torch.optim.AdamW with per-step learning rates from lr_at(), and clipping by global norm with
    the trainer's rule: norm = sqrt(sum g^2) over all 16 gradients (float64); when grad_clip > 0
    and norm > grad_clip every gradient is multiplied by grad_clip / norm. Returns (losses, norms).
    The regularizers (the trainer's --seed must be given as seed):
      dropout p: the trainer's masks of each step (dev.regularizers.CounterDropout);
      weight_noise sigma: forward and backward at params + noise of the step, the update on the
        clean params (the noise is removed before clipping and AdamW);
      decay_toward_init: the decoupled decay p <- p - lr*wd*(p - p0) with p0 the parameters before
        step 1, applied before AdamW's step (which then runs with weight_decay 0), the order in
        which torch.optim.AdamW applies its own decay.
    """
    import torch
    from dev.regularizers import CounterDropout, weight_noise as noise_of
    reg = None
    if dropout or weight_noise or decay_toward_init:
        assert seed is not None, "the regularizers need the trainer's --seed"
        counter = None
        if dropout:
            counter = CounterDropout(seed, dropout)
            model.dropout, model.dropout_mask = float(dropout), counter
            model.train()
        reg = dict(counter=counter, noise=(lambda step: noise_of(model.config, seed, step, weight_noise))
                   if weight_noise else None)
    decay, no_decay = [], []
    from dev.checkpoint import PARAM_NAMES
    for name in PARAM_NAMES:
        p = getattr(model, name)
        if name == "qkvb" and not model.config.qkv_bias:
            continue
        (decay if decay_params == "all" or name in DECAY_MATRICES else no_decay).append(p)
    toward_init = None
    if decay_toward_init:
        toward_init = [(p, p.detach().clone()) for p in decay]  # (parameter, its value before step 1)
    groups = [{"params": decay, "weight_decay": 0.0 if decay_toward_init else weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    opt = torch.optim.AdamW(groups, lr=lr, betas=(beta1, beta2), eps=eps, foreach=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: one thread is fastest, and robust on a busy machine
    try:
        return _torch_steps(model, opt, lr_at_step=lambda s: lr_at(s, lr, warmup, steps, schedule, min_lr_frac),
                            inputs=inputs, targets=targets, mask=mask, steps=steps, grad_clip=grad_clip,
                            reg=reg, toward_init=toward_init, weight_decay=weight_decay)
    finally:
        torch.set_num_threads(threads)


def _torch_steps(model, opt, lr_at_step, inputs, targets, mask, steps, grad_clip, reg=None,
                 toward_init=None, weight_decay=0.0):
    import torch
    from dev.checkpoint import PARAM_NAMES
    x, y = torch.as_tensor(inputs).long(), torch.as_tensor(targets).long()
    m = None if mask is None else torch.as_tensor(mask)
    losses, norms = [], []
    for step in range(1, steps + 1):
        step_lr = lr_at_step(step)
        for g in opt.param_groups:
            g["lr"] = step_lr
        opt.zero_grad(set_to_none=False)
        clean = None
        if reg and reg["counter"] is not None:
            reg["counter"].step = step
        if reg and reg["noise"] is not None:
            noise = reg["noise"](step)
            clean = {n: getattr(model, n).detach().clone() for n in PARAM_NAMES}
            with torch.no_grad():
                for n in PARAM_NAMES:
                    getattr(model, n).add_(torch.from_numpy(noise[n]))
        _, loss = model(x, y, m)
        loss.backward()
        if clean is not None:
            with torch.no_grad():
                for n in PARAM_NAMES:
                    getattr(model, n).copy_(clean[n])
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        norm = math.sqrt(sum(float((g.double() ** 2).sum()) for g in grads))
        if grad_clip > 0 and norm > grad_clip:
            # the trainer multiplies by the float32 ratio; a float64 reference keeps it exact
            scale = grad_clip / norm if grads[0].dtype == torch.float64 else float(np.float32(grad_clip / norm))
            for g in grads:
                g.mul_(scale)
        if toward_init is not None:
            with torch.no_grad():
                for p, p0 in toward_init:
                    p.sub_(step_lr * weight_decay * (p - p0))
        opt.step()
        losses.append(loss.item())
        norms.append(norm)
    return np.array(losses, dtype=np.float32), np.array(norms)


# ---- tests of the helpers ------------------------------------------------------------------

def test_assert_close_fails_and_names_the_worst_element():
    ref = np.zeros((2, 3), dtype=np.float32)
    got = ref.copy()
    got[1, 2] = 5e-3
    got[0, 1] = 1e-3
    assert_close("ok", got, ref, atol=1e-2)
    with pytest.raises(AssertionError) as e:
        assert_close("dqkvw", got, ref, atol=1e-4)
    msg = str(e.value)
    assert "dqkvw" in msg and "(1, 2)" in msg and "5.000e-03" in msg, msg
    got[0, 0] = np.nan
    with pytest.raises(AssertionError, match="non-finite"):
        assert_close("nan", got, ref, atol=1.0)


def test_fp32_rule_passes_rounding_and_fails_a_larger_error():
    rng = np.random.default_rng(0)
    ref64 = {"w": rng.standard_normal((50, 40))}
    runs32 = [{"w": ref64["w"].astype(np.float32)}]
    assert_fp32_accurate("rounded", ref64["w"].astype(np.float32), ref64, runs32, key="w")
    torch_err = float(np.abs(runs32[0]["w"] - ref64["w"]).max())
    worse = ref64["w"].copy()
    worse[3, 7] += 3 * FP32_ERROR_FACTOR * torch_err
    with pytest.raises(AssertionError) as e:
        assert_fp32_accurate("dfcw", worse, ref64, runs32, key="w")
    assert "dfcw" in str(e.value) and "(3, 7)" in str(e.value), str(e.value)
    keep = np.ones(worse.shape, dtype=bool)
    keep[3, 7] = False
    assert_fp32_accurate("dfcw without the bad element", worse, ref64, runs32, keep, key="w")


def test_lr_schedule_mirror_matches_hand_values():
    # warmup: step 1 of 4 warmup steps runs at lr/4
    assert lr_at(1, 1.0, 4, 10) == pytest.approx(0.25)
    assert lr_at(4, 1.0, 4, 10) == pytest.approx(1.0)
    # first step after warmup: full lr (r = 0); cosine halfway: the mean of lr and floor
    assert lr_at(5, 1.0, 4, 10) == pytest.approx(1.0)
    assert lr_at(8, 1.0, 4, 10, "cosine", 0.1) == pytest.approx(0.1 + 0.9 * 0.5)
    assert lr_at(8, 1.0, 4, 10, "linear", 0.0) == pytest.approx(0.5)
    assert lr_at(9, 2.0, 0, 10, "constant") == 2.0


if __name__ == "__main__":
    # summarize FP32_ERROR_LOG files: the worst ratios (our error - floor) / PyTorch fp32's error
    # and of the fixed tolerances: error / atol
    rows = [json.loads(line) for path in sys.argv[1:] for line in open(path)]
    fp32 = sorted(((r["err"] - r["floor"]) / max(r["torch_err"], 1e-30), r["name"]) for r in rows
                  if "torch_err" in r)
    fixed = sorted((r["err"] / r["atol"], r["name"]) for r in rows if "atol" in r and r["atol"] > 0)
    print(f"{len(fp32)} float64-rule comparisons; worst (our error - floor) / PyTorch fp32's "
          f"(limit {FP32_ERROR_FACTOR:g}):")
    for ratio, name in fp32[-5:][::-1]:
        print(f"  {ratio:6.2f}  {name}")
    print(f"{len(fixed)} fixed-tolerance comparisons; worst error / tolerance (limit 1):")
    for ratio, name in fixed[-5:][::-1]:
        print(f"  {ratio:6.3f}  {name}")
