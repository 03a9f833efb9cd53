# Builds the trainers and runs the tests.
#
#   make train_gpt2            CPU trainer (OpenMP and OpenBLAS when found)
#   make train_gpt2 USE_BLAS=0 CPU trainer with the plain C matmul loops only
#   make asan                  train_gpt2_asan: AddressSanitizer + UBSan build
#   make test                  the README's test command (bash dev/test.sh)
#   make bench-cpu             C trainer vs PyTorch eager and torch.compile (d4, mod97 on 1 and 2
#                              threads); the table goes to dev/results/bench_cpu.md
#   make clean
#
# Detection prints what it found. OpenBLAS comes from the PyPI wheel
# scipy-openblas32 in .venv (symbols prefixed scipy_), else Debian's
# libopenblas-dev; without either the trainer uses its C loops.
#
# No -Ofast / -ffast-math anywhere: fast-math assumes there are no NaN or inf
# values, which broke gelu_backward in llm.c (NaN) and would fold away the
# trainer's NaN-loss check. -fno-math-errno is safe (errno is never read) and
# lets sqrtf inline.

CC ?= gcc
ifeq ($(origin CC),default)
CC := gcc
endif
PYTHON ?= $(if $(wildcard .venv/bin/python),.venv/bin/python,python3)
CFLAGS ?= -O3 -march=native -fno-math-errno -Wall -Wextra -Wno-unused-function
CFLAGS_STD := -std=gnu11
LDLIBS := -lm
USE_BLAS ?= 1
GIT_COMMIT := $(shell git describe --always --dirty --abbrev=12 2>/dev/null || echo unknown)

# ---- OpenMP
OPENMP_OK := $(shell echo 'int main(void){return 0;}' | $(CC) -fopenmp -x c - -o /dev/null 2>/dev/null && echo yes)
ifeq ($(OPENMP_OK),yes)
  OMP_FLAGS := -fopenmp
  OMP_MSG := OpenMP: yes (-fopenmp)
else
  OMP_FLAGS :=
  OMP_MSG := OpenMP: not found, the CPU trainer runs on one thread
endif

# ---- BLAS
BLAS_CFLAGS :=
BLAS_LIBS :=
BLAS_MSG := BLAS: off (USE_BLAS=0), plain C matmul loops
ifeq ($(USE_BLAS),1)
  SCIPY_BLAS_DIRS := $(shell $(PYTHON) -c "import scipy_openblas32 as s; print(s.get_include_dir(), s.get_lib_dir())" 2>/dev/null)
  ifneq ($(words $(SCIPY_BLAS_DIRS)),2)
    SCIPY_BLAS_DIRS :=
  endif
  ifneq ($(SCIPY_BLAS_DIRS),)
    BLAS_INC := $(word 1,$(SCIPY_BLAS_DIRS))
    BLAS_LIB := $(word 2,$(SCIPY_BLAS_DIRS))
    BLAS_CFLAGS := -DUSE_BLAS -DBLAS_SCIPY_PREFIX -I$(BLAS_INC)
    BLAS_LIBS := -L$(BLAS_LIB) -lscipy_openblas -Wl,-rpath,$(BLAS_LIB)
    BLAS_MSG := BLAS: OpenBLAS from the scipy-openblas32 wheel ($(BLAS_LIB))
  else ifneq ($(wildcard /usr/include/x86_64-linux-gnu/cblas.h /usr/include/openblas/cblas.h /usr/include/cblas.h),)
    ifneq ($(shell echo 'int main(void){return 0;}' | $(CC) -x c - -lopenblas -o /dev/null 2>/dev/null && echo yes),)
      BLAS_CFLAGS := -DUSE_BLAS $(if $(wildcard /usr/include/openblas/cblas.h),-I/usr/include/openblas)
      BLAS_LIBS := -lopenblas
      BLAS_MSG := BLAS: system OpenBLAS (-lopenblas)
    else
      BLAS_MSG := BLAS: not found (pip install scipy-openblas32 or apt install libopenblas-dev), plain C loops
    endif
  else
    BLAS_MSG := BLAS: not found (pip install scipy-openblas32 or apt install libopenblas-dev), plain C loops
  endif
endif

