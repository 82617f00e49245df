"""bigkern.models: forward shapes, the bigkern layers they are built from, training lowers the
loss, and state_dicts move between each model and its torch.nn twin in both directions."""

import pytest
import torch
import torch.nn.functional as F

import bigkern
import bigkern.nn as bnn
from bigkern import models

VOCAB = 23


def image_batch(channels, size, n=6):
    return torch.rand(n, channels, size, size), torch.randint(0, 10, (n,))


def token_batch(n=5, length=11):
    tokens = torch.randint(1, VOCAB, (n, length))
    tokens[0, 7:] = 0  # padding in one sequence
    return tokens


def classification_loss(model, x, y):
    return F.cross_entropy(model(x), y)


def lm_loss(model, tokens):
    out = model(tokens[:, :-1])
    logits = out[0] if isinstance(out, tuple) else out
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1))


def seq2seq_loss(model, src):
    tgt = torch.cat([torch.ones_like(src[:, :1]), src.flip(1)], 1)  # bos + reversed
    logits = model(src, tgt[:, :-1])
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tgt[:, 1:].reshape(-1), ignore_index=0)


def reconstruction_loss(model, x):
    return F.mse_loss(model(x), x)


def cases():
    """(id, factory, inputs, loss(model, *inputs), output shape)"""
    img28, labels = image_batch(1, 28)
    img32, _ = image_batch(3, 32)
    seq = torch.randn(6, 9, 8)
    tokens = token_batch()
    src = torch.randint(3, VOCAB, (4, 7))
    smooth = F.interpolate(torch.rand(6, 1, 7, 7), size=28, mode="bilinear")  # learnable in a few steps, unlike noise
    return [
        ("mnist", lambda: models.MNISTConvNet(), (img28, labels), classification_loss, (6, 10)),
        ("mnist-third-conv", lambda: models.MNISTConvNet(third_conv=True), (img28, labels), classification_loss, (6, 10)),
        ("lenet5", lambda: models.LeNet5(), (img28, labels), classification_loss, (6, 10)),
        ("cifar", lambda: models.CIFARConvNet(), (img32, labels), classification_loss, (6, 10)),
        ("lstm-classifier", lambda: models.LSTMClassifier(8, 32), (seq, labels), classification_loss, (6, 10)),
        ("gru-classifier-bidirectional", lambda: models.GRUClassifier(8, 32, bidirectional=True), (seq, labels),
         classification_loss, (6, 10)),
        ("rnn-classifier", lambda: models.RNNClassifier(8, 32), (seq, labels), classification_loss, (6, 10)),
        ("transformer-classifier", lambda: models.TransformerClassifier(VOCAB, 10, d_model=32, dim_feedforward=64),
         (tokens, torch.randint(0, 10, (5,))), classification_loss, (5, 10)),
        ("lstm-lm", lambda: models.RecurrentLM(VOCAB, 16, 32), (tokens,), lm_loss, None),
        ("gru-lm", lambda: models.RecurrentLM(VOCAB, 16, 32, cell="gru"), (tokens,), lm_loss, None),
        ("transformer-lm", lambda: models.TransformerLM(VOCAB, d_model=32, dim_feedforward=64), (tokens,), lm_loss, None),
        ("seq2seq", lambda: models.Seq2SeqTransformer(VOCAB, VOCAB, d_model=32, dim_feedforward=64), (src,), seq2seq_loss,
         None),
        ("autoencoder", lambda: models.Autoencoder(), (smooth,), reconstruction_loss, (6, 1, 28, 28)),
        ("conv-autoencoder", lambda: models.ConvAutoencoder(), (smooth,), reconstruction_loss, (6, 1, 28, 28)),
    ]  # fmt: skip


CASES = {c[0]: c[1:] for c in cases()}


def outputs(model, inputs):
    if isinstance(model, models.Seq2SeqTransformer):
        src = inputs[0]
        return model(src, src)
    out = model(inputs[0])
    return out[0] if isinstance(out, tuple) else out


