//! `lantern`: prepare data, train, sample, export, score (`score`) and benchmark GPT models; fine-tune,
//! evaluate and run BERT classifiers (`bert_cmds`); launch data-parallel runs (`launch`).
//!
//! Exit status: 0 done; 1 error (message on stderr); 2 bad command line (clap);
//! [`EXIT_PREEMPTED`] (75) `train` or `finetune` stopped on SIGTERM/SIGINT after writing a checkpoint — run
//! the same command with `--resume` to continue; 128+signal (143 SIGTERM, 130 SIGINT) a second
//! signal arrived before that checkpoint was done and the process exited at once;
//! [`bench_cmds::EXIT_OOM`] (3) `bench`/`bench-kernels` ran out of device memory.

mod bench_cmds;
mod bert_cmds;
mod launch;
mod model_dir;
mod score;
mod selfcheck;

use anyhow::{bail, Context, Result};
use candle_core::DType;
use clap::{Parser, Subcommand};
use lantern_kernels::Rng;
use lantern_models::sampling::{generate, Sampling, Stop};
use lantern_train::{RunConfig, TrainOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

/// `EX_TEMPFAIL` of sysexits.h: "try again later". Slurm and similar schedulers can requeue a
/// job on it; the run continues exactly with `--resume`.
const EXIT_PREEMPTED: i32 = 75;

#[derive(Parser)]
#[command(
    name = "lantern",
    version,
    about = "Train GPT- and BERT-style Transformers"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Train a tokenizer (byte-level BPE for GPT, WordPiece for BERT) or load one, and write
    /// token shards with a train/validation split.
    Prepare {
        /// Text files or folders (recursed). Fortune-format files are split into documents at
        /// lines holding a single `%`; JSON Lines files (`.jsonl`, `.ndjson`, `.json`) hold a
        /// document per record, Parquet files (`.parquet`) one per row; `.gz` and `.zst` files
        /// are decompressed first.
        #[arg(long = "input", required = true, num_args = 1..)]
        inputs: Vec<PathBuf>,
        /// The field of a JSON record, or the column of a Parquet file, that holds its text
        /// (`a.b`: field `b` of the object or struct in `a`).
        #[arg(long, default_value = "text")]
        text_field: String,
        /// Output folder: tokenizer.json, train.bin, val.bin, meta.json.
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 4096)]
        vocab_size: usize,
        /// Fraction of documents held out for validation.
        #[arg(long, default_value_t = 0.05)]
        val_fraction: f64,
        /// `bpe` (train GPT-2's byte-level BPE), `wordpiece` (train a WordPiece tokenizer with
        /// BERT's specials, for masked-LM pretraining), or the path of a tokenizer.json to use.
        #[arg(long, default_value = "bpe", value_name = "bpe|wordpiece|PATH")]
        tokenizer: String,
        #[arg(long, default_value_t = 1337)]
        seed: u64,
    },
    /// Train (or, with --resume, continue) a run described by a TOML config.
    Train {
        #[arg(long)]
        config: PathBuf,
        /// Override a config key: --set train.lr=3e-4 (repeatable).
        #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
        sets: Vec<String>,
        /// Continue from the newest complete checkpoint in run.dir.
        #[arg(long)]
        resume: bool,
        /// Stop after this many optimizer steps (with a checkpoint), keeping the schedule of
        /// train.max_steps; continue later with --resume.
        #[arg(long)]
        stop_after: Option<u64>,
        /// No progress output.
        #[arg(long)]
        quiet: bool,
        /// Test hook: make one gradient NaN at these 0-based steps (`5`, `3,7`, `10-14`).
        #[arg(long, hide = true, value_parser = parse_steps)]
        poison_grad_at: Option<StepSet>,
    },
    /// Sample text from a checkpoint, a run folder or a Hugging Face GPT-2 or Llama-family
    /// (Llama, Mistral, Qwen2, Qwen3, Gemma 3, Phi-3) folder.
    Generate {
        #[arg(long)]
        model: PathBuf,
        /// A peft LoRA adapter folder (adapter_config.json, adapter_model.safetensors) to
        /// merge into the model first, as peft's `PeftModel.from_pretrained` + `merge_and_unload`.
        #[arg(long)]
        adapter: Option<PathBuf>,
        #[arg(long, default_value = "")]
        prompt: String,
        /// Chat with a fine-tuned model: this user message, rendered by the model's chat
        /// template with the generation prompt (transformers' `apply_chat_template(...,
        /// add_generation_prompt=True)`); the reply alone is printed, ending at the
        /// tokenizer's end-of-sequence token.
        #[arg(long, conflicts_with = "prompt")]
        chat: Option<String>,
        /// Chat: a system message before the user's.
        #[arg(long, requires = "chat")]
        system: Option<String>,
        /// Chat: a Jinja chat template file in place of the model folder's.
        #[arg(long, requires = "chat")]
        chat_template: Option<PathBuf>,
        #[arg(long, default_value_t = 100)]
        max_new_tokens: usize,
        /// Divides the logits before sampling (0 = greedy: the most likely token).
        #[arg(long, default_value_t = 0.8)]
        temperature: f64,
        /// Sample only among the k most likely tokens (0 = all).
        #[arg(long, default_value_t = 40)]
        top_k: usize,
        /// Nucleus sampling: only among the fewest most likely tokens whose probabilities (after
        /// temperature and top-k) add up to at least P (1 = off), as transformers' `top_p`.
        #[arg(long, default_value_t = 1.0)]
        top_p: f64,
        /// Penalise every token already in the sequence, prompt included: its logit is divided
        /// by R, or multiplied where negative (1 = off; also with greedy), as transformers'
        /// `repetition_penalty`.
        #[arg(long, default_value_t = 1.0)]
        repetition_penalty: f64,
        #[arg(long, default_value_t = 1)]
        num_samples: usize,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Keep going past <|endoftext|> (always max_new_tokens tokens; for timing).
        #[arg(long)]
        ignore_eot: bool,
        /// "auto" (the GPU when this build has CUDA and the driver sees one), "cpu", "cuda" or
        /// "cuda:N"; the model runs in f32 there.
        #[arg(long, default_value = "auto")]
        device: String,
        /// Test hook: also print each sample's token ids on stderr.
        #[arg(long, hide = true)]
        print_ids: bool,
    },
    /// Write a Hugging Face folder (model.safetensors, config.json, tokenizer.json,
    /// tokenizer_config.json) from a checkpoint or run folder: GPT2LMHeadModel or the Llama
    /// family's causal LM (LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM), or for a
    /// fine-tuned model (BERT family, decoder classifier) the folder's own architecture.
    Export {
        #[arg(long)]
        model: PathBuf,
        /// A peft LoRA adapter folder (adapter_config.json, adapter_model.safetensors) to
        /// merge into the model first, as peft's `PeftModel.from_pretrained` + `merge_and_unload`.
        #[arg(long)]
        adapter: Option<PathBuf>,
        #[arg(long)]
        out: PathBuf,
        /// f32 or bf16.
        #[arg(long, default_value = "f32")]
        dtype: String,
    },
    /// Loss and perplexity of a GPT on a text file, a text or token ids of any length, by
    /// sliding windows (Hugging Face's perplexity guide, with the exact token count);
    /// optionally dump the logits of one forward (used by the transformers parity check).
    Score(score::ScoreArgs),
    /// Time training steps of a GPT config on random tokens; prints one JSON line (tokens/s,
    /// MFU, peak memory, optional per-phase times). Out of device memory: exit status 3.
    Bench(bench_cmds::BenchArgs),
    /// Time the memory-bound kernels and the optimizer against a device-to-device copy; one
    /// JSON line per kernel. Out of device memory: exit status 3.
    BenchKernels(bench_cmds::KernelArgs),
    /// Start the ranks of a data-parallel run on this node (torchrun-style):
    /// lantern launch --nproc-per-node 2 -- train --config run.toml
    Launch(launch::LaunchArgs),
    /// Run one rank's command under mpirun for `launch` (internal).
    #[command(hide = true)]
    LaunchRank(launch::RankArgs),
    /// Print the launcher variables; optionally fail on one rank (tests of `launch`).
    #[command(hide = true)]
    LaunchProbe(launch::ProbeArgs),
    #[command(flatten)]
    Bert(bert_cmds::BertCmd),
    /// Check every CUDA kernel against its CPU implementation and a short GPU training run
    /// against the CPU; exits non-zero if anything disagrees.
    Selfcheck {
        /// Run the checks on the CPU against the composite reference ops (no GPU needed).
        #[arg(long)]
        cpu: bool,
        #[arg(long, default_value = "cuda")]
        device: String,
        /// A folder written by `lantern prepare` for the training check (else random tokens).
        #[arg(long)]
        data: Option<PathBuf>,
        /// Training steps compared step by step (0 skips the training check).
        #[arg(long, default_value_t = 30)]
        steps: usize,
    },
}

