"""Generation: the KV-cache engine equals full recomputation, token for token."""

import pytest
import torch

from conftest import cycle_model
from myllm.config import MODEL_PRESETS, ModelConfig
from myllm.infer.engine import Decoder, SamplingParams, filter_logits, generate, generate_uncached
from myllm.model import Transformer


@pytest.fixture(scope="module")
def model():
    return cycle_model()


@pytest.mark.parametrize(
    "params",
    [
        SamplingParams(max_new_tokens=40, temperature=0),
        SamplingParams(max_new_tokens=40, temperature=0.9, seed=3),
        SamplingParams(max_new_tokens=40, temperature=1.2, top_k=20, seed=5),
        SamplingParams(max_new_tokens=40, temperature=1.0, top_p=0.8, seed=7),
    ],
)
def test_cached_generation_equals_full_recomputation(model, params):
    prompt = [1, 17, 250, 3, 99]
    cached = generate(model, prompt, params)
    assert len(cached) == 40 and len(set(cached)) > 3
    assert cached == generate_uncached(model, prompt, params)


def test_same_seed_same_text_other_seed_other_text():
    torch.manual_seed(1)
    model = Transformer(ModelConfig(preset="nano", **MODEL_PRESETS["nano"])).eval()
    p = SamplingParams(max_new_tokens=30, temperature=1.0, seed=11)
    assert generate(model, [1, 2], p) == generate(model, [1, 2], p)
    q = SamplingParams(max_new_tokens=30, temperature=1.0, seed=12)
    assert generate(model, [1, 2], p) != generate(model, [1, 2], q)


def test_stop_token_and_context_limit(model):
    greedy = generate(model, [1, 5], SamplingParams(max_new_tokens=20, temperature=0))
    stop = greedy[3]
    out = generate(model, [1, 5], SamplingParams(max_new_tokens=20, temperature=0, stop_ids=(stop,)))
    assert out == greedy[: greedy.index(stop)]
    long_prompt = list(range(2, 2 + model.cfg.context - 5))  # too long for 50 more: its last context - 50 stay
    greedy = SamplingParams(max_new_tokens=50, temperature=0)
    cut = generate(model, long_prompt, greedy)
    assert len(cut) == 50 and cut == generate(model, long_prompt[-(model.cfg.context - 50):], greedy)


def test_top_k_and_top_p_filters():
    logits = torch.tensor([[4.0, 3.0, 2.0, 1.0, 0.0]])
    assert torch.isinf(filter_logits(logits, 2, 1.0)).tolist() == [[False, False, True, True, True]]
    probs = torch.softmax(logits, -1)[0]  # 0.64, 0.24, 0.09, ...
    kept = ~torch.isinf(filter_logits(logits, 0, 0.7))
    assert kept.tolist() == [[True, True, False, False, False]] and probs[0] < 0.7 < probs[:2].sum()


def test_a_reused_decoder_gives_what_a_fresh_cache_gives(model):
    """A chat reuses one decoder: a shorter second prompt must not see the first one's cache.

    NaN left in every slot makes any read of a slot the new prompt has not written show up."""
    decoder = Decoder(model)
    p = SamplingParams(max_new_tokens=30, temperature=0.8, seed=4)
    long, short = [1] + list(range(40, 90)), [1, 17, 250]
    assert generate(model, long, p, decoder) == generate(model, long, p)
    decoder.cache.k.fill_(float("nan"))
    decoder.cache.v.fill_(float("nan"))
    assert generate(model, short, p, decoder) == generate(model, short, p)
    with pytest.raises(ValueError, match="different model"):
        generate(Transformer(model.cfg), short, p, decoder)


@pytest.mark.slow
def test_compiled_decoder_matches_eager_and_compiles_once(model):
    """torch.compile'd one-token step (fixed-shape cache, masked): same tokens as eager decoding,
    greedy and sampled, over prompts of different lengths, from a single compiled graph."""
    from torch._dynamo.utils import counters

    counters.clear()
    decoder = Decoder(model, compile=True)
    for prompt, params in [
        ([1, 17, 250, 3, 99], SamplingParams(max_new_tokens=40, temperature=0)),
        ([1] + list(range(60, 100)), SamplingParams(max_new_tokens=30, temperature=0.9, seed=3)),
        ([1, 5], SamplingParams(max_new_tokens=25, temperature=1.0, top_p=0.9, seed=8, repetition_penalty=1.3)),
    ]:
        assert generate(model, prompt, params, decoder) == generate(model, prompt, params)
    assert counters["stats"]["unique_graphs"] == 1


@pytest.mark.slow
def test_a_compiled_quantized_decoder_keeps_its_integer_weights(model):
    """Freezing would fold the dequantized fp32 weights into the graph as constants; a quantized
    model compiles without it, so the graph reads the stored integers: changing them after the
    compile changes what it decodes, exactly as it changes eager decoding."""
    import copy

    from myllm.infer.quant import quantize_model

    quantized = quantize_model(copy.deepcopy(model), bits=8)
    decoder = Decoder(quantized, compile=True)
    params = SamplingParams(max_new_tokens=30, temperature=0)
    before = generate(quantized, [1, 17, 250], params)
    assert generate(quantized, [1, 17, 250], params, decoder) == before
    for layer in quantized.layers:
        layer.mlp.down_proj.qweight.neg_()  # flip every MLP's output
    after = generate(quantized, [1, 17, 250], params)
    assert after != before and generate(quantized, [1, 17, 250], params, decoder) == after


@pytest.mark.slow
def test_past_the_recompile_limit_a_decoder_warns_and_decodes_eagerly(model):
    other = Transformer(model.cfg).eval()
    params = SamplingParams(max_new_tokens=10, temperature=0)
    with torch._dynamo.config.patch(recompile_limit=1):
        assert generate(model, [1, 5], params, Decoder(model, compile=True)) == generate(model, [1, 5], params)
        second = Decoder(other, compile=True)
        with pytest.warns(UserWarning, match="recompile_limit"):
            out = generate(other, [1, 5], params, second)
    assert out == generate(other, [1, 5], params) and not second.compiled


def test_a_step_outside_the_decoder_cache_is_refused(model):
    decoder = Decoder(model, max_len=8)
    decoder.prefill([1, 2, 3])
    with pytest.raises(ValueError, match="outside this decoder's cache of 8"):
        decoder.step(torch.tensor([[3]]), 8)
