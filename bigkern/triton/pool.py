"""Triton kernels for 2-D max, average and adaptive pooling, forward and backward.

Every kernel reads and writes through the (n, c, h, w) strides of each tensor it touches, so NCHW,
channels_last and arbitrary strided views are handled in place, without copies. Outputs and input
gradients are allocated in the input's suggested memory format, as ATen does.

A program owns a tile of BLOCK_C channels x BLOCK_P spatial positions of one image: output positions
in the forward kernels, input positions in the backward kernels. The tile's last axis is the storage's
contiguous dimension (channels for channels_last, space for NCHW): strides are runtime values, so
Triton usually cannot prove contiguity and falls back to giving consecutive threads consecutive
elements of the last axis, which is then what makes global memory accesses coalesce.

Backward kernels gather instead of scatter: a program owns a tile of *input* positions and sums the
gradients of the outputs whose windows can contain them. That needs no atomics, is deterministic, adds
in the same order as ATen's CPU kernels (outputs in row-major order) and writes every input gradient
exactly once, zeros included.

Arguments shared by the kernels:
    C, H, W         channels and spatial size of the pooled input
    OH, OW          spatial size of the pooled output
    num_c_blocks    cdiv(C, BLOCK_C), to decode the flat program id
    *_stride_n/c/h/w  element strides of the named tensor ("x": input, "out": output and, in the
                    forward, the indices, which share its layout; "grad_out", "grad_in", "indices")
    ACC_DTYPE       dtype of comparisons and sums: float64 for float64 input, float32 otherwise
    CHANNELS_LAST   orders the tile as (space, channels) instead of (channels, space); see above
    BLOCK_C, BLOCK_P  tile extent along channels and space

Spatial positions within one (n, c) plane are int32, which assumes H * W and OH * OW below 2**31;
offsets into whole tensors are int64 because a 4-D tensor may well exceed 2**31 elements.
"""

import functools

import torch
import triton
import triton.language as tl
from torch._prims_common import suggest_memory_format

from bigkern.ops.pool import pooled_size

# Elements per tile. Enough work per program to hide memory latency on a GPU while keeping the
# tiles small, because under TRITON_INTERPRET the cost of every operation grows with the tile.
_TILE_ELEMENTS = 512
# Channel extent of a channels_last tile while there are enough positions to fill the rest of it.
_MAX_BLOCK_C_CHANNELS_LAST = 64


# --------------------------------------------------------------------------------------------------
# Helpers shared by the kernels
# --------------------------------------------------------------------------------------------------


