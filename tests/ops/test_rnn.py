"""The recurrent ops and modules against torch.nn and a float64 oracle.

Every case builds a torch.nn module and its bigkern twin with the same weights, runs both in the
test dtype, and compares outputs, final states and the gradients of the input, the initial
states and every parameter with the same model run in float64 by torch.nn. The rule: bigkern's
error at most 2x torch's own error in that dtype, plus a few units in the last place.

Backends: "cpu" (C++ kernels), "triton" (interpreted on the CPU where no GPU is present, so on
small sizes), "cuda" (only where a GPU exists), and "torch" (the reference itself, for a few
cases: it is the oracle of the kernel tests below).
"""

import random

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

import bigkern
from bigkern.reference import rnn as reference
from tests._tolerance import ULP

BACKENDS = [
    pytest.param("cpu", id="cpu"),
    pytest.param("triton", id="triton", marks=pytest.mark.triton),
    pytest.param("cuda", id="cuda", marks=pytest.mark.cuda),
]
KINDS = {"lstm": (torch.nn.LSTM, bigkern.nn.LSTM), "gru": (torch.nn.GRU, bigkern.nn.GRU),
         "rnn_tanh": (torch.nn.RNN, bigkern.nn.RNN), "rnn_relu": (torch.nn.RNN, bigkern.nn.RNN)}  # fmt: skip
CELLS = {"lstm": (torch.nn.LSTMCell, bigkern.nn.LSTMCell), "gru": (torch.nn.GRUCell, bigkern.nn.GRUCell),
         "rnn_tanh": (torch.nn.RNNCell, bigkern.nn.RNNCell), "rnn_relu": (torch.nn.RNNCell, bigkern.nn.RNNCell)}  # fmt: skip


def device_of(backend):
    if backend == "cuda" or (backend == "triton" and torch.cuda.is_available()):
        return "cuda"
    return "cpu"


def dtypes_of(backend):
    if backend == "cuda" or (backend == "triton" and torch.cuda.is_available()):
        return [torch.float32, torch.float16, torch.bfloat16]
    return [torch.float32, torch.bfloat16] if backend == "cpu" else [torch.float32]


def assert_close_to_reference(ours, theirs, ref64, what, factor=2.0):
    """max|ours - ref| <= factor * max|torch - ref| + a few ulp of the dtype times max|ref|."""
    assert ours.shape == ref64.shape, f"{what}: shape {tuple(ours.shape)} != {tuple(ref64.shape)}"
    assert ours.dtype == theirs.dtype, f"{what}: dtype {ours.dtype} != torch's {theirs.dtype}"
    assert torch.isfinite(ours).all(), f"{what}: non-finite values in bigkern's result"
    if ours.numel() == 0:
        return
    ref = ref64.double().cpu()
    ours_err = (ours.double().cpu() - ref).abs().max().item()
    torch_err = (theirs.double().cpu() - ref).abs().max().item()
    scale = max(ref.abs().max().item(), 1.0)
    slack = 8 * ULP[ours.dtype] * scale if ours.dtype != torch.float32 else 2e-6 * scale
    assert ours_err <= factor * torch_err + slack, (
        f"{what}: max error {ours_err:.3g} > {factor} x torch's {torch_err:.3g} + {slack:.2g}"
    )


def make_module(kind, input_size, hidden, dtype, device, **kw):
    torch_cls, _ = KINDS[kind]
    if kind.startswith("rnn"):
        kw["nonlinearity"] = kind[4:]
    module = torch_cls(input_size, hidden, **kw)
    for p in module.parameters():  # wider than torch's init so the gates saturate sometimes
        torch.nn.init.uniform_(p, -0.6, 0.6)
    return module.to(device=device, dtype=dtype)


def clone_as(module, cls, dtype=None):
    """A module of class ``cls`` built with ``module``'s constructor arguments, holding its weights."""
    kw = {}
    if isinstance(module, torch.nn.RNNBase):
        kw = dict(num_layers=module.num_layers, bias=module.bias, batch_first=module.batch_first,
                  dropout=module.dropout, bidirectional=module.bidirectional)  # fmt: skip
        if module.proj_size:
            kw["proj_size"] = module.proj_size
    else:
        kw["bias"] = module.bias
    if hasattr(module, "nonlinearity"):
        kw["nonlinearity"] = module.nonlinearity
    first = next(module.parameters())
    other = cls(module.input_size, module.hidden_size, **kw).to(device=first.device, dtype=dtype or first.dtype)
    other.load_state_dict(module.state_dict())
    return other


def random_config(rng, kind):
    config = dict(
        num_layers=rng.choice([1, 2]),
        bidirectional=rng.random() < 0.5,
        batch_first=rng.random() < 0.5,
        bias=rng.random() < 0.8,
    )
    if kind == "lstm" and rng.random() < 0.35:
        config["proj_size"] = rng.choice([2, 3])
    return config