LLMC_HEADERS := $(wildcard llmc/*.h)

# What detection found is part of each build's inputs: .build/<target>.flags holds the compiler
# command's flags and is rewritten only when they change (OpenBLAS or OpenMP appearing or
# vanishing, USE_BLAS=0, another CC or CFLAGS), so make rebuilds exactly then and a binary can
# never silently lack what the machine now has.
define build_flags
$(shell mkdir -p .build && { printf '%s\n' '$(2)' | cmp -s - .build/$(1).flags || printf '%s\n' '$(2)' > .build/$(1).flags; } && echo .build/$(1).flags)
endef
TRAIN_GPT2_FLAGS := $(call build_flags,train_gpt2,$(CC) $(CFLAGS_STD) $(CFLAGS) $(OMP_FLAGS) $(BLAS_CFLAGS) $(BLAS_LIBS) $(LDLIBS))
TRAIN_GPT2_ASAN_FLAGS := $(call build_flags,train_gpt2_asan,$(CC) $(CFLAGS_STD) $(OMP_FLAGS) $(BLAS_CFLAGS) $(BLAS_LIBS) $(LDLIBS))

.PHONY: all test clean asan bench-cpu cpu-info

all: train_gpt2

cpu-info:
	@echo "train_gpt2: $(OMP_MSG)"
	@echo "train_gpt2: $(BLAS_MSG)"
	@echo "train_gpt2: commit $(GIT_COMMIT)"

train_gpt2: train_gpt2.c $(LLMC_HEADERS) $(TRAIN_GPT2_FLAGS)
	@echo "train_gpt2: $(OMP_MSG)"
	@echo "train_gpt2: $(BLAS_MSG)"
	$(CC) $(CFLAGS_STD) $(CFLAGS) $(OMP_FLAGS) $(BLAS_CFLAGS) -DGIT_COMMIT='"$(GIT_COMMIT)"' $< -o $@ $(BLAS_LIBS) $(LDLIBS)

# Sanitized build for tests/test_cpu_sanitizers.py: -O1 keeps it fast enough,
# -fno-sanitize-recover makes any UBSan finding fatal (non-zero exit).
train_gpt2_asan: train_gpt2.c $(LLMC_HEADERS) $(TRAIN_GPT2_ASAN_FLAGS)
	@echo "train_gpt2_asan: $(OMP_MSG)"
	@echo "train_gpt2_asan: $(BLAS_MSG)"
	$(CC) $(CFLAGS_STD) -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=all \
	  -Wall -Wextra -Wno-unused-function $(OMP_FLAGS) $(BLAS_CFLAGS) -DGIT_COMMIT='"$(GIT_COMMIT)"' $< -o $@ $(BLAS_LIBS) $(LDLIBS)

asan: train_gpt2_asan

test:
	bash dev/test.sh

bench-cpu: train_gpt2
	$(PYTHON) -m dev.bench_cpu --out dev/results/bench_cpu.md

clean:
	rm -f train_gpt2 train_gpt2_asan
	rm -rf .build

# ---- CUDA trainer ----
# Targets:
#   make train_gpt2fp32cu      the fp32 CUDA trainer; compiles and links with no GPU present
#   make cuda-workbenches      the kernel workbenches dev/cuda/*.cu into dev/cuda/bin/
#   make cuda-emu              the workbenches and the trainer built for the CPU emulator
#                              (dev/cuda/emu: runs kernels on the CPU) into dev/cuda/bin/emu/
#   make cuda-headers          each llmc/*.cuh kernel header compiled alone with nvcc (cuda-emu-headers:
#                              the same through the emulator)
#   make cuda-info             what the detection below found
#   make clean-cuda            removes the CUDA binaries (make clean removes the CPU ones)
# Variables: NVCC (path to nvcc), GPU_ARCHS ("sm_80 sm_90", default: the GPU's own
# compute capability from nvidia-smi, else sm_80 sm_86 sm_89 sm_90, which CUDA 13
# supports), CUBLAS_INC / CUBLAS_LIB (folders with cublas_v2.h and libcublas).
# cuBLAS comes from the CUDA installation beside nvcc, else from the nvidia-cublas
# wheel (pip; .venv/.../nvidia/cu13) that requirements.txt installs; the binary gets
# an rpath to it. No fast math: nvcc's defaults (IEEE division and sqrt, no flush to
# zero) are kept; --use_fast_math would change expf/tanhf/division, which the parity
# tests hold to the CPU trainer and PyTorch.
NVCC ?= $(firstword $(shell command -v nvcc 2>/dev/null) $(wildcard /usr/local/cuda/bin/nvcc))
CUDA_HOME_DETECTED := $(patsubst %/bin/nvcc,%,$(realpath $(NVCC)))
CUBLAS_WHEEL := $(shell $(PYTHON) -c "import nvidia.cu13 as m; print(list(m.__path__)[0])" 2>/dev/null)
ifneq ($(wildcard $(CUDA_HOME_DETECTED)/include/cublas_v2.h),)
  CUBLAS_INC ?= $(CUDA_HOME_DETECTED)/include
  CUBLAS_LIB ?= $(firstword $(dir $(wildcard $(CUDA_HOME_DETECTED)/lib64/libcublas.so $(CUDA_HOME_DETECTED)/targets/*/lib/libcublas.so)))
  CUBLAS_MSG := cuBLAS: the CUDA installation ($(CUDA_HOME_DETECTED))
