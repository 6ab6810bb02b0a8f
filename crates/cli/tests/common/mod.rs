//! Shared helpers of the CLI tests: the binary, a small prepared corpus of real text, and
//! tiny run configs.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

pub fn lantern(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lantern"))
        .args(args)
        .output()
        .expect("lantern runs")
}

/// Runs and asserts success, printing the output otherwise.
pub fn lantern_ok(args: &[&str]) -> String {
    let out = lantern(args);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "lantern {args:?} failed\nstdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// `lantern train --config <cfg> --quiet --set <each of sets>`, which must succeed.
pub fn train_ok(cfg: &Path, sets: &[&str]) -> String {
    let cfg = cfg.display().to_string();
    let mut args = vec!["train", "--config", &cfg, "--quiet"];
    for kv in sets {
        args.extend(["--set", kv]);
    }
    lantern_ok(&args)
}

/// Runs, asserts failure, returns stderr.
pub fn lantern_err(args: &[&str]) -> String {
    let out = lantern(args);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        !out.status.success(),
        "lantern {args:?} should fail; stderr:\n{stderr}"
    );
    assert!(
        !stderr.contains("panicked"),
        "lantern {args:?} panicked:\n{stderr}"
    );
    stderr
}

/// Three categories of the fortunes corpus (real English text), prepared once per test
/// binary with a 512-token BPE vocabulary.
pub fn prepared_data() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let raw = workspace_root().join("data/raw/fortunes");
        assert!(
            raw.is_dir(),
            "{} is missing: run `bash scripts/fetch_fortunes.sh` (scripts/test.sh does)",
            raw.display()
        );
        let out = workspace_root()
            .join("target/test-data")
            .join(format!("fortunes-512-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&out);
        let mut args = vec!["prepare".to_string()];
        for cat in ["computers", "science", "work"] {
            args.push("--input".into());
            args.push(raw.join(cat).display().to_string());
        }
        args.extend([
            "--out".into(),
            out.display().to_string(),
            "--vocab-size".into(),
            "512".into(),
        ]);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        lantern_ok(&refs);
        out
    })
    .clone()
}

/// `tests/golden/<rel>`.
pub fn golden(rel: &str) -> PathBuf {
    workspace_root().join("tests/golden").join(rel)
}

/// A run on the golden records `tests/golden/<records>/train.jsonl` from the SFT golden's
/// Llama (SFT's records, DPO's preferences, KTO's unpaired examples): a quarter held out, 64
/// tokens, batches of 2 accumulated twice over two epochs, an evaluation and a checkpoint
/// every 2 steps. `data` is added to `[data]`, `extra` to `[train]`; the file is named after
/// the records' first folder (`sft`, `dpo`, `kto`).
pub fn golden_run_config(
    dir: &Path,
    run: &Path,
    (records, data): (&str, &str),
    extra: &str,
) -> PathBuf {
    let text = format!(
        r#"
[model]
init_from = "{model}"
[data]
train = "{records}/train.jsonl"
val_fraction = 0.25
max_length = 64
{data}
[train]
device = "cpu"
batch_size = 2
grad_accum = 2
epochs = 2
lr = 3e-2
warmup_steps = 1
eval_every = 2
log_every = 1
{extra}
[checkpoint]
every = 2
[run]
dir = "{run}"
"#,
        model = s(&golden("sft/model")),
        records = s(&golden(records)),
        run = s(run),
    );
    let prefix = records.split('/').next().unwrap_or("run");
    write_config(dir, prefix, run, &text)
}

/// Writes `text` to `<dir>/<name>` and returns the override that trains on it
/// (`data.train="<path>"`), for tests of bad records.
pub fn data_train_file(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    format!("data.train=\"{}\"", s(&p))
}

/// Writes a run config as `<dir>/<prefix>-<run folder name>.toml`.
pub fn write_config(dir: &Path, prefix: &str, run_dir: &Path, text: &str) -> PathBuf {
    let name = run_dir.file_name().unwrap().to_string_lossy();
    let p = dir.join(format!("{prefix}-{name}.toml"));
    std::fs::write(&p, text).unwrap();
    p
}

