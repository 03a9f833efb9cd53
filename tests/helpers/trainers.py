"""The trainer binaries: building, finding and running them, and checks any trainer must pass.

CPU trainer:
  REPO                      the repository root
  trainer()                 path of ./train_gpt2, built once per session with `make train_gpt2`
                            (or $TRAIN_GPT2 when set)
  asan_trainer()            path of ./train_gpt2_asan (AddressSanitizer + UBSan), built once per
                            session (or $TRAIN_GPT2_ASAN)
  run_trainer(*args, binary=None, check=True, timeout=..., env=None)
                            run a trainer binary, return the CompletedProcess; with check=True a
                            non-zero exit fails the test showing the trainer's stdout and stderr
  file_size_limit(n)        preexec_fn for a child that sees a full disk after n bytes per file
                            (RLIMIT_FSIZE, SIGXFSZ ignored: writes fail EFBIG)

CUDA trainer: every CUDA test runs on two backends of the same source, train_gpt2_fp32.cu:
  gpu   ./train_gpt2fp32cu built with nvcc (`make train_gpt2fp32cu`) on a real GPU; skipped, with
        the reason, when `nvidia-smi -L` lists no GPU (or $CUDA_TESTS_GPU=0).
  emu   dev/cuda/bin/emu/train_gpt2fp32cu: the same file compiled by g++ against the CPU emulator
        dev/cuda/emu/cuda_emu.h (`make dev/cuda/bin/emu/train_gpt2fp32cu`). It runs every kernel's
        threads as fibers with real barriers and warp shuffles and cuBLAS as plain loops, so it
        checks the kernels' indexing, synchronization and the trainer's logic on any machine (CI
        included); it says nothing about speed, and float rounding differs from the GPU's.
  BACKENDS                  ["emu", "gpu"], for pytest.mark.parametrize("backend", BACKENDS)
  gpu_available()           (bool, reason), cached
  skip_without_gpu()        pytest.skip with the reason unless gpu_available()
  make_targets(*targets)    `make -s TARGETS` once per session; a failure fails the test
  cuda_trainer(backend)     path of the trainer binary for the backend (built once per session);
                            pytest.skip for "gpu" without a GPU
  workbench(backend, name)  path of a dev/cuda workbench binary for the backend
  compute_sanitizer()       path of compute-sanitizer, or None

Checks for any trainer binary:
  check_samples_print_valid_utf8(tmp_path, binary, extra=())
                            printed samples are the log's text and valid UTF-8
                            (tests/test_cpu_train.py, tests/test_gpu_train.py)
"""

import functools
import os
import shutil
import subprocess

import pytest

from dev.configs import NAMED_CONFIGS

from .files import make_checkpoint, read_log, token_data

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BACKENDS = ["emu", "gpu"]
EMU_DIR = os.path.join(REPO, "dev", "cuda", "bin", "emu")


# ---- the CPU trainer ------------------------------------------------------------------------

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


# ---- the CUDA trainer -----------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def gpu_available():
    """(True, description) when nvidia-smi lists a GPU, else (False, why not)."""
    if os.environ.get("CUDA_TESTS_GPU") == "0":
        return False, "CUDA_TESTS_GPU=0 turns the GPU variants off"
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return False, "no GPU: nvidia-smi is not installed"
    try:
        r = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as e:
        return False, f"no GPU: nvidia-smi -L failed ({e})"
    lines = [l for l in r.stdout.splitlines() if l.startswith("GPU ")]
    if r.returncode != 0 or not lines:
        return False, f"no GPU: nvidia-smi -L exited {r.returncode} and listed no device"
    return True, lines[0]


def skip_without_gpu():
    ok, why = gpu_available()
    if not ok:
        pytest.skip(f"{why} (the emu variants of tests/test_gpu_*.py run the same CUDA source in the CPU emulator)")


@functools.lru_cache(maxsize=None)
def make_targets(*targets):
    r = subprocess.run(["make", "-s", *targets], cwd=REPO, capture_output=True, text=True, timeout=1800)
    if r.returncode != 0:
        pytest.fail(f"`make {' '.join(targets)}` failed (exit {r.returncode}):\n{r.stdout[-4000:]}\n{r.stderr[-4000:]}")
    return r


