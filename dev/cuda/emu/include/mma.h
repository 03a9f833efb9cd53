// emulator stand-in for <mma.h> (WMMA): see dev/cuda/emu/cuda_emu.h
#include "../cuda_emu.h"
