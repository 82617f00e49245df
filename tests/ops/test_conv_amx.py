"""The float32 CPU convolution forward on the AMX tile unit (csrc/cpu/conv_amx.h).

Where the processor has AMX (bigkern._C.cpu_amx()), float32 layers with at least 16 input and 16
output channels per group run their forward on the tiles, each float split into three bfloat16
parts. These cases draw random configurations in that range (channel counts on both sides of the
32-channel chunks and 16-channel column tiles, strides, dilation, every padding form, groups,
images narrower and wider than a tile, layouts, every epilogue) and hold the error against
float64 to twice torch's own float32 error (test_conv.run_case, which also checks the gradients).
test_conv_isa_builds.py runs the CPU cases of test_conv.py again with BIGKERN_CPU_AMX=0, so the
AVX-512 kernels stay tested on these machines.
"""

import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import bigkern
import bigkern._C
from tests.ops.test_conv import random_epilogue, random_padding, run_case
from tests.ops.test_rnn import assert_close_to_reference

pytestmark = pytest.mark.skipif(not bigkern._C.cpu_amx(), reason="this processor (or BIGKERN_CPU_AMX=0) gives no AMX tiles")
ROOT = Path(__file__).resolve().parents[2]
WIDTHS = [16, 17, 31, 32, 33, 48, 64, 80]


def amx_config(seed: int) -> dict:
    rng = random.Random(7000 + seed)
    groups = rng.choice([1, 1, 1, 2])
    r, s = rng.choice([1, 2, 3, 5]), rng.choice([1, 3, 4])
    stride = rng.choice([(1, 1), (1, 1), (2, 2), (2, 1), (3, 2)])
    dilation = (rng.choice([1, 1, 2]), rng.choice([1, 1, 2]))
    padding = random_padding(rng, stride)
    h = rng.randint(dilation[0] * (r - 1) + 1, 12)
    w = rng.randint(dilation[1] * (s - 1) + 1, 40)  # rows of one to several 16-pixel tiles
    return dict(
        n=rng.randint(1, 2), c=groups * rng.choice(WIDTHS), h=h, w=w, k=groups * rng.choice(WIDTHS), kernel=(r, s),
        stride=stride, padding=padding, dilation=dilation, groups=groups,
        **random_epilogue(rng, ["contiguous", "channels_last", "sliced"]),
    )  # fmt: skip


@pytest.mark.parametrize("seed", range(24))
def test_random_configurations_on_the_tiles(seed):
    run_case(amx_config(seed), "cpu", torch.float32, seed)


@pytest.mark.parametrize("seed", range(8))
def test_random_bfloat16_configurations_on_the_tiles(seed):
    """bfloat16 operands are their own first part: one tile product per multiply (conv_amx.h)."""
    run_case(amx_config(100 + seed), "cpu", torch.bfloat16, seed)


@pytest.mark.parametrize("c", [64, 512])
def test_error_of_long_reductions_stays_within_twice_torchs(c):
    """4608 products per output at 512 channels: the x0*w0 sums carry the rounding error alone,
    the five smaller partial products have their own accumulators (see conv_amx.h)."""
    gen = torch.Generator().manual_seed(c)
    x = torch.randn(2, c, 9, 23, generator=gen)
    w = torch.randn(48, c, 3, 3, generator=gen)
    ours = bigkern.ops.conv2d(x, w, padding=1)
    theirs = F.conv2d(x, w, padding=1)
    ref = F.conv2d(x.double(), w.double(), padding=1)
    assert_close_to_reference(ours, theirs, ref, f"{c} channels")