/// Worker stack size: the command runs on a pool worker (see `main`), and candle's backward
/// walks the graph recursively; the main thread's usual 8 MiB, with room to spare.
const WORKER_STACK: usize = 32 << 20;

fn main() {
    keep_freed_memory();
    // A damaged Parquet file's panic is reported as an error naming the file; its default
    // report before that error would be noise.
    lantern_data::documents::quiet_parquet_panics();
    let cli = Cli::parse();
    // The whole command runs on a worker of one rayon pool (RAYON_NUM_THREADS threads, default
    // one per CPU). Parallel CPU work (candle's matmuls, our kernels) then splits between that
    // worker and the others, and between two parallel ops no extra main thread competes with
    // the pool's spinning workers for the cores: on 2 cores the CPU training step ran 26 %
    // faster than with the command on the main thread beside a 2-thread pool.
    let pool = match rayon::ThreadPoolBuilder::new()
        .stack_size(WORKER_STACK)
        .thread_name(|i| format!("lantern-{i}"))
        .build()
    {
        Ok(pool) => pool,
        Err(e) => {
            eprintln!("error: starting the thread pool: {e}");
            std::process::exit(1);
        }
    };
    match pool.install(|| run(cli)) {
        Ok(Outcome::Done) => {}
        Ok(Outcome::Preempted) => std::process::exit(EXIT_PREEMPTED),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(1);
        }
    }
}