else ifneq ($(wildcard $(CUBLAS_WHEEL)/include/cublas_v2.h),)
  CUBLAS_INC ?= $(CUBLAS_WHEEL)/include
  CUBLAS_LIB ?= $(CUBLAS_WHEEL)/lib
  CUBLAS_MSG := cuBLAS: the nvidia-cublas wheel ($(CUBLAS_WHEEL))
else
  CUBLAS_MSG := cuBLAS: NOT FOUND (install the CUDA toolkit, or pip install nvidia-cublas into .venv)
endif
# the wheel ships only libcublas.so.13 (no unversioned link): link that file by name
CUBLAS_LINK := $(if $(wildcard $(CUBLAS_LIB)/libcublas.so),-lcublas,$(if $(wildcard $(CUBLAS_LIB)/libcublas.so.*),-l:$(notdir $(firstword $(wildcard $(CUBLAS_LIB)/libcublas.so.*))),-lcublas))
CUBLAS_LDFLAGS := $(if $(CUBLAS_LIB),-L$(CUBLAS_LIB) -Xlinker -rpath -Xlinker $(abspath $(CUBLAS_LIB))) $(CUBLAS_LINK)
GPU_CC := $(shell nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -n1 | tr -d '. \r' | grep -E '^[0-9]+$$')
ifeq ($(origin GPU_ARCHS),undefined)
  ifneq ($(GPU_CC),)
    GPU_ARCHS := sm_$(GPU_CC)
    ARCH_MSG := GPU architecture: sm_$(GPU_CC) (from nvidia-smi)
  else
    GPU_ARCHS := sm_80 sm_86 sm_89 sm_90
    ARCH_MSG := GPU architecture: no GPU seen by nvidia-smi, building for $(GPU_ARCHS)
  endif
else
  ARCH_MSG := GPU architecture: $(GPU_ARCHS) (GPU_ARCHS given)
endif
# machine code for each arch, plus PTX of the newest so later GPUs can JIT it
GENCODE := $(foreach a,$(GPU_ARCHS),-gencode arch=compute_$(subst sm_,,$(a)),code=$(a)) \
           -gencode arch=compute_$(subst sm_,,$(lastword $(GPU_ARCHS))),code=compute_$(subst sm_,,$(lastword $(GPU_ARCHS)))
