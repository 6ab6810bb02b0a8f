//! RoPE's inverse frequencies and the scalings of them transformers implements
//! (`modeling_rope_utils`): Llama 3.1's, linear (position interpolation), dynamic NTK, YaRN and
//! Phi-3's LongRoPE.
//! Each is computed in f32 in transformers' order of operations, so that the tables match its
//! bits as closely as f32 allows.

use serde::{Deserialize, Serialize};

/// A RoPE scaling (transformers' `rope_parameters.rope_type` other than `default`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(from = "ScalingRecord")]
#[serde(tag = "rope_type", rename_all = "lowercase")]
pub enum RopeScaling {
    /// Llama 3.1's (`_compute_llama3_parameters`).
    Llama3(Llama3Rope),
    /// Position interpolation (`_compute_linear_scaling_rope_parameters`): every frequency
    /// divided by `factor` (Gemma 3's full layers from 4B up).
    Linear { factor: f64 },
    /// Dynamic NTK (`_compute_dynamic_ntk_parameters`): the base grows with the sequence once it
    /// is longer than `max_position_embeddings`. Our forwards refuse positions past it, so the
    /// frequencies are always the default RoPE's, as transformers' are within that length.
    Dynamic { factor: f64 },
    /// YaRN (`_compute_yarn_parameters`: Qwen2.5's and Qwen3's long-context setting); boxed,
    /// as its optional keys would make every config carry their size.
    Yarn(Box<YarnRope>),
    /// LongRoPE (`_compute_longrope_parameters`: Phi-3-mini-128k's, Phi-3.5's): one factor per
    /// frequency, the short ones for sequences within the original context, the long ones
    /// past it.
    Longrope(Box<LongRope>),
}

/// What checkpoint records hold: the tagged form, or the untagged Llama 3.1 parameters of
/// records written before other scalings were implemented.
#[derive(Deserialize)]
#[serde(untagged)]
enum ScalingRecord {
    Tagged(TaggedScaling),
    Llama3(Llama3Rope),
}

/// [`RopeScaling`]'s own derived form, which [`ScalingRecord`] falls back from.
#[derive(Deserialize)]
#[serde(tag = "rope_type", rename_all = "lowercase")]
enum TaggedScaling {
    Llama3(Llama3Rope),
    Linear { factor: f64 },
    Dynamic { factor: f64 },
    Yarn(Box<YarnRope>),
    Longrope(Box<LongRope>),
}

impl From<ScalingRecord> for RopeScaling {
    fn from(r: ScalingRecord) -> Self {
        match r {
            ScalingRecord::Llama3(l) | ScalingRecord::Tagged(TaggedScaling::Llama3(l)) => {
                Self::Llama3(l)
            }
            ScalingRecord::Tagged(TaggedScaling::Linear { factor }) => Self::Linear { factor },
            ScalingRecord::Tagged(TaggedScaling::Dynamic { factor }) => Self::Dynamic { factor },
            ScalingRecord::Tagged(TaggedScaling::Yarn(y)) => Self::Yarn(y),
            ScalingRecord::Tagged(TaggedScaling::Longrope(l)) => Self::Longrope(l),
        }
    }
}

/// The parameters of Llama 3.1's RoPE scaling (transformers' `_compute_llama3_parameters`):
/// frequencies whose wavelength exceeds `original_max_position_embeddings / low_freq_factor`
/// are divided by `factor`, those shorter than `original_max_position_embeddings /
/// high_freq_factor` are kept, and those between are interpolated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Llama3Rope {
    pub factor: f64,
    pub low_freq_factor: f64,
    pub high_freq_factor: f64,
    pub original_max_position_embeddings: usize,
}

