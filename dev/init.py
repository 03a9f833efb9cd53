"""GPT-2 weight initialisation as numpy arrays (no torch needed).

Contract: gpt2_init(config, seed) and pytorch_init(config, seed) -> dict name -> float32 array of
param_shapes(config), the same values for the same (config, seed) on every run
(numpy's PCG64 Generator; numpy keeps its stream stable within a version).
"""

import math

import numpy as np

from dev.checkpoint import param_shapes

INIT_STD = 0.02
# Weights drawn from N(0, std); the residual projections use std 0.02/sqrt(2L).
RANDOM_INIT = ("wte", "wpe", "qkvw", "attprojw", "fcw", "fcprojw", "lm_head")
RESIDUAL_PROJECTIONS = ("attprojw", "fcprojw")


def gpt2_init(config, seed):
    """GPT-2 initialisation as numpy float32 arrays, deterministic for `seed`.

    One numpy Generator (np.random.default_rng(seed), PCG64) draws, in
    checkpoint order, standard normals as float32 (rng.standard_normal(shape,
    dtype=np.float32)) for wte (first V rows only), wpe, qkvw, attprojw, fcw,
    fcprojw, each multiplied by its std: 0.02, and 0.02/sqrt(2L) for attprojw
    and fcprojw. LayerNorm weights are 1, every bias 0 (qkvb included), the
    padded wte rows V..Vp-1 are 0. An untied lm_head (drawn last, so the 16 tensors are those of
    the tied model with the same seed) is N(0, 0.02) on its first V rows, 0 on the padded ones.
    """
    rng = np.random.default_rng(seed)
    V, L = config.vocab_size, config.n_layer
    params = {}
    for name, shape in param_shapes(config).items():
        if name in RANDOM_INIT:
            std = INIT_STD / math.sqrt(2 * L) if name in RESIDUAL_PROJECTIONS else INIT_STD
            draw_shape = (V,) + tuple(shape[1:]) if name in ("wte", "lm_head") else shape
            arr = np.zeros(shape, dtype=np.float32)
            arr[:draw_shape[0]] = rng.standard_normal(draw_shape, dtype=np.float32) * np.float32(std)
        elif name in ("ln1w", "ln2w", "lnfw"):
            arr = np.ones(shape, dtype=np.float32)
        else:
            arr = np.zeros(shape, dtype=np.float32)
        params[name] = arr
    return params


# PyTorch's default initialisation of the layers Power et al.'s grokking model is built from:
# nn.Embedding N(0, 1); nn.Linear weight and bias U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (its
# kaiming_uniform_ with a = sqrt(5) gives exactly that bound); nn.LayerNorm weight 1, bias 0.
EMBEDDINGS = ("wte", "wpe")
# the Linear layers: weight name -> (bias name, fan_in from the shape)
LINEAR_LAYERS = {"qkvw": "qkvb", "attprojw": "attprojb", "fcw": "fcb", "fcprojw": "fcprojb"}
INIT_SCHEMES = ("gpt2", "pytorch")


def pytorch_init(config, seed):
    """PyTorch-default initialisation as numpy float32 arrays, deterministic for `seed`.

    One numpy Generator (np.random.default_rng(seed)) draws in checkpoint order: wte (first V rows;
    the padded rows stay 0) and wpe standard normal (nn.Embedding); for each Linear layer the weight
    (L, out, in) then its bias (L, out) uniform in [-1/sqrt(in), 1/sqrt(in)) (nn.Linear, fan_in =
    in: C for qkvw, attprojw and fcw, 4C for fcprojw); LayerNorm weights 1 and biases 0. qkvb is
    0 when the model has no QKV bias. An untied lm_head (last) is an nn.Linear(C, V) without bias:
    U(-1/sqrt(C), 1/sqrt(C)) on its first V rows, 0 on the padded ones.
    """
    rng = np.random.default_rng(seed)
    V = config.vocab_size
    shapes = param_shapes(config)
    biases = {b: w for w, b in LINEAR_LAYERS.items()}
    params = {}
    for name, shape in shapes.items():
        arr = np.zeros(shape, dtype=np.float32)
        if name in EMBEDDINGS:
            rows = V if name == "wte" else shape[0]
            arr[:rows] = rng.standard_normal((rows,) + tuple(shape[1:]), dtype=np.float32)
        elif name == "lm_head":
            bound = np.float32(1.0 / math.sqrt(shape[1]))
            arr[:V] = rng.uniform(-bound, bound, (V, shape[1])).astype(np.float32)
        elif name in LINEAR_LAYERS or (name in biases and (name != "qkvb" or config.qkv_bias)):
            weight = biases.get(name, name)       # a bias takes its layer's fan_in
            fan_in = shapes[weight][-1]           # weights are (L, out, in)
            bound = np.float32(1.0 / math.sqrt(fan_in))
            arr[...] = rng.uniform(-bound, bound, shape).astype(np.float32)
        elif name in ("ln1w", "ln2w", "lnfw"):
            arr[...] = 1.0
        params[name] = arr
    return params


def init_params(config, seed, scheme="gpt2"):
    """The initial tensors of `scheme` (INIT_SCHEMES): gpt2_init or pytorch_init."""
    if scheme == "gpt2":
        return gpt2_init(config, seed)
    if scheme == "pytorch":
        return pytorch_init(config, seed)
    raise ValueError(f"unknown initialisation {scheme!r}; choose one of {', '.join(INIT_SCHEMES)}")