/// glibc's malloc serves blocks from 128 KiB on with fresh mappings (raising that threshold only
/// after such a block is freed) and gives freed memory back to the kernel: the top of a heap
/// beyond 128 KiB, and a thread's whole heap once it is empty. A CPU training step allocates
/// and frees tensors of megabytes by the hundred on the command's thread (a worker, whose
/// arena is such heaps), so every step faulted in and zeroed fresh pages. Now blocks up to
/// 32 MiB (the most glibc allows) come from the heaps, and neither the top of a heap nor an
/// empty heap goes back while less than 64 MiB would: the next step reuses the memory, as
/// PyTorch's CPU allocator does. 16 steps of the reward benchmark's model: 1.4 million page
/// faults → 0.19 million, steps 17–27 % faster; `lantern bench` (GPT 4 × 256) 9–15 % more
/// tokens/s; the same peak memory (docs/benchmarks.md). One arena for all threads would do
/// as much for training but made `lantern prepare`'s parallel tokenizer twice as slow. Left
/// alone when the environment sets malloc's tunables itself.
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        if std::env::var("GLIBC_TUNABLES").is_ok_and(|t| t.contains("glibc.malloc"))
            || std::env::vars_os().any(|(k, _)| k.to_string_lossy().starts_with("MALLOC_"))
        {
            return;
        }
        // SAFETY: mallopt only sets malloc's parameters (a value it refuses leaves them as
        // they were); it runs first in main, before any other thread exists.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
            libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
            libc::mallopt(libc::M_TOP_PAD, 64 << 20);
        }
    }
}