def run_sequence(module, x, hx, lengths, batch_first):
    """Forward and backward of a sequence module; returns outputs and gradients as one dict."""
    params = dict(module.named_parameters())
    for p in params.values():
        p.grad = None
    x = x.detach().clone().requires_grad_()
    states = None
    if hx is not None:
        states = tuple(h.detach().clone().requires_grad_() for h in hx) if isinstance(hx, tuple) else hx.detach().clone().requires_grad_()
    inp = x
    if lengths is not None:
        inp = pack_padded_sequence(x, lengths, batch_first=batch_first, enforce_sorted=False)
    out, h_n = module(inp, states)
    if lengths is not None:
        out, _ = torch.nn.utils.rnn.pad_packed_sequence(out, batch_first=batch_first)
    finals = h_n if isinstance(h_n, tuple) else (h_n,)
    gen = torch.Generator().manual_seed(1234)
    loss = (out.double() * torch.randn(out.shape, generator=gen, dtype=torch.float64).to(out.device)).sum()
    for f in finals:
        loss = loss + (f.double() * torch.randn(f.shape, generator=gen, dtype=torch.float64).to(f.device)).sum()
    loss.backward()
    result = {"output": out.detach()}
    result.update({f"h_n[{i}]": f.detach() for i, f in enumerate(finals)})
    result["grad input"] = x.grad
    if states is not None:
        for i, s in enumerate(states if isinstance(states, tuple) else (states,)):
            result[f"grad hx[{i}]"] = s.grad
    result.update({f"grad {name}": p.grad for name, p in params.items()})
    return result


def check_sequence_case(backend, kind, config, dtype, batch, steps, input_size, hidden, input_form, with_hx, seed):
    device = device_of(backend)
    torch.manual_seed(seed)
    batch_first = config["batch_first"]
    base = make_module(kind, input_size, hidden, torch.float64, "cpu", **config)
    ref_module = base.to(device)
    torch_module = clone_as(ref_module, type(ref_module), dtype)
    bk_module = clone_as(ref_module, KINDS[kind][1], dtype)
    directions = 2 if config["bidirectional"] else 1
    out_size = config.get("proj_size", 0) or hidden
    if input_form == "unbatched":
        x = torch.randn(steps, input_size, dtype=torch.float64, device=device)
        lead = (config["num_layers"] * directions,)
    else:
        x = torch.randn(batch, steps, input_size, dtype=torch.float64, device=device)
        if not batch_first:
            x = x.transpose(0, 1)
        lead = (config["num_layers"] * directions, batch)
    hx = None
    if with_hx:
        h0 = torch.randn(*lead, out_size, dtype=torch.float64, device=device)
        hx = (h0, torch.randn(*lead, hidden, dtype=torch.float64, device=device)) if kind == "lstm" else h0
    lengths = None
    if input_form == "packed":
        lengths = torch.tensor([steps] + [random.Random(seed + i).randint(1, steps) for i in range(batch - 1)])
        lengths = lengths[torch.randperm(batch)]

    def cast(t):
        if t is None:
            return None
        return tuple(s.to(dtype) for s in t) if isinstance(t, tuple) else t.to(dtype)

    ref = run_sequence(ref_module, x, hx, lengths, batch_first)
    theirs = run_sequence(torch_module, cast(x), cast(hx), lengths, batch_first)
    with bigkern.use_backend(backend):
        ours = run_sequence(bk_module, cast(x), cast(hx), lengths, batch_first)
    assert ours.keys() == ref.keys()
    for what in ref:
        assert_close_to_reference(ours[what], theirs[what], ref[what], f"{kind} {config} {input_form}: {what}")


def _sequence_cases(count, kinds=tuple(KINDS), seed=0):
    rng = random.Random(seed)
    cases = []
    for i in range(count):
        kind = kinds[i % len(kinds)]
        form = rng.choice(["padded", "packed", "packed", "unbatched"])
        cases.append((kind, random_config(rng, kind), form, rng.random() < 0.6, rng.randint(0, 10**6)))
    return cases


SEQUENCE_CASES = _sequence_cases(24)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind,config,form,with_hx,seed", SEQUENCE_CASES)
def test_sequence_modules_match_torch(backend, kind, config, form, with_hx, seed):
    small = backend == "triton" and device_of(backend) == "cpu"
    for dtype in dtypes_of(backend):
        batch, steps, input_size, hidden = (3, 4, 5, 7) if small else (5, 9, 11, 13)
        check_sequence_case(backend, kind, config, dtype, batch, steps, input_size, hidden, form, with_hx, seed)