/// YaRN's parameters as a config states them (the export writes them back as read):
/// frequencies that turn fewer than `beta_slow` times over `original_max_position_embeddings`
/// are divided by `factor`, those turning more than `beta_fast` times are kept, a linear ramp
/// joins them; cos and sin are multiplied by [`YarnRope::attention_factor`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct YarnRope {
    pub factor: f64,
    pub original_max_position_embeddings: usize,
    /// 32 when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub beta_fast: Option<f64>,
    /// 1 when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub beta_slow: Option<f64>,
    /// The scale of cos and sin; absent: derived from `factor` (and `mscale`, `mscale_all_dim`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attention_factor: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mscale: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mscale_all_dim: Option<f64>,
    /// Whether the ramp's ends are rounded outwards to whole dimensions (true when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub truncate: Option<bool>,
}

/// LongRoPE's parameters: frequency i of the default RoPE divided by `short_factor[i]` while the
/// sequence (the last position + 1) stays within `original_max_position_embeddings`, by
/// `long_factor[i]` past it; cos and sin multiplied by [`LongRope::attention_factor`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LongRope {
    pub short_factor: Vec<f64>,
    pub long_factor: Vec<f64>,
    /// `None`: max_position_embeddings / original_max_position_embeddings (kept absent, as
    /// configs write it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub factor: Option<f64>,
    pub original_max_position_embeddings: usize,
    /// The scale of cos and sin; absent: derived from `factor`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attention_factor: Option<f64>,
}

impl LongRope {
    /// `attention_factor` if set, else 1 for `factor` <= 1, else
    /// `√(1 + ln factor / ln original_max_position_embeddings)`, `factor` defaulting to
    /// `max_positions` / original_max_position_embeddings.
    pub fn attention_factor(&self, max_positions: usize) -> f64 {
        let old = self.original_max_position_embeddings as f64;
        let factor = self.factor.unwrap_or(max_positions as f64 / old);
        match self.attention_factor {
            Some(a) => a,
            None if factor <= 1.0 => 1.0,
            None => (1.0 + factor.ln() / old.ln()).sqrt(),
        }
    }

    /// Whether a sequence of `len` positions takes the long factors.
    pub fn long(&self, len: usize) -> bool {
        len > self.original_max_position_embeddings
    }
}

impl YarnRope {
    /// The scale of cos and sin: `attention_factor` if set, else `mscale(factor, mscale) /
    /// mscale(factor, mscale_all_dim)` when both are set and non-zero, else `mscale(factor)`,
    /// with `mscale(s, m) = 0.1 · m · ln s + 1` (1 for s <= 1).
    pub fn attention_factor(&self) -> f64 {
        let mscale = |s: f64, m: f64| match s <= 1.0 {
            true => 1.0,
            false => 0.1 * m * s.ln() + 1.0,
        };
        match (self.attention_factor, self.mscale, self.mscale_all_dim) {
            (Some(a), _, _) => a,
            (None, Some(m), Some(all)) if m != 0.0 && all != 0.0 => {
                mscale(self.factor, m) / mscale(self.factor, all)
            }
            _ => mscale(self.factor, 1.0),
        }
    }

    fn inv_freq(&self, base: f32, hd: usize) -> Vec<f32> {
        // The dimension (of hd) at which a frequency turns `rotations` times over the original
        // context, in f64 as Python's `math` computes it.
        let dim_of = |rotations: f64| {
            hd as f64
                * (self.original_max_position_embeddings as f64
                    / (rotations * 2.0 * std::f64::consts::PI))
                    .ln()
                / (2.0 * (base as f64).ln())
        };
        let (mut low, mut high) = (
            dim_of(self.beta_fast.unwrap_or(32.0)),
            dim_of(self.beta_slow.unwrap_or(1.0)),
        );
        if self.truncate.unwrap_or(true) {
            (low, high) = (low.floor(), high.ceil());
        }
        let (low, mut high) = (low.max(0.0), high.min(hd as f64 - 1.0));
        if low == high {
            high += 0.001; // transformers' guard against a zero-width ramp
        }
        let factor = self.factor as f32;
        (0..hd / 2)
            .map(|i| {
                let pos_freq = wavelength_factor(base, hd, i);
                let (extrapolation, interpolation) = (1.0 / pos_freq, 1.0 / (factor * pos_freq));
                let ramp = ((i as f32 - low as f32) / (high - low) as f32).clamp(0.0, 1.0);
                let keep = 1.0 - ramp;
                interpolation * (1.0 - keep) + extrapolation * keep
            })
            .collect()
    }
}

