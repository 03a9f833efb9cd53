"""The shared llmc/ headers: valid C and C++, and equal to their Python mirrors.

What it checks:
  - every llmc/*.h compiles warning-free (-Wall -Wextra -Werror) as C (gnu11) and as C++17 with
    -pedantic (the CUDA trainer includes them through nvcc, which compiles C++), each header on
    its own (so each includes what it uses) and all together;
  - the 16 tensor names, order and shapes of llmc/gpt2_params.h equal dev/checkpoint.py's
    PARAM_NAMES and param_shapes for several configurations, and P too;
  - llmc/schedule.h's lr_at equals the Python mirror (tests/helpers/reference.lr_at) at every step
    for the three schedules, with and without warmup;
  - the build cannot go stale: in a copy of the sources, a train_gpt2 built with USE_BLAS=0 is
    out of date for a plain `make train_gpt2` (what detection finds is an input of the build,
    .build/train_gpt2.flags), and up to date again once rebuilt.
Run: python -m pytest -q tests/test_cpu_headers.py
"""

import dataclasses
import glob
import json
import os
import subprocess

import pytest

from dev.checkpoint import PARAM_NAMES, num_parameters, param_shapes
from dev.configs import NAMED_CONFIGS
from helpers import lr_at, REPO

HEADERS = sorted(os.path.basename(p) for p in glob.glob(os.path.join(REPO, "llmc", "*.h")))


def compile_source(tmp_path, source, lang, out="a.out"):
    ext, cmd = {"c": (".c", ["gcc", "-std=gnu11"]), "c++": (".cpp", ["g++", "-std=c++17", "-pedantic"])}[lang]
    src = tmp_path / f"probe{ext}"
    src.write_text(source)
    exe = tmp_path / out
    r = subprocess.run([*cmd, "-Wall", "-Wextra", "-Werror", "-Wno-unused-function", "-I", REPO,
                        str(src), "-o", str(exe), "-lm"], capture_output=True, text=True)
    return r, exe


@pytest.mark.parametrize("lang", ["c", "c++"])
@pytest.mark.parametrize("header", HEADERS + ["(all)"])
def test_header_compiles_alone(tmp_path, lang, header):
    names = HEADERS if header == "(all)" else [header]
    source = "".join(f'#include "llmc/{h}"\n' for h in names) + "int main(void) { return 0; }\n"
    r, _ = compile_source(tmp_path, source, lang)
    assert r.returncode == 0, f"{header} does not compile as {lang}:\n{r.stderr}"


TABLE_PROBE = r"""
#include <stdio.h>
#include <string.h>
#include "llmc/gpt2_params.h"
#include "llmc/schedule.h"
int main(int argc, char** argv) {
    if (argc != 2) { return 2; }
    GPT2Config c;
    memset(&c, 0, sizeof(c));
    sscanf(argv[1], "%d,%d,%d,%d,%d,%d,%d", &c.max_seq_len, &c.vocab_size, &c.num_layers, &c.num_heads,
           &c.channels, &c.no_qkv_bias, &c.untied_head);
    c.padded_vocab_size = round_up_vocab(c.vocab_size);
    int ndims[NUM_PARAMETER_TENSORS];
    size_t dims[NUM_PARAMETER_TENSORS][3], sizes[NUM_PARAMETER_TENSORS];
    fill_param_shapes(ndims, dims, &c);
    size_t P = fill_param_sizes(sizes, &c);
    printf("{\"P\": %zu, \"Vp\": %d, \"tensors\": [", P, c.padded_vocab_size);
    for (int i = 0; i < NUM_PARAMETER_TENSORS; i++) {
        if (sizes[i] == 0) { continue; }  // a tied model's empty lm_head
        printf("%s[\"%s\", [", i ? ", " : "", PARAM_NAMES[i]);
        for (int d = 0; d < ndims[i]; d++) { printf("%s%zu", d ? ", " : "", dims[i][d]); }
        printf("], %zu, %d]", sizes[i], param_is_matrix(i));
    }
    printf("], \"lr\": {");
    const char* kinds[3] = {"constant", "cosine", "linear"};
    for (int k = 0; k < 3; k++) {
        for (int w = 0; w < 2; w++) {
            LrSchedule s = {k, 0.003, w ? 4 : 0, 20, 0.1};
            printf("%s\"%s/%d\": [", (k || w) ? ", " : "", kinds[k], s.warmup);
            for (int step = 1; step <= 20; step++) { printf("%s%.9g", step > 1 ? ", " : "", (double)lr_at(&s, step)); }
            printf("]");
        }
    }
    printf("}}\n");
    return 0;
}
"""


