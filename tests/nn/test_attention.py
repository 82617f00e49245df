"""bigkern.nn.MultiheadAttention against torch.nn.MultiheadAttention with the same weights.

Every case runs on CPU tensors under each backend that serves them (tests.nn._attention_testing.py):
"cpu" and "torch" for the grids, "triton" (interpreted) on tiny cases. Masks never hide every
key of a query row here, except in the one test about such rows.
"""

import copy

import pytest
import torch

import bigkern
from tests.nn._attention_testing import any_backend, assert_grads_like_torch, backend  # noqa: F401  (fixtures)

E, H, N, L, S = 16, 4, 3, 5, 7

MODULES = {
    "seq_first": dict(),
    "batch_first": dict(batch_first=True),
    "no_bias": dict(bias=False, batch_first=True),
    "bias_kv_zero_attn": dict(add_bias_kv=True, add_zero_attn=True),
    "kdim_vdim": dict(kdim=10, vdim=12, batch_first=True),
    "kdim_zero_attn": dict(kdim=6, vdim=6, add_zero_attn=True, bias=False),
}
INPUTS = {  # which inputs each module takes: self-attention, key is value, three tensors
    "seq_first": ["self", "kv", "cross"],
    "batch_first": ["self", "kv", "cross"],
    "no_bias": ["self", "cross"],
    "bias_kv_zero_attn": ["self", "kv"],
    "kdim_vdim": ["cross"],
    "kdim_zero_attn": ["kv"],
}
MASKS = [
    "none", "kpm_bool", "kpm_float", "attn2_bool", "attn2_float", "attn3_bool", "attn3_float",
    "both_bool", "both_float", "both3_bool", "causal_hint", "causal_hint_kpm", "wrong_causal_hint",
]  # fmt: skip
GRID = [(m, i, k) for m in MODULES for i in INPUTS[m] for k in MASKS]


def make_modules(dropout=0.0, dtype=torch.float32, **kwargs):
    """(ours, torch's) with identical random weights (biases too, which torch initialises to zero)."""
    ours = bigkern.nn.MultiheadAttention(E, H, dropout=dropout, dtype=dtype, **kwargs)
    theirs = torch.nn.MultiheadAttention(E, H, dropout=dropout, dtype=dtype, **kwargs)
    with torch.no_grad():
        for p in ours.parameters():
            p.copy_(torch.randn_like(p) * 0.5)
    theirs.load_state_dict(ours.state_dict())
    return ours, theirs


def make_inputs(module, inputs, batched=True, dtype=torch.float32):
    """query, key, value in the module's layout. "self": one tensor; "kv": key is value; "cross": three."""
    src_len = L if inputs == "self" else S

    def seq(length, dim):
        if not batched:
            return torch.randn(length, dim, dtype=dtype)
        return torch.randn((N, length, dim) if module.batch_first else (length, N, dim), dtype=dtype)

    if inputs == "self":
        q = seq(L, E)
        return q, q, q
    if inputs == "kv":
        k = seq(src_len, module.kdim)
        return seq(L, E), k, k
    return seq(L, E), seq(src_len, module.kdim), seq(src_len, module.vdim)


def make_masks(kind, src_len, batched=True, dtype=torch.float32):
    """forward's mask kwargs for ``kind``; key 0 stays visible to every query (no fully masked row)."""
    batch = (N,) if batched else ()
    heads = N * H if batched else H

    def bool_mask(shape):
        mask = torch.rand(shape) < 0.4
        mask[..., 0] = False
        return mask

    def float_mask(shape):
        mask = torch.randn(shape, dtype=dtype)
        return mask.masked_fill(bool_mask(shape), float("-inf"))

    causal = torch.nn.Transformer.generate_square_subsequent_mask(L, dtype=dtype)[:, :src_len]
    if src_len > L:
        causal = torch.cat([causal, torch.full((L, src_len - L), float("-inf"), dtype=dtype)], dim=1)
    return {
        "none": {},
        "kpm_bool": dict(key_padding_mask=bool_mask((*batch, src_len))),
        "kpm_float": dict(key_padding_mask=float_mask((*batch, src_len))),
        "attn2_bool": dict(attn_mask=bool_mask((L, src_len))),
        "attn2_float": dict(attn_mask=float_mask((L, src_len))),
        "attn3_bool": dict(attn_mask=bool_mask((heads, L, src_len))),
        "attn3_float": dict(attn_mask=float_mask((heads, L, src_len))),
        "both_bool": dict(key_padding_mask=bool_mask((*batch, src_len)), attn_mask=bool_mask((L, src_len))),
        "both_float": dict(key_padding_mask=float_mask((*batch, src_len)), attn_mask=float_mask((L, src_len))),
        "both3_bool": dict(key_padding_mask=bool_mask((*batch, src_len)), attn_mask=bool_mask((heads, L, src_len))),
        "causal_hint": dict(attn_mask=causal, is_causal=True),
        "causal_hint_kpm": dict(attn_mask=causal, is_causal=True, key_padding_mask=float_mask((*batch, src_len))),
        # torch trusts the hint over the mask; so must we
        "wrong_causal_hint": dict(attn_mask=float_mask((L, src_len)), is_causal=True),
    }[kind]