/// `lantern prepare`'s progress: a bar on a terminal, else a line every 30 s (a batch job's
/// log), each pass's last state included. The bar is returned too, to be cleared at the end.
fn prepare_progress() -> (
    impl FnMut(lantern_data::PrepareProgress),
    Option<indicatif::ProgressBar>,
) {
    use lantern_data::PrepareProgress as P;
    use std::io::IsTerminal;
    use std::time::{Duration, Instant};
    let bar = std::io::stderr().is_terminal().then(|| {
        let pb = indicatif::ProgressBar::new(0);
        let style = indicatif::ProgressStyle::with_template(
            "{elapsed_precise} [{bar:30.cyan/blue}] {pos}/{len} {msg}",
        )
        .expect("a valid template")
        .progress_chars("=> ");
        pb.set_style(style);
        pb
    });
    let mut last_line = Instant::now();
    // Handles on the same bar (indicatif's bars are shared): for the line between passes, and
    // for the caller.
    let (above, caller) = (bar.clone(), bar.clone());
    let mut show = move |done: usize, total: usize, msg: String| match &bar {
        Some(pb) => {
            pb.set_length(total as u64);
            pb.set_position(done as u64);
            if done == total {
                // The pass is over: its last state stays on screen.
                pb.println(format!("{done}/{total} {msg}"));
            }
            pb.set_message(msg);
        }
        None if done == total || last_line.elapsed() >= Duration::from_secs(30) => {
            eprintln!("prepare: {done}/{total} {msg}");
            last_line = Instant::now();
        }
        None => {}
    };
    let progress = move |p| match p {
        P::Reading {
            files_done,
            files,
            documents,
        } => show(
            files_done,
            files,
            format!("files read, {documents} documents"),
        ),
        P::Training { documents } => {
            let line = format!("training the tokenizer on {documents} documents");
            match &above {
                Some(pb) => pb.println(line),
                None => eprintln!("prepare: {line}"),
            }
        }
        P::Encoding {
            documents_done,
            documents,
            tokens,
        } => show(
            documents_done,
            documents,
            format!("documents encoded, {tokens} tokens"),
        ),
    };
    (progress, caller)
}

pub(crate) enum Outcome {
    Done,
    /// Training stopped on a signal after writing a checkpoint.
    Preempted,
}

/// A set of 0-based steps (a newtype: clap would read a bare `Vec` as a repeated argument).
#[derive(Debug, Clone)]
struct StepSet(Vec<u64>);

/// `5`, `3,7`, `10-14` or a mix (`2,10-14`).
fn parse_steps(spec: &str) -> std::result::Result<StepSet, String> {
    let num = |x: &str| {
        x.trim()
            .parse::<u64>()
            .map_err(|e| format!("{x:?} in {spec:?}: {e}"))
    };
    let mut out = Vec::new();
    for part in spec.split(',') {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (num(a)?, num(b)?);
                if b < a || b - a > 1_000_000 {
                    return Err(format!("bad range {part:?} in {spec:?}"));
                }
                out.extend(a..=b);
            }
            None => out.push(num(part)?),
        }
    }
    Ok(StepSet(out))
}

/// SIGTERM and SIGINT set the returned flag, which the training loop checks after each step;
/// a second one while the flag is already set exits at once with 128+signal (the conditional
/// shutdown is registered first, so it sees the flag as the first signal left it).
pub(crate) fn install_stop_handlers() -> Result<Arc<AtomicBool>> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let flag = Arc::new(AtomicBool::new(false));
    for sig in [SIGTERM, SIGINT] {
        signal_hook::flag::register_conditional_shutdown(sig, 128 + sig, Arc::clone(&flag))
            .with_context(|| format!("installing the handler of signal {sig}"))?;
        signal_hook::flag::register(sig, Arc::clone(&flag))
            .with_context(|| format!("installing the handler of signal {sig}"))?;
    }
    Ok(flag)
}

