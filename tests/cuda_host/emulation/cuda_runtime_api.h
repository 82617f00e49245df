// Stand-in for <cuda_runtime_api.h> under the SIMT emulator (see cuda_runtime.h).
#pragma once
#include "cuda_runtime.h"
