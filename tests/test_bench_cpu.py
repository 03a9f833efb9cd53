"""dev/bench_cpu.py, the CPU benchmark, on its smallest workload: it runs end to end and writes
the table it promises. Speed itself is never asserted (see the README's "Speed").

What it checks: `python -m dev.bench_cpu --workload mod97-1t --steps 2 --warmup 1 --skip-compile
--out FILE` exits 0 and FILE holds the header (CPU, FMA peak, versions), the workload's section
(8.9 GFLOP per step, load average, OpenBLAS kernel) and one row each for train_gpt2 and PyTorch
eager with positive ms/step, tokens/s = B*T / (ms/step), the ratio to eager, and a peak resident
memory; PyTorch eager's ratio to itself is 1.00x. A bad --steps exits 1 with a message.
Run: python -m pytest -q tests/test_bench_cpu.py
"""

import re

from helpers import assert_clear_error


def test_bench_writes_its_table(run_cli, tmp_path):
    out = tmp_path / "bench.md"
    r = run_cli("dev.bench_cpu", "--workload", "mod97-1t", "--steps", 2, "--warmup", 1, "--skip-compile",
                "--out", out, timeout=600)
    assert r.returncode == 0, r.stderr
    text = out.read_text()
    assert "FMA peak" in text and "numpy" in text and "OPENBLAS_CORETYPE=" in text
    assert "### mod97-1t: mod97, B=512 T=7, 1 thread(s), 8.9 GFLOP/step" in text
    assert "load average" in text
    rows = [line for line in text.splitlines() if line.startswith("| train_gpt2") or line.startswith("| PyTorch")]
    assert len(rows) == 2, text
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        ms, tokens_per_s = float(cells[1]), float(cells[3])
        # tokens/s is printed from the unrounded median; ms/step is rounded to 0.05 at most
        tol = 0.05 * 512 * 7 * 1e3 / ms ** 2 + 1
        assert ms > 0 and abs(tokens_per_s - 512 * 7 / ms * 1e3) <= tol, row
        assert re.fullmatch(r"\d+ MiB", cells[8]) and int(cells[8].split()[0]) > 0, row
    assert rows[1].split("|")[7].strip() == "1.00x"


def test_bench_bad_arguments(run_cli):
    r = run_cli("dev.bench_cpu", "--steps", 0)
    assert_clear_error(r, "--steps 0", ["--steps must be >= 1"])