@pytest.mark.parametrize("kind", list(KINDS))
def test_torch_backend_is_torch_nn(kind):
    check_sequence_case("torch", kind, dict(num_layers=2, bidirectional=True, batch_first=False, bias=True),
                        torch.float32, 4, 6, 3, 5, "packed", True, 7)  # fmt: skip


@pytest.mark.parametrize("backend", BACKENDS)
def test_lstm_bidirectional_projection_packed(backend):
    """The configuration that exercises the most at once: 2 layers, both directions, proj_size,
    unequal lengths, given states."""
    small = backend == "triton" and device_of(backend) == "cpu"
    config = dict(num_layers=2, bidirectional=True, batch_first=True, bias=True, proj_size=3)
    dims = (3, 5, 4, 6) if small else (6, 10, 9, 17)
    check_sequence_case(backend, "lstm", config, torch.float32, *dims, "packed", True, 11)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", list(CELLS))
@pytest.mark.parametrize("form", ["batched", "unbatched", "no_state", "strided"])
def test_cells_match_torch(backend, kind, form):
    device = device_of(backend)
    small = backend == "triton" and device == "cpu"
    batch, input_size, hidden = (3, 5, 7) if small else (6, 19, 23)
    torch_cls, bk_cls = CELLS[kind]
    kw = {"nonlinearity": kind[4:]} if kind.startswith("rnn") else {}
    ref_cell = torch_cls(input_size, hidden, dtype=torch.float64, device=device, **kw)
    for p in ref_cell.parameters():
        torch.nn.init.uniform_(p, -0.6, 0.6)
    for dtype in dtypes_of(backend):
        x = torch.randn(batch, input_size * (2 if form == "strided" else 1), dtype=torch.float64, device=device)
        x = x[:, ::2] if form == "strided" else x
        x = x[0] if form == "unbatched" else x
        shape = x.shape[:-1] + (hidden,)
        hx = None
        if form != "no_state":
            hx = tuple(torch.randn(shape, dtype=torch.float64, device=device) for _ in range(2 if kind == "lstm" else 1))
            hx = hx if kind == "lstm" else hx[0]
        results = []
        for cell, cast, use in ((ref_cell, torch.float64, "torch"), (clone_as(ref_cell, torch_cls, dtype), dtype, "torch"),
                                (clone_as(ref_cell, bk_cls, dtype), dtype, backend)):  # fmt: skip
            xi = x.detach().to(cast).requires_grad_()
            states = None
            if hx is not None:
                states = (tuple(h.detach().to(cast).requires_grad_() for h in hx) if kind == "lstm"
                          else hx.detach().to(cast).requires_grad_())
            with bigkern.use_backend(use):
                out = cell(xi, states)
            outs = out if isinstance(out, tuple) else (out,)
            gen = torch.Generator().manual_seed(5)
            loss = sum((o.double() * torch.randn(o.shape, generator=gen, dtype=torch.float64).to(device)).sum() for o in outs)
            loss.backward()
            got = {f"out[{i}]": o.detach() for i, o in enumerate(outs)}
            got["grad input"] = xi.grad
            if states is not None:
                for i, s in enumerate(states if isinstance(states, tuple) else (states,)):
                    got[f"grad hx[{i}]"] = s.grad
            got.update({f"grad {n}": p.grad for n, p in cell.named_parameters()})
            results.append(got)
        ref, theirs, ours = results
        for what in ref:
            assert_close_to_reference(ours[what], theirs[what], ref[what], f"{kind} cell {form} {dtype}: {what}")


# ---------------------------------------------------------------------------------------------
# The layer and cell ops against the reference contract (workspace included)
# ---------------------------------------------------------------------------------------------


def _layer_inputs(mode, batch_sizes, batch, hidden, proj, bias, dtype, device):
    gates = reference.GATES[mode]
    out = proj or hidden
    n = int(batch_sizes.sum())

    def rnd(*shape):
        return (torch.rand(*shape, dtype=torch.float64, device=device) * 1.6 - 0.8).to(dtype)

    return dict(
        x_proj=rnd(n, gates * hidden), hx=rnd(batch, out), cx=rnd(batch, hidden) if mode == 0 else None,
        w_hh=rnd(gates * hidden, out), b_hh=rnd(gates * hidden) if bias else None, w_hr=rnd(proj, hidden) if proj else None,
    )  # fmt: skip


LAYER_CASES = [
    # mode, lengths, hidden, proj, bias, reverse
    (0, [5, 5, 5], 9, 0, True, False),
    (0, [6, 4, 4, 1], 9, 0, True, True),
    (0, [6, 3, 2], 8, 3, False, False),
    (0, [4, 4, 2], 8, 5, True, True),
    (1, [5, 5, 3, 1], 11, 0, True, False),
    (1, [5, 2], 11, 0, False, True),
    (2, [7, 3, 3], 6, 0, True, True),
    (3, [7, 7, 1], 6, 0, True, False),
]