@pytest.fixture
def op_calls(monkeypatch):
    """Records the arguments of every bigkern.ops.attention call."""
    calls = []
    real = bigkern.ops.attention

    def spy(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
        calls.append(dict(q=q, k=k, v=v, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal))
        return real(q, k, v, attn_mask, dropout_p, is_causal, scale, enable_gqa)

    monkeypatch.setattr(bigkern.ops, "attention", spy)
    return calls


def run_both(ours, theirs, q, k, v, **kwargs):
    return ours(q, k, v, need_weights=False, **kwargs)[0], theirs(q, k, v, need_weights=False, **kwargs)[0]


# ---------------------------------------------------------------------------------------------
# Module surface
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", MODULES)
def test_constructor_repr_state_dict_and_init_match_torch(name):
    kwargs = dict(MODULES[name], dropout=0.25)
    torch.manual_seed(7)
    ours = bigkern.nn.MultiheadAttention(E, H, **kwargs)
    torch.manual_seed(7)
    theirs = torch.nn.MultiheadAttention(E, H, **kwargs)
    assert isinstance(ours, torch.nn.MultiheadAttention)
    assert repr(ours) == repr(theirs)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    for (key, a), b in zip(ours.state_dict().items(), theirs.state_dict().values()):
        assert torch.equal(a, b), f"{key}: initialised differently from torch under the same seed"
    for attr in ("embed_dim", "kdim", "vdim", "num_heads", "head_dim", "dropout", "batch_first", "add_zero_attn",
                 "_qkv_same_embed_dim"):  # fmt: skip
        assert getattr(ours, attr) == getattr(theirs, attr)


@pytest.mark.parametrize("name", MODULES)
def test_state_dict_round_trips_both_ways(name, backend):
    ours, theirs = make_modules(**MODULES[name])
    fresh_ours = bigkern.nn.MultiheadAttention(E, H, **MODULES[name])
    fresh_ours.load_state_dict(theirs.state_dict())
    fresh_theirs = torch.nn.MultiheadAttention(E, H, **MODULES[name])
    fresh_theirs.load_state_dict(ours.state_dict())
    q, k, v = make_inputs(ours, INPUTS[name][0])
    got, want = run_both(fresh_ours, fresh_theirs, q, k, v)
    torch.testing.assert_close(got, want)


# ---------------------------------------------------------------------------------------------
# Parity
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name,inputs,mask", GRID, ids=["-".join(c) for c in GRID])
def test_matches_torch(name, inputs, mask, backend, op_calls):
    ours, theirs = make_modules(**MODULES[name])
    ours.eval(), theirs.eval()
    q, k, v = make_inputs(ours, inputs)
    masks = make_masks(mask, k.shape[1 if ours.batch_first else 0])
    got, want = run_both(ours, theirs, q, k, v, **masks)
    assert len(op_calls) == 1, "the attention did not run through bigkern.ops.attention"
    assert got.shape == want.shape
    torch.testing.assert_close(got, want)


@pytest.mark.parametrize("name,inputs", [("seq_first", "self"), ("batch_first", "cross"), ("bias_kv_zero_attn", "kv"),
                                         ("kdim_vdim", "cross")])  # fmt: skip
@pytest.mark.parametrize("mask", ["none", "kpm_bool", "attn3_float", "both_bool", "causal_hint"])
def test_unbatched_input_matches_torch(name, inputs, mask, backend, op_calls):
    ours, theirs = make_modules(**MODULES[name])
    q, k, v = make_inputs(ours, inputs, batched=False)
    got, want = run_both(ours, theirs, q, k, v, **make_masks(mask, k.shape[0], batched=False))
    assert len(op_calls) == 1
    assert got.shape == want.shape == (L, E)
    torch.testing.assert_close(got, want)


@pytest.mark.parametrize("mask", ["none", "both_float", "attn3_bool", "causal_hint_kpm"])
def test_float64_matches_torch(mask, backend):
    ours, theirs = make_modules(dtype=torch.float64, add_bias_kv=True)
    q, k, v = make_inputs(ours, "kv", dtype=torch.float64)
    got, want = run_both(ours, theirs, q, k, v, **make_masks(mask, S, dtype=torch.float64))
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, want)