def test_wide_dynamic_range():
    """Values from 1e-30 to 1e30 in one tensor: the parts of each float keep its exponent."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, 32, 6, 7, generator=gen) * torch.logspace(-30, 30, 32).view(1, 32, 1, 1)
    w = torch.randn(16, 32, 3, 3, generator=gen)
    ours = bigkern.ops.conv2d(x, w, padding=1)
    ref = F.conv2d(x.double(), w.double(), padding=1)
    assert_close_to_reference(ours, F.conv2d(x, w, padding=1), ref, "1e-30..1e30")


def test_nan_and_inf_propagate_like_torch():
    x = torch.randn(1, 32, 6, 20)
    x[0, 3, 2, 2] = float("nan")
    x[0, 7, 0, 15] = float("inf")
    x[0, 9, 5, 8] = -float("inf")
    w = torch.randn(16, 32, 3, 3)
    ours = bigkern.ops.conv2d(x, w, padding=1)
    theirs = F.conv2d(x, w, padding=1)
    assert torch.equal(torch.isnan(ours), torch.isnan(theirs))
    assert torch.equal(torch.isinf(ours), torch.isinf(theirs))
    assert torch.equal(ours[torch.isinf(ours)], theirs[torch.isinf(theirs)])
    finite = torch.isfinite(theirs)
    torch.testing.assert_close(ours[finite], theirs[finite], rtol=1e-5, atol=1e-4)


def _child(code: str, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], env=dict(os.environ, **env), cwd=ROOT, capture_output=True,
                          text=True, timeout=300)  # fmt: skip


def test_layers_in_range_take_the_tiles_and_others_do_not(tmp_path):
    """The same layers with BIGKERN_CPU_AMX=0 (AVX-512 kernels) in a child: a 64-channel layer's
    output differs in its last bits (another summation order), a 3-channel one's is identical."""
    code = (
        "import sys, torch, bigkern\n"
        "g = torch.Generator().manual_seed(1)\n"
        "x = torch.randn(2, 64, 9, 19, generator=g); w = torch.randn(32, 64, 3, 3, generator=g)\n"
        "x3 = torch.randn(2, 3, 9, 19, generator=g); w3 = torch.randn(32, 3, 3, 3, generator=g)\n"
        "torch.save([bigkern.ops.conv2d(x, w, padding=1), bigkern.ops.conv2d(x3, w3, padding=1)], sys.argv[-1])\n"
    )  # fmt: skip
    outputs = {}
    for amx in ("0", "1"):
        path = tmp_path / f"amx{amx}.pt"
        result = subprocess.run([sys.executable, "-c", code, str(path)], env=dict(os.environ, BIGKERN_CPU_AMX=amx),
                                cwd=ROOT, capture_output=True, text=True, timeout=300)  # fmt: skip
        assert result.returncode == 0, result.stderr[-2000:]
        outputs[amx] = torch.load(path)
    (wide0, narrow0), (wide1, narrow1) = outputs["0"], outputs["1"]
    assert not torch.equal(wide0, wide1)
    torch.testing.assert_close(wide0, wide1, rtol=1e-5, atol=1e-4)
    assert torch.equal(narrow0, narrow1)


def test_bad_environment_value_is_a_clear_error():
    result = _child("import bigkern._C as C; C.cpu_amx()", BIGKERN_CPU_AMX="yes")
    assert result.returncode != 0
    assert "BIGKERN_CPU_AMX=yes is not supported; it takes 0" in result.stderr


@pytest.mark.parametrize(
    "kernel, padding, dilation, groups, layout",
    [
        ((3, 3), 1, (1, 1), 1, "channels_last"),
        ((3, 3), "valid", (1, 1), 1, "contiguous"),
        ((1, 1), 1, (1, 1), 1, "contiguous"),  # padding past the kernel: the flipped forward crops
        ((3, 3), 3, (1, 1), 2, "channels_last"),
        ((5, 3), (3, 1), (2, 1), 1, "sliced"),
        ((2, 4), "same", (1, 2), 1, "contiguous"),
    ],
)
def test_input_gradient_on_the_tiles(kernel, padding, dilation, groups, layout):
    """At stride 1 the input gradient of layers the 64-wide backward build takes runs on the tiles
    as a forward of the output gradient with the flipped kernel (conv_amx.h: input_gradient)."""
    cfg = dict(n=2, c=64 * groups, h=9, w=21, k=64 * groups, kernel=kernel, stride=(1, 1), padding=padding,
               dilation=dilation, groups=groups, bias=True, residual=False, activation="relu", layout=layout)  # fmt: skip
    run_case(cfg, "cpu", torch.float32, 3)


def test_large_batches_are_split_and_computed_in_parts():
    """Images whose parts exceed the 64 MB budget go through the tiles in batches (here one image
    at a time: 2 x 64 x 300 x 300 parts take 68 MB); the second batch's outputs land at image 1."""
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(2, 64, 300, 300, generator=gen)
    w = torch.randn(16, 64, 3, 3, generator=gen)
    b = torch.randn(16, generator=gen)
    ours = bigkern.ops.conv2d(x, w, b, padding=1, activation="relu")
    theirs = F.conv2d(x, w, b, padding=1).relu()
    ref = F.conv2d(x.double(), w.double(), b.double(), padding=1).relu()
    assert_close_to_reference(ours, theirs, ref, "two batches of one image")