def _batch_sizes(lengths):
    steps = max(lengths)
    return torch.tensor([sum(1 for length in lengths if length > t) for t in range(steps)], dtype=torch.int64)


@pytest.mark.parametrize("mode", [0, 1, 2, 3])
def test_reference_backward_matches_autograd(mode):
    """The oracle's hand-derived backward (cells and layers) against autograd through its forward."""
    gates, dt = reference.GATES[mode], torch.float64
    x, h = torch.randn(3, 4, dtype=dt), torch.randn(3, 5, dtype=dt)
    c = torch.randn(3, 5, dtype=dt) if mode == 0 else None
    w_ih, w_hh = torch.randn(gates * 5, 4, dtype=dt), torch.randn(gates * 5, 5, dtype=dt)
    b_ih, b_hh = torch.randn(gates * 5, dtype=dt), torch.randn(gates * 5, dtype=dt)
    leaves = [t.clone().requires_grad_() for t in (x, h, w_ih, w_hh, b_ih, b_hh)] + ([c.clone().requires_grad_()] if c is not None else [])
    hy, cy, ws = reference.rnn_cell_forward(mode, *leaves[:2], leaves[6] if c is not None else None, *leaves[2:6], True)
    g_h, g_c = torch.randn_like(hy), torch.randn_like(hy) if mode == 0 else None
    loss = (hy * g_h).sum() + ((cy * g_c).sum() if mode == 0 else 0)
    expected = torch.autograd.grad(loss, leaves)
    got = reference.rnn_cell_backward(mode, g_h, g_c, x, h, c, w_ih, w_hh, ws.detach(), True)
    pairs = [(got[0], expected[0]), (got[1], expected[1]), (got[3], expected[2]), (got[4], expected[3]),
             (got[5], expected[4]), (got[6], expected[5])] + ([(got[2], expected[6])] if mode == 0 else [])  # fmt: skip
    for ours, theirs in pairs:
        torch.testing.assert_close(ours, theirs)
    batch_sizes = _batch_sizes([4, 3, 3, 1])
    for reverse in (False, True):
        x_proj = torch.randn(int(batch_sizes.sum()), gates * 5, dtype=dt, requires_grad=True)
        h0 = torch.randn(4, 5, dtype=dt, requires_grad=True)
        c0 = torch.randn(4, 5, dtype=dt, requires_grad=True) if mode == 0 else None
        wh, bh = w_hh.clone().requires_grad_(), b_hh.clone().requires_grad_()
        out, hy, cy, ws = reference.rnn_layer_forward(mode, x_proj, batch_sizes, h0, c0, wh, bh, None, reverse, True)
        g_out, g_h = torch.randn_like(out), torch.randn_like(hy)
        g_c = torch.randn_like(cy) if mode == 0 else None
        loss = (out * g_out).sum() + (hy * g_h).sum() + ((cy * g_c).sum() if mode == 0 else 0)
        wrt = [x_proj, h0, wh, bh] + ([c0] if mode == 0 else [])
        expected = torch.autograd.grad(loss, wrt)
        got = reference.rnn_layer_backward(mode, g_out, g_h, g_c, batch_sizes, h0.detach(), c0.detach() if c0 is not None else None,
                                           w_hh, b_hh, None, out.detach(), ws.detach(), reverse)  # fmt: skip
        for ours, theirs in [(got[0], expected[0]), (got[1], expected[1]), (got[3], expected[2]), (got[4], expected[3])]:
            torch.testing.assert_close(ours, theirs)
        if mode == 0:
            torch.testing.assert_close(got[2], expected[4])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("mode,lengths,hidden,proj,bias,reverse", LAYER_CASES)