@pytest.fixture(params=sorted(CASES))
def case(request):
    torch.manual_seed(hash(request.param) % 2**31)
    return CASES[request.param]


def test_forward_shape_and_bigkern_layers(case):
    factory, inputs, _, shape = case
    model = factory().eval()
    out = outputs(model, inputs)
    if shape is not None:
        assert tuple(out.shape) == shape
    assert torch.isfinite(out).all()
    torch_classes = (torch.nn.Conv2d, torch.nn.MaxPool2d, torch.nn.LSTM, torch.nn.GRU, torch.nn.RNN,
                     torch.nn.TransformerEncoderLayer, torch.nn.TransformerDecoderLayer, torch.nn.MultiheadAttention)  # fmt: skip
    for name, module in model.named_modules():
        if isinstance(module, torch_classes):  # every such layer runs bigkern's kernels
            assert type(module).__module__.startswith(("bigkern.nn", "bigkern.fusion")), (name, type(module))


def test_conv_relu_pairs_are_fused_at_construction():
    model = models.MNISTConvNet()
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(type(m) is bnn.conv.FusedConv2d for m in convs)
    assert sum(isinstance(m, torch.nn.ReLU) and type(m) is not torch.nn.ReLU for m in model.modules()) == len(convs)


def test_a_few_training_steps_lower_the_loss(case):
    factory, inputs, loss_fn, _ = case
    model = factory().train()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    with torch.no_grad():
        model.eval()
        before = loss_fn(model, *inputs).item()
        model.train()
    for _ in range(20):
        optimizer.zero_grad()
        loss_fn(model, *inputs).backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        after = loss_fn(model, *inputs).item()
    assert after < 0.9 * before, (before, after)


def test_checkpoints_interchange_with_the_torch_twin(case):
    factory, inputs, _, _ = case
    ours = factory().eval()
    twin = models.to_torch(factory()).eval()  # a differently initialised torch.nn model
    assert not any(type(m).__module__.startswith(("bigkern.nn", "bigkern.fusion")) for m in twin.modules())
    assert list(ours.state_dict()) == list(twin.state_dict())

    twin.load_state_dict(ours.state_dict())  # bigkern -> torch
    torch.testing.assert_close(outputs(twin, inputs), outputs(ours, inputs), rtol=1e-4, atol=1e-5)

    with torch.no_grad():
        for p in twin.parameters():
            p.add_(0.01 * torch.randn_like(p))
    ours.load_state_dict(twin.state_dict())  # torch -> bigkern
    torch.testing.assert_close(outputs(ours, inputs), outputs(twin, inputs), rtol=1e-4, atol=1e-5)


def test_generation_and_greedy_decoding_shapes():
    torch.manual_seed(0)
    prompt = torch.randint(0, VOCAB, (2, 3))
    assert models.RecurrentLM(VOCAB, 8, 16).eval().generate(prompt, 5).shape == (2, 8)
    lm = models.TransformerLM(VOCAB, d_model=16, dim_feedforward=32, max_len=6).eval()
    out = lm.generate(prompt, 5, temperature=0)
    assert out.shape == (2, 8) and torch.equal(out[:, :3], prompt)
    s2s = models.Seq2SeqTransformer(VOCAB, VOCAB, d_model=16, dim_feedforward=32).eval()
    decoded = s2s.greedy_decode(torch.randint(3, VOCAB, (3, 5)), max_len=6)
    assert decoded.shape[0] == 3 and decoded.shape[1] <= 7 and (decoded[:, 0] == s2s.bos_idx).all()


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="image_size=30"):
        models.MNISTConvNet(image_size=30)
    with pytest.raises(ValueError, match="cell='lstmm'"):
        models.RecurrentLM(VOCAB, cell="lstmm")
    with pytest.raises(ValueError, match="divisible by 4"):
        models.ConvAutoencoder()(torch.rand(1, 1, 30, 30))
    with pytest.raises(ValueError, match="max_len=4"):
        models.TransformerLM(VOCAB, d_model=16, max_len=4)(torch.randint(0, VOCAB, (1, 6)))
