//! Finding a language model on disk: a checkpoint folder, a run folder (its newest
//! checkpoint), or a Hugging Face GPT-2 or Llama-family (Llama, Mistral, Qwen2, Qwen3, Gemma 3,
//! Phi-3) folder.

use anyhow::{anyhow, bail, Context, Result};
use candle_core::{DType, Device};
use lantern_models::decoder::classifier;
use lantern_models::decoder::{Decoder, DecoderConfig};
use lantern_models::{safetensors_io, Params};
use lantern_train::{checkpoint, model_tokens};
use std::path::{Path, PathBuf};

pub struct LoadedModel {
    pub source: PathBuf,
    /// A peft adapter applied over the weights ([`LoadedModel::apply_adapter`]).
    pub adapter: Option<PathBuf>,
    pub config: DecoderConfig,
    pub params: Params,
    pub tokenizer_path: Option<PathBuf>,
    pub eot_id: Option<u32>,
}

pub fn load(path: &Path) -> Result<LoadedModel> {
    if !path.exists() {
        bail!("{} does not exist", path.display());
    }
    if path.is_file() {
        // `--model pytorch_model.bin`: say why pickles are refused rather than "not a folder".
        safetensors_io::refuse_pickle(path)?;
    }
    let ckpt = if path.join(checkpoint::STATE_FILE).is_file() {
        Some(path.to_path_buf())
    } else if path.join("checkpoints").is_dir() {
        let all = checkpoint::list_complete(&path.join("checkpoints"))?;
        Some(all.last().map(|(_, p)| p.clone()).with_context(|| {
            format!(
                "{} is a run folder without a complete checkpoint",
                path.display()
            )
        })?)
    } else {
        None
    };
    let (source, config) = match &ckpt {
        Some(dir) => (
            dir.clone(),
            checkpoint::read_state(dir)?.model.decoder(dir)?,
        ),
        None if path.join("config.json").is_file() => {
            let config_path = path.join("config.json");
            if let Ok((cfg, Some(head))) = classifier::config_from_hf(&config_path) {
                bail!(
                    "{}: a {} (a fine-tuned classifier), not a language model: use \
                     `lantern eval` or `lantern predict`",
                    config_path.display(),
                    head.architecture(&cfg.lm).unwrap_or("classifier")
                );
            }
            (path.to_path_buf(), DecoderConfig::from_hf(&config_path)?)
        }
        None => bail!(
            "{} is neither a checkpoint, a run folder nor a Hugging Face model folder (no \
             trainer_state.json, checkpoints/ or config.json)",
            path.display()
        ),
    };
    // A single file, or the index of a sharded save (`model.safetensors.index.json`).
    let weights = source.join("model.safetensors");
    if !safetensors_io::exists(&weights) {
        let pickle = ["pytorch_model.bin", "model.bin", "model.pt"].map(|b| source.join(b));
        if let Some(p) = pickle.iter().find(|p| p.is_file()) {
            safetensors_io::refuse_pickle(p)?;
        }
        bail!("{}: missing", weights.display());
    }
    let params = config.load_params(&weights, &Device::Cpu, DType::F32)?;
    let tok = source.join("tokenizer.json");
    let tokenizer_path = tok.is_file().then_some(tok);
    let eot_id = match &tokenizer_path {
        Some(p) => {
            lantern_data::tokenizer::load_tokenizer(p)?.token_to_id(lantern_data::tokenizer::EOT)
        }
        None => None,
    };
    Ok(LoadedModel {
        source,
        adapter: None,
        config,
        params,
        tokenizer_path,
        eot_id,
    })
}

/// [`load`], then [`LoadedModel::apply_adapter`] of `adapter` if given.
pub fn load_with(path: &Path, adapter: Option<&Path>) -> Result<LoadedModel> {
    let mut m = load(path)?;
    if let Some(dir) = adapter {
        m.apply_adapter(dir)?;
    }
    Ok(m)
}