def test_layer_op_matches_reference_contract(backend, mode, lengths, hidden, proj, bias, reverse):
    """Outputs, final states, workspace and every gradient of rnn_layer_forward/backward."""
    device = device_of(backend)
    ops = torch.ops.bigkern_triton if backend == "triton" else torch.ops.bigkern
    batch_sizes = _batch_sizes(sorted(lengths, reverse=True))
    args = _layer_inputs(mode, batch_sizes, len(lengths), hidden, proj, bias, torch.float32, device)
    a64 = {k: (v.double() if v is not None else None) for k, v in args.items()}
    call = ("x_proj", "hx", "cx", "w_hh", "b_hh", "w_hr")

    def forward(fn, a):
        x_proj, hx, cx, w_hh, b_hh, w_hr = (a[k] for k in call)
        return fn(mode, x_proj, batch_sizes, hx, cx, w_hh, b_hh, w_hr, reverse, True)

    ours = forward(ops.rnn_layer_forward, args)
    ref = forward(reference.rnn_layer_forward, a64)
    for what, o, r in zip(("output", "hy", "cy", "workspace"), ours, ref):
        assert o.shape == r.shape, f"{what}: shape {tuple(o.shape)} != {tuple(r.shape)}"
        torch.testing.assert_close(o.double().cpu(), r.cpu(), rtol=2e-5, atol=2e-5, msg=lambda m: f"{what}: {m}")
    grads = [torch.rand_like(ours[0]) - 0.5, torch.rand_like(ours[1]) - 0.5,
             torch.rand_like(ours[2]) - 0.5 if mode == 0 else None]  # fmt: skip

    def backward(fn, a, fwd, g):
        x_proj, hx, cx, w_hh, b_hh, w_hr = (a[k] for k in call)
        return fn(mode, *g, batch_sizes, hx, cx, w_hh, b_hh, w_hr, fwd[0], fwd[3], reverse)

    ours_g = backward(ops.rnn_layer_backward, args, ours, grads)
    ref_g = backward(reference.rnn_layer_backward, a64, ref, [g.double() if g is not None else None for g in grads])
    for what, o, r in zip(("grad_x_proj", "grad_hx", "grad_cx", "grad_w_hh", "grad_b_hh", "grad_w_hr"), ours_g, ref_g):
        assert o.shape == r.shape, f"{what}: shape {tuple(o.shape)} != {tuple(r.shape)}"
        torch.testing.assert_close(o.double().cpu(), r.cpu(), rtol=5e-5, atol=5e-5, msg=lambda m: f"{what}: {m}")


@pytest.mark.triton
@pytest.mark.skipif(torch.cuda.is_available(), reason="the interpreter's block override; on a GPU the autotuner picks")
@pytest.mark.parametrize("config", range(6))
def test_every_triton_forward_config(config, monkeypatch):
    """Each block shape the autotuner may pick on a GPU, run under the interpreter."""
    kernels = pytest.importorskip("bigkern.triton.rnn")
    chosen = kernels.FORWARD_CONFIGS[config].kwargs
    monkeypatch.setattr(kernels, "INTERPRETER_CONFIG", dict(chosen))
    test_layer_op_matches_reference_contract("triton", 1, [5, 5, 3, 1], 11, 0, True, False)
    test_layer_op_matches_reference_contract("triton", 0, [4, 4, 2], 8, 5, True, True)


@pytest.mark.parametrize("backend", BACKENDS)
def test_layer_inference_saves_no_workspace(backend):
    device = device_of(backend)
    ops = torch.ops.bigkern_triton if backend == "triton" else torch.ops.bigkern
    batch_sizes = _batch_sizes([3, 2])
    a = _layer_inputs(0, batch_sizes, 2, 5, 0, True, torch.float32, device)
    out, hy, cy, ws = ops.rnn_layer_forward(0, a["x_proj"], batch_sizes, a["hx"], a["cx"], a["w_hh"], a["b_hh"], None,
                                            False, False)  # fmt: skip
    assert ws.shape == (0,)
    ref = reference.rnn_layer_forward(0, a["x_proj"], batch_sizes, a["hx"], a["cx"], a["w_hh"], a["b_hh"], None, False, False)
    torch.testing.assert_close(out.cpu(), ref[0].cpu(), rtol=2e-5, atol=2e-5)


# ---------------------------------------------------------------------------------------------
# Modules: checkpoints, swap, flatten_parameters, dropout, autocast
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(KINDS))
def test_state_dict_round_trip_and_isinstance(kind):
    torch_cls, bk_cls = KINDS[kind]
    kw = {"nonlinearity": kind[4:]} if kind.startswith("rnn") else {"proj_size": 2} if kind == "lstm" else {}
    theirs = torch_cls(4, 6, num_layers=2, bidirectional=True, **kw)
    ours = bk_cls(4, 6, num_layers=2, bidirectional=True, **kw)
    assert isinstance(ours, torch_cls)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert repr(ours) == repr(theirs)
    ours.load_state_dict(theirs.state_dict())
    back = torch_cls(4, 6, num_layers=2, bidirectional=True, **kw)
    back.load_state_dict(ours.state_dict())
    x = torch.randn(5, 3, 4)
    torch.testing.assert_close(ours(x)[0], theirs(x)[0], rtol=2e-6, atol=2e-6)
    torch.testing.assert_close(back(x)[0], theirs(x)[0], rtol=0, atol=0)


