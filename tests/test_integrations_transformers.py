"""bigkern as a Hugging Face transformers attention implementation (when transformers is installed)."""

import copy
import subprocess
import sys

import pytest
import torch

import bigkern
from tests.nn._attention_testing import assert_grads_like_torch, backend  # noqa: F401  (fixture)

transformers = pytest.importorskip("transformers")
bk_hf = pytest.importorskip("bigkern.integrations.transformers")

VOCAB = 61


def tiny_llamas(*implementations, attention_dropout=0.0):
    """Tiny grouped-query Llamas with identical weights, one per attention implementation."""
    bk_hf.register()
    models = []
    for implementation in implementations:
        config = transformers.LlamaConfig(
            vocab_size=VOCAB, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=64, attention_dropout=attention_dropout,
        )  # fmt: skip
        torch.manual_seed(0)
        models.append(transformers.LlamaForCausalLM._from_config(config, attn_implementation=implementation))
    for model in models[1:]:
        model.load_state_dict(models[0].state_dict())
    return models


@pytest.fixture
def op_calls(monkeypatch):
    calls = []
    real = bigkern.ops.attention

    def spy(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
        calls.append(dict(q=q, k=k, attn_mask=attn_mask, is_causal=is_causal, enable_gqa=enable_gqa, scale=scale,
                          dropout_p=dropout_p))  # fmt: skip
        return real(q, k, v, attn_mask, dropout_p, is_causal, scale, enable_gqa)

    monkeypatch.setattr(bigkern.ops, "attention", spy)
    return calls


def test_importing_bigkern_does_not_import_transformers():
    code = "import sys, bigkern, bigkern.integrations; assert 'transformers' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_register_is_idempotent():
    assert bk_hf.register() == bk_hf.register() == "bigkern"
    assert transformers.AttentionInterface()["bigkern"] is bk_hf.attention_forward


def test_logits_match_eager_and_sdpa(backend, op_calls):
    eager, sdpa, ours = (m.eval() for m in tiny_llamas("eager", "sdpa", "bigkern"))
    assert ours.config._attn_implementation == "bigkern"
    ids = torch.randint(0, VOCAB, (2, 9))
    padding = torch.ones(2, 9, dtype=torch.long)
    padding[1, :3] = 0  # left padding
    with torch.no_grad():
        got = ours(ids).logits
        torch.testing.assert_close(got, eager(ids).logits)
        call = op_calls[-1]
        assert call["attn_mask"] is None and call["is_causal"] is True  # the causal kernel, no mask read
        assert call["enable_gqa"] and call["q"].shape[1] == 2 * call["k"].shape[1]  # no repeated KV heads
        assert call["scale"] == pytest.approx(8**-0.5)

        got = ours(ids, attention_mask=padding).logits
        mask = op_calls[-1]["attn_mask"]
        assert mask.dtype == torch.bool and mask.shape[:2] == (2, 1)
        torch.testing.assert_close(got, sdpa(ids, attention_mask=padding).logits)
        # Padded query rows see no key: zeros as in SDPA, where eager averages over masked keys.
        torch.testing.assert_close(got[padding.bool()], eager(ids, attention_mask=padding).logits[padding.bool()])


def test_generation_with_kv_cache_matches_eager(backend, op_calls):
    eager, ours = (m.eval() for m in tiny_llamas("eager", "bigkern"))
    ids = torch.randint(0, VOCAB, (1, 6))
    with torch.no_grad():
        want = eager.generate(ids, max_new_tokens=6, do_sample=False, output_logits=True, return_dict_in_generate=True)
        got = ours.generate(ids, max_new_tokens=6, do_sample=False, output_logits=True, return_dict_in_generate=True)
    assert torch.equal(got.sequences, want.sequences)
    for step_got, step_want in zip(got.logits, want.logits):
        torch.testing.assert_close(step_got, step_want)
    assert any(c["q"].shape[2] == 1 for c in op_calls)  # decode steps ran through bigkern


def test_training_gradients_match_sdpa(backend, op_calls):
    eager, sdpa, ours = tiny_llamas("eager", "sdpa", "bigkern")  # training mode, attention_dropout 0
    reference = copy.deepcopy(eager).double()
    ids = torch.randint(0, VOCAB, (2, 8))
    for model in (ours, sdpa, reference):
        model(ids, labels=ids).loss.backward()
    names, params = zip(*ours.named_parameters())
    assert_grads_like_torch(names, [p.grad for p in params], [p.grad for p in sdpa.parameters()],
                            [p.grad for p in reference.parameters()])  # fmt: skip


def test_attention_dropout_reaches_the_op_in_training(backend, op_calls):
    (model,) = tiny_llamas("bigkern", attention_dropout=0.25)
    ids = torch.randint(0, VOCAB, (1, 5))
    model(ids)
    assert op_calls[-1]["dropout_p"] == 0.25
    model.eval()(ids)
    assert op_calls[-1]["dropout_p"] == 0.0


def test_t5_position_bias_and_padding_match_sdpa(backend, op_calls):
    # T5 adds a learned position bias to the scores (and does not scale them): the integration
    # folds it into the additive mask.
    bk_hf.register()
    models = []
    for implementation in ("eager", "sdpa", "bigkern"):
        config = transformers.T5Config(vocab_size=VOCAB, d_model=32, d_kv=8, d_ff=48, num_layers=2, num_heads=4,
                                       relative_attention_num_buckets=8, dropout_rate=0.0, decoder_start_token_id=0)  # fmt: skip
        torch.manual_seed(0)
        models.append(transformers.T5ForConditionalGeneration._from_config(config, attn_implementation=implementation))
    eager, sdpa, ours = (m.eval() for m in models)
    sdpa.load_state_dict(eager.state_dict())
    ours.load_state_dict(eager.state_dict())
    ids, decoder_ids = torch.randint(0, VOCAB, (2, 7)), torch.randint(0, VOCAB, (2, 5))
    padding = torch.ones(2, 7, dtype=torch.long)
    padding[1, 5:] = 0
    with torch.no_grad():
        got = ours(input_ids=ids, attention_mask=padding, decoder_input_ids=decoder_ids).logits
        torch.testing.assert_close(got, sdpa(input_ids=ids, attention_mask=padding, decoder_input_ids=decoder_ids).logits)
        torch.testing.assert_close(got, eager(input_ids=ids, attention_mask=padding, decoder_input_ids=decoder_ids).logits)
    assert op_calls and all(c["scale"] == 1.0 for c in op_calls)
