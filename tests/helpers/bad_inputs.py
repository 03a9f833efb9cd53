"""Bad input to the trainers: the table of cases that the CPU and the CUDA trainer must both refuse
with a clear message (tests/test_cpu_errors.py, tests/test_gpu_errors.py).

  BAD_INPUT_CASES           the names of the cases
  case_args(d, name)        (trainer args, substrings the error message must contain) for case
                            `name`, where d holds the valid files of the bad_input_files fixture
                            (tests/conftest.py): model.bin, train.bin, val.bin
  base_args(d, **override)  the valid command line that each case breaks in one place
  corrupt_model(d, how)     a copy of d/model.bin truncated or with a bad header slot
  assert_clear_error(r, name, want)
                            the run r (a CompletedProcess) of case `name` exited 1 with an
                            `error:` line naming each of `want`, and no crash or sanitizer output
"""

import numpy as np

from dev.configs import NAMED_CONFIGS
from dev.parity_files import write_parity_batch
from dev.shards import write_example_shard, write_token_shard

from .trainers import run_trainer

CONFIG = NAMED_CONFIGS["tiny"]  # maxT 64, V 500


def base_args(d, **override):
    args = {"--model": d / "model.bin", "-i": d / "train.bin", "-j": d / "val.bin", "-b": 2, "-t": 32,
            "--steps": 2, "-v": 0, "-s": 0}
    args.update(override)
    out = []
    for k, v in args.items():
        if v is not None:
            out += [k, v]
    return out


def corrupt_model(d, how):
    raw = bytearray((d / "model.bin").read_bytes())
    header = np.frombuffer(raw[:1024], dtype="<i4").copy()
    if how == "truncated":
        raw = raw[:len(raw) - 100]
    elif how == "magic":
        header[0] = 12345
    elif how == "version":
        header[1] = 4
    elif how == "bf16":
        header[1] = 5  # llm.c's bfloat16 files
    elif how == "dims":
        header[5] = 3  # NH = 3 does not divide C = 64
    if how != "truncated":
        raw[:1024] = header.tobytes()
    (d / "bad_model.bin").write_bytes(bytes(raw))
    return d / "bad_model.bin"


