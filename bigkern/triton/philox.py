"""Philox4x32-10 in Triton: the attention dropout generator, bit-exact with csrc/common/philox.h.

csrc/common/philox.h states the function and the counter layout; bigkern/reference/philox.py is
the same in plain PyTorch. Here every value is a uint32 tensor: products wrap modulo 2**32 and
tl.umulhi gives the high word, which is exactly the 32x32 -> 64-bit multiply of the C++ code.

Scalars (seed words, offset, threshold) reach kernels as int32 holding the unsigned bit pattern
(see ``as_int32``), so their Triton type never depends on their value and a new seed never
compiles a new kernel; the kernels bitcast them back to uint32.
"""

import triton
import triton.language as tl

_MASK32 = 0xFFFFFFFF


def as_int32(value: int) -> int:
    """The low 32 bits of ``value`` as a signed int32 Python int (the kernels bitcast it to uint32)."""
    value &= _MASK32
    return value - (1 << 32) if value >= 1 << 31 else value


@triton.jit
def philox4x32_10(c0, c1, c2, c3, k0, k1):
    """The four uint32 output words for counter (c0, c1, c2, c3) and key (k0, k1), all uint32."""
    m0 = tl.full([], 0xD2511F53, tl.uint32)
    m1 = tl.full([], 0xCD9E8D57, tl.uint32)
    w0 = tl.full([], 0x9E3779B9, tl.uint32)
    w1 = tl.full([], 0xBB67AE85, tl.uint32)
    for _ in tl.static_range(10):
        hi0 = tl.umulhi(c0, m0)
        lo0 = c0 * m0
        hi1 = tl.umulhi(c2, m1)
        lo1 = c2 * m1
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
        k0 += w0
        k1 += w1
    return c0, c1, c2, c3


@triton.jit
def dropout_keep(rows, start_n, bh, seed_lo, seed_hi, offset, threshold, BLOCK_N: tl.constexpr):
    """Bool (len(rows), BLOCK_N): which attention weights of keys start_n .. start_n + BLOCK_N - 1
    (start_n a multiple of 4) in query rows ``rows`` (a 1-D int tensor) of head ``bh`` = b * Hq + h
    dropout keeps.

    seed_lo, seed_hi, offset, threshold: int32 bit patterns (``as_int32``). One Philox call serves
    four consecutive keys (counter word 0 is j >> 2, output word j & 3 is key j's number), so the
    tile computes BLOCK_N / 4 calls per row and interleaves the four outputs back into key order.
    """
    key_quads = (start_n // 4 + tl.arange(0, BLOCK_N // 4)).to(tl.uint32)
    c0 = tl.broadcast_to(key_quads[None, :], (rows.shape[0], BLOCK_N // 4))
    c1 = tl.broadcast_to(rows.to(tl.uint32)[:, None], (rows.shape[0], BLOCK_N // 4))
    c2 = tl.full(c0.shape, 0, tl.uint32) + bh.to(tl.uint32)
    c3 = tl.full(c0.shape, 0, tl.uint32) + offset.to(tl.uint32, bitcast=True)
    r0, r1, r2, r3 = philox4x32_10(
        c0, c1, c2, c3, seed_lo.to(tl.uint32, bitcast=True), seed_hi.to(tl.uint32, bitcast=True)
    )
    # join(join(r0, r2), join(r1, r3))[m, q, a, b] is word 2 * a + b of quad q: flattening the last
    # three axes in row-major order puts word w of quad q at key 4 * q + w.
    words = tl.reshape(tl.join(tl.join(r0, r2), tl.join(r1, r3)), (rows.shape[0], BLOCK_N))
    return words >= threshold.to(tl.uint32, bitcast=True)