def cuda_trainer(backend):
    """Path of the CUDA trainer for `backend`; $TRAIN_GPT2FP32CU overrides the gpu binary."""
    if backend == "gpu":
        skip_without_gpu()
        if os.environ.get("TRAIN_GPT2FP32CU"):
            return os.environ["TRAIN_GPT2FP32CU"]
        make_targets("train_gpt2fp32cu")
        return os.path.join(REPO, "train_gpt2fp32cu")
    if backend == "emu":
        make_targets("dev/cuda/bin/emu/train_gpt2fp32cu")
        return os.path.join(EMU_DIR, "train_gpt2fp32cu")
    raise ValueError(f"unknown backend {backend!r}")


def workbench(backend, name):
    """Path of the dev/cuda/<name>.cu workbench built for `backend`."""
    if backend == "gpu":
        skip_without_gpu()
        make_targets(f"dev/cuda/bin/{name}")
        return os.path.join(REPO, "dev", "cuda", "bin", name)
    make_targets(f"dev/cuda/bin/emu/{name}")
    return os.path.join(EMU_DIR, name)


def compute_sanitizer():
    """compute-sanitizer from PATH or the CUDA installation, or None."""
    found = shutil.which("compute-sanitizer")
    if found:
        return found
    for d in ("/usr/local/cuda/bin", "/usr/local/cuda/compute-sanitizer", "/opt/cuda/bin"):
        p = os.path.join(d, "compute-sanitizer")
        if os.path.exists(p):
            return p
    return None


# ---- checks for any trainer binary ------------------------------------------------------------

# Token pieces that split multi-byte characters: "€" (E2 82 AC) as E2 + 82 AC and E2 82 + AC,
# "😀" (F0 9F 98 80) as F0 9F + 98 80, "é" (C3 A9) as C3 + A9, plus an always-invalid FF and ASCII.
SPLIT_PIECES = [b"\xe2", b"\x82\xac", b"\xe2\x82", b"\xac", b"\xf0\x9f", b"\x98\x80", b"\xc3", b"\xa9",
                b"\xff", b"x"]


def sample_texts(stdout):
    """The printed samples: the text between 'sample (step N):' and the '---' line."""
    parts = stdout.split(b"sample (step ")[1:]
    return [p.split(b":\n", 1)[1].split(b"\n---\n", 1)[0] for p in parts]


def check_samples_print_valid_utf8(tmp_path, binary, extra=()):
    """Printed samples are the log's text: token pieces joined, then each invalid part replaced by
    U+FFFD exactly as Python's decode(errors="replace") does, so a character split over two
    tokens prints whole and stdout is always valid UTF-8 (for any trainer binary)."""
    from dev.tokenizer import write_tokenizer_file
    config = NAMED_CONFIGS["tiny"]
    V = config.vocab_size
    make_checkpoint(tmp_path / "model.bin", config, seed=4, scale=0.05)
    pieces = [SPLIT_PIECES[i % len(SPLIT_PIECES)] for i in range(V)]
    write_tokenizer_file(tmp_path / "tok.bin", pieces, eot_id=V - 1)  # the start token either way
    data = token_data(tmp_path, config)
    flags = ["--model", tmp_path / "model.bin", *data, "--steps", 2, "-v", 0, "-s", 1, "-g", 48,
             "--seed", 5, *extra]
    # without a tokenizer the samples are token ids, with one the text; the ids are the same
    run_trainer(*flags, "-o", tmp_path / "ids", "--tokenizer", tmp_path / "none.bin", binary=binary)
    r = subprocess.run([binary, *map(str, flags), "-o", tmp_path / "text", "--tokenizer",
                        tmp_path / "tok.bin"], capture_output=True, timeout=300)
    assert r.returncode == 0, r.stderr.decode(errors="replace")
    printed = sample_texts(r.stdout)
    logged = [rec["sample"] for rec in read_log(tmp_path / "text/log.jsonl") if "sample" in rec]
    id_samples = [rec["sample"] for rec in read_log(tmp_path / "ids/log.jsonl") if "sample" in rec]
    assert len(printed) == len(logged) == len(id_samples) == 2
    joined_any_split = False
    for raw, text, ids in zip(printed, logged, id_samples):
        ids = [int(i) for i in ids.split()]
        want = b"".join(pieces[i] for i in ids).decode("utf-8", errors="replace")
        assert raw.decode("utf-8") == want == text  # strict decode: stdout is valid UTF-8
        # no piece holds a whole multi-byte character: any in the text was joined from two tokens
        joined_any_split |= any(ch in want for ch in "\u20ac\U0001f600\u00e9")
        assert "\ufffd" in want, "the stream should also hold parts that stay invalid"
    assert joined_any_split, "no character was completed across two tokens: pick another seed"
