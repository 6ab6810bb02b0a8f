//! Every optimizer against torch.optim (`scripts/make_optim_golden.py`): the same three
//! parameters, the same 20 float32 gradients (with two steps where the bias has none) and the
//! same per-step learning rates; every parameter is compared after every step. Also: state
//! saved after step 10 and loaded into a fresh optimizer continues bit-identically.

use candle_core::{Device, Tensor};
use lantern_models::Params;
use lantern_train::checkpoint::OptimizerState;
use lantern_train::optim::{
    AdagradConfig, AdamWConfig, Optimizer, OptimizerConfig, RmspropConfig, SgdConfig,
};
use serde_json::Value;
use std::path::Path;

/// |ours − torch| ≤ REL·|torch| + ABS. REL is the acceptance bound (about 8 float32 ulps).
/// ABS, a twelfth of a float32 ulp at 1 (the parameters' scale), only matters for values below
/// 1e-2 that a parameter reached by moving towards zero: one ulp of difference picked up while
/// it was larger stays the same in absolute terms and grows in relative ones. What differs at
/// all: torch's CPU `sqrt` (MKL) is off by one ulp in about a fifth of elements, ours is
/// correctly rounded, so the adaptive optimizers drift apart by about 1e-7; SGD is bit-exact.
const REL: f64 = 1e-6;
const ABS: f64 = 1e-8;