def output_and_grads(module, q, k, v, masks, weight):
    """Output and the gradients of sum(output * weight) w.r.t. query and every parameter, in the module's dtype."""
    dtype = next(module.parameters()).dtype
    cast = {}  # keeps "query is key" identities (they select the projection path)
    q, k, v = (cast.setdefault(id(t), t.detach().to(dtype)) for t in (q, k, v))
    q.requires_grad_(True)
    masks = {name: m.to(dtype) if torch.is_tensor(m) and m.is_floating_point() else m for name, m in masks.items()}
    out = module(q, k, v, need_weights=False, **masks)[0]
    return out, torch.autograd.grad((out * weight.to(dtype)).sum(), [q, *module.parameters()])


def assert_train_mode_matches_torch(ours, theirs, q, k, v, masks):
    """Outputs close to torch's; gradients by the rule of assert_grads_like_torch (float64 reference)."""
    reference = copy.deepcopy(theirs).double()
    weight = torch.randn(*q.shape[:-1], E)  # the output is shaped like the query
    got, grads = output_and_grads(ours, q, k, v, masks, weight)
    want, torch_grads = output_and_grads(theirs, q, k, v, masks, weight)
    _, reference_grads = output_and_grads(reference, q, k, v, masks, weight)
    torch.testing.assert_close(got, want)
    names = ["query", *(name for name, _ in ours.named_parameters())]
    assert_grads_like_torch(names, grads, torch_grads, reference_grads)


@pytest.mark.parametrize("name,inputs", [("seq_first", "self"), ("bias_kv_zero_attn", "kv"), ("kdim_vdim", "cross")])
@pytest.mark.parametrize("mask", ["kpm_bool", "both_float", "causal_hint"])
def test_train_mode_gradients_match_torch(name, inputs, mask, backend):
    ours, theirs = make_modules(**MODULES[name])  # dropout 0, training mode
    q, k, v = make_inputs(ours, inputs)
    assert_train_mode_matches_torch(ours, theirs, q, k, v, make_masks(mask, k.shape[1 if ours.batch_first else 0]))


@pytest.mark.parametrize("mask", ["none", "both_bool"])
def test_tiny_case_on_every_backend(mask, any_backend, op_calls):
    ours, theirs = make_modules(batch_first=True, add_zero_attn=True)  # training mode, dropout 0
    q, k, v = make_inputs(ours, "kv")
    assert_train_mode_matches_torch(ours, theirs, q, k, v, make_masks(mask, S))
    assert len(op_calls) == 1


def test_eval_never_takes_torchs_fast_path(backend, op_calls):
    # Eval mode, no grad, batch_first self-attention with an even head count: torch would run
    # torch._native_multi_head_attention here; ours must still run the kernel.
    ours, theirs = make_modules(batch_first=True)
    ours.eval(), theirs.eval()
    x = torch.randn(N, L, E)
    kpm = make_masks("kpm_bool", L)["key_padding_mask"]
    with torch.no_grad():
        got, want = ours(x, x, x, key_padding_mask=kpm)[0], theirs(x, x, x, key_padding_mask=kpm)[0]
        got_nw, want_nw = run_both(ours, theirs, x, x, x, key_padding_mask=kpm)
    assert len(op_calls) == 1  # only the need_weights=False call
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(got_nw, want_nw)


# ---------------------------------------------------------------------------------------------
# How the arguments reach the op
# ---------------------------------------------------------------------------------------------


