"""bigkern.ops.conv2d against torch.nn.functional.conv2d and a float64 oracle.

Every case draws a random configuration (sizes, non-square kernels, stride, every padding form,
dilation, groups and depthwise, bias, residual, activation, memory layout), runs bigkern's op
and torch's unfused equivalent (conv, + residual, activation) in the test dtype, and compares
both with torch in float64: output and the gradients of input, weight, bias and residual. The
rule: bigkern's error at most 2x torch's own error in that dtype, plus a few units in the last
place (tests/ops/test_rnn.py's assert_close_to_reference).

Backends: "cpu" (C++ kernels), "triton" (interpreted on the CPU where no GPU is present: few,
small cases; tests/triton/test_conv.py covers its kernels and every autotune config), "cuda"
(only where a GPU exists).
"""

import random

import pytest
import torch
import torch.nn.functional as F

import bigkern
from bigkern.ops.conv import padding_sides
from bigkern.reference import conv as reference
from tests.ops.test_rnn import assert_close_to_reference

BACKENDS = [
    pytest.param("cpu", id="cpu"),
    pytest.param("triton", id="triton", marks=pytest.mark.triton),
    pytest.param("cuda", id="cuda", marks=pytest.mark.cuda),
]
ACTIVATIONS = [None, "relu", "gelu", "silu"]


def device_of(backend):
    return "cuda" if backend == "cuda" or (backend == "triton" and torch.cuda.is_available()) else "cpu"


def random_padding(rng: random.Random, stride: tuple) -> object:
    """An int, a pair, "same" (stride 1 only) or "valid"."""
    padding = rng.choice(["int", "pair", "same", "valid"])
    if padding == "same" and stride != (1, 1):
        padding = "pair"
    return {"int": rng.randint(0, 2), "pair": (rng.randint(0, 2), rng.randint(0, 3)), "same": "same", "valid": "valid"}[padding]


def random_epilogue(rng: random.Random, layouts: list) -> dict:
    """Bias, residual, activation and the input's memory layout."""
    return dict(bias=rng.random() < 0.7, residual=rng.random() < 0.4, activation=rng.choice(ACTIVATIONS),
                layout=rng.choice(layouts))  # fmt: skip


def random_config(seed: int) -> dict:
    rng = random.Random(seed)
    groups = rng.choice([1, 1, 1, 2, 3])
    depthwise = rng.random() < 0.2
    c_per_group = 1 if depthwise else rng.randint(1, 6)
    if depthwise:
        groups = rng.choice([3, 4, 5])
    k = groups * (rng.choice([1, 2]) if depthwise else rng.randint(1, 5))
    r, s = rng.choice([1, 2, 3, 5]), rng.choice([1, 2, 3])
    stride = (rng.choice([1, 2, 3]), rng.choice([1, 2]))
    dilation = (rng.choice([1, 2]), rng.choice([1, 1, 2]))
    padding = random_padding(rng, stride)
    h = rng.randint(dilation[0] * (r - 1) + 1, 13)
    w = rng.randint(dilation[1] * (s - 1) + 1, 11)
    return dict(
        n=rng.randint(1, 3), c=c_per_group * groups, h=h, w=w, k=k, kernel=(r, s), stride=stride, padding=padding,
        dilation=dilation, groups=groups, **random_epilogue(rng, ["contiguous", "channels_last", "sliced"]),
    )  # fmt: skip


def make_input(cfg, dtype, device, gen):
    shape = (cfg["n"], cfg["c"], cfg["h"], cfg["w"])
    if cfg["layout"] == "sliced":  # every other column of a wider tensor: neither layout is dense
        x = torch.randn(*shape[:3], 2 * shape[3], generator=gen)[..., ::2]
    else:
        x = torch.randn(*shape, generator=gen)
        if cfg["layout"] == "channels_last":
            x = x.contiguous(memory_format=torch.channels_last)
    return x.to(device=device, dtype=dtype)