/// A tiny GPT run config (2 layers, 32 wide, 32 tokens) writing to `run_dir`.
pub fn tiny_config(dir: &Path, run_dir: &Path, extra: &str) -> PathBuf {
    let text = format!(
        r#"
[model]
preset = "gpt-tiny"
n_layer = 2
n_embd = 32
n_head = 4
n_positions = 32
dropout = 0.1

[data]
dir = "{data}"

[train]
batch_size = 4
seq_len = 32
max_steps = 40
lr = 1e-2
warmup_steps = 5
eval_every = 20
eval_batches = 2
log_every = 10
{extra}

[checkpoint]
every = 20
keep = 5

[run]
dir = "{run}"
"#,
        data = prepared_data().display(),
        run = run_dir.display(),
    );
    write_config(dir, "config", run_dir, &text)
}

/// A small llama-tiny variant: 2 layers, 64 wide, 4 query heads sharing 2 key/value heads,
/// 32-token samples.
pub fn llama_config(dir: &Path, run_dir: &Path, extra: &str) -> PathBuf {
    let text = format!(
        r#"
[model]
preset = "llama-tiny"
n_layer = 2
n_embd = 64
n_head = 4
n_kv_head = 2
intermediate_size = 160
n_positions = 32

[data]
dir = "{data}"

[train]
batch_size = 8
seq_len = 32
max_steps = 200
lr = 3e-3
warmup_steps = 10
eval_every = 50
eval_batches = 4
log_every = 50
{extra}

[checkpoint]
every = 100
keep = 5

[run]
dir = "{run}"
"#,
        data = s(&prepared_data()),
        run = s(run_dir),
    );
    write_config(dir, "llama", run_dir, &text)
}

pub fn newest_checkpoint(run_dir: &Path) -> PathBuf {
    let mut v: Vec<PathBuf> = std::fs::read_dir(run_dir.join("checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("step-")
        })
        .collect();
    v.sort();
    v.pop().expect("a checkpoint")
}