def test_masks_reach_the_op_without_expansion(backend, op_calls):
    ours, _ = make_modules(batch_first=True)
    x = torch.randn(N, L, E)
    kpm = make_masks("kpm_bool", L)["key_padding_mask"]
    attn = make_masks("attn2_bool", L)["attn_mask"]
    causal = torch.nn.Transformer.generate_square_subsequent_mask(L)

    ours(x, x, x, key_padding_mask=kpm, need_weights=False)
    mask = op_calls[-1]["attn_mask"]
    assert mask.shape == (N, 1, 1, L) and mask.dtype == torch.bool  # broadcast over heads and queries
    assert torch.equal(mask[:, 0, 0], ~kpm)

    ours(x, x, x, attn_mask=attn, need_weights=False)
    assert op_calls[-1]["attn_mask"].shape == (L, L)

    ours(x, x, x, key_padding_mask=kpm, attn_mask=attn, need_weights=False)
    mask = op_calls[-1]["attn_mask"]
    assert mask.shape == (N, 1, L, L) and mask.dtype == torch.bool  # one merged mask, not per head
    assert torch.equal(mask, ~(attn | kpm[:, None, None, :]))

    ours(x, x, x, attn_mask=causal, is_causal=True, need_weights=False)
    assert op_calls[-1]["attn_mask"] is None and op_calls[-1]["is_causal"] is True

    ours(x, x, x, attn_mask=causal, is_causal=True, key_padding_mask=kpm.float(), need_weights=False)
    mask = op_calls[-1]["attn_mask"]
    assert op_calls[-1]["is_causal"] is False and mask.shape == (N, 1, L, L)


