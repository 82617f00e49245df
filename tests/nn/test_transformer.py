"""bigkern.nn Transformer layers against torch.nn's with the same weights, and swapping them in.

Runs on CPU tensors under the "cpu" and "torch" backends (tests.nn._attention_testing.py).
Torch's reference modules take their fused paths where they would (eval mode, no grad):
bigkern's never do, and must still give torch's results.
"""

import contextlib
import copy

import pytest
import torch
import torch.nn.functional as F

import bigkern
from tests.nn._attention_testing import assert_grads_like_torch, backend  # noqa: F401  (fixture)

pytestmark = [
    pytest.mark.filterwarnings("ignore:enable_nested_tensor is True"),
    pytest.mark.filterwarnings("ignore:The PyTorch API of nested tensors is in prototype stage"),
]

D, HEADS, FF, N, S, T = 16, 4, 24, 3, 7, 5

LAYER_KWARGS = {
    "default": dict(),
    "batch_first": dict(batch_first=True),
    "norm_first_gelu": dict(norm_first=True, activation="gelu", batch_first=True),
    "no_bias_callable": dict(bias=False, activation=F.silu, layer_norm_eps=1e-3),
}


def build(name, *args, **kwargs):
    """(bigkern's, torch's) module of class ``name``, built under one seed: identical weights."""
    kwargs.setdefault("dropout", 0.0)
    torch.manual_seed(11)
    ours = getattr(bigkern.nn, name)(*args, **kwargs)
    torch.manual_seed(11)
    theirs = getattr(torch.nn, name)(*args, **kwargs)
    return ours, theirs


def build_stack(name, layer_kwargs, num_layers=2, norm=True):
    """(bigkern, torch) TransformerEncoder/Decoder of ``num_layers`` layers with identical weights."""
    layer_name = name + "Layer"
    ours_layer, theirs_layer = build(layer_name, D, HEADS, FF, **layer_kwargs)
    ours_norm, theirs_norm = (torch.nn.LayerNorm(D), torch.nn.LayerNorm(D)) if norm else (None, None)
    ours = getattr(bigkern.nn, name)(ours_layer, num_layers, ours_norm)
    theirs = getattr(torch.nn, name)(theirs_layer, num_layers, theirs_norm)
    with torch.no_grad():
        for p in ours.parameters():
            p.copy_(torch.randn_like(p) * 0.3 + (1.0 if p.dim() == 1 and p.shape[0] == D else 0.0))
    theirs.load_state_dict(ours.state_dict())
    return ours, theirs


def seq(length, batch_first, batched=True):
    if not batched:
        return torch.randn(length, D)
    return torch.randn((N, length, D) if batch_first else (length, N, D))


def padding_mask(length, kind, batched=True):
    """Right padding of random lengths (key 0 always kept), as bool or additive float."""
    lengths = torch.randint(1, length + 1, (N,))
    lengths[0] = length
    mask = torch.arange(length) >= lengths[:, None]
    if not batched:
        mask = mask[1]
    return mask if kind == "bool" else mask.float().masked_fill(mask, float("-inf"))


def attn_mask(tgt_len, src_len, kind):
    """A random mask hiding ~40% of the keys (never key 0), as bool or additive float."""
    mask = torch.rand(tgt_len, src_len) < 0.4
    mask[:, 0] = False
    return mask if kind == "bool" else torch.randn(tgt_len, src_len).masked_fill(mask, float("-inf"))


def causal(length):
    return torch.nn.Transformer.generate_square_subsequent_mask(length)


