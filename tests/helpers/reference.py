"""The reference for the trainers' optimizer: the LR schedule, the flags, torch.optim.AdamW steps.

  lr_at(step, ...)          Python mirror of llmc/schedule.h (the tests compare the log against it)
  optimizer_flags(**opt)    the trainer flags for the keyword settings torch_train_steps takes
                            (lr, warmup, schedule, ..., dropout, weight_noise, decay_toward_init),
                            so a test configures the trainer and the reference from one dict
  torch_train_steps(...)    N AdamW steps with torch.optim.AdamW + our clipping rule, the reference
                            for the C trainer's optimizer; optionally with the research
                            regularizers of dev/regularizers.py (counter-based dropout masks,
                            weight noise, decay toward the initialization)
  ADAMW_OPT, ADAMW_STEPS    the settings of the 10-step AdamW comparison that the CPU and the
                            CUDA trainer both run (tests/test_cpu_train.py, tests/test_gpu_train.py)
"""

import math

import numpy as np

# the 10 AdamW steps on one batch of tests/test_cpu_train.py and tests/test_gpu_train.py
# (grad_clip and decay_params are the tests' parameters)
ADAMW_OPT = dict(lr=1e-3, warmup=3, schedule="cosine", min_lr_frac=0.1, beta1=0.9, beta2=0.95, eps=1e-8,
                 weight_decay=0.1)
ADAMW_STEPS = 10


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



DECAY_MATRICES = ("wte", "wpe", "qkvw", "attprojw", "fcw", "fcprojw", "lm_head")

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
    from dev.checkpoint import param_shapes
    for name in param_shapes(model.config):
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
    from dev.checkpoint import param_shapes
    PARAM_NAMES = list(param_shapes(model.config))  # the 16 tensors, and lm_head when untied
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