pub fn read_f32_tensors(path: &Path) -> Vec<(String, Vec<f32>)> {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut out: Vec<(String, Vec<f32>)> = st
        .tensors()
        .into_iter()
        .map(|(n, v)| {
            let f = v
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            (n, f)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// The `lantern` binary as a command, for tests that need to spawn, signal or limit it.
pub fn lantern_cmd(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_lantern"));
    c.args(args);
    c
}

/// Limits of the child process, applied between fork and exec.
#[derive(Debug, Clone, Copy, Default)]
pub struct Limits {
    /// RLIMIT_FSIZE in bytes: writes past it fail with EFBIG (SIGXFSZ is ignored so that the
    /// process sees the error instead of being killed).
    pub file_size: Option<u64>,
    /// RLIMIT_AS in bytes: an attempt to allocate from a lying header fails the test.
    pub address_space: Option<u64>,
}

pub fn apply_limits(cmd: &mut Command, limits: Limits) {
    use std::os::unix::process::CommandExt;
    let set = move || -> std::io::Result<()> {
        for (res, v) in [
            (libc::RLIMIT_FSIZE, limits.file_size),
            (libc::RLIMIT_AS, limits.address_space),
        ] {
            if let Some(v) = v {
                let lim = libc::rlimit {
                    rlim_cur: v as libc::rlim_t,
                    rlim_max: v as libc::rlim_t,
                };
                // SAFETY: setrlimit and signal are async-signal-safe and only read `lim`, a
                // local; nothing else runs between fork and exec.
                if unsafe { libc::setrlimit(res, &lim) } != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
        }
        if limits.file_size.is_some() {
            // SAFETY: as above; SIG_IGN survives exec, so writes fail with EFBIG.
            unsafe { libc::signal(libc::SIGXFSZ, libc::SIG_IGN) };
        }
        Ok(())
    };
    // SAFETY: the closure only calls async-signal-safe functions (see above).
    unsafe { cmd.pre_exec(set) };
}

/// Sends `sig` to a child we spawned.
pub fn send_signal(child: &std::process::Child, sig: i32) {
    // SAFETY: kill has no memory-safety preconditions; the pid is our own live child (not yet
    // waited for), so it cannot have been reused.
    let rc = unsafe { libc::kill(child.id() as libc::pid_t, sig) };
    assert_eq!(rc, 0, "kill({}, {sig}) failed", child.id());
}

/// A path as a command-line argument.
/// `<command> --config <cfg>`, a `--set` for each of `sets`, then `extra`.
pub fn command_args(command: &str, cfg: &Path, sets: &[&str], extra: &[&str]) -> Vec<String> {
    let mut a = vec![command.to_string(), "--config".into(), s(cfg)];
    for set in sets {
        a.extend(["--set".to_string(), set.to_string()]);
    }
    a.extend(extra.iter().map(|x| x.to_string()));
    a
}

/// Borrowed views of `v`, for [`lantern`] and its kin.
pub fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

pub fn s(p: &Path) -> String {
    p.display().to_string()
}

/// Every record of a run's metrics.jsonl, in order, the training records without their wall
/// time (`step_ms`), which differs from run to run.
pub fn metrics(run: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let mut r: serde_json::Value = serde_json::from_str(l).unwrap();
            if r["kind"] == "train" {
                if let Some(o) = r.as_object_mut() {
                    o.remove("step_ms");
                }
            }
            r
        })
        .collect()
}

/// The records of one kind (`"train"`, `"val"`, `"eval"`).
pub fn metrics_of(run: &Path, kind: &str) -> Vec<serde_json::Value> {
    metrics(run)
        .into_iter()
        .filter(|r| r["kind"] == kind)
        .collect()
}

/// The `"eval"` record of a fine-tuning run's best evaluation by `metric` (higher is
/// better): the first of equals, as early stopping keeps it.
pub fn best_eval(run: &Path, metric: &str) -> serde_json::Value {
    let evals = metrics_of(run, "eval");
    let value = |r: &serde_json::Value| r[metric].as_f64().unwrap();
    let mut best = evals.first().expect("no evaluation").clone();
    for r in &evals {
        if value(r) > value(&best) {
            best = r.clone();
        }
    }
    best
}

/// One number of every record of a kind, e.g. `("train", "loss")`.
pub fn metric_values(run: &Path, kind: &str, key: &str) -> Vec<f64> {
    metrics_of(run, kind)
        .iter()
        .map(|r| r[key].as_f64().unwrap())
        .collect()
}

/// The `"train"` record of `step`.
pub fn train_record(recs: &[serde_json::Value], step: u64) -> &serde_json::Value {
    recs.iter()
        .find(|r| r["kind"] == "train" && r["step"] == step)
        .unwrap_or_else(|| panic!("no train record for step {step}"))
}

/// Relative L2 distance ‖x − y‖ / ‖y‖ (the denominator floored at 1e-12).
pub fn rel_l2(x: &[f32], y: &[f32]) -> f64 {
    let num: f64 = x
        .iter()
        .zip(y)
        .map(|(p, q)| ((p - q) as f64).powi(2))
        .sum::<f64>()
        .sqrt();
    let den: f64 = y
        .iter()
        .map(|q| (*q as f64).powi(2))
        .sum::<f64>()
        .sqrt()
        .max(1e-12);
    num / den
}

/// Trains the config `config(run_dir)` writes twice, quietly and without accumulation: as two
/// ranks under `lantern launch --backend mpi` of `b` samples each, and as one process of 2b.
/// Returns the two runs' folders, `root/two` and `root/one`.
pub fn two_ranks_and_one(
    root: &Path,
    b: usize,
    config: impl Fn(&Path) -> PathBuf,
) -> (PathBuf, PathBuf) {
    let run = |name: &str, batch: usize, ranks: bool| {
        let dir = root.join(name);
        let cfg = s(&config(&dir));
        let batch = format!("train.batch_size={batch}");
        let mut args: Vec<&str> = Vec::new();
        if ranks {
            args.extend(["launch", "--nproc-per-node", "2", "--backend", "mpi", "--"]);
        }
        args.extend(["train", "--config", &cfg, "--quiet", "--set", &batch]);
        args.extend(["--set", "train.grad_accum=1"]);
        lantern_ok(&args);
        dir
    };
    (run("two", b, true), run("one", 2 * b, false))
}

/// The newest checkpoints' weights of runs `a` and `b` agree tensor by tensor within relative
/// L2 `tol`.
pub fn assert_same_weights(a: &Path, b: &Path, tol: f64) {
    let w = |d: &Path| read_f32_tensors(&newest_checkpoint(d).join("model.safetensors"));
    for ((na, x), (nb, y)) in w(a).iter().zip(&w(b)) {
        assert_eq!(na, nb);
        let r = rel_l2(x, y);
        assert!(r <= tol, "{na}: relative difference {r}");
    }
}

/// Highest `"train"` step recorded in a run's metrics.jsonl (0 if none yet).
pub fn last_train_step(run_dir: &Path) -> u64 {
    let text = std::fs::read_to_string(run_dir.join("metrics.jsonl")).unwrap_or_default();
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|r| r["kind"] == "train")
        .filter_map(|r| r["step"].as_u64())
        .max()
        .unwrap_or(0)
}

/// Waits until the run has recorded step `k`; fails if the child exits first or it takes
/// longer than `timeout`.
pub fn wait_for_step(
    child: &mut std::process::Child,
    run_dir: &Path,
    k: u64,
    timeout: std::time::Duration,
) {
    let t0 = std::time::Instant::now();
    while last_train_step(run_dir) < k {
        if let Some(st) = child.try_wait().unwrap() {
            panic!("lantern exited ({st}) before reaching step {k}");
        }
        assert!(
            t0.elapsed() < timeout,
            "step {k} not reached in {timeout:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// Reads the child's piped stderr until a line contains `marker`; returns what it read.
pub fn wait_for_stderr_line(child: &mut std::process::Child, marker: &str) -> String {
    use std::io::BufRead;
    let stderr = child.stderr.as_mut().expect("stderr is piped");
    let mut reader = std::io::BufReader::new(stderr);
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        let n = reader.read_line(&mut line).unwrap();
        assert!(n > 0, "stderr closed before {marker:?}; it said:\n{seen}");
        seen.push_str(&line);
        if line.contains(marker) {
            return seen;
        }
    }
}

/// Names of the entries of a run's checkpoints folder, sorted.
pub fn checkpoint_entries(run_dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(run_dir.join("checkpoints"))
        .map(|rd| {
            rd.map(|e| e.unwrap().file_name().to_string_lossy().to_string())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Pid of the `lantern <subcommand>` process of `rank` whose arguments mention `config`.
pub fn rank_pid(subcommand: &str, config: &Path, rank: usize) -> Option<i32> {
    let want_run = s(config);
    let want_rank = format!("RANK={rank}");
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let dir: PathBuf = entry.path();
        let Ok(cmdline) = std::fs::read(dir.join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|&c| c == 0)
            .map(|a| String::from_utf8_lossy(a).to_string())
            .collect();
        // The trainer itself, not its `launch-rank` supervisor or the launcher.
        if args.get(1).map(String::as_str) != Some(subcommand)
            || !args.iter().any(|a| a.contains(&want_run))
        {
            continue;
        }
        let environ = std::fs::read(dir.join("environ")).unwrap_or_default();
        if environ
            .split(|&c| c == 0)
            .any(|v| v == want_rank.as_bytes())
        {
            return Some(pid);
        }
    }
    None
}

/// A transformers-layout folder of `family`, as `roberta-base` or `distilbert-base-uncased`
/// are on disk but tiny: the masked LM (ELECTRA: the encoder; 1 layer, 16 wide, fresh
/// weights) with the family's config.json, and `tokenizer` (its vocabulary sizes the model).
pub fn family_folder(
    root: &Path,
    name: &str,
    family: lantern_models::bert::Family,
    tokenizer: &Path,
) -> PathBuf {
    use candle_core::{DType, Device};
    use lantern_models::bert::{hf, init_params, BertConfig, BertHead, Family};
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let vocab = tokenizers::Tokenizer::from_file(tokenizer)
        .unwrap()
        .get_vocab_size(true);
    let mut cfg = BertConfig::new(vocab, 16, 1, 2, 32, 66);
    cfg.model_type = family;
    match family {
        Family::Roberta | Family::XlmRoberta => {
            cfg.pad_token_id = 1;
            cfg.type_vocab_size = 1;
            cfg.layer_norm_eps = 1e-5;
        }
        Family::DistilBert => {
            cfg.type_vocab_size = 0;
            (cfg.classifier_dropout, cfg.qa_dropout) = (Some(0.2), Some(0.1));
        }
        // Embeddings narrower than the layers, as ELECTRA-small's (128 → 256).
        Family::Electra => cfg.embedding_size = Some(8),
        // Two layers, a full one and a local one whose window (4: two keys on either side)
        // is narrower than the sequences.
        Family::ModernBert => {
            cfg = BertConfig::new(vocab, 16, 2, 2, 32, 66);
            cfg.model_type = family;
            let mut m = lantern_models::bert::ModernSettings::new(2);
            m.local_attention = 4;
            cfg.modern = Some(m);
            cfg.type_vocab_size = 0;
            cfg.layer_norm_eps = 1e-5;
            cfg.hidden_dropout_prob = 0.0;
            cfg.attention_probs_dropout_prob = 0.0;
            cfg.classifier_dropout = Some(0.0);
        }
        Family::Bert => {}
    }
    // ELECTRA's released discriminators carry a head of their own, which is not ours: a bare
    // encoder stands for them.
    let head = match family.has_masked_lm() {
        true => BertHead::MaskedLm,
        false => BertHead::Encoder,
    };
    let mut rng = lantern_kernels::Rng::new(5);
    let params = init_params(&cfg, head, &mut rng, &Device::Cpu, DType::F32).unwrap();
    let tensors = hf::export_tensors(&params, DType::F32).unwrap();
    let bytes = lantern_models::safetensors_io::serialize(&tensors).unwrap();
    std::fs::write(dir.join("model.safetensors"), bytes).unwrap();
    let config = hf::to_hf_config(&cfg, head, DType::F32);
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    std::fs::copy(tokenizer, dir.join("tokenizer.json")).unwrap();
    dir
}

/// A LoRA run's merged `model.safetensors` (`merged`) against the pretrained one (`base`) and
/// the adapter file's tensors (peft's names, `base_model.model.` + ...): every tensor without
/// an adapter equal to the pretrained one bit for bit (`in_full` aside: trained, so they must
/// equal the adapter file's copy), and each adapted weight W0 + scale·B·A (transposed for
/// GPT-2's (in, out) `Conv1D`, `in_out`), changed by training. Returns the adapted names.
pub fn assert_lora_merge(
    merged: &[(String, Vec<f32>)],
    base: &std::collections::BTreeMap<String, Vec<f32>>,
    adapters: &std::collections::BTreeMap<String, Vec<f32>>,
    (r, scale, in_out): (usize, f32, bool),
    in_full: &[&str],
) -> Vec<String> {
    let mut adapted = Vec::new();
    for (name, w) in merged {
        if in_full.contains(&name.as_str()) {
            assert_eq!(w, &adapters[&format!("base_model.model.{name}")], "{name}");
            continue;
        }
        let w0 = &base[name];
        let module = name.strip_suffix(".weight").unwrap_or(name);
        let (Some(a), Some(b)) = (
            adapters.get(&format!("base_model.model.{module}.lora_A.weight")),
            adapters.get(&format!("base_model.model.{module}.lora_B.weight")),
        ) else {
            assert_eq!(w, w0, "{name} is frozen");
            continue;
        };
        // A (r, in), B (out, r); W (in, out) for Conv1D, else (out, in).
        let (fan_in, fan_out) = (a.len() / r, b.len() / r);
        let mut d = 0f32;
        for i in 0..fan_in {
            for o in 0..fan_out {
                let ba: f32 = (0..r).map(|k| b[o * r + k] * a[k * fan_in + i]).sum();
                let at = if in_out {
                    i * fan_out + o
                } else {
                    o * fan_in + i
                };
                d = d.max((w[at] - (w0[at] + scale * ba)).abs());
            }
        }
        assert!(d < 1e-5, "{name}: merged differs by {d}");
        assert!(w != w0, "{name} was adapted");
        adapted.push(name.clone());
    }
    adapted
}

/// The golden multiple-choice questions (tests/golden/lm_choice/hellaswag.jsonl) with each
/// ending cut to its first three words, so that a continuation fits the tiny models' 32
/// positions; written to `<dir>/choices.jsonl`.
pub fn short_choices(dir: &Path) -> PathBuf {
    let questions = golden("lm_choice/hellaswag.jsonl");
    let mut out = String::new();
    for line in std::fs::read_to_string(questions).unwrap().lines() {
        let mut r: serde_json::Value = serde_json::from_str(line).unwrap();
        for e in r["endings"].as_array_mut().unwrap() {
            let words: Vec<&str> = e.as_str().unwrap().split_whitespace().take(3).collect();
            *e = serde_json::Value::String(words.join(" "));
        }
        out += &format!("{r}\n");
    }
    let p = dir.join("choices.jsonl");
    std::fs::write(&p, out).unwrap();
    p
}