@pytest.fixture
def op_calls(monkeypatch):
    calls = []
    real = bigkern.ops.attention

    def spy(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
        calls.append(dict(attn_mask=attn_mask, is_causal=is_causal))
        return real(q, k, v, attn_mask, dropout_p, is_causal, scale, enable_gqa)

    monkeypatch.setattr(bigkern.ops, "attention", spy)
    return calls


@contextlib.contextmanager
def torch_fast_path(enabled):
    previous = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(enabled)
    try:
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(previous)


def attention_classes(module):
    return [type(m) for m in module.modules() if isinstance(m, torch.nn.MultiheadAttention)]


# ---------------------------------------------------------------------------------------------
# Constructors: torch's, with bigkern attention inside
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs", LAYER_KWARGS.values(), ids=LAYER_KWARGS)
@pytest.mark.parametrize("name,args", [
    ("TransformerEncoderLayer", (D, HEADS, FF)),
    ("TransformerDecoderLayer", (D, HEADS, FF)),
    ("Transformer", (D, HEADS, 2, 1, FF)),
], ids=lambda v: v if isinstance(v, str) else "")  # fmt: skip
def test_constructor_state_dict_and_repr_match_torch(name, args, kwargs):
    ours, theirs = build(name, *args, dropout=0.1, **kwargs)
    assert isinstance(ours, getattr(torch.nn, name))
    assert repr(ours) == repr(theirs)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    for (key, a), b in zip(ours.state_dict().items(), theirs.state_dict().values()):
        assert torch.equal(a, b), f"{key}: initialised differently from torch under the same seed"
    assert set(attention_classes(ours)) == {bigkern.nn.MultiheadAttention}
    fresh = getattr(torch.nn, name)(*args, **kwargs)
    fresh.load_state_dict(ours.state_dict())  # and back the other way
    ours.load_state_dict(fresh.state_dict())


def test_stacks_of_torch_layers_become_bigkern():
    torch_layer = torch.nn.TransformerEncoderLayer(D, HEADS, FF)
    encoder = bigkern.nn.TransformerEncoder(torch_layer, 2, enable_nested_tensor=False)
    assert type(torch_layer.self_attn) is torch.nn.MultiheadAttention  # the caller's layer is not touched
    assert {type(layer) for layer in encoder.layers} == {bigkern.nn.TransformerEncoderLayer}
    assert set(attention_classes(encoder)) == {bigkern.nn.MultiheadAttention}
    decoder = bigkern.nn.TransformerDecoder(torch.nn.TransformerDecoderLayer(D, HEADS, FF), 2)
    assert set(attention_classes(decoder)) == {bigkern.nn.MultiheadAttention}
    custom = torch.nn.TransformerEncoder(torch.nn.TransformerEncoderLayer(D, HEADS, FF), 1, enable_nested_tensor=False)
    model = bigkern.nn.Transformer(D, HEADS, custom_encoder=custom, num_decoder_layers=1, dim_feedforward=FF)
    assert model.encoder is custom and type(custom.layers[0].self_attn) is torch.nn.MultiheadAttention
    assert set(attention_classes(model.decoder)) == {bigkern.nn.MultiheadAttention}


# ---------------------------------------------------------------------------------------------
# Parity
# ---------------------------------------------------------------------------------------------

ENCODER_MASKS = {
    "none": lambda b: {},
    "src_mask_bool": lambda b: dict(src_mask=attn_mask(S, S, "bool")),
    "src_mask_float": lambda b: dict(src_mask=attn_mask(S, S, "float")),
    "kpm_bool": lambda b: dict(src_key_padding_mask=padding_mask(S, "bool", b)),
    "kpm_float": lambda b: dict(src_key_padding_mask=padding_mask(S, "float", b)),
    "both_bool": lambda b: dict(src_mask=attn_mask(S, S, "bool"), src_key_padding_mask=padding_mask(S, "bool", b)),
    "causal": lambda b: dict(src_mask=causal(S), is_causal=True),
    "causal_kpm": lambda b: dict(src_mask=causal(S), is_causal=True, src_key_padding_mask=padding_mask(S, "float", b)),
}


@pytest.mark.parametrize("mode", ["eval", "train"])
@pytest.mark.parametrize("masks", ENCODER_MASKS)
@pytest.mark.parametrize("layer_kwargs", LAYER_KWARGS.values(), ids=LAYER_KWARGS)
def test_encoder_layer_matches_torch(layer_kwargs, masks, mode, backend, op_calls):
    ours, theirs = build("TransformerEncoderLayer", D, HEADS, FF, **layer_kwargs)
    ours.train(mode == "train"), theirs.train(mode == "train")
    x = seq(S, ours.self_attn.batch_first)
    args = ENCODER_MASKS[masks](True)
    with torch.no_grad():  # lets torch take its fused layer in eval mode where it can
        got, want = ours(x, **args), theirs(x, **args)
        with torch_fast_path(False):
            want_unfused = theirs(x, **args)
    assert len(op_calls) == 1, "the self-attention did not run through bigkern.ops.attention"
    torch.testing.assert_close(got, want_unfused)
    if masks != "src_mask_float":
        # torch's fused layer reads a float src_mask as bool (nonzero = masked), against its
        # documented additive meaning, which its unfused path and ours follow.
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize("masks", ["none", "kpm_bool", "src_mask_float", "causal"])
def test_encoder_layer_unbatched_matches_torch(masks, backend):
    ours, theirs = build("TransformerEncoderLayer", D, HEADS, FF, batch_first=True)
    x = seq(S, True, batched=False)
    args = ENCODER_MASKS[masks](False)
    torch.testing.assert_close(ours(x, **args), theirs(x, **args))


@pytest.mark.parametrize("masks", ["none", "kpm_bool", "both_bool", "causal_detected", "causal_kpm"])
@pytest.mark.parametrize("layer_kwargs", [LAYER_KWARGS["default"], LAYER_KWARGS["batch_first"]], ids=["seq_first", "batch_first"])
def test_encoder_matches_torch(layer_kwargs, masks, backend, op_calls):
    ours, theirs = build_stack("TransformerEncoder", layer_kwargs)
    ours.eval(), theirs.eval()
    batch_first = layer_kwargs.get("batch_first", False)
    x = seq(S, batch_first)
    kpm = padding_mask(S, "bool")
    args = {
        "none": {},
        "kpm_bool": dict(src_key_padding_mask=kpm),
        "both_bool": dict(mask=attn_mask(S, S, "bool"), src_key_padding_mask=kpm),
        "causal_detected": dict(mask=causal(S)),  # is_causal=None: detected, as torch does
        "causal_kpm": dict(mask=causal(S) > 0, src_key_padding_mask=kpm, is_causal=True),
    }[masks]
    got = ours(x, **args)
    assert len(op_calls) == 2
    if masks == "causal_detected":
        assert all(c["is_causal"] is True and c["attn_mask"] is None for c in op_calls)
    torch.testing.assert_close(got, theirs(x, **args))
    # In eval mode without grad, torch turns right-padded batches into nested tensors and gives
    # zeros (then the final norm) at padded positions; the positions that exist agree.
    with torch.no_grad():
        got, want = ours(x, **args), theirs(x, **args)
    valid = ~kpm if "src_key_padding_mask" in args else torch.ones(N, S, dtype=torch.bool)
    valid = valid if batch_first else valid.T
    torch.testing.assert_close(got[valid], want[valid])


DECODER_MASKS = {
    "none": lambda: {},
    "tgt_causal_detected": lambda: dict(tgt_mask=causal(T)),
    "tgt_causal_hint_kpm": lambda: dict(tgt_mask=causal(T), tgt_is_causal=True,
                                        tgt_key_padding_mask=padding_mask(T, "float")),
    "memory_masks_bool": lambda: dict(memory_mask=attn_mask(T, S, "bool"), memory_key_padding_mask=padding_mask(S, "bool")),
    "all_float": lambda: dict(tgt_mask=attn_mask(T, T, "float"), memory_mask=attn_mask(T, S, "float"),
                              tgt_key_padding_mask=padding_mask(T, "float"),
                              memory_key_padding_mask=padding_mask(S, "float")),
}  # fmt: skip


@pytest.mark.parametrize("mode", ["eval", "train"])
@pytest.mark.parametrize("masks", DECODER_MASKS)
@pytest.mark.parametrize("layer_kwargs", [LAYER_KWARGS["default"], LAYER_KWARGS["norm_first_gelu"]], ids=["post_norm", "pre_norm"])
def test_decoder_matches_torch(layer_kwargs, masks, mode, backend, op_calls):
    ours, theirs = build_stack("TransformerDecoder", layer_kwargs)
    ours.train(mode == "train"), theirs.train(mode == "train")
    batch_first = layer_kwargs.get("batch_first", False)
    tgt, memory = seq(T, batch_first), seq(S, batch_first)
    args = DECODER_MASKS[masks]()
    got, want = ours(tgt, memory, **args), theirs(tgt, memory, **args)
    assert len(op_calls) == 4  # self- and cross-attention of two layers
    torch.testing.assert_close(got, want)


@pytest.mark.parametrize("batch_first", [False, True])
def test_transformer_matches_torch_in_eval_and_its_gradients_in_training(batch_first, backend, op_calls):
    ours, theirs = build("Transformer", D, HEADS, 2, 2, FF, batch_first=batch_first)
    src, tgt = seq(S, batch_first), seq(T, batch_first)
    src_kpm = padding_mask(S, "bool")
    args = dict(tgt_mask=causal(T), src_key_padding_mask=src_kpm, memory_key_padding_mask=src_kpm,
                tgt_key_padding_mask=padding_mask(T, "float"))  # fmt: skip
    ours.eval(), theirs.eval()
    with torch.no_grad():
        torch.testing.assert_close(ours(src, tgt, **args), theirs(src, tgt, **args))
    assert len(op_calls) == 6

    ours.train(), theirs.train()  # dropout 0
    reference = copy.deepcopy(theirs).double()
    got, want = ours(src, tgt, **args), theirs(src, tgt, **args)
    torch.testing.assert_close(got, want)
    weight = torch.randn_like(got)
    (got * weight).sum().backward()
    (want * weight).sum().backward()
    args64 = {k: m.double() if m.is_floating_point() else m for k, m in args.items()}
    (reference(src.double(), tgt.double(), **args64) * weight.double()).sum().backward()
    names, params = zip(*ours.named_parameters())
    assert_grads_like_torch(names, [p.grad for p in params], [p.grad for p in theirs.parameters()],
                            [p.grad for p in reference.parameters()])  # fmt: skip


def test_mismatched_mask_types_warn_like_torch(backend):
    ours, theirs = build_stack("TransformerEncoder", LAYER_KWARGS["batch_first"])
    x = seq(S, True)
    args = dict(mask=attn_mask(S, S, "float"), src_key_padding_mask=padding_mask(S, "bool"))
    with pytest.warns(UserWarning, match="mismatched src_key_padding_mask and mask is deprecated"):
        got = ours(x, **args)
    with pytest.warns(UserWarning, match="mismatched src_key_padding_mask and mask is deprecated"):
        want = theirs(x, **args)
    torch.testing.assert_close(got, want)
    with pytest.raises(AssertionError, match="only bool and floating types of src_mask"):
        ours.layers[0](x, src_mask=args["mask"].long())


def test_encoder_compiles_fullgraph(backend):
    ours, _ = build_stack("TransformerEncoder", LAYER_KWARGS["batch_first"])
    x = seq(S, True).requires_grad_(True)
    kpm = padding_mask(S, "bool")
    eager = ours(x, src_key_padding_mask=kpm)
    torch._dynamo.reset()
    compiled = torch.compile(ours, fullgraph=True, backend="aot_eager")(x, src_key_padding_mask=kpm)
    torch.testing.assert_close(compiled, eager)
    (g_eager,) = torch.autograd.grad(eager.sum(), x)
    (g_compiled,) = torch.autograd.grad(compiled.sum(), x)
    torch.testing.assert_close(g_compiled, g_eager)


# ---------------------------------------------------------------------------------------------
# swap
# ---------------------------------------------------------------------------------------------


class TinyViT(torch.nn.Module):
    """A ViT as people write it from torch.nn: patch embedding, class token, encoder, head."""

    def __init__(self, dropout=0.0):
        super().__init__()
        self.patch = torch.nn.Conv2d(3, D, kernel_size=4, stride=4)
        self.cls = torch.nn.Parameter(torch.randn(1, 1, D))
        self.pos = torch.nn.Parameter(torch.randn(1, 17, D) * 0.1)
        layer = torch.nn.TransformerEncoderLayer(D, HEADS, FF, dropout=dropout, activation="gelu", batch_first=True,
                                                 norm_first=True)  # fmt: skip
        self.encoder = torch.nn.TransformerEncoder(layer, 2, torch.nn.LayerNorm(D))
        self.head = torch.nn.Linear(D, 10)

    def forward(self, images):
        x = self.patch(images).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], dim=1) + self.pos
        return self.head(self.encoder(x)[:, 0])


