"""Shared pytest fixtures for the whole suite (kept small on purpose).

  REPO                  repository root (`import dev` works through pyproject.toml's
                        [tool.pytest.ini_options] pythonpath, or the editable install)
  tiny_config           the `tiny` ModelConfig (L=2, NH=2, C=64, maxT=64, V=500, Vp=512)
  random_params(config, seed, scale=0.1)
                        every tensor random (LayerNorm weights around 1, biases
                        non-zero), padded wte rows zero, qkvb zero when the QKV
                        bias is off: exercises every tensor, unlike GPT-2 init
  make_checkpoint       fixture: make_checkpoint(config=tiny, seed=0, random=True,
                        name="model.bin") -> path of a checkpoint in tmp_path
  run_cli               fixture: run_cli("create_model.py", "--config", "tiny", ...), or
                        run_cli("dev.mod_arith", ...) for `python -m dev.mod_arith`
                        -> CompletedProcess (cwd = REPO, text output, no check;
                        preexec_fn= is passed to subprocess)
  file_size_limit(n)    preexec_fn for a child that sees a full disk after n bytes
                        per file (RLIMIT_FSIZE, SIGXFSZ ignored: writes fail EFBIG)

The header of every run names the package versions, the CPU and the OpenBLAS kernel in use
(pytest_report_header, from dev/environment.py).
The suite never touches the network: GPT2_TOKENIZER_SOURCE defaults to
"asset" here (the shipped GPT-2 ranks; same ids as tiktoken's download).
Run: `python -m pytest -q tests` from the repository root (or bash dev/test.sh).
"""

import os
import subprocess
import sys

import numpy as np
import pytest

from dev.checkpoint import param_shapes, write_checkpoint
from dev.configs import NAMED_CONFIGS

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("GPT2_TOKENIZER_SOURCE", "asset")


def random_params(config, seed=0, scale=0.1):
    """dict name -> float32 array with every tensor random (see module docstring)."""
    rng = np.random.default_rng(seed)
    params = {}
    for name, shape in param_shapes(config).items():
        arr = (rng.standard_normal(shape) * scale).astype(np.float32)
        if name in ("ln1w", "ln2w", "lnfw"):
            arr += 1.0
        params[name] = arr
    params["wte"][config.vocab_size:] = 0.0
    if not config.qkv_bias:
        params["qkvb"][:] = 0.0
    return params


def pytest_report_header(config):
    """The versions, the CPU and the OpenBLAS kernel this run used (dev/environment.py): results
    that could differ between machines are tied to these."""
    from dev.environment import describe
    return describe()


@pytest.fixture
def tiny_config():
    return NAMED_CONFIGS["tiny"]


@pytest.fixture
def make_checkpoint(tmp_path):
    def make(config=None, seed=0, random=True, name="model.bin"):
        config = config or NAMED_CONFIGS["tiny"]
        if random:
            params = random_params(config, seed)
        else:
            from dev.model import gpt2_init
            params = gpt2_init(config, seed)
        path = tmp_path / name
        write_checkpoint(path, config, params)
        return path
    return make


@pytest.fixture
def run_cli():
    def run(script, *args, timeout=300, env=None, preexec_fn=None):
        full_env = dict(os.environ, **(env or {}))
        target = [os.path.join(REPO, script)] if script.endswith(".py") else ["-m", script]
        return subprocess.run([sys.executable, *target, *map(str, args)],
                              cwd=REPO, capture_output=True, text=True, timeout=timeout,
                              env=full_env, preexec_fn=preexec_fn)
    return run


def file_size_limit(nbytes):
    """preexec_fn for subprocess: a child whose files cannot grow past nbytes, as on a full
    disk. RLIMIT_FSIZE makes a write past the limit fail with EFBIG once SIGXFSZ (which
    would kill the process) is ignored."""
    def limit():
        import resource
        import signal
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, nbytes))
    return limit


@pytest.fixture(autouse=True)
def autograd_stays_on():
    """Fail the test that switches autograd off globally and leaves it off.

    Code called in-process (dev.sample.main, dev.export_hf.main) once did
    torch.set_grad_enabled(False); every later test that called backward()
    then failed far from the cause. This names the test that leaked it."""
    yield
    torch = sys.modules.get("torch")
    if torch is not None and not torch.is_grad_enabled():
        torch.set_grad_enabled(True)
        pytest.fail("this test left autograd switched off (torch.set_grad_enabled(False)); "
                    "use `with torch.no_grad():` instead")
