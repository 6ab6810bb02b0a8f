//! `lantern bench` and `lantern bench-kernels` through the binary on the CPU, at tiny sizes: the
//! JSON fields the GPU run's table reads are there and consistent, and scripts/bench_table.py
//! turns them (with a PyTorch line and an Nsight Compute CSV) into the tables.

mod common;
use common::*;
use serde_json::Value;

const TINY: &[&str] = &[
    "--n-layer",
    "2",
    "--n-embd",
    "32",
    "--n-head",
    "4",
    "--vocab",
    "96",
    "--seq-len",
    "16",
];

fn json_lines(out: &str) -> Vec<Value> {
    out.lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// Runs scripts/bench_table.py with `args`: its exit code and stdout (the test fails on a
/// non-zero exit when `must_pass`). None where there is no python3 (the script needs nothing
/// else), and the caller skips.
fn bench_table(args: &[&std::path::Path], must_pass: bool) -> Option<(Option<i32>, String)> {
    if std::process::Command::new("python3")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("no python3: bench_table.py not checked");
        return None;
    }
    let out = std::process::Command::new("python3")
        .arg(workspace_root().join("scripts/bench_table.py"))
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if must_pass {
        assert!(
            out.status.success(),
            "{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Some((out.status.code(), stdout))
}

fn bench_bf16() -> Value {
    let mut args = vec!["bench", "--device", "cpu", "--precision", "bf16"];
    args.extend_from_slice(TINY);
    args.extend_from_slice(&[
        "--batch",
        "2",
        "--steps",
        "3",
        "--warmup",
        "1",
        "--profile",
        "2",
        "--peak-tflops",
        "0.5",
    ]);
    let mut lines = json_lines(&lantern_ok(&args));
    assert_eq!(lines.len(), 1);
    lines.remove(0)
}

#[test]
fn bench_bf16_on_the_cpu_reports_every_field() {
    let j = bench_bf16();
    let num = |k: &str| {
        j[k].as_f64()
            .unwrap_or_else(|| panic!("{k} missing or not a number in {j}"))
    };
    assert_eq!(j["impl"], "lantern");
    assert_eq!(j["dtype"], "bf16");
    // `--attention auto` runs the composite attention on the CPU, and says so.
    assert_eq!(
        (j["attention"].as_str(), j["attention_fused"].as_bool()),
        (Some("auto"), Some(false))
    );
    assert_eq!(
        (num("batch"), num("seq_len"), num("steps")),
        (2.0, 16.0, 3.0)
    );
    // 2 blocks of 12·32² + 13·32, wte 96·32, wpe 16·32, ln_f 64.
    let n_all = 2.0 * (12.0 * 1024.0 + 13.0 * 32.0) + 96.0 * 32.0 + 16.0 * 32.0 + 64.0;
    assert_eq!(num("params"), n_all);
    assert_eq!(num("params_no_pos"), n_all - 16.0 * 32.0);
    let fpt = 6.0 * (n_all - 512.0) + 12.0 * 2.0 * 4.0 * 8.0 * 16.0;
    assert_eq!(num("flops_per_token"), fpt);
    assert!(j["flops_formula"].as_str().unwrap().contains("6N+12LHQT"));
    let tps = num("tokens_per_s");
    assert!((tps - 32.0 / (num("step_ms_median") * 1e-3)).abs() < 1e-6 * tps);
    assert_eq!(num("peak_tflops"), 0.5);
    assert!((num("mfu") - fpt * tps / 0.5e12).abs() < 1e-12);
    assert!(num("final_loss").is_finite());
    // No device memory to measure on the CPU: the fields are there, empty.
    for k in ["peak_mem_bytes", "peak_mem_method", "driver_used_max_bytes"] {
        assert!(j.get(k).is_some_and(Value::is_null), "{k} in {j}");
    }
    let p = &j["profile"];
    assert_eq!(p["steps"], 2);
    for k in [
        "forward_ms",
        "backward_ms",
        "grads_ms",
        "optimizer_ms",
        "sum_ms",
    ] {
        assert!(p[k].as_f64().is_some_and(|x| x > 0.0), "{k} in {p}");
    }
}

#[test]
fn bench_kernels_on_the_cpu_runs_every_kernel() {
    let mut args = vec![
        "bench-kernels",
        "--device",
        "cpu",
        "--tokens",
        "32",
        "--rounds",
        "2",
        "--inner",
        "2",
        "--copy-elems",
        "65536",
    ];
    args.extend_from_slice(TINY);
    let lines = json_lines(&lantern_ok(&args));
    let copy = &lines[0];
    assert_eq!(copy["kernel"], "copy_d2d");
    assert_eq!(copy["bytes"], 2 * 65536 * 4);
    let copy_gbps = copy["gb_per_s"].as_f64().unwrap();
    for k in [
        "layer_norm_fwd",
        "layer_norm_bwd",
        "gelu_tanh_fwd",
        "gelu_tanh_bwd",
        "softmax_causal_fwd",
        "softmax_bwd",
        "cross_entropy_fwd",
        "cross_entropy_fwd_bwd",
        "adamw_fused",
        "adamw_fused_bf16_work",
        "adamw_candle_composite",
        "grad_norm",
        "grad_scale",
    ] {
        let l = lines
            .iter()
            .find(|l| l["kernel"] == k)
            .unwrap_or_else(|| panic!("no {k} line"));
        let (ms, gbps) = (l["ms"].as_f64().unwrap(), l["gb_per_s"].as_f64().unwrap());
        let bytes = l["bytes"].as_f64().unwrap();
        assert!(ms > 0.0 && (gbps - bytes / (ms * 1e-3) / 1e9).abs() < 1e-6 * gbps);
        assert!((l["of_copy"].as_f64().unwrap() - gbps / copy_gbps).abs() < 1e-9);
        assert_eq!(l["dtype"], "f32");
    }
    let ln = lines
        .iter()
        .find(|l| l["kernel"] == "layer_norm_fwd")
        .unwrap();
    assert_eq!(ln["shape"], serde_json::json!([32, 32]));
    let sp = lines
        .iter()
        .find(|l| l["kernel"] == "adamw_speedup")
        .unwrap();
    assert_eq!(
        sp["params"],
        2 * (12 * 1024 + 13 * 32) + 96 * 32 + 16 * 32 + 64
    );
    assert!(sp["speedup"].as_f64().is_some_and(|x| x > 0.0));
}

#[test]
fn bad_benchmark_arguments_are_clear_errors() {
    let err = lantern_err(&["bench-kernels", "--device", "cpu", "--dtype", "bf16"]);
    assert!(err.contains("CUDA only"), "{err}");
    let err = lantern_err(&["bench", "--precision", "fp8"]);
    assert!(err.contains("expected fp32, bf16 or fp16"), "{err}");
    let err = lantern_err(&["bench", "--batch", "0"]);
    assert!(err.contains("must be positive"), "{err}");
    let err = lantern_err(&["bench-kernels", "--tokens", "100", "--seq-len", "64"]);
    assert!(err.contains("multiple of seq_len"), "{err}");
    if !cfg!(feature = "cuda") {
        let err = lantern_err(&["bench", "--device", "cuda"]);
        assert!(err.contains("--features cuda"), "{err}");
    }
}

/// bench_table.py reads the JSON lines of both and an ncu CSV; skipped where there is no
/// python3 (the script itself needs nothing else).
#[test]
fn bench_table_prints_the_tables_and_ratios() {
    let dir = tempfile::tempdir().unwrap();
    let ours = bench_bf16();
    let tps = ours["tokens_per_s"].as_f64().unwrap();
    let step_ms = ours["step_ms_median"].as_f64().unwrap();
    // PyTorch lines as bench_torch_gpt.py writes them, at half and at twice our speed.
    let torch = |imp: &str, f: f64| {
        serde_json::json!({"impl": imp, "tokens_per_s": tps * f, "step_ms_median": step_ms / f,
            "dtype": "bf16", "batch": 2, "seq_len": 16, "vocab": 96, "n_layer": 2, "n_embd": 32,
            "mfu": 0.1, "peak_tflops": 0.5, "peak_mem_bytes": 3u64 << 30,
            "peak_mem_method": "torch.cuda.max_memory_allocated (tensors only)"})
    };
    let jsonl = dir.path().join("bench.jsonl");
    // `--attention composite`: the same step at 0.8 of the speed, its own row and ratio.
    let mut composite = ours.clone();
    composite["attention"] = "composite".into();
    composite["tokens_per_s"] = (tps * 0.8).into();
    // The measured matmul rate (scripts/matmul_peak.py): MFU against it, next to the nominal.
    let ach = ours["achieved_tflops"].as_f64().unwrap();
    let peak = serde_json::json!({"impl": "device-peak", "matmul_tflops": 0.25});
    let text = [
        ours,
        composite,
        torch("pytorch-eager", 0.5),
        torch("pytorch-compile", 2.0),
        peak,
    ]
    .iter()
    .map(|v| v.to_string() + "\n")
    .collect::<String>();
    std::fs::write(&jsonl, format!("not json\n{text}")).unwrap();
    // One step as `ncu --csv --page raw --print-units base` lists it, in nanoseconds.
    let ncu = dir.path().join("ncu.csv");
    let gemm = "sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x128x64";
    let rows = [
        ("layer_norm_fwd_bf16", 500_000),
        ("bias_gelu_tanh_fwd_bf16", 250_000),
        ("embedding_bwd_bf16", 250_000),
        ("attention_fwd_bf16_hd64", 1_000_000),
        (gemm, 3_000_000),
        ("ucopy_bf16", 500_000),
        ("adamw_bf16", 500_000),
    ];
    let mut csv = String::from("==PROF== Connected to process\n\"ID\",\"Process ID\",\"Kernel Name\",\"gpu__time_duration.sum\"\n\"\",\"\",\"\",\"nsecond\"\n");
    for (i, (name, ns)) in rows.iter().enumerate() {
        csv += &format!("\"{i}\",\"42\",\"{name}\",\"{ns}\"\n");
    }
    std::fs::write(&ncu, csv).unwrap();
    let flag = std::path::Path::new("--ncu");
    let Some((_, stdout)) = bench_table(&[&jsonl, flag, &ncu], true) else {
        return;
    };
    assert!(
        stdout.contains("ratio Lantern / PyTorch eager: 2.000"),
        "{stdout}"
    );
    assert!(
        stdout.contains("ratio Lantern / PyTorch torch.compile: 0.500"),
        "{stdout}"
    );
    assert!(stdout.contains("| PyTorch eager |"), "{stdout}");
    assert!(
        stdout.contains("| Lantern, composite attention |")
            && stdout.contains("ratio Lantern / Lantern, composite attention: 1.250"),
        "{stdout}"
    );
    assert!(stdout.contains("| 3.00 |"), "peak memory in GiB: {stdout}");
    assert!(
        stdout.contains("measured dense bf16 matmul rate of this GPU, 0.25 TFLOP/s")
            && stdout.contains(&format!("- Lantern: {:.1}%", 100.0 * ach / 0.25)),
        "{stdout}"
    );
    assert!(stdout.contains("forward + loss"), "{stdout}");
    // 2.5 ms of our kernels, 3 ms of matmuls, 0.5 ms of candle's, in 7 launches.
    assert!(stdout.contains("| lantern kernels | 5 | 2.5 |"), "{stdout}");
    assert!(stdout.contains("| matmul (cuBLAS) | 1 | 3.0 |"), "{stdout}");
    assert!(
        stdout.contains("| candle kernels (elementwise, copies, reductions) | 1 | 0.5 |"),
        "{stdout}"
    );
    let gap = format!(
        "| gaps between kernels (step − kernels) | | {:.1} |",
        step_ms - 6.0
    );
    assert!(stdout.contains(&gap), "{gap} not in {stdout}");
    // Nothing to show is an error.
    std::fs::write(&jsonl, "{\"x\": 1}\n").unwrap();
    let (code, _) = bench_table(&[&jsonl], false).unwrap();
    assert_eq!(code, Some(1));
}

/// bench_table.py --ktrace: each program's last profiled range, split by category, with the
/// GPU's idle time inside the step from the union of the records' intervals.
#[test]
fn bench_table_reads_a_kernel_trace() {
    let dir = tempfile::tempdir().unwrap();
    let jsonl = dir.path().join("bench.jsonl");
    std::fs::write(
        &jsonl,
        "{\"impl\": \"lantern\", \"tokens_per_s\": 100.0, \"step_ms_median\": 6.5}\n",
    )
    .unwrap();
    // As scripts/ktrace/ktrace.c writes it (ns). Lantern: 1 ms LayerNorm, 2 ms GEMM, 1 ms
    // attention, then a 0.5 ms copy overlapped by a 0.8 ms candle kernel on another stream:
    // busy 1 + 3 + 1 = 5 of a 6 ms span. PyTorch: range 1 is stale; in range 2, 3 ms of flash
    // attention (a name with commas) and 1 ms of GEMM back to back.
    let trace = "\
# ktrace: label,range,kind,start_ns,end_ns,stream,bytes,name
lantern,1,kernel,1000000,2000000,7,0,layer_norm_fwd_bf16
lantern,1,kernel,2500000,4500000,7,0,sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n
lantern,1,kernel,4500000,5500000,7,0,attention_fwd_bf16_hd64
pytorch-eager,1,kernel,0,90000000,7,0,nvjet_tst_stale
lantern,1,memcpy,6000000,6500000,7,1024,memcpy HtoD
lantern,1,kernel,6200000,7000000,8,0,ucopy_bf16
pytorch-eager,2,kernel,0,3000000,7,0,void pytorch_flash::flash_fwd_kernel<Flash_fwd_kernel_traits<64, 128, 128, 4, false, false, cutlass::bfloat16_t>, true>(Flash_fwd_params)
pytorch-eager,2,kernel,3000000,4000000,7,0,nvjet_tst_128x256_64x4_1x2_h_bz_coopA_TNT
not,a,row
# lantern: 5 rows from 1 profiled range(s)
";
    let ktrace = dir.path().join("ktrace.csv");
    std::fs::write(&ktrace, trace).unwrap();
    let flag = std::path::Path::new("--ktrace");
    let Some((_, stdout)) = bench_table(&[&jsonl, flag, &ktrace], true) else {
        return;
    };
    for want in [
        "| category | lantern | pytorch-eager |",
        "| matmul (cuBLAS) | 2.00 (1) | 1.00 (1) |",
        "| attention | 1.00 (1) | 3.00 (1) |",
        "| Lantern's other kernels | 1.00 (1) | 0.00 (0) |",
        "| 0.80 (1) | 0.00 (0) |",
        "| memcpy / memset | 0.50 (1) | 0.00 (0) |",
        "| GPU busy (union of the above) | 5.00 | 4.00 |",
        "| GPU idle inside the step | 1.00 (17%) | 0.00 (0%) |",
        "| step span (first start to last end) | 6.00 | 4.00 |",
        "| step, unprofiled median (bench.jsonl) | 6.50 | - |",
        // Against eager (no compile trace): attention is where Lantern is faster.
        "### Largest gaps: Lantern against pytorch-eager",
        "| 1 | matmul (cuBLAS) | +1.00 |",
        "| 6 | attention | -2.00 |",
        "| | step span | +2.00 |",
    ] {
        assert!(stdout.contains(want), "{want:?} not in:\n{stdout}");
    }
    assert!(!stdout.contains("stale"), "{stdout}");
}

/// `--attention fused` runs the fused op on the CPU too, and the line says which ran; a bad
/// value is refused naming the choices.
#[test]
fn bench_reports_the_attention_that_ran() {
    let mut args = vec!["bench", "--device", "cpu", "--attention", "fused"];
    args.extend_from_slice(TINY);
    args.extend_from_slice(&["--batch", "2", "--steps", "1", "--warmup", "0"]);
    let j = json_lines(&lantern_ok(&args)).remove(0);
    assert_eq!(j["attention"], "fused");
    assert_eq!(j["attention_fused"], true);
    assert!(j["final_loss"].as_f64().unwrap().is_finite());
    let err = lantern_err(&["bench", "--attention", "flash"]);
    assert!(err.contains("expected auto, fused or composite"), "{err}");
}
