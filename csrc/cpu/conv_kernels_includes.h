// Everything conv_kernels.h uses, included BEFORE an ISA file switches the compiler's target, so
// library headers are compiled for the baseline instruction set.
#pragma once

#include <ATen/Parallel.h>
#include <c10/util/Exception.h>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#endif
#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <type_traits>
#include <vector>

#include "cpu/conv_kernel_table.h"
#include "cpu/isa.h"