@triton.jit
def _tile(
    C, rows, cols, num_c_blocks,
    CHANNELS_LAST: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr,
):
    """Decodes the flat program id into the image `n` (int64), the tile's channels `c` and the row
    `y` and column `x` of its positions in a rows x cols plane (laid out along the tile's axes by
    CHANNELS_LAST), and the mask of tile elements inside the C x (rows * cols) block. Spatial blocks
    vary fastest so neighbouring programs share an image.

    A flat 1-D grid is used because CUDA limits the second and third grid dimensions to 65535.
    """
    P = rows * cols
    pid = tl.program_id(0)
    num_p_blocks = tl.cdiv(P, BLOCK_P)
    pid_p = pid % num_p_blocks
    pid_nc = pid // num_p_blocks
    n = (pid_nc // num_c_blocks).to(tl.int64)
    c = (pid_nc % num_c_blocks) * BLOCK_C + tl.arange(0, BLOCK_C)
    p = pid_p * BLOCK_P + tl.arange(0, BLOCK_P)
    if CHANNELS_LAST:
        c = c[None, :]
        p = p[:, None]
    else:
        c = c[:, None]
        p = p[None, :]
    return n, c, p // cols, p % cols, (c < C) & (p < P)


@triton.jit
def _plane(ptr, n, c, stride_n, stride_c):
    """Pointers to spatial position (0, 0) of the (n, c) planes of a tensor with the given strides."""
    return ptr + n * stride_n + c.to(tl.int64) * stride_c


@triton.jit
def _spatial_offset(h, w, stride_h, stride_w):
    """int64 offset of spatial position (h, w) within an (n, c) plane of the given strides."""
    return h.to(tl.int64) * stride_h + w.to(tl.int64) * stride_w


@triton.jit
def _load_at(plane, h, w, stride_h, stride_w, mask, other):
    """The elements at (h, w) of the planes `plane` (from _plane), `other` where masked off."""
    return tl.load(plane + _spatial_offset(h, w, stride_h, stride_w), mask=mask, other=other)


@triton.jit
def _offset(n, c, h, w, stride_n, stride_c, stride_h, stride_w):
    """int64 offset of element (n, c, h, w) of a tensor with the given strides."""
    return n * stride_n + c.to(tl.int64) * stride_c + _spatial_offset(h, w, stride_h, stride_w)


@triton.jit
def _store_converted(ptr, offset, value, mask):
    """Stores `value` at ptr + offset, converted to the tensor's dtype."""
    tl.store(ptr + offset, value.to(ptr.dtype.element_ty), mask=mask)


@triton.jit
def _covering_outputs(i, pad, span, stride, out_size):
    """[first, stop) of the outputs along one dimension whose windows, `span` input elements wide
    (the dilated kernel extent), can contain input element `i`."""
    reach = i + pad
    # The where keeps the division's numerator non-negative in the lanes that use it: Triton's
    # integer division truncates toward zero, which differs from flooring for negative numbers.
    first = tl.where(reach < span, 0, (reach - span) // stride + 1)
    stop = tl.minimum(reach // stride + 1, out_size)
    return first, stop


@triton.jit
def _adaptive_range(i, from_size, to_size):
    """[floor(i * to_size / from_size), ceil((i + 1) * to_size / from_size)) in int64: the elements of
    a dimension of length to_size that overlap element i when both dimensions are stretched to the same
    length. For (output index, output size, input size) that is the input window of an adaptive output;
    for (input index, input size, output size), the adaptive outputs whose windows contain the input.
    """
    i = i.to(tl.int64)
    return (i * to_size) // from_size, ((i + 1) * to_size + from_size - 1) // from_size


@triton.jit
def _max_step(best, best_index, v, index, COMPUTE_INDICES: tl.constexpr):
    """Folds tap value `v` (ACC_DTYPE), at plane position `index` (int64), into the running maximum.

    ATen's rule: a NaN always wins (so NaN propagates and the last NaN's index is reported) and ties
    keep the first maximum. Masked-off taps must load -inf, which never wins, so an all -inf window
    reports the index the caller started with.
    """
    take = (v > best) | (v != v)
    if COMPUTE_INDICES:
        best_index = tl.where(take, index, best_index)
    return tl.where(take, v, best), best_index


@triton.jit
def _routed_grad(
    grad_out_plane, indices_plane, oh, ow, ok, position,
    grad_out_stride_h, grad_out_stride_w, indices_stride_h, indices_stride_w,
):
    """grad_out at output (oh, ow) where the forward's index there names `position` (int64), else 0;
    the gradient is loaded only where it is used. A max-pool window spanning an input may still have
    picked another element (or stepped over it, with dilation): the index decides."""
    index = _load_at(indices_plane, oh, ow, indices_stride_h, indices_stride_w, ok, -1)
    return _load_at(grad_out_plane, oh, ow, grad_out_stride_h, grad_out_stride_w, index == position, 0.0)


@triton.jit
def _avg_pool2d_divisor(
    h_start, w_start, H, W, pad_h, pad_w, divisor_override,
    KH: tl.constexpr, KW: tl.constexpr, COUNT_INCLUDE_PAD: tl.constexpr, HAS_DIVISOR_OVERRIDE: tl.constexpr,
):
    """Divisor of the average over the window starting at (h_start, w_start), and whether the window
    holds no input element. Forward and backward both use it so they always divide by the same number.

    Following ATen, the window is first cut at the far edge of the padding (its size then is what
    count_include_pad divides by) and only then clipped to the input.
    """
    h_end = tl.minimum(h_start + KH, H + pad_h)
    w_end = tl.minimum(w_start + KW, W + pad_w)
    pool_size = (h_end - h_start) * (w_end - w_start)
    h_lo = tl.maximum(h_start, 0)
    w_lo = tl.maximum(w_start, 0)
    h_hi = tl.minimum(h_end, H)
    w_hi = tl.minimum(w_end, W)
    window_empty = (h_lo >= h_hi) | (w_lo >= w_hi)
    if HAS_DIVISOR_OVERRIDE:
        divisor = divisor_override
    elif COUNT_INCLUDE_PAD:
        divisor = pool_size
    else:
        divisor = (h_hi - h_lo) * (w_hi - w_lo)
    # Empty windows (tile lanes past the output, or ATen's guard for the window past the edge) get
    # divisor 1 so no lane divides by zero; their result is discarded or replaced by 0.
    return tl.where(window_empty, 1, divisor), window_empty


# --------------------------------------------------------------------------------------------------
# Max pooling
# --------------------------------------------------------------------------------------------------


@triton.jit
def _max_pool2d_fwd_kernel(
    x_ptr, out_ptr, indices_ptr,
    C, H, W, OH, OW, num_c_blocks,
    x_stride_n, x_stride_c, x_stride_h, x_stride_w,
    out_stride_n, out_stride_c, out_stride_h, out_stride_w,
    stride_h, stride_w, pad_h, pad_w, dil_h, dil_w,
    KH: tl.constexpr, KW: tl.constexpr, COMPUTE_INDICES: tl.constexpr, ACC_DTYPE: tl.constexpr,
    CHANNELS_LAST: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr,
):
    """out[n, c, oh, ow] = max of x over the window at (oh * stride - pad) with taps every dilation.

    indices_ptr: int64 output with out's strides, written only when COMPUTE_INDICES; receives
        ih * W + iw of the chosen tap (may be None otherwise).
    stride_h/w, pad_h/w, dil_h/w: window geometry; KH, KW: kernel size, unrolled.
    """
    n, c, oh, ow, tile_mask = _tile(C, OH, OW, num_c_blocks, CHANNELS_LAST, BLOCK_C, BLOCK_P)
    h_start = oh * stride_h - pad_h
    w_start = ow * stride_w - pad_w
    x_plane = _plane(x_ptr, n, c, x_stride_n, x_stride_c)

    best = tl.full(tile_mask.shape, float("-inf"), ACC_DTYPE)
    # ATen's starting index: the first tap at or after 0 along each axis. It is in bounds unless
    # a dilated window lies wholly in the padding; then the output is -inf at that position.
    ih0 = tl.where(h_start >= 0, h_start, h_start + ((dil_h - 1 - h_start) // dil_h) * dil_h)
    iw0 = tl.where(w_start >= 0, w_start, w_start + ((dil_w - 1 - w_start) // dil_w) * dil_w)
    best_index = ih0.to(tl.int64) * W + iw0
    for kh in tl.static_range(KH):
        ih = h_start + kh * dil_h
        row_ok = tile_mask & (ih >= 0) & (ih < H)
        for kw in tl.static_range(KW):
            iw = w_start + kw * dil_w
            ok = row_ok & (iw >= 0) & (iw < W)
            v = _load_at(x_plane, ih, iw, x_stride_h, x_stride_w, ok, float("-inf")).to(ACC_DTYPE)
            best, best_index = _max_step(best, best_index, v, ih.to(tl.int64) * W + iw, COMPUTE_INDICES)

    out_offset = _offset(n, c, oh, ow, out_stride_n, out_stride_c, out_stride_h, out_stride_w)
    _store_converted(out_ptr, out_offset, best, tile_mask)
    if COMPUTE_INDICES:
        tl.store(indices_ptr + out_offset, best_index, mask=tile_mask)


@triton.jit
def _max_pool2d_bwd_kernel(
    grad_out_ptr, indices_ptr, grad_in_ptr,
    C, H, W, OH, OW, num_c_blocks,
    grad_out_stride_n, grad_out_stride_c, grad_out_stride_h, grad_out_stride_w,
    indices_stride_n, indices_stride_c, indices_stride_h, indices_stride_w,
    grad_in_stride_n, grad_in_stride_c, grad_in_stride_h, grad_in_stride_w,
    stride_h, stride_w, pad_h, pad_w, dil_h, dil_w,
    KH: tl.constexpr, KW: tl.constexpr, MAX_OUT_H: tl.constexpr, MAX_OUT_W: tl.constexpr,
    ACC_DTYPE: tl.constexpr, CHANNELS_LAST: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr,
):
    """grad_in[n, c, ih, iw] = sum of grad_out over the outputs whose index names (ih, iw).

    indices_ptr: the forward's int64 indices (ih * W + iw per output), with their own strides.
    stride_h/w, pad_h/w, dil_h/w, KH, KW: the forward's window geometry.
    MAX_OUT_H/W: most outputs along h/w whose dilated window can span one input, cdiv(span, stride);
        the candidate loops are unrolled to that bound and masked per position.
    """
    n, c, ih, iw, tile_mask = _tile(C, H, W, num_c_blocks, CHANNELS_LAST, BLOCK_C, BLOCK_P)
    oh_first, oh_stop = _covering_outputs(ih, pad_h, (KH - 1) * dil_h + 1, stride_h, OH)
    ow_first, ow_stop = _covering_outputs(iw, pad_w, (KW - 1) * dil_w + 1, stride_w, OW)
    grad_out_plane = _plane(grad_out_ptr, n, c, grad_out_stride_n, grad_out_stride_c)
    indices_plane = _plane(indices_ptr, n, c, indices_stride_n, indices_stride_c)
    position = ih.to(tl.int64) * W + iw

    acc = tl.zeros(tile_mask.shape, ACC_DTYPE)
    for i in tl.static_range(MAX_OUT_H):
        oh = oh_first + i
        row_ok = tile_mask & (oh < oh_stop)
        for j in tl.static_range(MAX_OUT_W):
            ow = ow_first + j
            grad = _routed_grad(
                grad_out_plane, indices_plane, oh, ow, row_ok & (ow < ow_stop), position,
                grad_out_stride_h, grad_out_stride_w, indices_stride_h, indices_stride_w,
            )
            acc += grad.to(ACC_DTYPE)

    grad_in_offset = _offset(n, c, ih, iw, grad_in_stride_n, grad_in_stride_c, grad_in_stride_h, grad_in_stride_w)
    _store_converted(grad_in_ptr, grad_in_offset, acc, tile_mask)


# --------------------------------------------------------------------------------------------------
# Average pooling
# --------------------------------------------------------------------------------------------------


@triton.jit
def _avg_pool2d_fwd_kernel(
    x_ptr, out_ptr,
    C, H, W, OH, OW, num_c_blocks,
    x_stride_n, x_stride_c, x_stride_h, x_stride_w,
    out_stride_n, out_stride_c, out_stride_h, out_stride_w,
    stride_h, stride_w, pad_h, pad_w, divisor_override,
    KH: tl.constexpr, KW: tl.constexpr, COUNT_INCLUDE_PAD: tl.constexpr, HAS_DIVISOR_OVERRIDE: tl.constexpr,
    ACC_DTYPE: tl.constexpr, CHANNELS_LAST: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr,
):
    """out[n, c, oh, ow] = sum of x over the window at (oh * stride - pad) / divisor.

    stride_h/w, pad_h/w: window geometry; KH, KW: kernel size, unrolled.
    divisor_override: the divisor when HAS_DIVISOR_OVERRIDE (ignored otherwise);
    COUNT_INCLUDE_PAD: divide by the padded window size instead of the in-bounds one.
    """
    n, c, oh, ow, tile_mask = _tile(C, OH, OW, num_c_blocks, CHANNELS_LAST, BLOCK_C, BLOCK_P)
    h_start = oh * stride_h - pad_h
    w_start = ow * stride_w - pad_w
    x_plane = _plane(x_ptr, n, c, x_stride_n, x_stride_c)

    acc = tl.zeros(tile_mask.shape, ACC_DTYPE)
    for kh in tl.static_range(KH):
        ih = h_start + kh
        row_ok = tile_mask & (ih >= 0) & (ih < H)
        for kw in tl.static_range(KW):
            iw = w_start + kw
            ok = row_ok & (iw >= 0) & (iw < W)
            acc += _load_at(x_plane, ih, iw, x_stride_h, x_stride_w, ok, 0.0).to(ACC_DTYPE)

    divisor, window_empty = _avg_pool2d_divisor(
        h_start, w_start, H, W, pad_h, pad_w, divisor_override, KH, KW, COUNT_INCLUDE_PAD, HAS_DIVISOR_OVERRIDE
    )
    average = tl.where(window_empty, 0.0, acc / divisor.to(ACC_DTYPE))
    out_offset = _offset(n, c, oh, ow, out_stride_n, out_stride_c, out_stride_h, out_stride_w)
    _store_converted(out_ptr, out_offset, average, tile_mask)


@triton.jit
def _avg_pool2d_bwd_kernel(
    grad_out_ptr, grad_in_ptr,
    C, H, W, OH, OW, num_c_blocks,
    grad_out_stride_n, grad_out_stride_c, grad_out_stride_h, grad_out_stride_w,
    grad_in_stride_n, grad_in_stride_c, grad_in_stride_h, grad_in_stride_w,
    stride_h, stride_w, pad_h, pad_w, divisor_override,
    KH: tl.constexpr, KW: tl.constexpr, MAX_OUT_H: tl.constexpr, MAX_OUT_W: tl.constexpr,
    COUNT_INCLUDE_PAD: tl.constexpr, HAS_DIVISOR_OVERRIDE: tl.constexpr,
    ACC_DTYPE: tl.constexpr, CHANNELS_LAST: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr,
):
    """grad_in[n, c, ih, iw] = sum of grad_out / divisor over the outputs whose window contains (ih, iw).

    stride_h/w, pad_h/w, KH, KW, divisor_override, COUNT_INCLUDE_PAD, HAS_DIVISOR_OVERRIDE: as in
        the forward, which fixes the divisors.
    MAX_OUT_H/W: most outputs along h/w whose window can contain one input, cdiv(kernel, stride).
    """
    n, c, ih, iw, tile_mask = _tile(C, H, W, num_c_blocks, CHANNELS_LAST, BLOCK_C, BLOCK_P)
    # Without dilation every output in these ranges has the input inside its window: the range
    # bounds are exactly "window start <= input < window start + kernel", and an input inside the
    # tensor is never cut off by the padding edge.
    oh_first, oh_stop = _covering_outputs(ih, pad_h, KH, stride_h, OH)
    ow_first, ow_stop = _covering_outputs(iw, pad_w, KW, stride_w, OW)
    grad_out_plane = _plane(grad_out_ptr, n, c, grad_out_stride_n, grad_out_stride_c)

    acc = tl.zeros(tile_mask.shape, ACC_DTYPE)
    for i in tl.static_range(MAX_OUT_H):
        oh = oh_first + i
        row_ok = tile_mask & (oh < oh_stop)
        for j in tl.static_range(MAX_OUT_W):
            ow = ow_first + j
            grad = _load_at(grad_out_plane, oh, ow, grad_out_stride_h, grad_out_stride_w, row_ok & (ow < ow_stop), 0.0)
            divisor, _ = _avg_pool2d_divisor(
                oh * stride_h - pad_h, ow * stride_w - pad_w, H, W, pad_h, pad_w, divisor_override,
                KH, KW, COUNT_INCLUDE_PAD, HAS_DIVISOR_OVERRIDE,
            )
            acc += grad.to(ACC_DTYPE) / divisor.to(ACC_DTYPE)

    grad_in_offset = _offset(n, c, ih, iw, grad_in_stride_n, grad_in_stride_c, grad_in_stride_h, grad_in_stride_w)
    _store_converted(grad_in_ptr, grad_in_offset, acc, tile_mask)


# --------------------------------------------------------------------------------------------------
# Adaptive pooling
# --------------------------------------------------------------------------------------------------


@triton.jit
def _adaptive_avg_pool2d_fwd_kernel(
    x_ptr, out_ptr,
    C, H, W, OH, OW, num_c_blocks,
    x_stride_n, x_stride_c, x_stride_h, x_stride_w,
    out_stride_n, out_stride_c, out_stride_h, out_stride_w,
    max_window_h, max_window_w,
    ACC_DTYPE: tl.constexpr, CHANNELS_LAST: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr,
):
    """out[n, c, oh, ow] = mean of x over rows [floor(oh*H/OH), ceil((oh+1)*H/OH)) and likewise columns.

    max_window_h/w: the largest window extent along h/w, the (runtime) bound of the tap loops; taps
        past a position's own window end are masked.
    """
    n, c, oh, ow, tile_mask = _tile(C, OH, OW, num_c_blocks, CHANNELS_LAST, BLOCK_C, BLOCK_P)
    h_start, h_end = _adaptive_range(oh, OH, H)
    w_start, w_end = _adaptive_range(ow, OW, W)
    x_plane = _plane(x_ptr, n, c, x_stride_n, x_stride_c)

    acc = tl.zeros(tile_mask.shape, ACC_DTYPE)
    for i in range(max_window_h):
        ih = h_start + i
        row_ok = tile_mask & (ih < h_end)
        for j in range(max_window_w):
            iw = w_start + j
            acc += _load_at(x_plane, ih, iw, x_stride_h, x_stride_w, row_ok & (iw < w_end), 0.0).to(ACC_DTYPE)

    area = (h_end - h_start) * (w_end - w_start)
    out_offset = _offset(n, c, oh, ow, out_stride_n, out_stride_c, out_stride_h, out_stride_w)
    _store_converted(out_ptr, out_offset, acc / area.to(ACC_DTYPE), tile_mask)


@triton.jit
def _adaptive_avg_pool2d_bwd_kernel(
    grad_out_ptr, grad_in_ptr,
    C, H, W, OH, OW, num_c_blocks,
    grad_out_stride_n, grad_out_stride_c, grad_out_stride_h, grad_out_stride_w,
    grad_in_stride_n, grad_in_stride_c, grad_in_stride_h, grad_in_stride_w,
    max_outputs_h, max_outputs_w,
    ACC_DTYPE: tl.constexpr, CHANNELS_LAST: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr,
):
    """grad_in[n, c, ih, iw] = sum of grad_out / window area over the outputs whose window contains it,
    which are oh in [floor(ih*OH/H), ceil((ih+1)*OH/H)) and likewise along w.

    max_outputs_h/w: the most outputs along h/w containing one input, the (runtime) loop bounds.
    """
    n, c, ih, iw, tile_mask = _tile(C, H, W, num_c_blocks, CHANNELS_LAST, BLOCK_C, BLOCK_P)
    oh_first, oh_stop = _adaptive_range(ih, H, OH)
    ow_first, ow_stop = _adaptive_range(iw, W, OW)
    grad_out_plane = _plane(grad_out_ptr, n, c, grad_out_stride_n, grad_out_stride_c)

    acc = tl.zeros(tile_mask.shape, ACC_DTYPE)
    for i in range(max_outputs_h):
        oh = oh_first + i
        row_ok = tile_mask & (oh < oh_stop)
        window_h_start, window_h_end = _adaptive_range(oh, OH, H)
        for j in range(max_outputs_w):
            ow = ow_first + j
            window_w_start, window_w_end = _adaptive_range(ow, OW, W)
            # Every adaptive window holds at least one element, so masked lanes divide safely too.
            area = (window_h_end - window_h_start) * (window_w_end - window_w_start)
            grad = _load_at(grad_out_plane, oh, ow, grad_out_stride_h, grad_out_stride_w, row_ok & (ow < ow_stop), 0.0)
            acc += grad.to(ACC_DTYPE) / area.to(ACC_DTYPE)

    grad_in_offset = _offset(n, c, ih, iw, grad_in_stride_n, grad_in_stride_c, grad_in_stride_h, grad_in_stride_w)
    _store_converted(grad_in_ptr, grad_in_offset, acc, tile_mask)


@triton.jit
def _adaptive_max_pool2d_fwd_kernel(
    x_ptr, out_ptr, indices_ptr,
    C, H, W, OH, OW, num_c_blocks,
    x_stride_n, x_stride_c, x_stride_h, x_stride_w,
    out_stride_n, out_stride_c, out_stride_h, out_stride_w,
    max_window_h, max_window_w,
    COMPUTE_INDICES: tl.constexpr, ACC_DTYPE: tl.constexpr,
    CHANNELS_LAST: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr,
):
    """out[n, c, oh, ow] = max of x over rows [floor(oh*H/OH), ceil((oh+1)*H/OH)) and likewise columns.

    indices_ptr: int64 output with out's strides, written only when COMPUTE_INDICES; receives
        ih * W + iw of the chosen element (may be None otherwise).
    max_window_h/w: the largest window extent along h/w, the (runtime) bound of the tap loops.
    """
    n, c, oh, ow, tile_mask = _tile(C, OH, OW, num_c_blocks, CHANNELS_LAST, BLOCK_C, BLOCK_P)
    h_start, h_end = _adaptive_range(oh, OH, H)
    w_start, w_end = _adaptive_range(ow, OW, W)
    x_plane = _plane(x_ptr, n, c, x_stride_n, x_stride_c)

    best = tl.full(tile_mask.shape, float("-inf"), ACC_DTYPE)
    # Adaptive windows are never empty, and start inside the input: an all -inf window reports its
    # first element, as in ATen.
    best_index = tl.broadcast_to(h_start * W + w_start, tile_mask.shape)
    for i in range(max_window_h):
        ih = h_start + i
        row_ok = tile_mask & (ih < h_end)
        for j in range(max_window_w):
            iw = w_start + j
            v = _load_at(x_plane, ih, iw, x_stride_h, x_stride_w, row_ok & (iw < w_end), float("-inf"))
            best, best_index = _max_step(best, best_index, v.to(ACC_DTYPE), ih * W + iw, COMPUTE_INDICES)

    out_offset = _offset(n, c, oh, ow, out_stride_n, out_stride_c, out_stride_h, out_stride_w)
    _store_converted(out_ptr, out_offset, best, tile_mask)
    if COMPUTE_INDICES:
        tl.store(indices_ptr + out_offset, best_index, mask=tile_mask)


@triton.jit
def _adaptive_max_pool2d_bwd_kernel(
    grad_out_ptr, indices_ptr, grad_in_ptr,
    C, H, W, OH, OW, num_c_blocks,
    grad_out_stride_n, grad_out_stride_c, grad_out_stride_h, grad_out_stride_w,
    indices_stride_n, indices_stride_c, indices_stride_h, indices_stride_w,
    grad_in_stride_n, grad_in_stride_c, grad_in_stride_h, grad_in_stride_w,
    max_outputs_h, max_outputs_w,
    ACC_DTYPE: tl.constexpr, CHANNELS_LAST: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr,
):
    """grad_in[n, c, ih, iw] = sum of grad_out over the outputs whose index names (ih, iw); only the
    outputs whose window contains the input, [floor(ih*OH/H), ceil((ih+1)*OH/H)) along h, can.

    indices_ptr: the forward's int64 indices (ih * W + iw per output), with their own strides.
    max_outputs_h/w: the most outputs along h/w containing one input, the (runtime) loop bounds.
    """
    n, c, ih, iw, tile_mask = _tile(C, H, W, num_c_blocks, CHANNELS_LAST, BLOCK_C, BLOCK_P)
    oh_first, oh_stop = _adaptive_range(ih, H, OH)
    ow_first, ow_stop = _adaptive_range(iw, W, OW)
    grad_out_plane = _plane(grad_out_ptr, n, c, grad_out_stride_n, grad_out_stride_c)
    indices_plane = _plane(indices_ptr, n, c, indices_stride_n, indices_stride_c)
    position = ih.to(tl.int64) * W + iw

    acc = tl.zeros(tile_mask.shape, ACC_DTYPE)
    for i in range(max_outputs_h):
        oh = oh_first + i
        row_ok = tile_mask & (oh < oh_stop)
        for j in range(max_outputs_w):
            ow = ow_first + j
            grad = _routed_grad(
                grad_out_plane, indices_plane, oh, ow, row_ok & (ow < ow_stop), position,
                grad_out_stride_h, grad_out_stride_w, indices_stride_h, indices_stride_w,
            )
            acc += grad.to(ACC_DTYPE)

    grad_in_offset = _offset(n, c, ih, iw, grad_in_stride_n, grad_in_stride_c, grad_in_stride_h, grad_in_stride_w)
    _store_converted(grad_in_ptr, grad_in_offset, acc, tile_mask)


# --------------------------------------------------------------------------------------------------
# Host side
# --------------------------------------------------------------------------------------------------


def _layout(x):
    """Memory format of the outputs and gradients for input x, and whether it is channels_last."""
    fmt = suggest_memory_format(x)
    return fmt, fmt == torch.channels_last


def _acc_dtype(dtype):
    """ACC_DTYPE for an input dtype: half types compare and sum in float32."""
    return tl.float64 if dtype == torch.float64 else tl.float32


def _launch_config(N, C, P, channels_last):
    """Tile extents, channel block count and flat grid for N images of C channels x P positions."""
    if channels_last:
        block_c = min(triton.next_power_of_2(C), _MAX_BLOCK_C_CHANNELS_LAST)
        block_p = min(triton.next_power_of_2(P), _TILE_ELEMENTS // block_c)
        # With few positions (global pooling) the rest of the tile goes to channels.
        block_c = min(triton.next_power_of_2(C), _TILE_ELEMENTS // block_p)
    else:
        block_p = min(triton.next_power_of_2(P), _TILE_ELEMENTS)
        block_c = min(triton.next_power_of_2(C), _TILE_ELEMENTS // block_p)
    num_c_blocks = triton.cdiv(C, block_c)
    grid = (N * num_c_blocks * triton.cdiv(P, block_p),)
    return dict(BLOCK_C=block_c, BLOCK_P=block_p, CHANNELS_LAST=channels_last), num_c_blocks, grid


def _launch(kernel, x, OH, OW, P, pointers, strided, geometry, **constexprs):
    """Runs `kernel` over the N x C x P tile space of input x's pooling: P is OH * OW for forwards
    (programs own outputs), H * W for backwards (programs own inputs). Passes the arguments every
    kernel shares: `pointers`, then C, H, W, OH, OW and num_c_blocks, then the strides of each
    tensor in `strided`, then the op's `geometry` values, and as constexprs ACC_DTYPE, the tile and
    `constexprs`."""
    N, C, H, W = x.shape
    tile, num_c_blocks, grid = _launch_config(N, C, P, _layout(x)[1])
    strides = [s for t in strided for s in t.stride()]
    kernel[grid](
        *pointers, C, H, W, OH, OW, num_c_blocks, *strides, *geometry,
        ACC_DTYPE=_acc_dtype(x.dtype), **tile, **constexprs,
    )


def _pooled_output(x, OH, OW, dtype=None):
    """Uninitialised (N, C, OH, OW) result for input x, in x's suggested memory format."""
    return torch.empty(
        (*x.shape[:2], OH, OW), dtype=dtype or x.dtype, device=x.device, memory_format=_layout(x)[0]
    )


def _pooled_indices(x, OH, OW, compute_indices):
    """Index result: int64 in the output's layout, or empty when compute_indices=False (inference
    never writes int64 indices)."""
    return _pooled_output(x, OH, OW, torch.int64) if compute_indices else x.new_empty(0, dtype=torch.int64)


def _grad_input(x):
    """Uninitialised gradient for input x, in x's suggested memory format."""
    return torch.empty(x.shape, dtype=x.dtype, device=x.device, memory_format=_layout(x)[0])


@functools.lru_cache(maxsize=1024)
def _max_adaptive_extent(from_size, to_size):
    """Longest _adaptive_range(i, from_size, to_size) over i < from_size: the widest adaptive window
    for (output size, input size), the most outputs containing one input for (input size, output size).
    Cached because the loop over every index would otherwise cost more host time than a launch."""
    return max(-((-(i + 1) * to_size) // from_size) - (i * to_size) // from_size for i in range(from_size))


def max_pool2d(x, kernel_size, stride, padding, dilation, ceil_mode, compute_indices):
    """(out, indices) of F.max_pool2d; indices is empty unless compute_indices."""
    N, C, H, W = x.shape
    OH = pooled_size(H, kernel_size[0], padding[0], stride[0], dilation[0], ceil_mode)
    OW = pooled_size(W, kernel_size[1], padding[1], stride[1], dilation[1], ceil_mode)
    out = _pooled_output(x, OH, OW)
    indices = _pooled_indices(x, OH, OW, compute_indices)
    if N == 0:
        return out, indices
    _launch(
        _max_pool2d_fwd_kernel, x, OH, OW, OH * OW,
        (x, out, indices if compute_indices else None), (x, out), (*stride, *padding, *dilation),
        KH=kernel_size[0], KW=kernel_size[1], COMPUTE_INDICES=compute_indices,
    )
    return out, indices


def max_pool2d_backward(grad_output, x, indices, kernel_size, stride, padding, dilation, ceil_mode):
    """Gradient of max_pool2d with respect to x, routed through the forward's indices."""
    N, C, H, W = x.shape
    grad_input = _grad_input(x)
    if N == 0:
        return grad_input
    span_h = (kernel_size[0] - 1) * dilation[0] + 1
    span_w = (kernel_size[1] - 1) * dilation[1] + 1
    _launch(
        _max_pool2d_bwd_kernel, x, *grad_output.shape[2:], H * W,
        (grad_output, indices, grad_input), (grad_output, indices, grad_input), (*stride, *padding, *dilation),
        KH=kernel_size[0], KW=kernel_size[1],
        MAX_OUT_H=triton.cdiv(span_h, stride[0]), MAX_OUT_W=triton.cdiv(span_w, stride[1]),
    )
    return grad_input


def avg_pool2d(x, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override):
    """F.avg_pool2d; divisor_override is an int or None."""
    N, C, H, W = x.shape
    OH = pooled_size(H, kernel_size[0], padding[0], stride[0], 1, ceil_mode)
    OW = pooled_size(W, kernel_size[1], padding[1], stride[1], 1, ceil_mode)
    out = _pooled_output(x, OH, OW)
    if N == 0:
        return out
    _launch(
        _avg_pool2d_fwd_kernel, x, OH, OW, OH * OW,
        (x, out), (x, out), (*stride, *padding, 0 if divisor_override is None else divisor_override),
        KH=kernel_size[0], KW=kernel_size[1], COUNT_INCLUDE_PAD=count_include_pad,
        HAS_DIVISOR_OVERRIDE=divisor_override is not None,
    )
    return out


def avg_pool2d_backward(grad_output, x, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override):
    """Gradient of avg_pool2d with respect to x."""
    N, C, H, W = x.shape
    grad_input = _grad_input(x)
    if N == 0:
        return grad_input
    _launch(
        _avg_pool2d_bwd_kernel, x, *grad_output.shape[2:], H * W,
        (grad_output, grad_input), (grad_output, grad_input),
        (*stride, *padding, 0 if divisor_override is None else divisor_override),
        KH=kernel_size[0], KW=kernel_size[1],
        MAX_OUT_H=triton.cdiv(kernel_size[0], stride[0]), MAX_OUT_W=triton.cdiv(kernel_size[1], stride[1]),
        COUNT_INCLUDE_PAD=count_include_pad, HAS_DIVISOR_OVERRIDE=divisor_override is not None,
    )
    return grad_input


def adaptive_avg_pool2d(x, output_size):
    """F.adaptive_avg_pool2d."""
    N, C, H, W = x.shape
    OH, OW = output_size
    out = _pooled_output(x, OH, OW)
    if N == 0:
        return out
    _launch(
        _adaptive_avg_pool2d_fwd_kernel, x, OH, OW, OH * OW,
        (x, out), (x, out), (_max_adaptive_extent(OH, H), _max_adaptive_extent(OW, W)),
    )
    return out


def adaptive_avg_pool2d_backward(grad_output, x):
    """Gradient of adaptive_avg_pool2d with respect to x."""
    N, C, H, W = x.shape
    OH, OW = grad_output.shape[2:]
    grad_input = _grad_input(x)
    if N == 0:
        return grad_input
    _launch(
        _adaptive_avg_pool2d_bwd_kernel, x, OH, OW, H * W,
        (grad_output, grad_input), (grad_output, grad_input),
        (_max_adaptive_extent(H, OH), _max_adaptive_extent(W, OW)),
    )
    return grad_input


def adaptive_max_pool2d(x, output_size, compute_indices):
    """(out, indices) of F.adaptive_max_pool2d; indices is empty unless compute_indices."""
    N, C, H, W = x.shape
    OH, OW = output_size
    out = _pooled_output(x, OH, OW)
    indices = _pooled_indices(x, OH, OW, compute_indices)
    if N == 0:
        return out, indices
    _launch(
        _adaptive_max_pool2d_fwd_kernel, x, OH, OW, OH * OW,
        (x, out, indices if compute_indices else None), (x, out),
        (_max_adaptive_extent(OH, H), _max_adaptive_extent(OW, W)),
        COMPUTE_INDICES=compute_indices,
    )
    return out, indices


def adaptive_max_pool2d_backward(grad_output, x, indices):
    """Gradient of adaptive_max_pool2d with respect to x, routed through the forward's indices."""
    N, C, H, W = x.shape
    OH, OW = grad_output.shape[2:]
    grad_input = _grad_input(x)
    if N == 0:
        return grad_input
    _launch(
        _adaptive_max_pool2d_bwd_kernel, x, OH, OW, H * W,
        (grad_output, indices, grad_input), (grad_output, indices, grad_input),
        (_max_adaptive_extent(H, OH), _max_adaptive_extent(W, OW)),
    )
    return grad_input
