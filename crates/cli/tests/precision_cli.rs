//! Mixed precision through the binary: bf16 tracks fp32, and fp16's loss scaler skips an
//! injected overflow, backs off, grows back and survives an exact resume.

mod common;
use common::*;

#[test]
fn bf16_ends_within_two_percent_of_fp32() {
    let tmp = tempfile::tempdir().unwrap();
    let mut last = Vec::new();
    for p in ["fp32", "bf16"] {
        let dir = tmp.path().join(p);
        let cfg = tiny_config(tmp.path(), &dir, "");
        lantern_ok(&[
            "train",
            "--config",
            &s(&cfg),
            "--quiet",
            "--set",
            "train.max_steps=200",
            "--set",
            "model.dropout=0.0",
            "--set",
            "train.eval_every=0",
            "--set",
            "checkpoint.every=0",
            "--set",
            &format!("train.precision=\"{p}\""),
        ]);
        let recs = metrics(&dir);
        let v = recs.iter().rev().find(|r| r["kind"] == "val").unwrap()["val_loss"]
            .as_f64()
            .unwrap();
        assert_eq!(train_record(&recs, 1)["precision"], p);
        last.push(v);
    }
    // The bf16 run's checkpoint holds the fp32 masters: it exports fp32, or bf16 on request.
    for (dtype, want) in [
        ("f32", safetensors::Dtype::F32),
        ("bf16", safetensors::Dtype::BF16),
    ] {
        let out = tmp.path().join(format!("export-{dtype}"));
        lantern_ok(&[
            "export",
            "--model",
            &s(&tmp.path().join("bf16")),
            "--out",
            &s(&out),
            "--dtype",
            dtype,
        ]);
        let bytes = std::fs::read(out.join("model.safetensors")).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        assert!(
            st.tensors().iter().all(|(_, v)| v.dtype() == want),
            "{dtype}"
        );
    }
    let rel = (last[1] - last[0]).abs() / last[0];
    assert!(
        rel <= 0.02,
        "bf16 val loss {} vs fp32 {} ({:.2}%)",
        last[1],
        last[0],
        rel * 100.0
    );
}

const FP16: &str = "precision = \"fp16\"\nloss_scale_interval = 4";

#[test]
fn fp16_overflow_is_skipped_backs_off_and_grows_back() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("fp16");
    let cfg = tiny_config(tmp.path(), &dir, FP16);
    lantern_ok(&[
        "train",
        "--config",
        &s(&cfg),
        "--quiet",
        "--set",
        "train.max_steps=12",
        "--set",
        "checkpoint.every=1",
        "--set",
        "checkpoint.keep=20",
        "--poison-grad-at",
        "5",
    ]);
    let recs = metrics(&dir);
    let scale = |step| train_record(&recs, step)["loss_scale"].as_f64().unwrap();
    // 0-based step 5 is the record of step 6.
    assert_eq!(train_record(&recs, 6)["skipped"], true);
    assert_eq!(train_record(&recs, 6)["skipped_steps"], 1);
    assert_eq!(train_record(&recs, 5)["skipped"], false);
    assert_eq!(scale(6), scale(5) / 2.0, "overflow halves the scale");
    // Four good steps later (interval 4) it doubles back.
    assert_eq!(scale(9), scale(6));
    assert_eq!(scale(10), scale(6) * 2.0);
    assert_eq!(
        train_record(&recs, 12)["skipped_steps"],
        1,
        "training continued"
    );
    // The skipped step left weights and optimizer state untouched.
    let ck = |step: u64, f: &str| {
        std::fs::read(
            dir.join("checkpoints")
                .join(format!("step-{step:08}"))
                .join(f),
        )
        .unwrap()
    };
    assert!(ck(5, "model.safetensors") == ck(6, "model.safetensors"));
    assert!(ck(5, "optimizer.safetensors") == ck(6, "optimizer.safetensors"));
    assert!(ck(6, "model.safetensors") != ck(7, "model.safetensors"));
}

#[test]
fn fp16_scaler_state_survives_an_exact_resume() {
    let tmp = tempfile::tempdir().unwrap();
    let run = |name: &str, split: bool| {
        let dir = tmp.path().join(name);
        let cfg = tiny_config(tmp.path(), &dir, FP16);
        let base = [
            "train",
            "--config",
            &s(&cfg),
            "--quiet",
            "--set",
            "train.max_steps=12",
            "--poison-grad-at",
            "5",
        ];
        if split {
            let mut a = base.to_vec();
            a.extend(["--stop-after", "8"]);
            lantern_ok(&a);
            let mut b = base.to_vec();
            b.push("--resume");
            lantern_ok(&b);
        } else {
            lantern_ok(&base);
        }
        std::fs::read(newest_checkpoint(&dir).join("model.safetensors")).unwrap()
    };
    assert!(
        run("straight", false) == run("split", true),
        "fp16 resume is not byte-identical"
    );
}