fn golden() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("golden/optimizers.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

fn f(h: &Value, key: &str) -> f64 {
    h[key]
        .as_f64()
        .unwrap_or_else(|| panic!("hyper-parameter {key}"))
}

fn config(case: &Value) -> OptimizerConfig {
    let h = &case["hyper"];
    match case["optimizer"].as_str().unwrap() {
        "adamw" => OptimizerConfig::AdamW(AdamWConfig {
            beta1: f(h, "beta1"),
            beta2: f(h, "beta2"),
            eps: f(h, "eps"),
            weight_decay: f(h, "weight_decay"),
        }),
        "sgd" => OptimizerConfig::Sgd(SgdConfig {
            momentum: f(h, "momentum"),
            dampening: f(h, "dampening"),
            nesterov: h["nesterov"].as_bool().unwrap(),
            weight_decay: f(h, "weight_decay"),
        }),
        "adagrad" => OptimizerConfig::Adagrad(AdagradConfig {
            lr_decay: f(h, "lr_decay"),
            weight_decay: f(h, "weight_decay"),
            initial_accumulator_value: f(h, "initial_accumulator_value"),
            eps: f(h, "eps"),
        }),
        "rmsprop" => OptimizerConfig::Rmsprop(RmspropConfig {
            alpha: f(h, "alpha"),
            eps: f(h, "eps"),
            weight_decay: f(h, "weight_decay"),
            momentum: f(h, "momentum"),
            centered: h["centered"].as_bool().unwrap(),
        }),
        other => panic!("unknown optimizer {other}"),
    }
}

/// The golden file's parameters at their initial values: w (4, 3), b (3), t (2, 2, 2).
fn initial_params(g: &Value) -> Params {
    let mut p = Params::new();
    for spec in g["params"].as_array().unwrap() {
        let shape: Vec<usize> = spec["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_u64().unwrap() as usize)
            .collect();
        let t = Tensor::from_vec(floats(&spec["init"]), shape, &Device::Cpu).unwrap();
        p.insert(spec["name"].as_str().unwrap(), t).unwrap();
    }
    p
}

/// The gradients of one step, in parameter order; `null` in the file is no gradient.
fn step_grads(g: &Value, params: &Params, step: usize) -> Vec<Option<Tensor>> {
    params
        .iter()
        .map(|(name, var)| {
            let v = &g["grads"][step][name];
            (!v.is_null()).then(|| Tensor::from_vec(floats(v), var.dims(), &Device::Cpu).unwrap())
        })
        .collect()
}

fn values(params: &Params, name: &str) -> Vec<f32> {
    params
        .get(name)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

#[test]
fn every_optimizer_matches_torch_at_every_step() {
    let g = golden();
    let cases = g["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 8);
    let mut kinds_seen = std::collections::BTreeSet::new();
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let params = initial_params(&g);
        let mut opt = Optimizer::new(config(case), &params).unwrap();
        assert_eq!(opt.kind(), case["optimizer"].as_str().unwrap());
        kinds_seen.insert(opt.kind());
        let lrs = case["lrs"].as_array().unwrap();
        assert_eq!(lrs.len(), 20);
        let mut worst = 0f64;
        for (step, lr) in lrs.iter().enumerate() {
            opt.step(
                &params,
                &step_grads(&g, &params, step),
                lr.as_f64().unwrap(),
            )
            .unwrap();
            for pname in params.names() {
                let want = floats(&case["params"][step][pname.as_str()]);
                let got = values(&params, pname);
                assert_eq!(got.len(), want.len());
                for (k, (&a, &b)) in got.iter().zip(&want).enumerate() {
                    let (a, b) = (a as f64, b as f64);
                    let err = (a - b).abs();
                    worst = worst.max(err / b.abs().max(1e-2));
                    assert!(
                        err <= REL * b.abs() + ABS,
                        "{name}: step {} {pname}[{k}]: ours {a} vs torch {b} (rel {:.2e})",
                        step + 1,
                        err / b.abs()
                    );
                }
            }
        }
        assert_eq!(opt.step_count(), 20);
        eprintln!("{name}: worst relative difference to torch {worst:.2e}");
    }
    assert_eq!(
        kinds_seen.into_iter().collect::<Vec<_>>(),
        ["adagrad", "adamw", "rmsprop", "sgd"]
    );
}

/// Saved state, as the trainer writes it (tensors and `OptimizerState` through their file
/// formats), loaded into a fresh optimizer: the next 10 steps give the same bits as running on.
#[test]
fn state_saved_at_step_10_continues_bit_identically() {
    let g = golden();
    for case in g["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let lr = |s: usize| case["lrs"][s].as_f64().unwrap();
        let params = initial_params(&g);
        let mut opt = Optimizer::new(config(case), &params).unwrap();
        for s in 0..10 {
            opt.step(&params, &step_grads(&g, &params, s), lr(s))
                .unwrap();
        }
        // `b` had no gradient at step 4: its own step count (9) is saved apart from the 10.
        let state = opt.state(&params);
        assert_eq!(state.step, 10, "{name}");
        assert_eq!(
            state.param_steps.into_iter().collect::<Vec<_>>(),
            [("b".to_string(), 9)],
            "{name}"
        );
        let bytes = lantern_models::safetensors_io::serialize(&opt.state_tensors(&params)).unwrap();
        let json = serde_json::to_string(&opt.state(&params)).unwrap();

        let resumed_params = params.to(&Device::Cpu, candle_core::DType::F32).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("optimizer.safetensors");
        std::fs::write(&file, &bytes).unwrap();
        let tensors =
            lantern_models::safetensors_io::load(&file, &Device::Cpu, candle_core::DType::F32)
                .unwrap();
        let st: OptimizerState = serde_json::from_str(&json).unwrap();
        let mut resumed = Optimizer::new(config(case), &resumed_params).unwrap();
        resumed
            .load_state(&resumed_params, tensors, &st, &file)
            .unwrap();
        assert_eq!(resumed.step_count(), 10);

        for s in 10..20 {
            opt.step(&params, &step_grads(&g, &params, s), lr(s))
                .unwrap();
            resumed
                .step(&resumed_params, &step_grads(&g, &resumed_params, s), lr(s))
                .unwrap();
            for pname in params.names() {
                let (a, b) = (values(&params, pname), values(&resumed_params, pname));
                assert!(
                    a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()),
                    "{name}: step {} {pname} differs after resume",
                    s + 1
                );
            }
        }
        let (a, b) = (
            opt.state_tensors(&params),
            resumed.state_tensors(&resumed_params),
        );
        assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
        for (k, t) in &a {
            let (x, y): (Vec<f32>, Vec<f32>) = (
                t.flatten_all().unwrap().to_vec1().unwrap(),
                b[k].flatten_all().unwrap().to_vec1().unwrap(),
            );
            assert!(
                x.iter().zip(&y).all(|(p, q)| p.to_bits() == q.to_bits()),
                "{name}: buffer {k} differs after resume"
            );
        }
    }
}

#[test]
fn loading_names_missing_mismatched_and_foreign_state() {
    let g = golden();
    let params = initial_params(&g);
    let path = Path::new("ckpt/optimizer.safetensors");
    let sgd = |momentum| {
        OptimizerConfig::Sgd(SgdConfig {
            momentum,
            dampening: 0.0,
            nesterov: false,
            weight_decay: 0.0,
        })
    };
    let mut opt = Optimizer::new(sgd(0.9), &params).unwrap();
    opt.step(&params, &step_grads(&g, &params, 0), 0.1).unwrap();
    let tensors = opt.state_tensors(&params);
    assert_eq!(
        tensors.keys().collect::<Vec<_>>(),
        [
            "b.momentum_buffer",
            "t.momentum_buffer",
            "w.momentum_buffer"
        ]
    );
    let state = opt.state(&params);
    let err = |mut o: Optimizer, t, st: &OptimizerState| {
        o.load_state(&params, t, st, path)
            .expect_err("loading must fail")
            .to_string()
    };

    let mut missing = tensors.clone();
    missing.remove("t.momentum_buffer");
    let e = err(Optimizer::new(sgd(0.9), &params).unwrap(), missing, &state);
    assert!(
        e.contains("ckpt/optimizer.safetensors")
            && e.contains("missing optimizer tensor t.momentum_buffer"),
        "{e}"
    );

    let mut bad_shape = tensors.clone();
    bad_shape.insert(
        "w.momentum_buffer".into(),
        Tensor::zeros((3, 4), candle_core::DType::F32, &Device::Cpu).unwrap(),
    );
    let e = err(
        Optimizer::new(sgd(0.9), &params).unwrap(),
        bad_shape,
        &state,
    );
    assert!(
        e.contains("w.momentum_buffer") && e.contains("[3, 4]"),
        "{e}"
    );

    // Without momentum SGD keeps no buffers, so these are foreign to it.
    let e = err(
        Optimizer::new(sgd(0.0), &params).unwrap(),
        tensors.clone(),
        &state,
    );
    assert!(e.contains("unexpected optimizer tensor"), "{e}");

    let adamw = Optimizer::new(OptimizerConfig::AdamW(AdamWConfig::default()), &params).unwrap();
    let e = err(adamw, tensors.clone(), &state);
    assert!(e.contains("\"sgd\"") && e.contains("\"adamw\""), "{e}");

    let mut unknown = state.clone();
    unknown.param_steps.insert("nope".into(), 1);
    let e = err(
        Optimizer::new(sgd(0.9), &params).unwrap(),
        tensors.clone(),
        &unknown,
    );
    assert!(e.contains("unknown parameter nope"), "{e}");

    // A failed load leaves the optimizer as it was; a good one restores the count.
    let mut fresh = Optimizer::new(sgd(0.9), &params).unwrap();
    assert!(fresh
        .load_state(&params, Default::default(), &state, path)
        .is_err());
    assert_eq!(fresh.step_count(), 0);
    fresh.load_state(&params, tensors, &state, path).unwrap();
    assert_eq!(fresh.step_count(), 1);
}