def case_args(d, name):
    """(trainer args, substrings the error message must contain) for case `name`."""
    if name == "missing model":
        return base_args(d, **{"--model": d / "nope.bin"}), ["nope.bin", "does not exist"]
    if name in ("truncated model", "wrong magic", "wrong version", "llm.c bf16 model", "inconsistent dims"):
        how = {"truncated model": "truncated", "wrong magic": "magic", "wrong version": "version",
               "llm.c bf16 model": "bf16", "inconsistent dims": "dims"}[name]
        want = {"truncated": ["bad_model.bin", "truncated", "expected"],
                "magic": ["bad_model.bin", "magic number 12345", "20240326"],
                "version": ["bad_model.bin", "version 4", "expected 3"],
                "bf16": ["bad_model.bin", "version 5", "bfloat16", "python -m dev.convert_llmc"],
                "dims": ["bad_model.bin", "C=64 is not divisible by NH=3"]}[how]
        return base_args(d, **{"--model": corrupt_model(d, how)}), want
    if name == "token id >= V":
        tokens = np.zeros(3000, dtype=np.int64)
        tokens[1234] = 600
        write_token_shard(d / "bad.bin", tokens)
        return base_args(d, **{"-i": d / "bad.bin"}), ["bad.bin", "token id 600", "position 1234", "V=500"]
    if name == "token id >= V in val":
        tokens = np.zeros(3000, dtype=np.int64)
        tokens[7] = 501
        write_token_shard(d / "badval.bin", tokens)
        return base_args(d, **{"-j": d / "badval.bin", "-v": 1}), ["badval.bin", "token id 501", "position 7"]
    if name == "shard too small":
        write_token_shard(d / "small.bin", np.zeros(64, dtype=np.int64))
        return base_args(d, **{"-i": d / "small.bin"}), ["small.bin", "64 tokens", "B*T+1 = 65"]
    if name == "truncated shard":
        raw = (d / "train.bin").read_bytes()
        (d / "cut.bin").write_bytes(raw[:-10])
        return base_args(d, **{"-i": d / "cut.bin"}), ["cut.bin", "truncated"]
    if name == "empty glob":
        return base_args(d, **{"-i": d / "nothing_*.bin"}), ["nothing_*.bin", "no files match"]
    if name == "T > maxT":
        return base_args(d, **{"-t": 65}), ["-t 65", "maxT=64"]
    if name == "example shard with wrong -t":
        write_example_shard(d / "ex.bin", np.ones((10, 8), dtype=np.int64), np.eye(8, dtype=np.uint8)[[1] * 10], 500)
        return base_args(d, **{"-i": d / "ex.bin", "-j": None, "-t": 16}), ["-t 16", "E=8", "T must be E-1 = 7"]
    if name == "examples longer than the context":
        write_example_shard(d / "long.bin", np.ones((4, 80), dtype=np.int64), np.eye(80, dtype=np.uint8)[[1] * 4], 500)
        return base_args(d, **{"-i": d / "long.bin", "-j": None, "-t": None}), ["long.bin", "E=80", "maxT=64"]
    if name == "mixed shard kinds":
        write_example_shard(d / "ex_val.bin", np.ones((10, 33), dtype=np.int64),
                            np.eye(33, dtype=np.uint8)[[1] * 10], 500)
        return base_args(d, **{"-j": d / "ex_val.bin", "-v": 1}), ["ex_val.bin", "different kinds of shards"]
    if name == "unknown flag":
        return base_args(d) + ["--learning-rate", "3"], ["unknown flag '--learning-rate'"]
    if name == "non-numeric value":
        return base_args(d, **{"-b": "four"}), ["-b/--batch-size", "expects an integer", "'four'"]
    if name == "non-numeric float":
        return base_args(d) + ["-l", "1e-3x"], ["-l/--lr", "expects a decimal number", "'1e-3x'"]
    if name == "non-finite value":
        return base_args(d) + ["-l", "nan"], ["-l/--lr", "expects a decimal number", "'nan'"]
    if name == "infinite value":
        return base_args(d) + ["-l", "1e39"], ["-l/--lr", "'1e39'", "out of range"]
    if name == "hexadecimal float":
        return base_args(d) + ["-l", "0x10"], ["-l/--lr", "expects a decimal number", "'0x10'"]
    if name == "float that underflows to 0":
        return base_args(d) + ["-l", "1e-50"], ["-l/--lr", "'1e-50'", "too small for a float"]
    if name == "--save-every without -o":
        return base_args(d) + ["-n", 1], ["--save-every 1", "-o DIR"]
    if name == "-g too large":
        return base_args(d) + ["-g", 2147483647, "-s", 1], ["-g", "65536", "2147483647"]
    if name == "--steps too large":
        return base_args(d, **{"--steps": 2147483647}), ["--steps", "1073741824", "2147483647"]
    if name == "--threads too large":
        return base_args(d) + ["--threads", 100000], ["--threads", "256", "100000"]
    if name == "tokens per step too large":
        return base_args(d, **{"-b": 2147483647, "-t": 64}), ["-b 2147483647 -t 64", "tokens per step"]
    if name == "missing value":
        return base_args(d) + ["--steps"], ["--steps", "needs a value"]
    if name == "unknown choice":
        return base_args(d) + ["--lr-schedule", "exp"], ["--lr-schedule", "constant, cosine, linear", "'exp'"]
    if name == "zero batch size":
        return base_args(d, **{"-b": 0}), ["-b", "must be >= 1"]
    if name == "stray argument":
        return base_args(d) + ["extra"], ["unexpected argument 'extra'"]
    if name == "parity batch T > maxT":
        write_parity_batch(d / "pb.bin", np.zeros((1, 70), np.int32), np.zeros((1, 70), np.int32))
        return ["--model", d / "model.bin", "--parity-batch", d / "pb.bin", "--parity-out", d / "g.bin"], \
            ["pb.bin", "T=70", "maxT=64"]
    if name == "parity batch token >= V":
        x = np.zeros((2, 8), np.int32)
        x[1, 3] = 999
        write_parity_batch(d / "pb.bin", x, np.zeros((2, 8), np.int32))
        return ["--model", d / "model.bin", "--parity-batch", d / "pb.bin", "--parity-out", d / "g.bin"], \
            ["pb.bin", "token id 999", "row 1 position 3"]
    if name == "parity losses without -o":
        write_parity_batch(d / "pb.bin", np.zeros((2, 8), np.int32), np.zeros((2, 8), np.int32))
        return ["--model", d / "model.bin", "--parity-batch", d / "pb.bin", "--steps", 2,
                "--parity-losses", d / "l.bin"], ["-o DIR"]
    if name == "resume without its model":
        run_trainer(*base_args(d), "-o", d / "run")
        (d / "run/model_000002.bin").unlink()
        return base_args(d, **{"--model": None}) + ["--resume", d / "run/state_000002.bin"], \
            ["state_000002.bin", "model_000002.bin", "missing"]
    if name == "batch that cannot fit in memory":
        # 2^24 tokens per step (the limit) of the tiny model: about 200 GiB of activations
        return base_args(d, **{"-b": 262144, "-t": 64}), ["B=262144 T=64", "GiB of memory", "smaller -b or -t"]
    if name == "model dims that wrap 64-bit sizes":
        # the parameter count of this header wraps around 2^64 to a size the file can have
        raw = bytearray((d / "model.bin").read_bytes())
        header = np.frombuffer(raw[:1024], dtype="<i4").copy()
        header[2:9] = [2147483633, 128, 165191041, 1, 2 ** 30, 128, 0]
        raw[:1024] = header.tobytes()
        (d / "wrap.bin").write_bytes(bytes(raw))
        return base_args(d, **{"--model": d / "wrap.bin"}), ["wrap.bin", "out of range", "maxT=2147483633"]
    if name in ("state at step INT_MAX", "state with negative v", "state with NaN m", "state with inf init"):
        run_trainer(*base_args(d), "-o", d / "run", "--decay-toward-init", 1)
        raw = bytearray((d / "run/state_000002.bin").read_bytes())
        P = int(np.frombuffer(raw[16:20], dtype="<u4")[0])
        body = np.frombuffer(raw[1024:], dtype="<f4").copy()
        if name == "state at step INT_MAX":
            raw[8:12] = np.int32(2 ** 31 - 1).tobytes()
            want = ["state_INT.bin", "invalid header", "step=2147483647"]
        else:
            at, value, want = {"state with negative v": (P + 3, None, ["second moment v", "element 3"]),
                               "state with NaN m": (5, np.nan, ["first moment m", "element 5", "nan"]),
                               "state with inf init": (2 * P + 7, np.inf, ["initial parameters", "element 7"])}[name]
            body[at] = -abs(body[at]) - 1.0 if value is None else value
            raw[1024:] = body.tobytes()
            want = ["state_INT.bin"] + want
        # the model beside it: model_NNNNNN.bin of the state's step
        step = int(np.frombuffer(raw[8:12], dtype="<i4")[0])
        (d / "run/state_INT.bin").write_bytes(bytes(raw))
        if step != 2:
            (d / "run" / f"model_{step:06d}.bin").write_bytes((d / "run/model_000002.bin").read_bytes())
        return base_args(d, **{"--model": None}) + ["--resume", d / "run/state_INT.bin", "--decay-toward-init", 1,
                                                   "--steps", 4], want
    if name.startswith("tokenizer"):
        from dev.tokenizer import write_tokenizer_file
        pieces = [bytes([65 + i % 26]) * (1 + i % 3) for i in range(CONFIG.vocab_size)]
        write_tokenizer_file(d / "tok.bin", pieces, eot_id=CONFIG.vocab_size - 1)
        raw = bytearray((d / "tok.bin").read_bytes())
        header = np.frombuffer(raw[:1024], dtype="<i4").copy()
        if name == "tokenizer with a huge vocab size":
            header[2] = 2 ** 31 - 1
            want = ["bad_tok.bin", "vocab size 2147483647", "1 to 65536"]
        elif name == "tokenizer with trailing bytes":
            raw += b"\x01x"
            want = ["bad_tok.bin", "too long", "2 bytes after"]
        elif name == "tokenizer with an EOT id outside it":
            header[3] = CONFIG.vocab_size
            want = ["bad_tok.bin", "end-of-text id 500", "[0, 500)"]
        elif name == "tokenizer with a zero-length token":
            raw[1024] = 0
            want = ["bad_tok.bin", "token 0 has length 0"]
        elif name == "tokenizer version 1 without GPT-2's EOT":
            header[1] = 1
            want = ["bad_tok.bin", "end-of-text id 50256", "version 1"]
        elif name == "tokenizer of another vocabulary":
            write_tokenizer_file(d / "tok.bin", pieces[:300], eot_id=299)
            raw = bytearray((d / "tok.bin").read_bytes())
            header = np.frombuffer(raw[:1024], dtype="<i4").copy()
            want = ["bad_tok.bin", "300 tokens", "V=500"]
        raw[:1024] = header.tobytes()
        (d / "bad_tok.bin").write_bytes(bytes(raw))
        return base_args(d, **{"-s": 1}) + ["--tokenizer", d / "bad_tok.bin"], want
    if name == "parity batch whose size wraps":
        write_parity_batch(d / "pb.bin", np.zeros((2, 8), np.int32), np.zeros((2, 8), np.int32))
        raw = bytearray((d / "pb.bin").read_bytes())
        raw[8:16] = np.array([2 ** 31 - 1, 2 ** 31 - 1], dtype="<i4").tobytes()
        (d / "pb.bin").write_bytes(bytes(raw))
        return ["--model", d / "model.bin", "--parity-batch", d / "pb.bin", "--parity-out", d / "g.bin"], \
            ["pb.bin", "B=2147483647", "B*T at most"]
    if name == "example shard with a huge E":
        write_example_shard(d / "ex.bin", np.ones((10, 8), dtype=np.int64), np.eye(8, dtype=np.uint8)[[1] * 10], 500)
        raw = bytearray((d / "ex.bin").read_bytes())
        raw[12:16] = np.int32(2 ** 31 - 1).tobytes()
        (d / "ex.bin").write_bytes(bytes(raw))
        return base_args(d, **{"-i": d / "ex.bin", "-j": None, "-t": None}), ["ex.bin", "E=2147483647"]
    if name == "resume from a non-state file":
        return base_args(d) + ["--resume", d / "train.bin"], ["training state", "train.bin", "magic number"]
    raise KeyError(name)


