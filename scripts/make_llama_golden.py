#!/usr/bin/env python3
"""Write tests/golden/llama_tiny/, llama_tied/, llama3_rope/, llama_bias/, qwen2_tiny/,
mistral_window/, qwen3_tiny/, gemma3_tiny/, llama_yarn/, gemma3_linear/, phi3_window/,
phi3_longrope/, phi3_partial/, gemma2_softcap/, olmo2_tiny/, granite_tiny/, gemma_tiny/,
smollm3_tiny/ and gemma3_mm/
(--only NAME ... for some): tiny LlamaForCausalLM models (and
their Qwen2, Mistral and Qwen3 relatives)
made by transformers itself, plus their inputs and expected outputs (logits, loss, the gradient
of the loss for every parameter, and a greedy generation), for the Rust parity tests of
lantern_models::llama.

Run with the reference venv (scripts/ref_env.sh):
    .venv-ref/bin/python scripts/make_llama_golden.py [--out-dir tests/golden]

llama_tiny/: vocabulary 96, width 32, MLP width 64, 2 layers, 4 query heads sharing 2
key/value heads (grouped-query attention), context 32, RoPE base 100 (not the default 10,000,
so that a reader that misses it fails), rms_norm_eps 1e-6, untied lm_head.
llama_tied/: the same with tie_word_embeddings=True and 4 key/value heads (MHA).
llama3_rope/: llama_tiny with Llama 3.1's RoPE scaling (rope_type "llama3", factor 8,
low/high frequency factors 1 and 4, original context 8): of the 4 frequencies of a head of 8,
the highest (wavelength 6.3, between 8/4 and 8/1) is interpolated and the other three are
divided by 8.
llama_bias/: llama_tiny with attention_bias and mlp_bias (every Linear of a block has a bias).
qwen2_tiny/: Qwen2ForCausalLM (biases on q_proj, k_proj and v_proj only), tied head, 2
key/value heads.
mistral_window/: MistralForCausalLM with sliding_window 5: each token attends to itself and
the 4 before it.
qwen3_tiny/: Qwen3ForCausalLM (an RMSNorm over each query and key head before RoPE), tied
head, 2 key/value heads, head_dim 16 where hidden_size / num_attention_heads is 8.
gemma3_tiny/: Gemma3ForCausalLM (gemma3_text): three layers (sliding, full, sliding; window
5), heads of 16, query_pre_attn_scalar 12, RoPE bases 1000 and 100, padding id 0, tied head.
llama_yarn/: llama_tiny with YaRN RoPE scaling (factor 4, original context 8, beta_fast 2,
beta_slow 0.25, untruncated ramp; cos and sin scaled by the derived attention factor).
gemma3_linear/: gemma3_tiny with linear RoPE scaling (factor 4) on its full layer only.
olmo2_tiny/: Olmo2ForCausalLM (no norm before attention or the MLP, one after each; RMSNorms
over all query heads and all key heads together), 2 key/value heads, untied.
gemma_tiny/: GemmaForCausalLM (Gemma 1: Llama's blocks with Gemma's norms, MLP and embeddings).
smollm3_tiny/: SmolLM3ForCausalLM (Llama with no RoPE on every second layer here), tied.
granite_tiny/: GraniteForCausalLM (Llama with multipliers on the embeddings, the residual
branches, the attention scores and the logits), tied.
gemma2_softcap/: Gemma2ForCausalLM (Gemma 3's layout without head norms, one RoPE base,
attention scores soft-capped at 2 and logits at 1.5), three layers (sliding, full, sliding).
phi3_window/: Phi3ForCausalLM (q, k and v in one fused qkv_proj, gate and up in one
gate_up_proj), 2 key/value heads, untied, sliding_window 5.
phi3_partial/: phi3_longrope/ with RoPE over half of each head (partial_rotary_factor 0.5, as
Phi-4-mini's 0.75), tied.
phi3_longrope/: Phi3ForCausalLM with LongRoPE (original context 8: the forward takes the long
factors, the generation's prompt the short ones, then transformers restarts its cache).
gemma3_mm/: a multimodal Gemma3ForConditionalGeneration (gemma3_linear's language model beside
a tiny vision tower), with the logits and loss of a text-only forward (no generation, no
gradients: inputs.json holds input_ids only).
Every parameter (RMSNorm gains included) is redrawn N(0, 0.2) from torch.manual_seed(1234)
(make_golden.randomised), so nothing is trivially 0 or 1.

Files written to each folder:
    config.json, model.safetensors   -- LlamaForCausalLM.save_pretrained(safe_serialization=True)
    inputs.json                      -- {"input_ids": [2][16], "prompt_len": 8,
                                         "generated": [2][24] (prompt + 16 greedy tokens)}
    expected.safetensors             -- float32 `logits` [2,16,96], `loss` [] (labels =
                                        input_ids), `grad.<param>` for every parameter in
                                        named_parameters order, `gen_logits` [2,16,96] (the
                                        logits each greedy token was chosen from); metadata
                                        {"format": "pt"}
"""
import argparse
import json
import os
import sys

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from transformers import (Gemma2Config, Gemma2ForCausalLM, Gemma3Config, Gemma3ForCausalLM,
                          Gemma3ForConditionalGeneration, Gemma3TextConfig, GemmaConfig,
                          GemmaForCausalLM, GenerationConfig, GraniteConfig, GraniteForCausalLM,
                          LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM,
                          Olmo2Config, Olmo2ForCausalLM, Phi3Config, Phi3ForCausalLM, Qwen2Config,
                          Qwen2ForCausalLM, Qwen3Config, Qwen3ForCausalLM, SiglipVisionConfig,
                          SmolLM3Config, SmolLM3ForCausalLM)