def module_types(model):
    return {name: type(m) for name, m in model.named_modules()}


def test_swap_vit_built_from_torch_layers(backend, op_calls):
    torch.manual_seed(5)
    model = TinyViT().eval()
    images = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        expected = model(images)  # torch's fused encoder layers
    before = module_types(model)
    state = copy.deepcopy(model.state_dict())

    report = bigkern.swap(model)

    assert [e.name for e in report.swapped] == [
        "patch", "encoder", "encoder.layers.0", "encoder.layers.0.self_attn", "encoder.layers.1",
        "encoder.layers.1.self_attn",
    ]  # fmt: skip (the patch embedding is a Conv2d)
    assert type(model.encoder.layers[1].self_attn) is bigkern.nn.MultiheadAttention
    assert type(model.encoder) is bigkern.nn.TransformerEncoder
    text = str(report)
    assert "need_weights=True (torch's default) run torch's implementation" in text
    assert "never torch's fused encoder layer" in text
    assert model.state_dict().keys() == state.keys()
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    with torch.no_grad():
        torch.testing.assert_close(model(images), expected)
    assert len(op_calls) == 2

    assert bigkern.unswap(model) == 6
    assert module_types(model) == before
    with torch.no_grad():
        torch.testing.assert_close(model(images), expected)


