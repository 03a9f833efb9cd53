// emulator stand-in for <cublas_v2.h>: see dev/cuda/emu/cuda_emu.h
#include "../cuda_emu.h"