@pytest.fixture(scope="module")
def table_probe(tmp_path_factory):
    r, exe = compile_source(tmp_path_factory.mktemp("table"), TABLE_PROBE, "c")
    assert r.returncode == 0, r.stderr
    return exe


CONFIGS = {
    "tiny": NAMED_CONFIGS["tiny"],
    "d4": NAMED_CONFIGS["d4"],
    "mod97 without qkv bias": dataclasses.replace(NAMED_CONFIGS["mod97"], qkv_bias=False),
    "mod97 with untied head": dataclasses.replace(NAMED_CONFIGS["mod97"], untied_head=True),
}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_tensor_table_matches_python(table_probe, name):
    cfg = CONFIGS[name]
    arg = (f"{cfg.max_seq_len},{cfg.vocab_size},{cfg.n_layer},{cfg.n_head},{cfg.n_embd},"
           f"{0 if cfg.qkv_bias else 1},{1 if cfg.untied_head else 0}")
    out = json.loads(subprocess.run([str(table_probe), arg], capture_output=True, text=True, check=True).stdout)
    assert out["Vp"] == cfg.padded_vocab_size
    assert [t[0] for t in out["tensors"]] == list(PARAM_NAMES) + (["lm_head"] if cfg.untied_head else [])
    shapes = param_shapes(cfg)
    for tname, shape, size, _ in out["tensors"]:
        assert tuple(shape) == tuple(shapes[tname]), f"{tname}: C shape {shape}, Python {shapes[tname]}"
    assert out["P"] == num_parameters(cfg)
    matrices = [t[0] for t in out["tensors"] if t[3]]
    assert matrices == ["wte", "wpe", "qkvw", "attprojw", "fcw", "fcprojw"] + (["lm_head"] if cfg.untied_head else [])


def test_schedule_matches_python_mirror(table_probe):
    cfg = NAMED_CONFIGS["tiny"]
    arg = f"{cfg.max_seq_len},{cfg.vocab_size},{cfg.n_layer},{cfg.n_head},{cfg.n_embd},0,0"
    out = json.loads(subprocess.run([str(table_probe), arg], capture_output=True, text=True, check=True).stdout)
    for key, values in out["lr"].items():
        kind, warmup = key.split("/")
        want = [lr_at(s, 0.003, int(warmup), 20, kind, 0.1) for s in range(1, 21)]
        for step, (got, w) in enumerate(zip(values, want), 1):
            assert got == pytest.approx(w, rel=1e-6), f"{key} step {step}: C {got}, Python {w}"


def test_make_rebuilds_when_detection_changes(tmp_path):
    import shutil
    for name in ("Makefile", "train_gpt2.c"):
        shutil.copy(os.path.join(REPO, name), tmp_path / name)
    shutil.copytree(os.path.join(REPO, "llmc"), tmp_path / "llmc")
    venv = os.path.join(REPO, ".venv")
    if os.path.isdir(venv):
        os.symlink(venv, tmp_path / ".venv")  # the same BLAS detection as the repository's build

    def make(*args):
        return subprocess.run(["make", "-s", *args], cwd=tmp_path, capture_output=True, text=True, timeout=300)

    assert make("train_gpt2", "USE_BLAS=0").returncode == 0
    plain = make("-q", "train_gpt2")  # -q: exit 1 when the target is out of date
    info = make("cpu-info").stdout
    blas_found = "OpenBLAS" in info and "not found" not in info
    if blas_found:
        assert plain.returncode == 1, "a USE_BLAS=0 binary looked up to date for a build with BLAS"
    assert make("train_gpt2").returncode == 0
    assert make("-q", "train_gpt2").returncode == 0, "a fresh build should be up to date"
    assert make("-q", "train_gpt2", "USE_BLAS=0").returncode == (1 if blas_found else 0)