from golden_common import save_golden
from make_golden import randomised

INPUT_SEED = 4321
B, T = 2, 16
PROMPT, NEW = 8, 16
V = 96
ROPE_THETA = 100.0
# Mistral's sliding window in mistral_window/: shorter than the 16 tokens of the forward and the
# 24 of the generation, so that a reader that ignores it fails.
WINDOW = 5


LLAMA3_ROPE = {"rope_type": "llama3", "rope_theta": ROPE_THETA, "factor": 8.0,
               "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 8}
# YaRN with its optional keys set: over a head of 8 and an original context of 8, the ramp runs
# from dimension 0 (beta_fast 2) to 1.41 (beta_slow 0.25, untruncated), so the first frequency
# is kept, the second blended, the other two divided by 4; cos and sin scaled by 1.1386.
YARN_ROPE = {"rope_type": "yarn", "rope_theta": ROPE_THETA, "factor": 4.0,
             "original_max_position_embeddings": 8, "beta_fast": 2.0, "beta_slow": 0.25,
             "truncate": False}
# LongRoPE over a head of 8 (Phi-3's): the 16-token forward is past the original context of 8
# and takes the long factors; a generation's 8-token prompt takes the short ones, and at its
# ninth token transformers drops the cache and runs the whole sequence with the long ones.
# factor max/original = 4: cos and sin scaled by sqrt(1 + ln 4 / ln 8).
LONGROPE = {"rope_type": "longrope", "rope_theta": ROPE_THETA,
            "short_factor": [1.0, 1.25, 1.5, 2.0], "long_factor": [1.5, 3.0, 6.0, 12.0]}
GEMMA3_ROPE = {"full_attention": {"rope_type": "default", "rope_theta": 1000.0},
               "sliding_attention": {"rope_type": "default", "rope_theta": 100.0}}


# The Llama family's members: (config class, model class).
FAMILIES = {
    "llama": (LlamaConfig, LlamaForCausalLM),
    "mistral": (MistralConfig, MistralForCausalLM),
    "qwen2": (Qwen2Config, Qwen2ForCausalLM),
    "qwen3": (Qwen3Config, Qwen3ForCausalLM),
    "gemma3_text": (Gemma3TextConfig, Gemma3ForCausalLM),
    "gemma2": (Gemma2Config, Gemma2ForCausalLM),
    "gemma": (GemmaConfig, GemmaForCausalLM),
    "olmo2": (Olmo2Config, Olmo2ForCausalLM),
    "granite": (GraniteConfig, GraniteForCausalLM),
    "smollm3": (SmolLM3Config, SmolLM3ForCausalLM),
    "phi3": (Phi3Config, Phi3ForCausalLM),
}


def tiny_llama_config(kv_heads: int, tied: bool, rope: dict | None = None,
                      family: str = "llama", **extra) -> LlamaConfig:
    keys = dict(attention_bias=False, mlp_bias=False) if family == "llama" else {}
    keys.update(extra)
    if family in ("gemma3_text", "gemma2", "gemma"):
        # Gemma names its activation apart (GELU, tanh approximation), and Gemma 3's RoPE is
        # one per kind of layer.
        return FAMILIES[family][0](
            vocab_size=V, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
            num_attention_heads=4, num_key_value_heads=kv_heads, max_position_embeddings=32,
            rms_norm_eps=1e-6, attention_dropout=0.0, tie_word_embeddings=tied,
            bos_token_id=None, eos_token_id=None, **keys)
    return FAMILIES[family][0](
        vocab_size=V,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=kv_heads,
        max_position_embeddings=32,
        rope_parameters=rope or {"rope_type": "default", "rope_theta": ROPE_THETA},
        rms_norm_eps=1e-6,
        hidden_act="silu",
        attention_dropout=0.0,
        tie_word_embeddings=tied,
        # No end of text: greedy generation runs its NEW tokens whatever they are.
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=None,
        **keys,
    )


def write(out: str, kv_heads: int, tied: bool, rope: dict | None = None,
          family: str = "llama", **extra) -> None:
    config = tiny_llama_config(kv_heads, tied, rope, family, **extra)
    model_class = FAMILIES[family][1]
    model = randomised(model_class, config)
    if tied:
        assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr(), "not tied"
    model.eval()

    g = torch.Generator().manual_seed(INPUT_SEED)
    input_ids = torch.randint(0, V, (B, T), generator=g, dtype=torch.long)

    out_ = model(input_ids=input_ids, labels=input_ids)
    logits = out_.logits.detach().to(torch.float32).contiguous()
    loss = out_.loss
    # The loss convention: mean CE over the B*(T-1) shifted positions.
    manual = F.cross_entropy(logits[:, :-1, :].reshape(-1, V), input_ids[:, 1:].reshape(-1))
    assert abs(manual.item() - loss.item()) < 1e-6, (manual.item(), loss.item())
    loss.backward()
    expected = {"logits": logits, "loss": loss.detach().to(torch.float32).reshape(()).contiguous()}
    names = []
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        expected[f"grad.{name}"] = p.grad.detach().to(torch.float32).contiguous()
        names.append(name)
    assert ("lm_head.weight" in names) == (not tied), names

    # Greedy generation through transformers' own key/value cache, from the first PROMPT ids.
    gen_cfg = GenerationConfig(do_sample=False, max_new_tokens=NEW, min_new_tokens=NEW,
                               eos_token_id=None, pad_token_id=0,
                               return_dict_in_generate=True, output_logits=True)
    with torch.no_grad():
        gen = model.generate(input_ids[:, :PROMPT], generation_config=gen_cfg)
    generated = gen.sequences
    assert list(generated.shape) == [B, PROMPT + NEW], generated.shape
    gen_logits = torch.stack(gen.logits, dim=1).to(torch.float32).contiguous()  # (B, NEW, V)
    assert torch.equal(gen_logits.argmax(-1), generated[:, PROMPT:])
    # Cached and uncached logits agree: the first step is the prompt's last position. (With
    # LongRoPE the prompt alone takes the short factors, the rest the long ones.)
    first = 1 if config.rope_parameters.get("rope_type") == "longrope" else 0
    with torch.no_grad():
        full = model(input_ids=generated).logits
    gap = (full[:, PROMPT - 1 + first:-1] - gen_logits[:, first:]).abs().max().item()
    assert gap < 1e-5, gap
    expected["gen_logits"] = gen_logits

    os.makedirs(out, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    gen_file = os.path.join(out, "generation_config.json")
    if os.path.exists(gen_file):
        os.remove(gen_file)  # not needed by our tests
    with open(os.path.join(out, "inputs.json"), "w") as f:
        json.dump({"input_ids": input_ids.tolist(), "prompt_len": PROMPT,
                   "generated": generated.tolist()}, f)
        f.write("\n")
    save_file(expected, os.path.join(out, "expected.safetensors"), metadata={"format": "pt"})

    # The folder loads back the same.
    back = model_class.from_pretrained(out)
    rope_back = back.config.rope_parameters
    if family == "gemma3_text":
        assert rope_back["sliding_attention"]["rope_theta"] == 100.0, rope_back
    else:
        assert rope_back["rope_theta"] == ROPE_THETA
    with torch.no_grad():
        again = back(input_ids=input_ids).logits
    assert torch.equal(again, logits), (again - logits).abs().max().item()

    print(f"{out}: loss = {loss.item():.6f}, logits in [{logits.min().item():.4f}, "
          f"{logits.max().item():.4f}], cached-vs-full gap {gap:.2e}, "
          f"{len(names)} parameters", file=sys.stderr)
    for name in ("model.safetensors", "expected.safetensors"):
        print(f"  {name}: {os.path.getsize(os.path.join(out, name))} bytes", file=sys.stderr)


def write_multimodal(out: str) -> None:
    """gemma3_mm/: a Gemma3ForConditionalGeneration (a tiny SigLIP vision tower and projector
    beside gemma3_linear's language model), saved as transformers saves it (its language model
    under `language_model.model.`, the vision weights beside it), with the logits and loss of
    a text-only forward: what reading such a folder as its language model must reproduce."""
    text = tiny_llama_config(2, True, None, "gemma3_text", head_dim=16, sliding_window=WINDOW,
                             sliding_window_pattern=2, query_pre_attn_scalar=12, pad_token_id=0,
                             rope_parameters={**GEMMA3_ROPE, "full_attention": {
                                 "rope_type": "linear", "factor": 4.0, "rope_theta": 1000.0}})
    vision = SiglipVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                num_attention_heads=2, image_size=28, patch_size=14)
    # Image token ids inside the vocabulary but never among the inputs below.
    config = Gemma3Config(text_config=text, vision_config=vision, mm_tokens_per_image=4,
                          image_token_index=V - 1, boi_token_index=V - 2, eoi_token_index=V - 3)
    model = randomised(Gemma3ForConditionalGeneration, config)
    model.eval()
    g = torch.Generator().manual_seed(INPUT_SEED)
    input_ids = torch.randint(0, V - 3, (B, T), generator=g, dtype=torch.long)
    out_ = model(input_ids=input_ids, labels=input_ids)
    logits = out_.logits.detach().to(torch.float32).contiguous()
    manual = F.cross_entropy(logits[:, :-1, :].reshape(-1, V), input_ids[:, 1:].reshape(-1))
    assert abs(manual.item() - out_.loss.item()) < 1e-6, (manual.item(), out_.loss.item())
    expected = {"logits": logits, "loss": out_.loss.detach().to(torch.float32).reshape(()).contiguous()}
    save_golden(model, out, {"input_ids": input_ids.tolist()}, expected)
    # transformers reads the language model alone the same (Gemma3ForCausalLM of text_config
    # over the `language_model.model.` tensors).
    lm = Gemma3ForCausalLM(model.config.text_config)
    lm.model.load_state_dict(model.model.language_model.state_dict())
    lm.eval()
    with torch.no_grad():
        alone = lm(input_ids=input_ids).logits
    gap = (alone - logits).abs().max().item()
    assert gap == 0.0, gap
    print(f"{out}: loss = {out_.loss.item():.6f}, text-only language model gap {gap}",
          file=sys.stderr)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap.add_argument("--out-dir", default=os.path.join(repo, "tests", "golden"))
    ap.add_argument("--only", nargs="*", help="write only these folders")
    args = ap.parse_args()
    torch.use_deterministic_algorithms(True)
    folders = {
        "llama_tiny": dict(kv_heads=2, tied=False),
        "llama_tied": dict(kv_heads=4, tied=True),
        "llama3_rope": dict(kv_heads=2, tied=False, rope=LLAMA3_ROPE),
        "llama_bias": dict(kv_heads=2, tied=False, attention_bias=True, mlp_bias=True),
        "qwen2_tiny": dict(kv_heads=2, tied=True, family="qwen2"),
        "mistral_window": dict(kv_heads=2, tied=False, family="mistral", sliding_window=WINDOW),
        # Heads of 16 under a width of 32 and 4 heads: q_proj (64, 32), o_proj (32, 64).
        "qwen3_tiny": dict(kv_heads=2, tied=True, family="qwen3", head_dim=16),
        # Three layers (sliding, full, sliding), a window of 5, heads of 16, scores scaled by
        # 1/sqrt(12), RoPE bases 1000 (full) and 100 (sliding), padding id 0 (Gemma's).
        "gemma3_tiny": dict(kv_heads=2, tied=True, family="gemma3_text", head_dim=16,
                            sliding_window=WINDOW, sliding_window_pattern=2,
                            query_pre_attn_scalar=12, pad_token_id=0,
                            rope_parameters=GEMMA3_ROPE),
        "llama_yarn": dict(kv_heads=2, tied=False, rope=YARN_ROPE),
        # Phi-3's fused qkv_proj and gate_up_proj, with Mistral's window of 5.
        "phi3_window": dict(kv_heads=2, tied=False, family="phi3", sliding_window=WINDOW),
        # OLMo 2: norms on attention's and the MLP's outputs only, q/k norms over all heads.
        "olmo2_tiny": dict(kv_heads=2, tied=False, family="olmo2"),
        # SmolLM3: a NoPE layer every second one (no_rope_layer_interval 2: layer 1 has no
        # RoPE), tied head.
        "smollm3_tiny": dict(kv_heads=2, tied=True, family="smollm3",
                             no_rope_layer_interval=2),
        # Gemma 1: Gemma's norms (gains 1 + w), GELU (tanh) MLP and scaled embeddings on Llama's
        # two norms a block; heads of 16; its legacy hidden_act "gelu" (GemmaConfig reads it as
        # the tanh approximation and writes gelu_pytorch_tanh); padding id 0, tied head.
        "gemma_tiny": dict(kv_heads=2, tied=True, family="gemma", head_dim=16, hidden_act="gelu",
                           pad_token_id=0, rope_parameters={"rope_type": "default",
                                                            "rope_theta": ROPE_THETA}),
        # Granite: Granite 3.0 2B's embedding (12), residual (0.22) and logit (8) multipliers,
        # and an attention multiplier (0.25) other than 1/sqrt(8); tied head.
        "granite_tiny": dict(kv_heads=2, tied=True, family="granite", embedding_multiplier=12.0,
                             residual_multiplier=0.22, attention_multiplier=0.25,
                             logits_scaling=8.0),
        # Gemma 2: layers sliding, full, sliding (window 5), heads of 16, scores scaled by
        # 1/sqrt(12) and soft-capped at 2, logits soft-capped at 1.5 (both low enough to bend
        # the tiny model's values), one RoPE base (100), padding id 0, tied head.
        "gemma2_softcap": dict(kv_heads=2, tied=True, family="gemma2", head_dim=16,
                               sliding_window=WINDOW, query_pre_attn_scalar=12, pad_token_id=0,
                               attn_logit_softcapping=2.0, final_logit_softcapping=1.5,
                               rope_parameters={"rope_type": "default",
                                                "rope_theta": ROPE_THETA}),
        "phi3_longrope": dict(kv_heads=2, tied=False, rope=LONGROPE, family="phi3",
                              original_max_position_embeddings=8),
        # Phi-4-mini's layout: RoPE over half of each head of 8 (partial_rotary_factor 0.5:
        # the first 4 dimensions turn, the last 4 pass), with LongRoPE's 2 factors each, tied.
        "phi3_partial": dict(kv_heads=2, tied=True, family="phi3",
                             original_max_position_embeddings=8,
                             rope={"rope_type": "longrope", "rope_theta": ROPE_THETA,
                                   "partial_rotary_factor": 0.5, "short_factor": [1.0, 1.5],
                                   "long_factor": [2.0, 8.0]}),
        # gemma3_tiny with Gemma 3 4B's linear RoPE scaling (factor 4 here) on its full layer.
        "gemma3_linear": dict(kv_heads=2, tied=True, family="gemma3_text", head_dim=16,
                              sliding_window=WINDOW, sliding_window_pattern=2,
                              query_pre_attn_scalar=12, pad_token_id=0,
                              rope_parameters={**GEMMA3_ROPE, "full_attention": {
                                  "rope_type": "linear", "factor": 4.0, "rope_theta": 1000.0}}),
    }
    for name, kwargs in folders.items():
        if args.only is None or name in args.only:
            write(os.path.join(args.out_dir, name), **kwargs)
    if args.only is None or "gemma3_mm" in args.only:
        write_multimodal(os.path.join(args.out_dir, "gemma3_mm"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