fn run(cli: Cli) -> Result<Outcome> {
    match cli.cmd {
        Cmd::Prepare {
            inputs,
            out,
            vocab_size,
            val_fraction,
            tokenizer,
            seed,
            text_field,
        } => {
            use lantern_data::prepare::TokenizerKind;
            // The two keywords name a kind to train; anything else is a file to load.
            let (train_kind, tokenizer) = match tokenizer.as_str() {
                "bpe" => (TokenizerKind::Bpe, None),
                "wordpiece" => (TokenizerKind::WordPiece, None),
                path => (TokenizerKind::Bpe, Some(PathBuf::from(path))),
            };
            let opts = lantern_data::prepare::PrepareOptions {
                inputs,
                out_dir: out.clone(),
                vocab_size,
                train_kind,
                val_fraction,
                tokenizer,
                seed,
                text_field,
            };
            let (mut progress, bar) = prepare_progress();
            let s = lantern_data::prepare_with_progress(&opts, &mut progress);
            if let Some(pb) = bar {
                pb.finish_and_clear();
            }
            let s = s?;
            println!(
                "prepared {}: {} documents, {} vocab {}, {} train tokens, {} validation tokens",
                out.display(),
                s.documents,
                s.tokenizer_kind.name(),
                s.vocab_size,
                s.train_tokens,
                s.val_tokens
            );
        }
        Cmd::Train {
            config,
            sets,
            resume,
            stop_after,
            quiet,
            poison_grad_at,
        } => {
            let cfg = RunConfig::load(&config, &sets)?;
            let stop = install_stop_handlers()?;
            let s = lantern_train::train(
                cfg,
                TrainOptions {
                    resume,
                    stop_after,
                    quiet,
                    poison_grad_at: poison_grad_at.map(|s| s.0).unwrap_or_default(),
                    stop: Some(stop),
                },
            )?;
            if s.rank != 0 {
                // Data parallel: rank 0 reports for the whole run.
                return Ok(if s.preempted {
                    Outcome::Preempted
                } else {
                    Outcome::Done
                });
            }
            let v = |x: Option<f64>| x.map_or("-".to_string(), |v| format!("{v:.4}"));
            println!(
                "trained {} steps | val loss {} -> {} | {:.0} tokens/s{}",
                s.steps,
                v(s.first_val_loss),
                v(s.last_val_loss),
                s.tokens_per_s,
                s.mfu
                    .map_or(String::new(), |m| format!(" | mfu {:.1}%", m * 100.0))
            );
            if let Some(c) = &s.checkpoint {
                println!("checkpoint: {}", c.display());
            }
            let best_dir = s
                .run_dir
                .join("checkpoints")
                .join(lantern_train::checkpoint::BEST_DIR);
            if let Some((b, at)) = s.best_val {
                println!(
                    "best {} {b:.4} at step {at}{}{}",
                    s.best_metric.label(),
                    if best_dir.is_dir() {
                        format!(": {}", best_dir.display())
                    } else {
                        String::new()
                    },
                    if s.early_stopped {
                        " | stopped early"
                    } else {
                        ""
                    }
                );
            }
            println!("metrics: {}", s.run_dir.join("metrics.jsonl").display());
            if s.preempted {
                eprintln!(
                    "stopped by a signal after step {}: exiting with status {EXIT_PREEMPTED}; \
                     continue with --resume",
                    s.steps
                );
                return Ok(Outcome::Preempted);
            }
        }
        Cmd::Generate {
            model,
            adapter,
            prompt,
            chat,
            system,
            chat_template,
            max_new_tokens,
            temperature,
            top_k,
            top_p,
            repetition_penalty,
            num_samples,
            seed,
            ignore_eot,
            device,
            print_ids,
        } => {
            let how = Sampling::new(temperature, top_k, top_p, repetition_penalty)
                .map_err(|e| anyhow::anyhow!(e.flag()))?;
            let device = lantern_train::device::parse_device(&device)?;
            let m = model_dir::load_with(&model, adapter.as_deref())?;
            let tok = m.tokenizer()?;
            let eot = tok.token_to_id(lantern_data::tokenizer::EOT);
            // The end-of-text token, and the model's own end-of-sequence ids (config.json's
            // `eos_token_id`, one or a list), as transformers' generate stops at them.
            let mut stop_ids: Vec<u32> = eot.into_iter().collect();
            let ids = lantern_models::hf_config::special_ids(&m.source.join("config.json"));
            stop_ids.extend(lantern_models::hf_config::special_id_list(
                &ids,
                "eos_token_id",
            ));
            let (prompt, shown) = match &chat {
                None => (prompt.clone(), prompt),
                Some(message) => {
                    let (text, eos) = chat_prompt(&m, chat_template.as_deref(), system, message)?;
                    // The reply ends at the end of the assistant's turn.
                    stop_ids.extend(eos.and_then(|e| tok.token_to_id(&e)));
                    (text, String::new())
                }
            };
            // A chat template writes its special tokens itself; a plain prompt is text.
            let mut prompt_ids: Vec<u32> = tok
                .encode(prompt.as_str(), false)
                .map_err(|e| anyhow::anyhow!("cannot tokenize the prompt: {e}"))?
                .get_ids()
                .to_vec();
            if prompt_ids.is_empty() {
                prompt_ids
                    .push(eot.context("empty prompt and the tokenizer has no <|endoftext|>")?);
            }
            let model = m.decoder_on(&device)?;
            let mut rng = Rng::new(seed);
            for i in 0..num_samples {
                let start = std::time::Instant::now();
                let stop = Stop {
                    max_new: max_new_tokens,
                    eot: if ignore_eot {
                        Vec::new()
                    } else {
                        stop_ids.clone()
                    },
                };
                let ids = generate(&model, &device, &prompt_ids, &how, &stop, &mut rng)?;
                let secs = start.elapsed().as_secs_f64();
                eprintln!(
                    "sample {}: {} tokens in {secs:.3} s ({:.1} tokens/s; prompt of {})",
                    i + 1,
                    ids.len(),
                    ids.len() as f64 / secs.max(1e-9),
                    prompt_ids.len()
                );
                if print_ids {
                    eprintln!("sample {} ids: {ids:?}", i + 1);
                }
                let text = tok
                    .decode(&ids, true)
                    .map_err(|e| anyhow::anyhow!("decode: {e}"))?;
                println!("--- sample {} ---\n{}{}", i + 1, shown, text);
            }
        }
        Cmd::Export {
            model,
            adapter,
            out,
            dtype,
        } => {
            let dtype = match dtype.as_str() {
                "f32" | "fp32" => DType::F32,
                "bf16" => DType::BF16,
                other => bail!("--dtype {other}: expected f32 or bf16"),
            };
            if bert_cmds::is_task_model(&model) {
                if adapter.is_some() {
                    bail!(
                        "--adapter merges a peft adapter into a language model; {} is a \
                         fine-tuned task model, whose checkpoints hold their merged weights",
                        model.display()
                    );
                }
                bert_cmds::export(&model, &out, dtype)?;
                return Ok(Outcome::Done);
            }
            let m = model_dir::load_with(&model, adapter.as_deref())?;
            m.export(&out, dtype)?;
            println!(
                "exported {} -> {} ({}, {dtype:?})",
                m.source.display(),
                out.display(),
                m.config.architecture()
            );
        }
        Cmd::Score(a) => score::run(a)?,
        Cmd::Bench(a) => bench_cmds::bench(a)?,
        Cmd::BenchKernels(a) => bench_cmds::bench_kernels(a)?,
        Cmd::Launch(a) => {
            if launch::launch(a)? {
                return Ok(Outcome::Preempted);
            }
        }
        Cmd::LaunchRank(a) => std::process::exit(launch::launch_rank(a)?),
        Cmd::LaunchProbe(a) => launch::probe(a)?,
        Cmd::Bert(cmd) => return bert_cmds::run(cmd),
        Cmd::Selfcheck {
            cpu,
            device,
            data,
            steps,
        } => selfcheck::run(&selfcheck::Options {
            cpu,
            device,
            data,
            steps,
        })?,
    }
    Ok(Outcome::Done)
}

