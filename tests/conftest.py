"""pytest hooks and the fixtures that several test files use (pytest shares them; no import).

  tiny_config           the `tiny` ModelConfig (L=2, NH=2, C=64, maxT=64, V=500, Vp=512)
  run_cli               fixture: run_cli("create_model.py", "--config", "tiny", ...), or
                        run_cli("dev.mod_arith", ...) for `python -m dev.mod_arith`
                        -> CompletedProcess (cwd = REPO, text output, no check;
                        preexec_fn= is passed to subprocess)
  bad_input_files       a folder with a valid tiny model.bin (random_params seed 0, scale 0.05),
                        train.bin (3000 tokens) and val.bin (1000 tokens); each bad-input case of
                        tests/helpers/bad_inputs.py breaks one thing (tests/test_cpu_errors.py,
                        tests/test_gpu_errors.py)
  autograd_stays_on     (autouse) fails the test that leaves torch's autograd switched off

Shared code that is not a fixture (random_params, make_checkpoint, run_trainer, the comparisons,
...) lives in tests/helpers/; a test file imports it from there and never imports another test
file or this one.
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

from dev.configs import NAMED_CONFIGS
from dev.shards import write_token_shard
from helpers import REPO, make_checkpoint

os.environ.setdefault("GPT2_TOKENIZER_SOURCE", "asset")


def pytest_report_header(config):
    """The versions, the CPU and the OpenBLAS kernel this run used (dev/environment.py): results
    that could differ between machines are tied to these."""
    from dev.environment import describe
    return describe()


@pytest.fixture
def tiny_config():
    return NAMED_CONFIGS["tiny"]


@pytest.fixture
def run_cli():
    def run(script, *args, timeout=300, env=None, preexec_fn=None):
        full_env = dict(os.environ, **(env or {}))
        target = [os.path.join(REPO, script)] if script.endswith(".py") else ["-m", script]
        return subprocess.run([sys.executable, *target, *map(str, args)],
                              cwd=REPO, capture_output=True, text=True, timeout=timeout,
                              env=full_env, preexec_fn=preexec_fn)
    return run


@pytest.fixture
def bad_input_files(tmp_path):
    """A valid model and valid shards; each bad-input case breaks one thing."""
    config = NAMED_CONFIGS["tiny"]
    make_checkpoint(tmp_path / "model.bin", config, seed=0, scale=0.05)
    rng = np.random.default_rng(0)
    write_token_shard(tmp_path / "train.bin", rng.integers(0, config.vocab_size, 3000))
    write_token_shard(tmp_path / "val.bin", rng.integers(0, config.vocab_size, 1000))
    return tmp_path


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
