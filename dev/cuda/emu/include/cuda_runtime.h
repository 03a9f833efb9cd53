// emulator stand-in for <cuda_runtime.h>: see dev/cuda/emu/cuda_emu.h
#include "../cuda_emu.h"
