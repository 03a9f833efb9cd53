# Builds the trainers and runs the tests.
#
#   make train_gpt2            CPU trainer (OpenMP and OpenBLAS when found)
#   make train_gpt2 USE_BLAS=0 CPU trainer with the plain C matmul loops only
#   make asan                  train_gpt2_asan: AddressSanitizer + UBSan build
#   make test                  the README's test command (bash dev/test.sh)
#   make bench-cpu             C trainer vs PyTorch eager and torch.compile (d4)
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

.PHONY: all test clean asan bench-cpu cpu-info

all: train_gpt2

cpu-info:
	@echo "train_gpt2: $(OMP_MSG)"
	@echo "train_gpt2: $(BLAS_MSG)"
	@echo "train_gpt2: commit $(GIT_COMMIT)"

train_gpt2: train_gpt2.c $(LLMC_HEADERS)
	@echo "train_gpt2: $(OMP_MSG)"
	@echo "train_gpt2: $(BLAS_MSG)"
	$(CC) $(CFLAGS_STD) $(CFLAGS) $(OMP_FLAGS) $(BLAS_CFLAGS) -DGIT_COMMIT='"$(GIT_COMMIT)"' $< -o $@ $(BLAS_LIBS) $(LDLIBS)

# Sanitized build for tests/test_cpu_sanitizers.py: -O1 keeps it fast enough,
# -fno-sanitize-recover makes any UBSan finding fatal (non-zero exit).
train_gpt2_asan: train_gpt2.c $(LLMC_HEADERS)
	@echo "train_gpt2_asan: $(OMP_MSG)"
	@echo "train_gpt2_asan: $(BLAS_MSG)"
	$(CC) $(CFLAGS_STD) -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=all \
	  -Wall -Wextra -Wno-unused-function $(OMP_FLAGS) $(BLAS_CFLAGS) -DGIT_COMMIT='"$(GIT_COMMIT)"' $< -o $@ $(BLAS_LIBS) $(LDLIBS)

asan: train_gpt2_asan

test:
	bash dev/test.sh

bench-cpu: train_gpt2
	$(PYTHON) dev/bench_cpu.py

clean:
	rm -f train_gpt2 train_gpt2_asan

# ---- CUDA trainer ----
# ---- end CUDA trainer ----