NVCC_FLAGS ?= -O3 -std=c++17 -Xcompiler -Wall,-Wextra,-Wno-unused-function
# the kernels, one header per layer (llmc/*.cuh), shared by the trainer and the workbenches;
# the .cuh files include llmc/*.h headers (regularizers.h, utils.h) too
LLMC_CUDA_HEADERS := $(wildcard llmc/*.cuh)
CUDA_SOURCES_DEPS := $(LLMC_HEADERS) $(LLMC_CUDA_HEADERS)
WORKBENCH_DEPS := $(wildcard dev/cuda/*.h) $(CUDA_SOURCES_DEPS)
CUDA_WORKBENCHES := $(basename $(notdir $(wildcard dev/cuda/*.cu)))
EMU_CXX ?= g++
EMU_FLAGS ?= -std=c++20 -O2 -g -Wall -Wextra -Wno-unused-function -Wno-unknown-pragmas -Wno-unused-parameter
EMU_INC := -include dev/cuda/emu/cuda_emu.h -Idev/cuda/emu/include
EMU_DEPS := dev/cuda/emu/cuda_emu.h dev/cuda/emu/translate.py

.PHONY: cuda-info cuda-check-tools cuda-workbenches cuda-emu cuda-headers cuda-emu-headers clean-cuda

cuda-info:
	@echo "train_gpt2fp32cu: nvcc: $(if $(NVCC),$(NVCC),NOT FOUND (put nvcc on PATH or pass NVCC=...))"
	@echo "train_gpt2fp32cu: $(CUBLAS_MSG)"
	@echo "train_gpt2fp32cu: $(ARCH_MSG)"
	@echo "train_gpt2fp32cu: commit $(GIT_COMMIT)"

cuda-check-tools: cuda-info
	@test -n "$(NVCC)" || { echo "error: nvcc not found: install the CUDA toolkit or pass NVCC=/path/to/nvcc" >&2; exit 1; }
	@test -n "$(CUBLAS_INC)" || { echo "error: cuBLAS not found: install the CUDA toolkit or pip install nvidia-cublas (see requirements.txt)" >&2; exit 1; }

# CUDA_TRAINER_OUT: where the binary goes (tests/test_cuda_build.py builds a one-arch
# copy elsewhere, so it never replaces the ./train_gpt2fp32cu built for the GPU)
CUDA_TRAINER_OUT ?= train_gpt2fp32cu
train_gpt2fp32cu: train_gpt2_fp32.cu $(CUDA_SOURCES_DEPS) | cuda-check-tools
	$(NVCC) $(NVCC_FLAGS) $(GENCODE) -I$(CUBLAS_INC) -DGIT_COMMIT='"$(GIT_COMMIT)"' $< -o $(CUDA_TRAINER_OUT) $(CUBLAS_LDFLAGS)

dev/cuda/bin/%: dev/cuda/%.cu $(WORKBENCH_DEPS) | cuda-check-tools
	@mkdir -p dev/cuda/bin
	$(NVCC) $(NVCC_FLAGS) $(GENCODE) -I. -I$(CUBLAS_INC) $< -o $@ $(CUBLAS_LDFLAGS)

cuda-workbenches: $(addprefix dev/cuda/bin/,$(CUDA_WORKBENCHES))

# CPU-emulated builds (no nvcc or GPU needed): translate <<<>>> launches, compile with g++.
# translate.py inlines the quoted llmc/*.cuh includes, translated, so their launches run too.
dev/cuda/bin/emu/%: dev/cuda/%.cu $(WORKBENCH_DEPS) $(EMU_DEPS)
	@mkdir -p dev/cuda/bin/emu
	$(PYTHON) dev/cuda/emu/translate.py $< $@.cpp
	$(EMU_CXX) $(EMU_FLAGS) $(EMU_INC) -Idev/cuda -I. $@.cpp -o $@

dev/cuda/bin/emu/train_gpt2fp32cu: train_gpt2_fp32.cu $(CUDA_SOURCES_DEPS) $(EMU_DEPS)
	@mkdir -p dev/cuda/bin/emu
	$(PYTHON) dev/cuda/emu/translate.py $< $@.cpp
	$(EMU_CXX) $(EMU_FLAGS) $(EMU_INC) -I. -DGIT_COMMIT='"$(GIT_COMMIT)"' $@.cpp -o $@

# the emulated trainer under AddressSanitizer + UBSan: out-of-bounds device-memory accesses
# of any kernel become reports (tests/test_gpu_sanitizer.py runs it; no GPU needed)
dev/cuda/bin/emu/train_gpt2fp32cu_asan: train_gpt2_fp32.cu $(CUDA_SOURCES_DEPS) $(EMU_DEPS)
	@mkdir -p dev/cuda/bin/emu
	$(PYTHON) dev/cuda/emu/translate.py $< $@.cpp
	$(EMU_CXX) $(filter-out -O2,$(EMU_FLAGS)) -O1 -fsanitize=address,undefined -fno-sanitize-recover=all \
	  -fno-omit-frame-pointer $(EMU_INC) -I. -DGIT_COMMIT='"$(GIT_COMMIT)"' $@.cpp -o $@

cuda-emu: $(addprefix dev/cuda/bin/emu/,$(CUDA_WORKBENCHES)) dev/cuda/bin/emu/train_gpt2fp32cu

# Each llmc/*.cuh compiles on its own (it includes what it uses), warning-free: with nvcc
# (cuda-headers; PTX for the first of GPU_ARCHS only, to keep it short; nvcc's #177, a static
# function never referenced, is the -Wno-unused-function of a header compiled alone) and
# through the emulator (cuda-emu-headers). tests/test_cuda_build.py runs both.
HEADER_ARCH := $(subst sm_,,$(firstword $(GPU_ARCHS)))
cuda-headers: $(patsubst llmc/%.cuh,dev/cuda/bin/headers/%.o,$(LLMC_CUDA_HEADERS))
cuda-emu-headers: $(patsubst llmc/%.cuh,dev/cuda/bin/emu/headers/%.o,$(LLMC_CUDA_HEADERS))

dev/cuda/bin/headers/%.o: llmc/%.cuh $(CUDA_SOURCES_DEPS) | cuda-check-tools
	@mkdir -p dev/cuda/bin/headers
	$(NVCC) $(NVCC_FLAGS) -Xcompiler -Werror -Werror all-warnings --diag-suppress 177 \
	  -gencode arch=compute_$(HEADER_ARCH),code=compute_$(HEADER_ARCH) \
	  -I$(CUBLAS_INC) -x cu -c $< -o $@

dev/cuda/bin/emu/headers/%.o: llmc/%.cuh $(CUDA_SOURCES_DEPS) $(EMU_DEPS)
	@mkdir -p dev/cuda/bin/emu/headers
	$(PYTHON) dev/cuda/emu/translate.py $< $(basename $@).cpp
	$(EMU_CXX) $(EMU_FLAGS) -Werror $(EMU_INC) -I. -c $(basename $@).cpp -o $@

clean-cuda:
	rm -rf train_gpt2fp32cu dev/cuda/bin
# ---- end CUDA trainer ----