def test_swap_covers_recurrent_modules_and_keeps_weights():
    model = torch.nn.ModuleDict({
        "lstm": torch.nn.LSTM(4, 5, batch_first=True), "gru": torch.nn.GRU(4, 5), "rnn": torch.nn.RNN(4, 5, nonlinearity="relu"),
        "lstm_cell": torch.nn.LSTMCell(4, 5), "gru_cell": torch.nn.GRUCell(4, 5), "rnn_cell": torch.nn.RNNCell(4, 5),
    })  # fmt: skip
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(3, 6, 4)
    expected = model["lstm"](x)[0]
    report = bigkern.swap(model)
    assert len(report.swapped) == 6, str(report)
    for name, module in model.items():
        assert type(module).__module__ == "bigkern.nn.rnn", name
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    torch.testing.assert_close(model["lstm"](x)[0], expected, rtol=2e-6, atol=2e-6)
    bigkern.unswap(model)
    assert type(model["lstm"]) is torch.nn.LSTM


def test_flatten_parameters_keeps_working():
    ours = bigkern.nn.LSTM(4, 5, num_layers=2)
    theirs = torch.nn.LSTM(4, 5, num_layers=2)
    ours.load_state_dict(theirs.state_dict())
    ours.flatten_parameters()
    x = torch.randn(6, 2, 4)
    torch.testing.assert_close(ours(x)[0], theirs(x)[0], rtol=2e-6, atol=2e-6)
    with torch.no_grad():  # replacing a parameter's values is seen by the next forward
        ours.weight_hh_l1.mul_(0.5)
        theirs.weight_hh_l1.mul_(0.5)
    torch.testing.assert_close(ours(x)[0], theirs(x)[0], rtol=2e-6, atol=2e-6)


def test_dropout_between_layers_only_in_training():
    ours = bigkern.nn.GRU(4, 6, num_layers=3, dropout=0.5)
    x = torch.randn(5, 2, 4)
    ours.eval()
    theirs = torch.nn.GRU(4, 6, num_layers=3, dropout=0.5).eval()
    theirs.load_state_dict(ours.state_dict())
    torch.testing.assert_close(ours(x)[0], theirs(x)[0], rtol=2e-6, atol=2e-6)
    ours.train()
    torch.manual_seed(3)
    a = ours(x)[0]
    torch.manual_seed(3)
    with bigkern.use_backend("torch"):
        b = ours(x)[0]
    torch.manual_seed(4)
    c = ours(x)[0]
    torch.testing.assert_close(a, b, rtol=2e-6, atol=2e-6)  # the same masks from the same seed
    assert not torch.allclose(a, c)  # dropout is on
    assert not torch.allclose(a, theirs(x)[0])


@pytest.mark.parametrize("input_dtype", [torch.float32, torch.bfloat16], ids=["float32-input", "bfloat16-input"])
def test_autocast_runs_in_the_autocast_dtype(input_dtype):
    """A bfloat16 input (the previous layer's autocast output) with float32 weights is fine too."""
    lstm = bigkern.nn.LSTM(8, 16)
    x = torch.randn(5, 3, 8).to(input_dtype)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, (h, c) = lstm(x)
    assert out.dtype == h.dtype == c.dtype == torch.bfloat16
    expected = torch.nn.LSTM(8, 16)
    expected.load_state_dict(lstm.state_dict())
    torch.testing.assert_close(out.float(), expected(x.float())[0], rtol=0.05, atol=0.05)


# ---------------------------------------------------------------------------------------------
# gradcheck, opcheck, torch.compile
# ---------------------------------------------------------------------------------------------