impl RopeScaling {
    /// Every parameter finite and in range, as the frequencies need it.
    pub(crate) fn validate(&self) -> Result<(), String> {
        let positive = |what: &str, x: f64| match x.is_finite() && x > 0.0 {
            true => Ok(()),
            false => Err(format!("{what} {x} must be finite and > 0")),
        };
        match self {
            Self::Llama3(r) => {
                for (k, x) in [
                    ("factor", r.factor),
                    ("low_freq_factor", r.low_freq_factor),
                    ("high_freq_factor", r.high_freq_factor),
                ] {
                    positive(&format!("llama3 RoPE scaling's {k}"), x)?;
                }
                if r.low_freq_factor >= r.high_freq_factor {
                    return Err(format!(
                        "llama3 RoPE scaling needs low_freq_factor < high_freq_factor: {r:?}"
                    ));
                }
                if r.original_max_position_embeddings == 0 {
                    return Err("llama3 RoPE scaling: original_max_position_embeddings is 0".into());
                }
            }
            Self::Linear { factor } | Self::Dynamic { factor } => {
                positive(&format!("{} RoPE scaling's factor", self.name()), *factor)?
            }
            Self::Yarn(y) => {
                positive("yarn RoPE scaling's factor", y.factor)?;
                for (k, x) in [
                    ("beta_fast", y.beta_fast),
                    ("beta_slow", y.beta_slow),
                    ("attention_factor", y.attention_factor),
                ] {
                    if let Some(x) = x {
                        positive(&format!("yarn RoPE scaling's {k}"), x)?;
                    }
                }
                for (k, x) in [("mscale", y.mscale), ("mscale_all_dim", y.mscale_all_dim)] {
                    if x.is_some_and(|x| !x.is_finite()) {
                        return Err(format!("yarn RoPE scaling's {k} {x:?} must be finite"));
                    }
                }
                if y.original_max_position_embeddings == 0 {
                    return Err("yarn RoPE scaling: original_max_position_embeddings is 0".into());
                }
            }
            Self::Longrope(l) => {
                if let Some(f) = l.factor {
                    positive("longrope RoPE scaling's factor", f)?;
                }
                if let Some(a) = l.attention_factor {
                    positive("longrope RoPE scaling's attention_factor", a)?;
                }
                for (k, f) in [
                    ("short_factor", &l.short_factor),
                    ("long_factor", &l.long_factor),
                ] {
                    for &x in f {
                        positive(&format!("longrope RoPE scaling's {k} entry"), x)?;
                    }
                }
                // ln of the original context divides: 1 would make it 0.
                if l.original_max_position_embeddings < 2 {
                    return Err(format!(
                        "longrope RoPE scaling: original_max_position_embeddings {} must be at \
                         least 2",
                        l.original_max_position_embeddings
                    ));
                }
            }
        }
        Ok(())
    }

    /// transformers' `rope_type`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Llama3(_) => "llama3",
            Self::Linear { .. } => "linear",
            Self::Dynamic { .. } => "dynamic",
            Self::Yarn(_) => "yarn",
            Self::Longrope(_) => "longrope",
        }
    }

    /// The scale of cos and sin (YaRN's and LongRoPE's attention factor, the latter of a model
    /// of `max_positions`; 1 for the others).
    pub fn attention_factor(&self, max_positions: usize) -> f64 {
        match self {
            Self::Yarn(y) => y.attention_factor(),
            Self::Longrope(l) => l.attention_factor(max_positions),
            _ => 1.0,
        }
    }
}

/// `base^(2i / hd)`, in f32: the default RoPE's frequency i is its inverse.
fn wavelength_factor(base: f32, hd: usize, i: usize) -> f32 {
    base.powf((2 * i) as f32 / hd as f32)
}