def test_heads_reach_the_op_as_views_of_the_projection(backend, op_calls):
    ours, _ = make_modules()
    x = torch.randn(L, N, E)
    ours(x, x, x, need_weights=False)
    call = op_calls[-1]
    assert call["q"].shape == (N, H, L, E // H) and call["q"].stride(-1) == 1
    # one (L, N, 3E) projection: q, k and v are views of it
    assert call["q"].untyped_storage().data_ptr() == call["k"].untyped_storage().data_ptr()


def test_dropout_runs_in_the_op_in_training_only(backend, op_calls):
    ours, _ = make_modules(dropout=0.3, batch_first=True)
    x = torch.randn(N, L, E)
    torch.manual_seed(3)
    first = ours(x, x, x, need_weights=False)[0]
    torch.manual_seed(3)
    again = ours(x, x, x, need_weights=False)[0]
    assert op_calls[-1]["dropout_p"] == 0.3
    torch.testing.assert_close(first, again)  # the op's generator is seeded from torch's
    ours.eval()
    ours(x, x, x, need_weights=False)
    assert op_calls[-1]["dropout_p"] == 0.0


# ---------------------------------------------------------------------------------------------
# torch's behaviour kept: need_weights, mask rules, errors, fully masked rows
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("average", [True, False])
def test_need_weights_runs_torchs_implementation(average, backend, op_calls):
    ours, theirs = make_modules(add_bias_kv=True)
    q, k, v = make_inputs(ours, "kv")
    masks = make_masks("both_bool", S)
    out, weights = ours(q, k, v, average_attn_weights=average, **masks)  # need_weights defaults to True
    want_out, want_weights = theirs(q, k, v, average_attn_weights=average, **masks)
    assert not op_calls
    torch.testing.assert_close(out, want_out)
    torch.testing.assert_close(weights, want_weights)


def test_mismatched_mask_types_warn_and_match_torch(backend):
    ours, theirs = make_modules(batch_first=True)
    x = torch.randn(N, L, E)
    kpm = make_masks("kpm_bool", L)["key_padding_mask"]
    attn = make_masks("attn2_float", L)["attn_mask"]
    for masks in (dict(key_padding_mask=kpm, attn_mask=attn), dict(key_padding_mask=attn[:N].exp(), attn_mask=attn < 0),
                  dict(key_padding_mask=kpm.half() * -2, attn_mask=attn)):  # fmt: skip
        with pytest.warns(UserWarning, match="mismatched key_padding_mask and attn_mask is deprecated"):
            got = ours(x, x, x, need_weights=False, **masks)[0]
        with pytest.warns(UserWarning, match="mismatched key_padding_mask and attn_mask"):
            want = theirs(x, x, x, need_weights=False, **masks)[0]
        torch.testing.assert_close(got, want)


BAD_CALLS = {
    "int key_padding_mask": lambda q, kpm, attn: dict(key_padding_mask=kpm.int()),
    "int attn_mask": lambda q, kpm, attn: dict(attn_mask=attn.long()),
    "is_causal without attn_mask": lambda q, kpm, attn: dict(is_causal=True),
    "attn_mask of wrong 2-D shape": lambda q, kpm, attn: dict(attn_mask=attn[:, :-1]),
    "attn_mask of wrong 3-D shape": lambda q, kpm, attn: dict(attn_mask=attn.expand(N, L, L)),
    "4-D attn_mask": lambda q, kpm, attn: dict(attn_mask=attn.expand(N, H, L, L)),
    "3-D key_padding_mask": lambda q, kpm, attn: dict(key_padding_mask=kpm[None]),
    "key_padding_mask of wrong batch": lambda q, kpm, attn: dict(key_padding_mask=kpm[:-1]),
    "key_padding_mask of wrong length": lambda q, kpm, attn: dict(key_padding_mask=kpm[:, :-1]),
}


@pytest.mark.parametrize("case", BAD_CALLS)
def test_bad_input_raises_like_torch(case, backend):
    ours, theirs = make_modules(batch_first=True)
    x = torch.randn(N, L, E)
    args = BAD_CALLS[case](x, make_masks("kpm_bool", L)["key_padding_mask"], make_masks("attn2_bool", L)["attn_mask"])
    with pytest.raises(Exception) as want:
        theirs(x, x, x, need_weights=False, **args)
    with pytest.raises(want.type):
        ours(x, x, x, need_weights=False, **args)


@pytest.mark.parametrize("bad", ["4-D query", "2-D key with 3-D query", "wrong embed dim", "key and value differ"])
def test_bad_shapes_raise_like_torch(bad, backend):
    ours, theirs = make_modules()
    q, k, v = make_inputs(ours, "cross")
    q, k, v = {
        "4-D query": (q[None], k[None], v[None]),
        "2-D key with 3-D query": (q, k[:, 0], v[:, 0]),
        "wrong embed dim": (q[..., :-1], k, v),
        "key and value differ": (q, k, v[:-1]),
    }[bad]
    with pytest.raises(Exception) as want:
        theirs(q, k, v, need_weights=False)
    with pytest.raises(want.type):
        ours(q, k, v, need_weights=False)


def test_fully_masked_rows_match_torchs_sdpa_path(backend):
    # A query that may see no key: zero attention, so the output is the output projection's
    # bias, as in torch's SDPA path (training mode). torch's fast path and need_weights=True
    # path give NaN instead.
    ours, theirs = make_modules(batch_first=True)
    x = torch.randn(N, L, E)
    kpm = torch.zeros(N, L, dtype=torch.bool)
    kpm[1] = True
    got, want = run_both(ours, theirs, x, x, x, key_padding_mask=kpm)
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(got[1], ours.out_proj.bias.expand(L, E))


# ---------------------------------------------------------------------------------------------
# torch.compile
# ---------------------------------------------------------------------------------------------


class SelfAttention(torch.nn.Module):
    def __init__(self, attention):
        super().__init__()
        self.attention = attention

    def forward(self, x, key_padding_mask):
        return self.attention(x, x, x, key_padding_mask=key_padding_mask, need_weights=False)[0]


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_compiles_fullgraph(mode, backend):
    ours, _ = make_modules(batch_first=True, add_zero_attn=True)
    model = SelfAttention(ours).train(mode == "train")
    x = torch.randn(N, L, E, requires_grad=True)
    kpm = make_masks("kpm_float", L)["key_padding_mask"]
    eager = model(x, kpm)
    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")(x, kpm)
    torch.testing.assert_close(compiled, eager)
    (g_eager,) = torch.autograd.grad(eager.sum(), x)
    (g_compiled,) = torch.autograd.grad(compiled.sum(), x)
    torch.testing.assert_close(g_compiled, g_eager)


# ---------------------------------------------------------------------------------------------
# swap
# ---------------------------------------------------------------------------------------------


class Pooler(torch.nn.Module):
    """Attention pooling as users write it: torch's default need_weights=True."""

    def __init__(self):
        super().__init__()
        self.attention = torch.nn.MultiheadAttention(E, H, batch_first=True)
        self.query = torch.nn.Parameter(torch.randn(1, 1, E))
        self.head = torch.nn.Linear(E, 2)

    def forward(self, x):
        pooled, _ = self.attention(self.query.expand(x.shape[0], -1, -1), x, x)
        fused, _ = self.attention(x, x, x, need_weights=False)
        return self.head(pooled[:, 0] + fused.mean(1))


def test_swap_and_unswap_multihead_attention(backend, op_calls):
    model = Pooler().eval()
    x = torch.randn(N, L, E)
    expected = model(x)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    attention = model.attention

    report = bigkern.swap(model)

    assert [e.name for e in report.swapped] == ["attention"]
    assert model.attention is attention and type(attention) is bigkern.nn.MultiheadAttention
    assert "need_weights=True (torch's default) run torch's implementation" in str(report)
    torch.testing.assert_close(model(x), expected)
    assert len(op_calls) == 1  # the need_weights=False call only
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    assert bigkern.unswap(model) == 1 and type(model.attention) is torch.nn.MultiheadAttention
    torch.testing.assert_close(model(x), expected)
