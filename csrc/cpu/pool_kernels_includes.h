// Everything pool_kernels.h, pool_kernels_nhwc.h and pool_kernel_entries.h use, included BEFORE an ISA file switches
// the compiler's target, so library headers are compiled for the baseline instruction set.
#pragma once

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>
#include <optional>
#include <type_traits>
#include <vector>

#include "common/pool_geometry.h"
#include "cpu/pool_kernel_table.h"