impl LoadedModel {
    /// Merges a peft LoRA adapter folder (`adapter_config.json`, `adapter_model.safetensors`:
    /// a checkpoint's `adapter/` or peft's `save_pretrained`) into the weights: peft's
    /// `PeftModel.from_pretrained(model, dir)` followed by `merge_and_unload()`. Its
    /// `lora_dropout` acts only in training.
    pub fn apply_adapter(&mut self, dir: &Path) -> Result<()> {
        use lantern_train::lora::{self, Base, Lora, LoraSection};
        lora::check_not_merged(&self.source, dir)?;
        let spec = lora::read_adapter_settings(dir).map_err(|e| anyhow!("--adapter: {e}"))?;
        let spec = LoraSection {
            adapter: Some(dir.to_path_buf()),
            ..spec
        };
        // With `adapter` set, `Lora::new` loads the adapter (A's draw is overwritten); the
        // weights become W0 + s·B·A.
        let lora = Lora::new(
            &spec,
            Base::CausalLm(&self.config),
            (&self.params, None),
            &[],
            &mut lantern_kernels::Rng::new(0),
        )
        .with_context(|| format!("applying the adapter {}", dir.display()))?;
        self.params = lora.merged()?;
        self.adapter = Some(dir.to_path_buf());
        Ok(())
    }

    /// The model as a frozen [`Decoder`] on `device` (its weights in f32 off the CPU), for the
    /// commands that read it: generate, score.
    pub fn decoder_on(self, device: &Device) -> Result<Decoder> {
        let params = match device.is_cpu() {
            true => self.params,
            false => self.params.to(device, DType::F32)?,
        };
        Ok(Decoder::new(&self.config, &params.frozen())?)
    }

    pub fn tokenizer(&self) -> Result<tokenizers::Tokenizer> {
        let p = self
            .tokenizer_path
            .as_ref()
            .with_context(|| format!("{} has no tokenizer.json", self.source.display()))?;
        let tok = lantern_data::tokenizer::load_tokenizer(p)?;
        let n = tok.get_vocab_size(true);
        if n > self.config.vocab_size() {
            bail!(
                "{}: tokenizer vocabulary ({n}) is larger than the model's ({})",
                p.display(),
                self.config.vocab_size()
            );
        }
        Ok(tok)
    }

    /// Writes an HF folder into a temporary sibling, then renames it into place; an existing
    /// folder is never overwritten.
    pub fn export(&self, out: &Path, dtype: DType) -> Result<()> {
        if out.exists() {
            bail!(
                "{} already exists: remove it or choose another --out",
                out.display()
            );
        }
        let name = out
            .file_name()
            .context("--out needs a folder name")?
            .to_string_lossy();
        let parent = out
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
        let tmp = parent.join(format!(".{name}.tmp-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        let write = || -> Result<()> {
            let bytes =
                safetensors_io::serialize(&self.config.export_tensors(&self.params, dtype)?)?;
            std::fs::write(tmp.join("model.safetensors"), bytes)?;
            let mut cfg = self.config.to_hf_config(self.eot_id, dtype);
            // The source folder's own special ids (a transformers folder's end-of-turn list).
            let ids = lantern_models::hf_config::special_ids(&self.source.join("config.json"));
            lantern_models::hf_config::keep_special_ids(&mut cfg, &ids);
            std::fs::write(tmp.join("config.json"), serde_json::to_string_pretty(&cfg)?)?;
            if let Some(t) = &self.tokenizer_path {
                std::fs::copy(t, tmp.join("tokenizer.json"))?;
                // The folder's own tokenizer_config.json when it has one, else built.
                let tokens = model_tokens::of_lm(&self.config, self.eot_id);
                let tok = lantern_data::tokenizer::load_tokenizer(t)?;
                let folders = model_tokens::tokenizer_sources(t, Some(&self.source));
                let bytes = lantern_data::tokenizer_config_bytes(&tok, &tokens, &folders)?;
                std::fs::write(tmp.join(lantern_data::TOKENIZER_CONFIG_FILE), bytes)?;
            }
            // A LoRA run's adapter (peft's files) goes along with its merged model: the one
            // applied, else the checkpoint's own.
            match &self.adapter {
                Some(dir) => lantern_train::lora::copy_files(
                    dir,
                    &tmp.join(lantern_train::lora::ADAPTER_DIR),
                )?,
                None => lantern_train::finetune::copy_adapter(&self.source, &tmp)?,
            }
            std::fs::rename(&tmp, out)?;
            Ok(())
        };
        write().inspect_err(|_| {
            let _ = std::fs::remove_dir_all(&tmp);
        })
    }
}
