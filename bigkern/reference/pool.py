"""Reference pooling: torch.nn.functional itself, whose semantics bigkern's kernels reproduce
exactly (output sizes, NaN propagation, index convention, memory format)."""

import torch.nn.functional as F


def max_pool2d(x, kernel_size, stride, padding, dilation, ceil_mode, return_indices):
    return F.max_pool2d(x, kernel_size, stride, padding, dilation, ceil_mode=ceil_mode, return_indices=return_indices)


def avg_pool2d(x, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override):
    return F.avg_pool2d(x, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override)


def adaptive_avg_pool2d(x, output_size):
    return F.adaptive_avg_pool2d(x, output_size)


def adaptive_max_pool2d(x, output_size, return_indices):
    return F.adaptive_max_pool2d(x, output_size, return_indices)