/// `--chat`: the conversation (an optional system message and the user's) as the chat template
/// of `m`'s folder (or `template_file`) renders it with the generation prompt, and the
/// tokenizer's end-of-sequence token (`tokenizer_config.json`'s `eos_token`).
fn chat_prompt(
    m: &model_dir::LoadedModel,
    template_file: Option<&Path>,
    system: Option<String>,
    message: &str,
) -> Result<(String, Option<String>)> {
    use lantern_data::chat::{ChatTemplate, Message};
    let folder = m
        .tokenizer_path
        .as_deref()
        .and_then(Path::parent)
        .context("the model has no tokenizer")?;
    let cfg = lantern_data::chat::read_tokenizer_config(folder)?;
    let template = match template_file {
        Some(p) => {
            let text =
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            ChatTemplate::new(&text, &cfg, p)?
        }
        None => ChatTemplate::from_folder_config(folder, &cfg)?.with_context(|| {
            format!(
                "{} has no chat template (tokenizer_config.json's \"chat_template\" or {}): \
                 give one with --chat-template, or use --prompt",
                folder.display(),
                lantern_data::chat::CHAT_TEMPLATE_FILE
            )
        })?,
    };
    let mut msgs = Vec::new();
    if let Some(s) = system {
        msgs.push(serde_json::json!({"role": "system", "content": s}));
    }
    msgs.push(serde_json::json!({"role": "user", "content": message}));
    let msgs = Message::parse_list(&serde_json::Value::Array(msgs).to_string())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let eos = lantern_data::chat::special_token(&cfg, "eos_token");
    Ok((template.render(&msgs, true)?, eos))
}
