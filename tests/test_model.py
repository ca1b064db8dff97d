"""The model: shapes, exact parameter counts, Llama equivalence, bad shapes."""

import pytest
import torch

from myllm.config import MODEL_PRESETS, ModelConfig
from myllm.errors import ConfigError
from myllm.model import KVCache, Transformer
from myllm.plan import param_counts


def preset(name: str, **kw) -> ModelConfig:
    return ModelConfig(preset=name, **{**MODEL_PRESETS[name], **kw})


def test_myllm_1b_has_exactly_the_designed_parameter_count():
    counts = param_counts(preset("myllm-1b"))
    assert counts["total"] == 1_055_231_744
    assert counts["embedding (tied with output)"] == 65_536 * 1792
    assert counts["non-embedding"] == 1_055_231_744 - 65_536 * 1792


@pytest.mark.parametrize("name", list(MODEL_PRESETS))
def test_plan_count_equals_instantiated_model(name):
    cfg = preset(name)
    with torch.device("meta"):
        model = Transformer(cfg)
    assert param_counts(cfg)["total"] == sum(p.numel() for p in model.parameters())


def test_forward_shapes_and_loss_at_init_is_near_ln_vocab():
    torch.manual_seed(0)
    cfg = preset("nano")
    model = Transformer(cfg)
    x = torch.randint(0, cfg.vocab_size, (2, 16))
    assert model(x).shape == (2, 16, cfg.vocab_size)
    loss = model(x, torch.randint(0, cfg.vocab_size, (2, 16)))
    assert abs(loss.item() - torch.log(torch.tensor(cfg.vocab_size)).item()) < 0.3
    # tied embeddings and no biases
    names = [n for n, _ in model.named_parameters()]
    assert not any("bias" in n for n in names) and not any("lm_head" in n for n in names)


def test_causality_future_tokens_do_not_change_past_logits():
    torch.manual_seed(0)
    model = Transformer(preset("nano")).eval()
    x = torch.randint(0, 1024, (1, 20))
    y = x.clone()
    y[0, 10:] = torch.randint(0, 1024, (10,))
    with torch.no_grad():
        assert torch.allclose(model(x)[0, :10], model(y)[0, :10], atol=1e-6)


def test_cached_chunks_equal_full_forward():
    torch.manual_seed(0)
    model = Transformer(preset("nano")).eval()
    x = torch.randint(0, 1024, (2, 24))
    cache = KVCache.allocate(model.cfg, 2, 24)
    with torch.no_grad():
        full = model(x)
        a = model(x[:, :10], cache=cache, start=0)
        b = model(x[:, 10:17], cache=cache, start=10)  # a multi-token chunk after a prefix
        c = model(x[:, 17:18], cache=cache, start=17)  # one token
    assert torch.allclose(torch.cat([a, b, c], 1), full[:, :18], atol=1e-5)
    assert cache.nbytes() == 2 * 2 * 2 * 2 * 24 * 16 * 4  # k+v, layers, batch, kv heads, len, head dim, fp32


def test_matches_huggingface_llama_logits():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = preset("nano", n_layers=2)
    ours = Transformer(cfg).eval()
    hf_cfg = transformers.LlamaConfig(
        vocab_size=cfg.vocab_size, hidden_size=cfg.d_model, intermediate_size=cfg.d_ff,
        num_hidden_layers=cfg.n_layers, num_attention_heads=cfg.n_heads, num_key_value_heads=cfg.n_kv_heads,
        max_position_embeddings=cfg.context, rms_norm_eps=cfg.norm_eps, rope_theta=cfg.rope_theta,
        tie_word_embeddings=True, attention_bias=False, mlp_bias=False, head_dim=cfg.head_dim,
    )
    hf = transformers.LlamaForCausalLM(hf_cfg).eval()
    # Export is a rename table: our name -> "model." + our name.
    renamed = {f"model.{k}": v for k, v in ours.state_dict().items()}
    hf_keys = {k for k in hf.state_dict() if k != "lm_head.weight"}
    assert set(renamed) == hf_keys
    hf.load_state_dict(renamed, strict=False)
    x = torch.randint(0, cfg.vocab_size, (2, 32))
    with torch.no_grad():
        assert (ours(x) - hf(x).logits).abs().max().item() < 1e-4


@pytest.mark.parametrize(
    "kw, fragment",
    [
        (dict(d_model=100, n_heads=3), "n_heads = 3 does not divide model.d_model = 100"),
        (dict(n_heads=4, n_kv_heads=3), "n_kv_heads = 3 does not divide model.n_heads = 4"),
        (dict(n_layers=0), "model.n_layers = 0 must be positive"),
    ],
)
def test_impossible_shapes_are_rejected_with_the_key_and_choices(kw, fragment):
    with pytest.raises(ConfigError, match=fragment):
        Transformer(preset("nano", **kw))
