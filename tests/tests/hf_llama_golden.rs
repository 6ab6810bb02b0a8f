//! Parity with transformers' `LlamaForCausalLM` on golden files it wrote
//! (`scripts/make_llama_golden.py`): `llama_tiny/` (grouped-query attention, untied head),
//! `llama_tied/` (MHA, head tied to the embedding), `llama3_rope/` (llama_tiny with Llama
//! 3.1's RoPE scaling), `llama_bias/` (`attention_bias` and `mlp_bias`), and two relatives:
//! `qwen2_tiny/` (`Qwen2ForCausalLM`: q/k/v biases, tied head) and `mistral_window/`
//! (`MistralForCausalLM` with a sliding window of 5 tokens, shorter than the sequences), and
//! `qwen3_tiny/` (`Qwen3ForCausalLM`: per-head query and key RMSNorms, heads of 16 under a
//! width of 32 and 4 heads), `gemma3_tiny/` (`Gemma3ForCausalLM`), and two more RoPE
//! scalings: `llama_yarn/` (YaRN) and `gemma3_linear/` (linear, on Gemma 3's full layer only),
//! `phi3_window/` (`Phi3ForCausalLM`: fused `qkv_proj` and `gate_up_proj`, a window of 5),
//! `phi3_longrope/` (Phi-3's LongRoPE, short and long factors, the cache restarted between),
//! `gemma2_softcap/` (`Gemma2ForCausalLM`: soft-capped attention scores and logits),
//! `olmo2_tiny/` (`Olmo2ForCausalLM`: norms after attention and the MLP only, q/k norms over
//! all heads), `granite_tiny/` (`GraniteForCausalLM`: its four multipliers), `gemma_tiny/`
//! (`GemmaForCausalLM`: Gemma 1), `phi3_partial/` (Phi-4-mini's RoPE over part of each head),
//! `smollm3_tiny/` (`SmolLM3ForCausalLM`: a layer without RoPE),
//! each saved with `save_pretrained`, with
//! token ids, the logits, the loss and the gradient of every parameter transformers computed,
//! and a greedy generation through its key/value cache.

use candle_core::{DType, Device, Tensor};
use lantern_models::llama::{hf, KvCache, Llama, LlamaConfig, LlamaFamily, RopeScaling};
use lantern_models::{safetensors_io, Mode, Params};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

mod common;
use common::{expected_in, golden_dir, matrix, max_abs, read_json, u32_matrix};

const FOLDERS: [&str; 18] = [
    "llama_tiny",
    "llama_tied",
    "llama3_rope",
    "llama_bias",
    "qwen2_tiny",
    "mistral_window",
    "qwen3_tiny",
    "gemma3_tiny",
    "llama_yarn",
    "gemma3_linear",
    "phi3_window",
    "phi3_longrope",
    "gemma2_softcap",
    "olmo2_tiny",
    "granite_tiny",
    "gemma_tiny",
    "phi3_partial",
    "smollm3_tiny",
];