BAD_INPUT_CASES = [
    "missing model", "truncated model", "wrong magic", "wrong version", "llm.c bf16 model", "inconsistent dims",
    "token id >= V", "token id >= V in val", "shard too small", "truncated shard", "empty glob",
    "T > maxT", "example shard with wrong -t", "examples longer than the context", "mixed shard kinds", "unknown flag",
    "non-numeric value", "non-numeric float", "non-finite value", "missing value", "unknown choice",
    "zero batch size", "stray argument", "parity batch T > maxT", "parity batch token >= V",
    "parity losses without -o", "resume without its model", "resume from a non-state file",
    # found with the sanitized build and by hand (the reliability issue); each failed before
    "infinite value", "hexadecimal float", "float that underflows to 0", "--save-every without -o",
    "-g too large", "--steps too large", "--threads too large", "tokens per step too large",
    "batch that cannot fit in memory",
    "model dims that wrap 64-bit sizes", "state at step INT_MAX", "state with negative v", "state with NaN m",
    "state with inf init", "tokenizer with a huge vocab size", "tokenizer with trailing bytes",
    "tokenizer with an EOT id outside it", "tokenizer with a zero-length token",
    "tokenizer version 1 without GPT-2's EOT", "tokenizer of another vocabulary",
    "parity batch whose size wraps", "example shard with a huge E",
]


def assert_clear_error(r, name, want):
    assert r.returncode == 1, f"{name}: exit {r.returncode} (negative = killed by a signal)\n{r.stderr}"
    err = r.stderr
    assert err.startswith("error: ") or "\nerror: " in err, f"{name}: no 'error:' line in\n{err}"
    for s in want:
        assert s in err, f"{name}: the message should mention {s!r}:\n{err}"
    for bad in ("Traceback", "Sanitizer", "Segmentation", "core dumped"):
        assert bad not in err