def run_case(cfg, backend, dtype, seed, input_grad=True):
    """input_grad=False leaves the input out of the gradients (a first layer's case)."""
    device = device_of(backend)
    gen = torch.Generator().manual_seed(seed)
    x = make_input(cfg, dtype, device, gen)
    weight = (torch.randn(cfg["k"], cfg["c"] // cfg["groups"], *cfg["kernel"], generator=gen) * 0.5).to(device, dtype)
    bias = torch.randn(cfg["k"], generator=gen).to(device, dtype) if cfg["bias"] else None
    args = dict(stride=cfg["stride"], padding=cfg["padding"], dilation=cfg["dilation"], groups=cfg["groups"])
    out_shape = F.conv2d(x.double().cpu(), weight.double().cpu(), None, **args).shape
    residual = torch.randn(out_shape, generator=gen).to(device, dtype) if cfg["residual"] else None
    grad_out = torch.randn(out_shape, generator=gen).to(device, dtype)

    def unfused(x, weight, bias, residual):
        y = F.conv2d(x, weight, bias, **args)
        if residual is not None:
            y = y + residual
        return reference.activate(y, bigkern.ops.conv.ACTIVATION_CODES[cfg["activation"]])

    def run(fn, cast):
        leaves = [None if t is None else cast(t).detach().requires_grad_() for t in (x, weight, bias, residual)]
        leaves[0].requires_grad_(input_grad)
        y = fn(*leaves)
        grads = torch.autograd.grad(y, [t for t in leaves if t is not None and t.requires_grad], cast(grad_out))
        return y, grads

    with bigkern.use_backend(backend):
        ours, ours_grads = run(lambda *t: bigkern.ops.conv2d(*t[:3], **args, activation=cfg["activation"], residual=t[3]),
                               lambda t: t)  # fmt: skip
    theirs, their_grads = run(unfused, lambda t: t)
    ref, ref_grads = run(unfused, lambda t: t.double())
    assert ours.is_contiguous(memory_format=torch.channels_last) == theirs.is_contiguous(memory_format=torch.channels_last)
    assert_close_to_reference(ours, theirs, ref, f"{cfg} output")
    names = [n for n, t in zip(("input", "weight", "bias", "residual"), (x, weight, bias, residual))
             if t is not None and (n != "input" or input_grad)]  # fmt: skip
    for name, a, b, c in zip(names, ours_grads, their_grads, ref_grads):
        assert_close_to_reference(a, b, c, f"{cfg} grad {name}")


@pytest.mark.parametrize("seed", range(40))
def test_random_configurations_cpu(seed):
    cfg = random_config(seed)
    run_case(cfg, "cpu", torch.float32, seed)


def wide_config(seed: int) -> dict:
    """A random configuration with channel counts that the AVX-512 builds take (tile widths within
    25% of a multiple of 64 or 32, csrc/cpu/conv.cpp: kernels), with partial blocks."""
    cfg = random_config(2000 + seed)
    rng = random.Random(seed)
    widths = [28, 32, 56, 64, 110, 128, 250]
    if rng.random() < 0.25:  # depthwise
        c = rng.choice(widths)
        cfg.update(c=c, k=c, groups=c)
    else:
        g = rng.choice([1, 1, 2])
        cfg.update(groups=g, c=g * rng.choice(widths), k=g * rng.choice(widths))
    cfg["n"] = 1
    return cfg


@pytest.mark.parametrize("seed", range(12))
def test_random_configurations_wide_channels_cpu(seed):
    run_case(wide_config(seed), "cpu", torch.float32, seed)


def first_layer_config(seed: int) -> dict:
    """A random first layer that the CPU's direct row kernel takes where the input's rows are
    contiguous (csrc/cpu/conv_direct_rows.h: up to 8 input channels, one group, horizontal stride
    1, output rows of 16+ pixels): any vertical stride, dilation, padding, output channel counts
    around its 4- and 8-channel blocks; "sliced" and channels_last inputs of 2+ channels take the
    patch kernels instead."""
    rng = random.Random(3000 + seed)
    r, s = rng.choice([1, 3, 5, 7]), rng.choice([1, 3, 5])
    dilation = (rng.choice([1, 2]), rng.choice([1, 1, 2]))
    stride = (rng.choice([1, 1, 2]), 1)
    padding = rng.choice([0, 1, 3, (2, 1), "same" if stride == (1, 1) else 2, "valid"])
    return dict(
        n=rng.randint(1, 3), c=rng.choice([1, 1, 3, 6, 8]), h=rng.randint(dilation[0] * (r - 1) + 1, 14),
        w=rng.randint(16 + dilation[1] * (s - 1), 50), k=rng.choice([1, 5, 6, 9, 16, 17, 32]), kernel=(r, s),
        stride=stride, padding=padding, dilation=dilation, groups=1,
        **random_epilogue(rng, ["contiguous", "contiguous", "channels_last", "sliced"]),
    )  # fmt: skip


@pytest.mark.parametrize("seed", range(16))
def test_first_layer_rows_cpu(seed):
    run_case(first_layer_config(seed), "cpu", torch.float32, seed)


@pytest.mark.parametrize("seed", range(16))
def test_first_layer_rows_weight_gradient_cpu(seed):
    """Without the input's gradient the backward of these layers is the direct row kernel's weight
    and bias gradient (and the residual's, which is the output gradient itself)."""
    run_case(first_layer_config(100 + seed), "cpu", torch.float32, seed, input_grad=False)


@pytest.mark.parametrize("seed", range(8))
def test_random_configurations_cpu_bfloat16(seed):
    run_case(random_config(1000 + seed), "cpu", torch.bfloat16, seed)


@pytest.mark.triton
@pytest.mark.parametrize("seed", [3, 11, 17])
def test_random_configurations_triton(seed):
    run_case(random_config(seed), "triton", torch.float32, seed)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("seed", range(24))
def test_random_configurations_cuda(seed, dtype):
    run_case(random_config(seed), "cuda", dtype, seed)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize(
    "shape",
    [(4, 64, 28, 28, 64, 3, 1), (4, 3, 32, 32, 32, 7, 2), (4, 96, 14, 14, 96, 3, 1), (4, 256, 14, 14, 64, 1, 1)],
    ids=["3x3", "first-layer", "depthwise", "1x1"],
)
def test_cuda_specialised_paths(shape, dtype):
    n, c, h, k, _, kernel, stride = *shape[:4], None, shape[5], shape[6]
    groups = c if shape[:2] == (4, 96) else 1
    cfg = dict(n=n, c=c, h=h, w=h, k=k, kernel=(kernel, kernel), stride=(stride, stride), padding=kernel // 2,
               dilation=(1, 1), groups=groups, bias=True, residual=True, activation="relu", layout="channels_last")  # fmt: skip
    run_case(cfg, "cuda", dtype, 0)


@pytest.mark.parametrize("k, layout", [(40, "channels_last"), (130, "contiguous"), (250, "contiguous"), (250, "channels_last")])
def test_deep_reduction_and_wide_output_cpu(k, layout):
    """More channels than one weight-panel chunk and than one register tile's channel block: 250
    output channels are three full AVX-512 blocks (64) and a 58-channel tail, and no multiple of
    the wgrad tile's rows (6 or 12); 130 runs AVX-512's 32-wide build (four blocks and a tail) and
40 the AVX2 build on AVX-512 machines. The NCHW
    cases also cover the 8 x 8 transposing copy-out (rows of 13 pixels: one block and a tail)."""
    cfg = dict(n=2, c=300, h=6, w=13, k=k, kernel=(3, 3), stride=(1, 1), padding=1, dilation=(1, 1), groups=1,
               bias=True, residual=True, activation="silu", layout=layout)  # fmt: skip
    run_case(cfg, "cpu", torch.float32, 5)


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_backward_op_matches_reference_for_every_output_mask(activation):
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(2, 6, 9, 8, generator=gen, dtype=torch.float64)
    w = torch.randn(4, 3, 3, 2, generator=gen, dtype=torch.float64)
    args = ([2, 1], [1, 0, 2, 1], [1, 2], 2)
    code = bigkern.ops.conv.ACTIVATION_CODES[activation]
    out, pre = reference.conv2d(x, w, None, None, *args, code, True)
    act_in = out if code == 1 else pre if code in (2, 3) else x.new_empty(0)
    grad = torch.randn(out.shape, generator=gen, dtype=torch.float64)
    for mask in ([True, True, True, True], [True, False, False, False], [False, True, True, False], [False, False, False, True]):
        ours = torch.ops.bigkern.conv2d_backward(grad, x, w, act_in, *args, code, mask)
        theirs = reference.conv2d_backward(grad, x, w, act_in, *args, code, mask)
        for name, a, b in zip(("input", "weight", "bias", "preactivation"), ours, theirs):
            assert a.shape == b.shape, f"mask {mask}: grad {name} shape {tuple(a.shape)} != {tuple(b.shape)}"
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10, msg=lambda m: f"mask {mask} grad {name}: {m}")


def test_gradcheck_float64():
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(1, 4, 6, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    w = torch.randn(6, 2, 3, 2, generator=gen, dtype=torch.float64, requires_grad=True)
    b = torch.randn(6, generator=gen, dtype=torch.float64, requires_grad=True)
    res = torch.randn(1, 6, 3, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    fn = lambda x, w, b, res: bigkern.ops.conv2d(x, w, b, stride=(2, 1), padding=(1, 1), dilation=(1, 2), groups=2,  # noqa: E731
                                                 activation="gelu", residual=res)  # fmt: skip
    with bigkern.use_backend("cpu"):
        assert torch.autograd.gradcheck(fn, (x, w, b, res))


@pytest.mark.parametrize("case", ["depthwise-56", "pointwise-28"])
def test_gradcheck_float64_avx512_tiles(case):
    """float64 through the AVX-512 builds on machines that have them: 56 depthwise channels fill
    the 64-wide tile, 28 channels the 32-wide one (csrc/cpu/conv.cpp: kernels); silu covers the
    vector sigmoid's float64 lanes."""
    gen = torch.Generator().manual_seed(4)
    c, groups, kernel = (56, 56, 3) if case == "depthwise-56" else (28, 1, 1)
    x = torch.randn(1, c, 4, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    w = torch.randn(c, c // groups, kernel, kernel, generator=gen, dtype=torch.float64, requires_grad=True)
    b = torch.randn(c, generator=gen, dtype=torch.float64, requires_grad=True)
    fn = lambda x, w, b: bigkern.ops.conv2d(x, w, b, padding=kernel // 2, groups=groups, activation="silu")  # noqa: E731
    with bigkern.use_backend("cpu"):
        assert torch.autograd.gradcheck(fn, (x, w, b))


@pytest.mark.parametrize("input_grad", [True, False], ids=["forward-rows", "weight-gradient-rows"])
def test_gradcheck_float64_first_layer_rows(input_grad):
    """float64 through the direct row kernels (conv_direct_rows.h): 3 input channels, 18-pixel
    output rows, silu; without the input's gradient the backward is the rows' weight gradient."""
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(1, 3, 4, 18, generator=gen, dtype=torch.float64, requires_grad=input_grad)
    w = torch.randn(5, 3, 3, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    b = torch.randn(5, generator=gen, dtype=torch.float64, requires_grad=True)
    fn = lambda x, w, b: bigkern.ops.conv2d(x, w, b, padding=1, activation="silu")  # noqa: E731
    with bigkern.use_backend("cpu"):
        assert torch.autograd.gradcheck(fn, (x, w, b))


def test_opcheck():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 4, 7, 6, generator=gen).contiguous(memory_format=torch.channels_last)
    w = torch.randn(6, 2, 3, 3, generator=gen, requires_grad=True)
    b = torch.randn(6, generator=gen, requires_grad=True)
    res = torch.randn(2, 6, 4, 6, generator=gen)
    x.requires_grad_()
    for activation, save in ((0, False), (1, False), (2, True), (3, True)):
        args = (x, w, b, res, [2, 1], [1, 1, 2, 1], [1, 1], 2, activation, save)
        torch.library.opcheck(torch.ops.bigkern.conv2d.default, args)


@pytest.mark.parametrize("case", ["tiles", "rows"])
def test_opcheck_new_cpu_paths(case):
    """opcheck through the AMX forward and stride-1 dgrad (32 channels, where the processor has
    AMX) and through the first-layer row kernels (3 channels, 20-pixel NCHW rows; an input without
    gradient takes the rows' weight gradient)."""
    gen = torch.Generator().manual_seed(2)
    c, k, width, input_grad = (32, 48, 9, True) if case == "tiles" else (3, 5, 20, False)
    x = torch.randn(2, c, 5, width, generator=gen).requires_grad_(input_grad)
    w = torch.randn(k, c, 3, 3, generator=gen, requires_grad=True)
    b = torch.randn(k, generator=gen, requires_grad=True)
    for activation, save in ((0, False), (1, False), (3, True)):
        args = (x, w, b, None, [1, 1], [1, 1, 1, 1], [1, 1], 1, activation, save)
        torch.library.opcheck(torch.ops.bigkern.conv2d.default, args)


def test_unbatched_input_and_padding_forms():
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(3, 10, 9, generator=gen)
    w = torch.randn(5, 3, 4, 3, generator=gen)
    for padding in ("same", "valid", 2, (1, 3)):
        ours = bigkern.ops.conv2d(x, w, padding=padding, dilation=(2, 1))
        torch.testing.assert_close(ours, F.conv2d(x, w, padding=padding, dilation=(2, 1)), rtol=1e-5, atol=1e-5)
    assert padding_sides("same", (4, 3), (2, 1), (1, 1)) == [3, 1, 3, 1]
    assert padding_sides("same", (4, 2), (1, 1), (1, 1)) == [1, 0, 2, 1]  # torch: the odd element at the end


def test_empty_batch_gives_empty_output():
    x = torch.randn(0, 3, 8, 8, requires_grad=True)
    w = torch.randn(4, 3, 3, 3, requires_grad=True)
    y = bigkern.ops.conv2d(x, w, padding=1, activation="relu")
    assert y.shape == (0, 4, 8, 8)
    y.sum().backward()
    assert torch.equal(w.grad, torch.zeros_like(w))


@pytest.mark.parametrize("input_dtype", [torch.float32, torch.bfloat16], ids=["float32-input", "bfloat16-input"])
def test_autocast_bfloat16_on_cpu(input_dtype):
    """Under autocast the operands may differ in dtype (a bfloat16 activation from the previous
    layer, float32 weights): all run in the autocast dtype, as torch's conv does."""
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(2, 8, 9, 9, generator=gen).to(input_dtype)
    w = torch.randn(8, 8, 3, 3, generator=gen)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ours = bigkern.ops.conv2d(x, w, padding=1, activation="relu")
        theirs = torch.relu(F.conv2d(x, w, padding=1))
    assert ours.dtype == theirs.dtype == torch.bfloat16
    assert_close_to_reference(ours, theirs, torch.relu(F.conv2d(x.double(), w.double(), padding=1)), "autocast output")


def test_torch_compile_fullgraph():
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(2, 4, 8, 8, generator=gen, requires_grad=True)
    w = torch.randn(6, 4, 3, 3, generator=gen, requires_grad=True)
    b = torch.randn(6, generator=gen)

    def block(x, w, b):
        return bigkern.ops.conv2d(x, w, b, padding="same", activation="silu").sum()

    compiled = torch.compile(block, fullgraph=True, backend="aot_eager")
    expected = block(x, w, b)
    got = compiled(x, w, b)
    torch.testing.assert_close(got, expected)
    gx, gw = torch.autograd.grad(got, (x, w))
    ex, ew = torch.autograd.grad(expected, (x, w))
    torch.testing.assert_close(gx, ex)
    torch.testing.assert_close(gw, ew)


def test_nan_and_inf_propagate_like_torch():
    x = torch.randn(1, 2, 5, 5)
    x[0, 0, 2, 2] = float("nan")
    x[0, 1, 0, 0] = float("inf")
    w = torch.randn(3, 2, 3, 3)
    ours = bigkern.ops.conv2d(x, w, padding=1, activation="relu")
    theirs = torch.relu(F.conv2d(x, w, padding=1))
    assert torch.equal(torch.isnan(ours), torch.isnan(theirs))
    finite = torch.isfinite(theirs)
    torch.testing.assert_close(ours[finite], theirs[finite], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda x, w: bigkern.ops.conv2d(x[0, 0], w), "input must be 3-D or 4-D"),
        (lambda x, w: bigkern.ops.conv2d(x, w[:, :2]), "input has 4 channels but weight"),
        (lambda x, w: bigkern.ops.conv2d(x, w, groups=3), "input has 4 channels but weight"),
        (lambda x, w: bigkern.ops.conv2d(x, w, groups=0), "groups must be a positive int"),
        (lambda x, w: bigkern.ops.conv2d(x, w.double()), "weight has dtype torch.float64 but the input is torch.float32"),
        (lambda x, w: bigkern.ops.conv2d(x, w, stride=0), "stride must be positive"),
        (lambda x, w: bigkern.ops.conv2d(x, w, padding=-1), "padding must be non-negative"),
        (lambda x, w: bigkern.ops.conv2d(x, w, padding="full"), "padding='full' is not supported"),
        (lambda x, w: bigkern.ops.conv2d(x, w, stride=2, padding="same"), "padding='same' needs stride 1"),
        (lambda x, w: bigkern.ops.conv2d(x, w, dilation=5), "smaller than the kernel"),
        (lambda x, w: bigkern.ops.conv2d(x, w, activation="tanh"), "activation='tanh' is not supported"),
        (lambda x, w: bigkern.ops.conv2d(x, w, torch.randn(5)), r"bias has shape \(5,\); expected \(6,\)"),
        (lambda x, w: bigkern.ops.conv2d(x, w, residual=torch.randn(2, 6, 7, 7)), "residual has shape"),
        (lambda x, w: bigkern.ops.conv2d(x.int(), w), "input has dtype torch.int32"),
    ],
)
def test_bad_input_is_a_clear_error(call, message):
    x = torch.randn(2, 4, 7, 7)
    w = torch.randn(6, 4, 3, 3)
    with pytest.raises((ValueError, TypeError), match=message):
        call(x, w)


def test_cpu_kernel_checks_its_own_arguments():
    x = torch.randn(2, 4, 7, 7)
    w = torch.randn(6, 4, 3, 3)
    with pytest.raises(RuntimeError, match="activation must be 0"):
        torch.ops.bigkern.conv2d(x, w, None, None, [1, 1], [0, 0, 0, 0], [1, 1], 1, 7, False)
    with pytest.raises(RuntimeError, match="padding must be non-negative"):
        torch.ops.bigkern.conv2d(x, w, None, None, [1, 1], [0, -1, 0, 0], [1, 1], 1, 0, False)
    with pytest.raises(RuntimeError, match="the CPU kernels take float32, bfloat16 or float64"):
        torch.ops.bigkern.conv2d(x.half(), w.half(), None, None, [1, 1], [0, 0, 0, 0], [1, 1], 1, 0, False)


def test_float16_on_cpu_falls_back_under_auto_and_is_refused_explicitly():
    x, w = torch.randn(1, 2, 5, 5).half(), torch.randn(3, 2, 3, 3).half()
    bigkern.backend.clear_fallbacks()
    assert bigkern.ops.conv2d(x, w).dtype == torch.float16
    assert any(op == "conv2d" for op, _, _ in bigkern.backend.fallbacks())
    with bigkern.use_backend("cpu"), pytest.raises(bigkern.backend.BackendUnavailableError, match="float16"):
        bigkern.ops.conv2d(x, w)


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("channels, stride, dilation", [(37, (1, 1), (1, 1)), (70, (1, 1), (1, 1)), (120, (1, 1), (1, 1)), (16, (2, 1), (1, 2)), (8, (1, 1), (2, 2))])
def test_depthwise_cpu(channels, stride, dilation, layout):
    """The depthwise path: whole vector blocks, a channel tail, strides and dilation."""
    cfg = dict(n=2, c=channels, h=11, w=10, k=channels, kernel=(3, 3), stride=stride, padding=1, dilation=dilation,
               groups=channels, bias=True, residual=True, activation="relu", layout=layout)  # fmt: skip
    run_case(cfg, "cpu", torch.float32, channels)