fn load(dir: &Path) -> (LlamaConfig, Params) {
    let cfg = hf::config_from_hf(&dir.join("config.json")).unwrap_or_else(|e| panic!("{e}"));
    let params = hf::load_params(
        &dir.join("model.safetensors"),
        &cfg,
        &Device::Cpu,
        DType::F32,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    (cfg, params)
}

/// The largest |x| of a tensor.
fn max_of(t: &Tensor) -> f32 {
    t.abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar()
        .unwrap()
}

#[test]
fn configs_read_as_transformers_wrote_them() {
    let (tiny, _) = load(&golden_dir("llama_tiny"));
    let (tied, _) = load(&golden_dir("llama_tied"));
    for (cfg, kv, tie) in [(&tiny, 2, false), (&tied, 4, true)] {
        assert_eq!(
            (
                cfg.vocab_size,
                cfg.hidden_size,
                cfg.intermediate_size,
                cfg.num_hidden_layers
            ),
            (96, 32, 64, 2)
        );
        assert_eq!((cfg.num_attention_heads, cfg.num_key_value_heads), (4, kv));
        assert_eq!(cfg.max_position_embeddings, 32);
        // rope_parameters.rope_theta, not the default 10,000.
        assert_eq!((cfg.rope_theta, cfg.rms_norm_eps), (100.0, 1e-6));
        assert_eq!(cfg.tie_word_embeddings, tie);
        assert_eq!(cfg.rope_scaling, None);
    }
    // Llama 3.1's scaling: read, and it moves the frequencies as transformers' recipe says
    // (head of 8: 1, 100^-1/4, 100^-1/2, 100^-3/4; wavelengths 2π/f against 8/4 and 8/1).
    let (l3, _) = load(&golden_dir("llama3_rope"));
    let Some(RopeScaling::Llama3(r)) = l3.rope_scaling.clone() else {
        panic!("llama3 scaling not read: {:?}", l3.rope_scaling)
    };
    assert_eq!(
        (r.factor, r.low_freq_factor, r.high_freq_factor),
        (8.0, 1.0, 4.0)
    );
    assert_eq!(r.original_max_position_embeddings, 8);
    let (plain, scaled) = (tiny.inv_freq(), l3.inv_freq());
    assert!(
        scaled[0] < plain[0] && scaled[0] > plain[0] / 8.0,
        "wavelength 6.3, between 8/4 and 8/1: interpolated"
    );
    assert_eq!(
        &scaled[1..],
        &[plain[1] / 8.0, plain[2] / 8.0, plain[3] / 8.0],
        "wavelengths 19.9, 62.8 and 198.7 are past 8/1: divided by the factor"
    );
    // YaRN: the ramp from dimension 0 to 1.41 keeps the first frequency, blends the second,
    // divides the others by 4; cos and sin are scaled by 0.1 ln 4 + 1.
    let (yarn, _) = load(&golden_dir("llama_yarn"));
    let Some(RopeScaling::Yarn(y)) = yarn.rope_scaling.clone() else {
        panic!("yarn scaling not read: {:?}", yarn.rope_scaling)
    };
    assert_eq!(
        (y.factor, y.original_max_position_embeddings, y.truncate),
        (4.0, 8, Some(false))
    );
    assert!((y.attention_factor() - (0.1 * 4f64.ln() + 1.0)).abs() < 1e-12);
    let scaled = yarn.inv_freq();
    assert_eq!(scaled[0], plain[0]);
    assert!(scaled[1] < plain[1] && scaled[1] > plain[1] / 4.0);
    assert_eq!(&scaled[2..], &[plain[2] / 4.0, plain[3] / 4.0]);
    // Gemma 3's linear scaling is its full layer's; the sliding layers keep the default RoPE.
    let (gemma, _) = load(&golden_dir("gemma3_linear"));
    let linear = RopeScaling::Linear { factor: 4.0 };
    assert_eq!(gemma.sliding_layers, [true, false, true]);
    assert_eq!(gemma.layer_rope(1), (1000.0, Some(&linear)));
    assert_eq!(gemma.layer_rope(0), (100.0, None));
}

#[test]
fn the_relatives_read_as_their_families() {
    let (bias, _) = load(&golden_dir("llama_bias"));
    assert_eq!(bias.model_type, LlamaFamily::Llama);
    assert!(bias.attention_bias && bias.mlp_bias && bias.qkv_bias() && bias.o_bias());
    let (qwen, params) = load(&golden_dir("qwen2_tiny"));
    assert_eq!(qwen.model_type, LlamaFamily::Qwen2);
    assert!(qwen.qkv_bias() && !qwen.o_bias() && !qwen.mlp_bias && qwen.tie_word_embeddings);
    assert!(params.get("model.layers.1.self_attn.v_proj.bias").is_ok());
    assert!(params.get("model.layers.1.self_attn.o_proj.bias").is_err());
    assert_eq!(params.num_elements(), qwen.num_params());
    let (qwen3, params) = load(&golden_dir("qwen3_tiny"));
    assert_eq!(qwen3.model_type, LlamaFamily::Qwen3);
    assert!(qwen3.qk_norm() && !qwen3.qkv_bias() && qwen3.tie_word_embeddings);
    // Heads of 16 under a width of 32 and 4 heads: q_proj (64, 32), o_proj (32, 64).
    assert_eq!(
        (qwen3.head_dim, qwen3.head_dim(), qwen3.q_width()),
        (Some(16), 16, 64)
    );
    let shape = |n: &str| params.get(n).unwrap().dims().to_vec();
    assert_eq!(shape("model.layers.0.self_attn.q_proj.weight"), [64, 32]);
    assert_eq!(shape("model.layers.0.self_attn.o_proj.weight"), [32, 64]);
    assert_eq!(shape("model.layers.0.self_attn.k_norm.weight"), [16]);
    assert_eq!(params.num_elements(), qwen3.num_params());
    let (mistral, _) = load(&golden_dir("mistral_window"));
    assert_eq!(mistral.model_type, LlamaFamily::Mistral);
    assert_eq!(mistral.sliding_window, Some(5));
    assert!(mistral.window_applies(0, 6) && !mistral.window_applies(1, 5));
    // Without its window the Mistral is llama_tiny's architecture: its logits change.
    let dir = golden_dir("mistral_window");
    let (_, params) = load(&dir);
    let ids = u32_matrix(&read_json(&dir.join("inputs.json")), "input_ids");
    let unwindowed = LlamaConfig {
        sliding_window: None,
        ..mistral.clone()
    };
    let a = Llama::new(&mistral, &params)
        .unwrap()
        .forward(&ids, Mode::Eval)
        .unwrap();
    let b = Llama::new(&unwindowed, &params)
        .unwrap()
        .forward(&ids, Mode::Eval)
        .unwrap();
    // The first 5 positions see the same keys either way; later ones do not.
    assert_eq!(
        max_abs(&a.narrow(1, 0, 5).unwrap(), &b.narrow(1, 0, 5).unwrap()),
        0.0
    );
    assert!(max_abs(&a, &b) > 1e-3);
    // Phi-3: fused layers whose rows are q, k, v (and gate, up) in order.
    let (phi3, params) = load(&golden_dir("phi3_window"));
    assert_eq!(phi3.model_type, LlamaFamily::Phi3);
    assert!(phi3.fused_projections() && phi3.sliding_window == Some(5));
    let shape = |n: &str| params.get(n).unwrap().dims().to_vec();
    assert_eq!(shape("model.layers.0.self_attn.qkv_proj.weight"), [64, 32]);
    assert_eq!(shape("model.layers.0.mlp.gate_up_proj.weight"), [128, 32]);
    assert!(params
        .get("model.layers.0.self_attn.q_proj.weight")
        .is_err());
    assert_eq!(params.num_elements(), phi3.num_params());
}

#[test]
fn logits_loss_and_every_gradient_match_transformers() {
    for name in FOLDERS {
        let dir = golden_dir(name);
        let (cfg, params) = load(&dir);
        let want = expected_in(&dir);
        let ids = u32_matrix(&read_json(&dir.join("inputs.json")), "input_ids");
        let model = Llama::new(&cfg, &params).unwrap();
        let logits = model.forward(&ids, Mode::Eval).unwrap();
        assert_eq!(logits.dims(), want["logits"].dims());
        let d = max_abs(&logits, &want["logits"]);
        eprintln!("{name}: logits differ from transformers by {d:.2e}");
        assert!(d <= 1e-5, "{name}: logits differ from transformers by {d}");

        let loss = Llama::shifted_loss(&logits, &ids).unwrap();
        let (ours, theirs) = (
            loss.to_scalar::<f32>().unwrap(),
            want["loss"].to_scalar::<f32>().unwrap(),
        );
        eprintln!("{name}: loss {ours} vs transformers {theirs}");
        assert!(
            (ours - theirs).abs() <= 1e-5,
            "{name}: loss {ours} vs transformers {theirs}"
        );

        // The gradients of the same loss, from a training-mode forward (no dropout in Llama:
        // the same graph).
        let mut rng = lantern_kernels::Rng::new(0);
        let logits = model.forward(&ids, Mode::Train(&mut rng)).unwrap();
        let grads = Llama::shifted_loss(&logits, &ids)
            .unwrap()
            .backward()
            .unwrap();
        let ours: BTreeSet<&str> = params.names().iter().map(String::as_str).collect();
        let theirs: BTreeSet<&str> = want
            .keys()
            .filter_map(|k| k.strip_prefix("grad."))
            .collect();
        assert_eq!(
            ours, theirs,
            "{name}: our parameters are transformers' named_parameters"
        );
        let mut worst = 0f32;
        for (p, v) in params.iter() {
            let theirs = &want[&format!("grad.{p}")];
            let ours = grads
                .get(v.as_tensor())
                .unwrap_or_else(|| panic!("{name}: {p} has no gradient"));
            assert_eq!(ours.dims(), theirs.dims(), "{name}: {p}");
            let scale = max_of(theirs);
            let d = max_abs(ours, theirs);
            worst = worst.max(d / scale);
            assert!(
                d <= 1e-5 * scale + 1e-7,
                "{name}: gradient of {p} differs from transformers by {d} (max |grad| {scale})"
            );
        }
        eprintln!(
            "{name}: {} gradients, worst difference {worst:.2e} of the tensor's max |grad|",
            params.len()
        );
    }
}

#[test]
fn cached_greedy_generation_matches_transformers() {
    for name in FOLDERS {
        let dir = golden_dir(name);
        let (cfg, params) = load(&dir);
        let inputs = read_json(&dir.join("inputs.json"));
        let want = expected_in(&dir);
        let model = Llama::new(&cfg, &params.frozen()).unwrap();
        let prompt_len = inputs["prompt_len"].as_u64().unwrap() as usize;
        let generated = matrix(&inputs, "generated");
        let (b, total) = (generated.len(), generated[0].len());
        let column = |p: usize| -> Tensor {
            let col: Vec<u32> = generated.iter().map(|r| r[p] as u32).collect();
            Tensor::from_vec(col, (b, 1), &Device::Cpu).unwrap()
        };
        let prompt = u32_matrix(&inputs, "generated")
            .narrow(1, 0, prompt_len)
            .unwrap();

        // Prefill with the prompt, then feed transformers' tokens one at a time; each step's
        // logits must be transformers', and their argmax its next token.
        let mut cache = KvCache::new();
        let mut logits = model.forward_last_cached(&prompt, &mut cache).unwrap(); // (B, V)
        let mut worst = 0f32;
        for step in 0..total - prompt_len {
            let theirs = want["gen_logits"]
                .narrow(1, step, 1)
                .unwrap()
                .squeeze(1)
                .unwrap();
            let d = max_abs(&logits, &theirs);
            worst = worst.max(d);
            assert!(
                d <= 1e-5,
                "{name}: generation step {step}: logits differ by {d}"
            );
            let next: Vec<u32> = logits.argmax(1).unwrap().to_vec1().unwrap();
            let want_next: Vec<u32> = (0..b)
                .map(|r| generated[r][prompt_len + step] as u32)
                .collect();
            assert_eq!(next, want_next, "{name}: greedy token at step {step}");
            let seen = prompt_len + step + 1;
            if seen < total {
                // LongRoPE past its original context: the whole sequence again, as
                // transformers' Phi-3 generation restarts its cache.
                logits = match cfg.cache_expires(cache.len(), seen) {
                    true => {
                        cache = KvCache::new();
                        let all = u32_matrix(&inputs, "generated").narrow(1, 0, seen).unwrap();
                        model.forward_last_cached(&all, &mut cache).unwrap()
                    }
                    false => model
                        .forward_last_cached(&column(prompt_len + step), &mut cache)
                        .unwrap(),
                };
            }
        }
        assert_eq!(cache.len(), total - 1);
        eprintln!("{name}: cached generation logits within {worst:.2e} of transformers'");
    }
}

#[test]
fn export_is_transformers_file_name_for_name_and_reloads() {
    for name in FOLDERS {
        let dir = golden_dir(name);
        let (cfg, params) = load(&dir);
        let theirs =
            safetensors_io::load(&dir.join("model.safetensors"), &Device::Cpu, DType::F32).unwrap();
        let ours: BTreeMap<String, Tensor> = hf::export_tensors(&params, DType::F32).unwrap();
        assert_eq!(
            ours.keys().collect::<Vec<_>>(),
            theirs.keys().collect::<Vec<_>>(),
            "{name}"
        );
        assert_eq!(
            ours.contains_key("lm_head.weight"),
            !cfg.tie_word_embeddings
        );
        for (n, t) in &ours {
            assert_eq!(t.dims(), theirs[n].dims(), "{name}: {n}");
            assert_eq!(max_abs(t, &theirs[n]), 0.0, "{name}: {n}");
        }

        // Written back as a folder, it reads as the same config and weights.
        let tmp = tempfile::tempdir().unwrap();
        let bytes = safetensors_io::serialize(&ours).unwrap();
        std::fs::write(tmp.path().join("model.safetensors"), &bytes).unwrap();
        let v = hf::to_hf_config(&cfg, None, DType::F32);
        std::fs::write(tmp.path().join("config.json"), v.to_string()).unwrap();
        let (cfg2, p2) = load(tmp.path());
        assert_eq!(cfg2, cfg, "{name}");
        let ids = u32_matrix(&read_json(&dir.join("inputs.json")), "input_ids");
        let a = Llama::new(&cfg, &params)
            .unwrap()
            .forward(&ids, Mode::Eval)
            .unwrap();
        let b = Llama::new(&cfg2, &p2)
            .unwrap()
            .forward(&ids, Mode::Eval)
            .unwrap();
        assert_eq!(max_abs(&a, &b), 0.0, "{name}");
        // The keys transformers wrote that describe the model, as it wrote them.
        let theirs_cfg = read_json(&dir.join("config.json"));
        for k in [
            "architectures",
            "model_type",
            "hidden_size",
            "intermediate_size",
            "num_attention_heads",
            "num_key_value_heads",
            "head_dim",
            "hidden_act",
            "rms_norm_eps",
            "rope_parameters",
            "tie_word_embeddings",
            "attention_bias",
            "mlp_bias",
            "sliding_window",
            "use_sliding_window",
            "layer_types",
            "hidden_activation",
            "query_pre_attn_scalar",
            "final_logit_softcapping",
            "attn_logit_softcapping",
            "resid_pdrop",
            "embd_pdrop",
            "dtype",
        ] {
            assert_eq!(v[k], theirs_cfg[k], "{name}: config key {k}");
        }
    }
}

#[test]
fn missing_and_misshapen_tensors_are_named() {
    let dir = golden_dir("llama_tiny");
    let path = dir.join("model.safetensors");
    let (cfg, _) = load(&dir);
    let err = |cfg: &LlamaConfig| {
        hf::load_params(&path, cfg, &Device::Cpu, DType::F32)
            .err()
            .unwrap()
            .to_string()
    };
    let mut more = cfg.clone();
    more.num_hidden_layers += 1;
    let e = err(&more);
    assert!(
        e.contains("missing") && e.contains("model.layers.2.self_attn.q_proj.weight"),
        "{e}"
    );
    let mut kv = cfg.clone();
    kv.num_key_value_heads = 4;
    let e = err(&kv);
    assert!(
        e.contains("model.layers.0.self_attn.k_proj.weight") && e.contains("shape"),
        "{e}"
    );
    // The tied folder has no lm_head.weight: an untied config reading it is refused by name.
    let tied_dir = golden_dir("llama_tied");
    let (mut tied, _) = load(&tied_dir);
    tied.tie_word_embeddings = false;
    let e = hf::load_params(
        &tied_dir.join("model.safetensors"),
        &tied,
        &Device::Cpu,
        DType::F32,
    )
    .err()
    .unwrap()
    .to_string();
    assert!(e.contains("missing") && e.contains("lm_head.weight"), "{e}");
    // An untied file read with a tied config: its lm_head is the tied copy's name, ignored.
    let mut tie = cfg.clone();
    tie.tie_word_embeddings = true;
    hf::load_params(&path, &tie, &Device::Cpu, DType::F32).unwrap();
}

/// A multimodal Gemma 3 folder (`Gemma3ForConditionalGeneration`: `gemma3_mm/`) reads as its
/// language model: `text_config`'s keys, the `language_model.` tensors, the vision tower left
/// out. Its text-only logits and loss are transformers', and it exports as the language model
/// `gemma3_linear/` is (a `Gemma3ForCausalLM`).
#[test]
fn a_multimodal_gemma3_reads_as_its_language_model() {
    let dir = golden_dir("gemma3_mm");
    let (cfg, params) = load(&dir);
    let (text, _) = load(&golden_dir("gemma3_linear"));
    assert_eq!(cfg, text, "text_config is the language model's config");
    let want = expected_in(&dir);
    let ids = u32_matrix(&read_json(&dir.join("inputs.json")), "input_ids");
    let logits = Llama::new(&cfg, &params)
        .unwrap()
        .forward(&ids, Mode::Eval)
        .unwrap();
    let d = max_abs(&logits, &want["logits"]);
    assert!(d <= 1e-5, "logits differ from transformers by {d}");
    let loss = Llama::shifted_loss(&logits, &ids)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    let theirs = want["loss"].to_scalar::<f32>().unwrap();
    assert!((loss - theirs).abs() <= 1e-5, "loss {loss} vs {theirs}");
    eprintln!("gemma3_mm: logits within {d:.2e}, loss {loss} vs transformers {theirs}");
    // Every tensor of the file is a parameter or the vision's; the export is the text model's.
    let all =
        safetensors_io::load(&dir.join("model.safetensors"), &Device::Cpu, DType::F32).unwrap();
    let vision = all
        .keys()
        .filter(|n| n.starts_with("vision_tower.") || n.starts_with("multi_modal_projector."))
        .count();
    assert!(vision > 0);
    assert_eq!(all.len(), params.len() + vision);
    let ours = hf::export_tensors(&params, DType::F32).unwrap();
    assert!(ours.contains_key("model.layers.1.self_attn.q_norm.weight"));
    for (n, t) in &ours {
        assert_eq!(max_abs(t, &all[&format!("language_model.{n}")]), 0.0, "{n}");
    }
    let v = hf::to_hf_config(&cfg, None, DType::F32);
    assert_eq!(
        (v["model_type"].as_str(), v["architectures"][0].as_str()),
        (Some("gemma3_text"), Some("Gemma3ForCausalLM"))
    );
    // Without the language model's tensors the folder's problem is named.
    let tmp = tempfile::tempdir().unwrap();
    let only_vision: BTreeMap<String, Tensor> = all
        .into_iter()
        .filter(|(n, _)| n.starts_with("vision_tower."))
        .collect();
    std::fs::write(
        tmp.path().join("model.safetensors"),
        safetensors_io::serialize(&only_vision).unwrap(),
    )
    .unwrap();
    let Err(e) = hf::load_params(
        &tmp.path().join("model.safetensors"),
        &cfg,
        &Device::Cpu,
        DType::F32,
    ) else {
        panic!("a folder without the language model's tensors loaded")
    };
    let e = e.to_string();
    assert!(
        e.contains("model.safetensors") && e.contains("model.norm.weight"),
        "{e}"
    );
}