/// RoPE's `hd / 2` inverse frequencies for base `theta`, scaled by `scaling`, for a sequence of
/// `len` positions (which LongRoPE's factors depend on): `1 / θ^(2i/hd)` for the default RoPE.
pub fn inv_freq(theta: f64, hd: usize, scaling: Option<&RopeScaling>, len: usize) -> Vec<f32> {
    let base = theta as f32;
    let freqs = (0..hd / 2).map(|i| 1.0 / wavelength_factor(base, hd, i));
    match scaling {
        Some(RopeScaling::Longrope(l)) => {
            let ext = match l.long(len) {
                true => &l.long_factor,
                false => &l.short_factor,
            };
            (0..hd / 2)
                .map(|i| 1.0 / (ext[i] as f32 * wavelength_factor(base, hd, i)))
                .collect()
        }
        None | Some(RopeScaling::Dynamic { .. }) => freqs.collect(),
        Some(RopeScaling::Linear { factor }) => freqs.map(|f| f / *factor as f32).collect(),
        Some(RopeScaling::Yarn(y)) => y.inv_freq(base, hd),
        Some(RopeScaling::Llama3(r)) => {
            let (factor, low, high) = (
                r.factor as f32,
                r.low_freq_factor as f32,
                r.high_freq_factor as f32,
            );
            let old = r.original_max_position_embeddings as f32;
            let (low_wavelen, high_wavelen) = (old / low, old / high);
            freqs
                .map(|f| {
                    let wavelen = 2.0 * std::f32::consts::PI / f;
                    if wavelen < high_wavelen {
                        f
                    } else if wavelen > low_wavelen {
                        f / factor
                    } else {
                        let smooth = (old / wavelen - low) / (high - low);
                        (1.0 - smooth) * f / factor + smooth * f
                    }
                })
                .collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn yarn(factor: f64, old: usize) -> YarnRope {
        YarnRope {
            factor,
            original_max_position_embeddings: old,
            beta_fast: None,
            beta_slow: None,
            attention_factor: None,
            mscale: None,
            mscale_all_dim: None,
            truncate: None,
        }
    }

    fn close(got: &[f32], want: &[f32]) {
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() <= 2e-7 * w.abs(), "{got:?} vs {want:?}");
        }
    }

    /// The frequencies and attention factors transformers 5.24's `ROPE_INIT_FUNCTIONS` gives for
    /// a head of 16 (values printed from it).
    #[test]
    fn scalings_match_transformers() {
        let y = RopeScaling::Yarn(Box::new(yarn(4.0, 8)));
        close(
            &inv_freq(100.0, 16, Some(&y), 1),
            &[
                1.0,
                0.140_585_33,
                0.079_056_94,
                0.044_456_985,
                0.025,
                0.014_058_532,
                0.007_905_695,
                0.004_445_698_6,
            ],
        );
        assert!((y.attention_factor(32) - 1.138_629_436_111_989).abs() < 1e-12);
        // Other betas, an untruncated ramp, mscale over mscale_all_dim.
        let y = RopeScaling::Yarn(Box::new(YarnRope {
            beta_fast: Some(8.0),
            beta_slow: Some(0.5),
            mscale: Some(0.707),
            mscale_all_dim: Some(1.0),
            truncate: Some(false),
            ..yarn(4.0, 8)
        }));
        close(
            &inv_freq(10000.0, 16, Some(&y), 1),
            &[
                1.0,
                0.079_056_94,
                0.025,
                0.007_905_695,
                0.0025,
                0.000_790_569_5,
                0.000_25,
                7.905_695e-5,
            ],
        );
        assert!((y.attention_factor(32) - 0.964_326_914_892_074).abs() < 1e-12);
        let y = RopeScaling::Yarn(Box::new(yarn(4.0, 32)));
        close(
            &inv_freq(10000.0, 16, Some(&y), 1)[..3],
            &[1.0, 0.197_642_36, 0.025],
        );
        let plain = inv_freq(100.0, 16, None, 1);
        let linear = inv_freq(100.0, 16, Some(&RopeScaling::Linear { factor: 2.0 }), 1);
        close(&linear, &plain.iter().map(|f| f / 2.0).collect::<Vec<_>>());
        close(&linear[..2], &[0.5, 0.281_170_66]);
        // LongRoPE (Phi3Config, original context 4096 of 131072): the short factors up to 4096
        // positions, the long ones past; the factor of the contexts' ratio, 32.
        let l = RopeScaling::Longrope(Box::new(LongRope {
            short_factor: vec![1.0, 1.1, 1.2, 1.5, 2.0, 3.0, 4.0, 5.0],
            long_factor: vec![1.0, 2.0, 4.0, 8.0, 16.0, 24.0, 32.0, 40.0],
            factor: None,
            original_max_position_embeddings: 4096,
            attention_factor: None,
        }));
        let short = [
            1.0,
            0.287_479_76,
            0.083_333_336,
            0.021_081_85,
            0.005,
            0.001_054_092_7,
            0.000_25,
            6.324_555_6e-5,
        ];
        close(&inv_freq(10000.0, 16, Some(&l), 4096), &short);
        let long = [
            1.0,
            0.158_113_88,
            0.025,
            0.003_952_847_3,
            0.000_625,
            0.000_131_761_58,
            3.125e-5,
            7.905_694_5e-6,
        ];
        close(&inv_freq(10000.0, 16, Some(&l), 4097), &long);
        assert!((l.attention_factor(131_072) - 1.190_238_071_423_808_3).abs() < 1e-12);
        // Within max_position_embeddings dynamic NTK is the default RoPE.
        let dynamic = inv_freq(100.0, 16, Some(&RopeScaling::Dynamic { factor: 2.0 }), 1);
        assert_eq!(dynamic, plain);
    }

    #[test]
    fn records_read_tagged_and_untagged_llama3() {
        let l3 = Llama3Rope {
            factor: 8.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: 8192,
        };
        let untagged = serde_json::to_value(&l3).unwrap();
        let read: RopeScaling = serde_json::from_value(untagged).unwrap();
        assert_eq!(read, RopeScaling::Llama3(l3.clone()));
        for s in [
            RopeScaling::Llama3(l3),
            RopeScaling::Linear { factor: 8.0 },
            RopeScaling::Dynamic { factor: 2.0 },
            RopeScaling::Yarn(Box::new(YarnRope {
                beta_fast: Some(8.0),
                ..yarn(4.0, 32768)
            })),
        ] {
            let v = serde_json::to_value(&s).unwrap();
            assert_eq!(v["rope_type"], s.name());
            assert_eq!(serde_json::from_value::<RopeScaling>(v).unwrap(), s);
        }
        let bad = serde_json::json!({"rope_type": "yarn", "factor": 4.0,
            "original_max_position_embeddings": 8, "betafast": 3.0});
        assert!(serde_json::from_value::<RopeScaling>(bad).is_err());
    }

    #[test]
    fn out_of_range_parameters_are_refused() {
        let l = LongRope {
            short_factor: vec![1.0, -1.0],
            long_factor: vec![1.0, 2.0],
            factor: None,
            original_max_position_embeddings: 8,
            attention_factor: None,
        };
        assert!(RopeScaling::Longrope(Box::new(l.clone()))
            .validate()
            .is_err());
        let one = LongRope {
            short_factor: vec![1.0, 1.0],
            original_max_position_embeddings: 1,
            ..l
        };
        assert!(RopeScaling::Longrope(Box::new(one)).validate().is_err());
        assert!(RopeScaling::Linear { factor: 0.0 }.validate().is_err());
        assert!(RopeScaling::Dynamic { factor: f64::NAN }
            .validate()
            .is_err());
        assert!(RopeScaling::Yarn(Box::new(yarn(4.0, 0)))
            .validate()
            .is_err());
        let neg = YarnRope {
            beta_slow: Some(-1.0),
            ..yarn(4.0, 8)
        };
        assert!(RopeScaling::Yarn(Box::new(neg)).validate().is_err());
        assert!(RopeScaling::Yarn(Box::new(yarn(4.0, 8))).validate().is_ok());
    }
}
