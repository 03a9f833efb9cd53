"""GPT-2 weight initialisation as numpy arrays (no torch needed).

Contract: gpt2_init(config, seed) -> dict name -> float32 array of
param_shapes(config), the same values for the same (config, seed) on every run
(numpy's PCG64 Generator; numpy keeps its stream stable within a version).
"""

import math

import numpy as np

from dev.checkpoint import param_shapes

INIT_STD = 0.02
# Weights drawn from N(0, std); the residual projections use std 0.02/sqrt(2L).
RANDOM_INIT = ("wte", "wpe", "qkvw", "attprojw", "fcw", "fcprojw")
RESIDUAL_PROJECTIONS = ("attprojw", "fcprojw")


def gpt2_init(config, seed):
    """GPT-2 initialisation as numpy float32 arrays, deterministic for `seed`.

    One numpy Generator (np.random.default_rng(seed), PCG64) draws, in
    checkpoint order, standard normals as float32 (rng.standard_normal(shape,
    dtype=np.float32)) for wte (first V rows only), wpe, qkvw, attprojw, fcw,
    fcprojw, each multiplied by its std: 0.02, and 0.02/sqrt(2L) for attprojw
    and fcprojw. LayerNorm weights are 1, every bias 0 (qkvb included), the
    padded wte rows V..Vp-1 are 0.
    """
    rng = np.random.default_rng(seed)
    V, L = config.vocab_size, config.n_layer
    params = {}
    for name, shape in param_shapes(config).items():
        if name in RANDOM_INIT:
            std = INIT_STD / math.sqrt(2 * L) if name in RESIDUAL_PROJECTIONS else INIT_STD
            draw_shape = (V,) + tuple(shape[1:]) if name == "wte" else shape
            arr = np.zeros(shape, dtype=np.float32)
            arr[:draw_shape[0]] = rng.standard_normal(draw_shape, dtype=np.float32) * np.float32(std)
        elif name in ("ln1w", "ln2w", "lnfw"):
            arr = np.ones(shape, dtype=np.float32)
        else:
            arr = np.zeros(shape, dtype=np.float32)
        params[name] = arr
    return params
