"""The accuracy rule of every bigkern test (the flash-attention rule).

float64 / float32: close to PyTorch's own op at the dtype's usual tolerance.
float16 / bfloat16: the error of bigkern against a float64 reference must be at most twice
the error of PyTorch's own op in that dtype against the same reference, plus a few units in
the last place of the dtype (so an op PyTorch computes exactly does not demand exactness of us
when the summation order differs).
"""

import torch

ULP = {torch.float16: 2.0**-10, torch.bfloat16: 2.0**-7, torch.float32: 2.0**-23, torch.float64: 2.0**-52}


def assert_matches(ours: torch.Tensor, torch_out: torch.Tensor, reference64: torch.Tensor, what: str = "output"):
    assert ours.shape == torch_out.shape, f"{what}: shape {tuple(ours.shape)} != torch's {tuple(torch_out.shape)}"
    assert ours.dtype == torch_out.dtype, f"{what}: dtype {ours.dtype} != torch's {torch_out.dtype}"
    nan_ours, nan_ref = torch.isnan(ours), torch.isnan(torch_out)
    assert torch.equal(nan_ours, nan_ref), f"{what}: NaN positions differ from torch's"
    ours64 = ours.double().masked_fill(nan_ours, 0)
    torch64 = torch_out.double().masked_fill(nan_ref, 0)
    ref = reference64.double().masked_fill(nan_ref, 0)
    if ours.dtype in (torch.float16, torch.bfloat16):
        ours_err = (ours64 - ref).abs().max().item() if ours.numel() else 0.0
        torch_err = (torch64 - ref).abs().max().item() if ours.numel() else 0.0
        scale = ref.abs().max().item() if ours.numel() else 0.0
        bound = 2 * torch_err + 4 * ULP[ours.dtype] * max(scale, 1.0)
        assert ours_err <= bound, f"{what}: max error {ours_err:.3g} > 2 x torch's {torch_err:.3g} + slack"
    else:
        torch.testing.assert_close(ours64, torch64, msg=lambda m: f"{what}: {m}",
                                   **({"rtol": 1.3e-6, "atol": 1e-5} if ours.dtype == torch.float32 else {}))
