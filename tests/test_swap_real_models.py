"""bigkern.swap on models nobody here wrote: torchvision's resnet18, vgg11, mobilenet_v3_small and a
small VisionTransformer, torch.nn.Transformer, and Hugging Face BERT and GPT-2 from small configs.

Each: the swapped model's output is as close to a float64 run of the original as the original's
own float32 output is (within 2x, plus a floor of 1e-5 of the output's scale); state_dict keys do
not change; a training step runs with finite gradients; the report names what was swapped or
fused; unswap gives back the original classes and outputs.
"""

import copy

import pytest
import torch

import bigkern


def assert_swap_is_exact_enough(model, inputs, forward=lambda m, inputs: m(*inputs)):
    """Swap ``model`` (eval mode) and check its outputs against float64; returns the report."""
    model.eval()
    reference = forward(copy.deepcopy(model).double(), [t.double() if t.is_floating_point() else t for t in inputs])
    original = forward(model, inputs)
    keys = list(model.state_dict())
    classes = [type(m) for m in model.modules()]
    report = bigkern.swap(model)
    swapped = forward(model, inputs)
    torch_error = (original.double() - reference).abs().max().item()
    our_error = (swapped.double() - reference).abs().max().item()
    scale = reference.abs().max().item()
    assert our_error <= 2 * torch_error + 1e-5 * scale, (our_error, torch_error, scale)
    assert list(model.state_dict()) == keys
    return report, original, classes


def assert_training_step_runs(model, inputs, forward=lambda m, inputs: m(*inputs)):
    """On a copy of the swapped model, so the caller's weights and statistics stay as they were."""
    model = copy.deepcopy(model).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    forward(model, inputs).float().square().mean().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)
    optimizer.step()


def assert_unswap_restores(model, inputs, original, classes, forward=lambda m, inputs: m(*inputs)):
    model.eval()
    bigkern.unswap(model)
    assert [type(m) for m in model.modules()] == classes
    torch.testing.assert_close(forward(model, inputs), original)


# ---------------------------------------------------------------------------------------------
# torchvision
# ---------------------------------------------------------------------------------------------



def vision():
    return pytest.importorskip("torchvision.models")


@pytest.mark.parametrize("arch", ["resnet18", "vgg11", "mobilenet_v3_small"])
def test_torchvision_cnns(arch):
    models = vision()
    torch.manual_seed(0)
    model = getattr(models, arch)(num_classes=10)
    with torch.no_grad():  # non-trivial batch-norm statistics, so folding them is tested
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    x = torch.randn(2, 3, 64, 64)
    report, original, classes = assert_swap_is_exact_enough(model, [x])
    swapped = {e.module_class for e in report.swapped}
    assert "Conv2d" in swapped
    if arch == "resnet18":  # conv1 -> bn1 -> relu in each block, found in the fx graph
        fused = {e.name for e in report.fused}
        assert {"bn1", "relu", "layer1.0.bn1"} <= fused
        assert "MaxPool2d" in swapped and "AdaptiveAvgPool2d" in swapped
        assert "layer1.0.bn2" in fused  # bn2 is folded; the residual add stays in the block's forward
    if arch == "vgg11":
        assert len(report.fused) == 8  # every conv's ReLU
    if arch == "mobilenet_v3_small":  # conv -> bn -> Hardswish: the bn is folded, Hardswish is not an epilogue
        assert any(e.module_class == "BatchNorm2d" for e in report.fused)
        assert not any(e.module_class == "Hardswish" for e in report.fused)
    assert_training_step_runs(model, [x])
    assert_unswap_restores(model, [x], original, classes)


def test_torchvision_vision_transformer():
    models = vision()
    torch.manual_seed(0)
    model = models.VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=4, hidden_dim=32,
                                     mlp_dim=64, num_classes=10)  # fmt: skip
    x = torch.randn(3, 3, 32, 32)
    report, original, classes = assert_swap_is_exact_enough(model, [x])
    swapped = [e.module_class for e in report.swapped]
    assert swapped.count("MultiheadAttention") == 2 and "Conv2d" in swapped  # the patch embedding
    assert_training_step_runs(model, [x])
    assert_unswap_restores(model, [x], original, classes)


def test_torch_nn_transformer():
    torch.manual_seed(0)
    model = torch.nn.Transformer(d_model=32, nhead=4, num_encoder_layers=2, num_decoder_layers=2, dim_feedforward=64,
                                 batch_first=True)  # fmt: skip
    src, tgt = torch.randn(2, 9, 32), torch.randn(2, 7, 32)
    mask = torch.nn.Transformer.generate_square_subsequent_mask(7)

    def forward(m, inputs):
        s, t = inputs
        return m(s, t, tgt_mask=mask.to(s.dtype), tgt_is_causal=True)

    report, original, classes = assert_swap_is_exact_enough(model, [src, tgt], forward)
    assert {e.module_class for e in report.swapped} >= {"Transformer", "TransformerEncoderLayer", "TransformerDecoderLayer"}
    trained = copy.deepcopy(model).train()
    forward(trained, [src, tgt]).square().mean().backward()
    assert all(torch.isfinite(p.grad).all() for p in trained.parameters())
    assert_unswap_restores(model, [src, tgt], original, classes, forward)


# ---------------------------------------------------------------------------------------------
# Hugging Face transformers
# ---------------------------------------------------------------------------------------------


def hf_model(kind):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    if kind == "bert":
        config = transformers.BertConfig(vocab_size=97, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                         intermediate_size=64, max_position_embeddings=64, num_labels=3)  # fmt: skip
        return transformers.BertForSequenceClassification._from_config(config, attn_implementation="sdpa")
    config = transformers.GPT2Config(vocab_size=97, n_embd=32, n_layer=2, n_head=4, n_positions=64,
                                     bos_token_id=0, eos_token_id=0)  # fmt: skip
    return transformers.GPT2LMHeadModel._from_config(config, attn_implementation="sdpa")


@pytest.mark.parametrize("kind", ["bert", "gpt2"])
def test_hugging_face_models(kind):
    model = hf_model(kind)
    ids = torch.randint(0, 97, (2, 13))
    attention_mask = torch.ones_like(ids)
    attention_mask[1, 9:] = 0  # padding in one sequence

    def forward(m, inputs):
        return m(input_ids=inputs[0], attention_mask=inputs[1]).logits

    report, original, classes = assert_swap_is_exact_enough(model, [ids, attention_mask], forward)
    (entry,) = report.swapped
    assert entry.name == "" and "attention implementation 'sdpa' -> 'bigkern'" in entry.reason
    assert model.config._attn_implementation == "bigkern"
    assert_training_step_runs(model, [ids, attention_mask], forward)
    assert_unswap_restores(model, [ids, attention_mask], original, classes, forward)
    assert model.config._attn_implementation == "sdpa"


def test_hugging_face_model_inside_a_user_module_and_excluded():
    wrapper = torch.nn.Sequential()
    wrapper.add_module("encoder", hf_model("bert"))
    report = bigkern.swap(wrapper, exclude=["BertForSequenceClassification"])
    assert [(e.name, e.action) for e in report.entries] == [("encoder", "excluded")]
    assert wrapper.encoder.config._attn_implementation == "sdpa"
    report = bigkern.swap(wrapper)
    assert [(e.name, e.action) for e in report.swapped] == [("encoder", "swapped")]


def test_report_says_when_nothing_is_replaced():
    assert "nothing in this model" in str(bigkern.swap(torch.nn.Sequential(torch.nn.Linear(3, 3))))
