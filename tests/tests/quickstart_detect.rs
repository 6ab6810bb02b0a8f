//! The quick start's choice of device (`scripts/quickstart.sh --detect`) against fake
//! `nvidia-smi`s put first on PATH: no GPU, a GPU whose driver is too old for the CUDA 13
//! toolchain, a GPU it can use, several GPUs listed slowly (a reader that stops at the first
//! line must not turn them into "no GPU"), and DEVICE forcing the CPU.

use std::path::Path;
use std::process::Command;

/// Writes an `nvidia-smi` that answers `-L` with `list` (exit 0) or fails (exit 9, as without
/// a driver), and prints `header` for any other call.
fn fake_smi(dir: &Path, list: Option<&str>, header: &str) {
    let l = match list {
        Some(line) => format!("echo '{line}'"),
        None => "echo 'NVIDIA-SMI has failed because it could not communicate with the NVIDIA driver.'; exit 9".into(),
    };
    let script = format!("#!/bin/sh\nif [ \"$1\" = -L ]; then {l}; fi\necho '{header}'\n");
    let path = dir.join("nvidia-smi");
    std::fs::write(&path, script).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn detect(dir: &Path, device: Option<&str>) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let path = format!("{}:{}", dir.display(), std::env::var("PATH").unwrap());
    let mut cmd = Command::new("bash");
    cmd.arg(root.join("scripts/quickstart.sh"))
        .arg("--detect")
        .env("PATH", path)
        .env_remove("DEVICE");
    if let Some(d) = device {
        cmd.env("DEVICE", d);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn quickstart_trains_on_a_gpu_only_where_the_toolchain_can_run() {
    let dir = tempfile::tempdir().unwrap();
    let gpu = Some("GPU 0: NVIDIA H200 (UUID: GPU-0)");
    let header =
        |v: &str| format!("| NVIDIA-SMI 580.1   Driver Version: 580.1   CUDA Version: {v} |");

    fake_smi(dir.path(), None, "");
    assert_eq!(
        detect(dir.path(), None),
        "cpu (no GPU found (nvidia-smi lists none))"
    );

    fake_smi(dir.path(), gpu, &header("12.4"));
    let d = detect(dir.path(), None);
    assert!(d.starts_with("cpu (the GPU's driver runs CUDA 12"), "{d}");

    fake_smi(dir.path(), gpu, &header("13.0"));
    assert_eq!(detect(dir.path(), None), "cuda (nvidia-smi lists a GPU)");
    assert_eq!(detect(dir.path(), Some("cpu")), "cpu (DEVICE=cpu)");

    // Eight GPUs, the rest of the list written after a pause: a `nvidia-smi -L | grep -q`
    // under pipefail sees nvidia-smi die of SIGPIPE here and concludes there is no GPU.
    let eight: Vec<String> = (0..8)
        .map(|i| format!("GPU {i}: NVIDIA H100 80GB HBM3 (UUID: GPU-{i})"))
        .collect();
    let slow = format!("{}'; sleep 0.3; echo '{}", eight[0], eight[1..].join("\n"));
    fake_smi(dir.path(), Some(&slow), &header("13.0"));
    assert_eq!(detect(dir.path(), None), "cuda (nvidia-smi lists a GPU)");
}