def test_gradcheck_float64_cpu():
    torch.manual_seed(0)
    lstm = torch.nn.LSTM(3, 4, num_layers=2, bidirectional=True, proj_size=2, dtype=torch.float64)
    weights = [w.detach().clone().requires_grad_() for w in lstm._flat_weights]
    lengths = torch.tensor([4, 2, 3])
    x = torch.randn(4, 3, 3, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(4, 3, 2, dtype=torch.float64, requires_grad=True)
    c0 = torch.randn(4, 3, 4, dtype=torch.float64, requires_grad=True)

    def fn(x, h0, c0, *w):
        packed = pack_padded_sequence(x, lengths, enforce_sorted=False)
        out, (h, c) = bigkern.ops.lstm(packed, (h0, c0), list(w), 2, True, False, 0.0, False)
        return out.data, h, c

    with bigkern.use_backend("cpu"):
        assert torch.autograd.gradcheck(fn, (x, h0, c0, *weights))
    gru = torch.nn.GRUCell(3, 4, dtype=torch.float64)
    w = [p.detach().clone().requires_grad_() for p in gru.parameters()]
    xs, hs = torch.randn(2, 3, dtype=torch.float64, requires_grad=True), torch.randn(2, 4, dtype=torch.float64, requires_grad=True)
    with bigkern.use_backend("cpu"):
        assert torch.autograd.gradcheck(lambda x, h, *w: bigkern.ops.gru_cell(x, h, *w), (xs, hs, *w))
        for mode in ("tanh", "relu"):
            rnn = torch.nn.RNN(3, 4, dtype=torch.float64, nonlinearity=mode)
            rw = [p.detach().clone().requires_grad_() for p in rnn._flat_weights]
            assert torch.autograd.gradcheck(
                lambda x, *w: bigkern.ops.rnn(x, None, list(w), 1, False, False, 0.0, False, nonlinearity=mode)[0],
                (torch.randn(3, 2, 3, dtype=torch.float64, requires_grad=True), *rw),
            )


def _opcheck_cases(device):
    def rnd(*shape):
        return torch.rand(*shape, device=device) - 0.5

    bs = _batch_sizes([3, 3, 1])
    yield "rnn_cell_forward", (0, rnd(3, 5), rnd(3, 4), rnd(3, 4), rnd(16, 5), rnd(16, 4), rnd(16), rnd(16), True)
    yield "rnn_cell_forward", (1, rnd(3, 5), rnd(3, 4), None, rnd(12, 5), rnd(12, 4), None, None, True)
    yield "rnn_layer_forward", (0, rnd(7, 16), bs, rnd(3, 4), rnd(3, 4), rnd(16, 4), rnd(16), None, False, True)
    yield "rnn_layer_forward", (0, rnd(7, 16), bs, rnd(3, 2), rnd(3, 4), rnd(16, 2), None, rnd(2, 4), True, True)
    yield "rnn_layer_forward", (1, rnd(7, 12), bs, rnd(3, 4), None, rnd(12, 4), rnd(12), None, True, True)
    yield "rnn_layer_forward", (3, rnd(7, 4), bs, rnd(3, 4), None, rnd(4, 4), rnd(4), None, False, False)


@pytest.mark.parametrize("namespace", [pytest.param("bigkern", id="cpu"), pytest.param("bigkern_triton", id="triton", marks=pytest.mark.triton)])
def test_opcheck(namespace):
    device = "cuda" if namespace == "bigkern_triton" and torch.cuda.is_available() else "cpu"
    ops = getattr(torch.ops, namespace)
    for name, args in _opcheck_cases(device):
        args = tuple(a.requires_grad_() if isinstance(a, torch.Tensor) and a.is_floating_point() and args[-1] else a for a in args)
        torch.library.opcheck(getattr(ops, name).default, args)


@pytest.mark.parametrize("compiler", ["aot_eager", "inductor"])
def test_torch_compile_fullgraph_module(compiler):
    """Dynamo refuses every nn.LSTM/GRU/RNN instance by type unless allow_rnn is set (torch's
    own forward calls _VF kernels it cannot trace); bigkern's forward is traceable, so with the
    flag the whole model compiles into one graph with bigkern's ops in it."""
    torch._dynamo.reset()
    model = bigkern.nn.LSTM(6, 8, num_layers=2, batch_first=True)
    reference_model = torch.nn.LSTM(6, 8, num_layers=2, batch_first=True)
    reference_model.load_state_dict(model.state_dict())
    x = torch.randn(3, 5, 6, requires_grad=True)
    with torch._dynamo.config.patch(allow_rnn=True):
        out, (h, c) = torch.compile(model, backend=compiler, fullgraph=True)(x)
    out.sum().backward()
    expected, _ = reference_model(x.detach())
    torch.testing.assert_close(out, expected, rtol=2e-6, atol=2e-6)
    grads = torch.autograd.grad(reference_model(x)[0].sum(), list(reference_model.parameters()))
    for (name, p), g in zip(model.named_parameters(), grads):
        torch.testing.assert_close(p.grad, g, rtol=2e-5, atol=2e-5, msg=lambda m: f"{name}: {m}")


def test_torch_compile_fullgraph_functional():
    """The functional ops compile with no flag at all."""
    torch._dynamo.reset()
    gru = torch.nn.GRU(5, 7, bidirectional=True)
    weights = list(gru._flat_weights)

    def step(x, h):
        out, h_n = bigkern.ops.gru(x, h, weights, 1, True, False, 0.0, False)
        return out, h_n, bigkern.ops.lstm_cell(x[0], None, torch.ones(28, 5), torch.ones(28, 7))

    x, h = torch.randn(4, 2, 5), torch.randn(2, 2, 7)
    got = torch.compile(step, backend="aot_eager", fullgraph=True)(x, h)
    expected = step(x, h)
    for a, b in zip(got[:2], expected[:2]):
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(got[2], expected[2])


# ---------------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------------


def _lstm_params(input_size=4, hidden=5, layers=1):
    return list(torch.nn.LSTM(input_size, hidden, layers)._flat_weights)


BAD_INPUT = [
    ("input size", lambda: bigkern.ops.lstm(torch.randn(3, 2, 7), None, _lstm_params(), 1, False, False, 0.0, False),
     ValueError, r"weight_ih_l0 has shape \(20, 4\); expected \(20, 7\)"),
    ("h0 shape", lambda: bigkern.ops.lstm(torch.randn(3, 2, 4), (torch.randn(1, 3, 5), torch.randn(1, 2, 5)),
                                          _lstm_params(), 1, False, False, 0.0, False),
     ValueError, r"h_0 has shape \(1, 3, 5\); expected \(1, 2, 5\)"),
    ("c0 dtype", lambda: bigkern.ops.lstm(torch.randn(3, 2, 4), (torch.randn(1, 2, 5), torch.randn(1, 2, 5, dtype=torch.float64)),
                                          _lstm_params(), 1, False, False, 0.0, False),
     TypeError, r"c_0 has dtype torch.float64 but the input is torch.float32"),
    ("weight dtype", lambda: bigkern.ops.gru_cell(torch.randn(2, 4), None, torch.randn(15, 4, dtype=torch.float64), torch.randn(15, 5)),
     TypeError, r"w_ih has dtype torch.float64"),
    ("state device", lambda: bigkern.ops.rnn_cell(torch.randn(2, 4), torch.randn(2, 5, device="meta"), torch.randn(5, 4), torch.randn(5, 5)),
     ValueError, r"hx is on meta but the input is on cpu"),
    ("input rank", lambda: bigkern.ops.gru(torch.randn(2, 3, 4, 5), None, list(torch.nn.GRU(5, 3)._flat_weights), 1, False, False, 0.0, False),
     ValueError, r"input must be 2-D .* got 4-D"),
    ("param count", lambda: bigkern.ops.lstm(torch.randn(3, 2, 4), None, _lstm_params()[:3], 1, False, False, 0.0, False),
     ValueError, r"got 3 parameter tensors; expected 4"),
    ("cell hidden", lambda: bigkern.ops.lstm_cell(torch.randn(2, 4), (torch.randn(2, 6), torch.randn(2, 6)), torch.randn(20, 4), torch.randn(20, 5)),
     ValueError, r"hx\[0\] has shape \(2, 6\); expected \(2, 5\)"),
    ("nonlinearity", lambda: bigkern.ops.rnn_cell(torch.randn(2, 4), None, torch.randn(5, 4), torch.randn(5, 5), nonlinearity="gelu"),
     ValueError, r"nonlinearity must be 'tanh' or 'relu', got 'gelu'"),
    ("dropout", lambda: bigkern.ops.lstm(torch.randn(3, 2, 4), None, _lstm_params(), 1, False, False, 1.5, True),
     ValueError, r"dropout must be a number in \[0, 1\], got 1.5"),
    ("empty sequence", lambda: bigkern.ops.lstm(torch.randn(0, 2, 4), None, _lstm_params(), 1, False, False, 0.0, False),
     ValueError, r"input has sequence length 0; expected at least one step"),
    ("integer input", lambda: bigkern.ops.lstm(torch.ones(3, 2, 4, dtype=torch.int64), None, _lstm_params(), 1, False, False, 0.0, False),
     TypeError, r"input has dtype torch.int64"),
]  # fmt: skip


@pytest.mark.parametrize("case,fn,error,message", BAD_INPUT, ids=[c[0] for c in BAD_INPUT])
def test_bad_input(case, fn, error, message):
    with pytest.raises(error, match=message):
        fn()


@pytest.mark.parametrize("kind", list(KINDS))
def test_empty_batch_gives_empty_results_like_torch(kind):
    torch_cls, bk_cls = KINDS[kind]
    theirs = torch_cls(3, 4, num_layers=2, bidirectional=True, batch_first=True)
    ours = bk_cls(3, 4, num_layers=2, bidirectional=True, batch_first=True)
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(0, 5, 3)
    for a, b in zip(ours(x), theirs(x)):
        for u, v in zip(a if isinstance(a, tuple) else (a,), b if isinstance(b, tuple) else (b,)):
            assert u.shape == v.shape


def test_module_bad_input_names_the_argument():
    with pytest.raises(ValueError, match=r"weight_ih_l0 has shape \(20, 4\); expected \(20, 3\)"):
        bigkern.nn.LSTM(4, 5)(torch.randn(2, 2, 3))


def test_explicit_backend_that_cannot_serve_names_the_reason():
    x = torch.randn(2, 4, dtype=torch.float16)
    with bigkern.use_backend("cpu"), pytest.raises(bigkern.BackendUnavailableError, match="recurrent kernels take float32"):
        bigkern.ops.gru_cell(x, None, torch.randn(15, 4, dtype=torch.float16), torch.randn(15, 5, dtype=torch.float16))