def test_swapped_vit_trains_like_torch(backend):
    torch.manual_seed(6)
    model = TinyViT()  # training mode, dropout 0
    unswapped, reference = copy.deepcopy(model), copy.deepcopy(model).double()
    bigkern.swap(model)
    images, labels = torch.randn(2, 3, 16, 16), torch.tensor([3, 7])
    F.cross_entropy(model(images), labels).backward()
    F.cross_entropy(unswapped(images), labels).backward()
    F.cross_entropy(reference(images.double()), labels).backward()
    names, params = zip(*model.named_parameters())
    assert all(p.grad is not None for p in params)
    assert_grads_like_torch(names, [p.grad for p in params], [p.grad for p in unswapped.parameters()],
                            [p.grad for p in reference.parameters()])  # fmt: skip


def test_swap_transformer_and_respect_exclusions(backend, op_calls):
    _, model = build("Transformer", D, HEADS, 1, 1, FF)
    model.eval()
    src, tgt = seq(S, False), seq(T, False)
    expected = model(src, tgt, tgt_mask=causal(T))
    report = bigkern.swap(model, exclude=["*.multihead_attn"])
    swapped = {e.name for e in report.swapped}
    assert {"", "encoder", "decoder", "decoder.layers.0", "decoder.layers.0.self_attn"} <= swapped
    assert {e.name: e.action for e in report.not_swapped}["decoder.layers.0.multihead_attn"] == "excluded"
    assert type(model.decoder.layers[0].multihead_attn) is torch.nn.MultiheadAttention
    torch.testing.assert_close(model(src, tgt, tgt_mask=causal(T)), expected)
    assert len(op_calls) == 2  # encoder self-attention and decoder self-attention
    assert op_calls[1]["is_causal"] is True  # the causal tgt_mask was detected
    assert bigkern.unswap(model) == 7
    assert set(attention_classes(model)) == {torch.nn.MultiheadAttention}
