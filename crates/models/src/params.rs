//! An ordered store of named trainable variables.
//!
//! Order matters: it fixes the order of initialisation draws, of optimizer state and of
//! gradient buckets, so two processes that build the same model agree on everything.

use crate::lowrank::LowRankSpec;
use crate::{Error, Result};
use candle_core::{DType, Device, Tensor, Var};
use std::collections::HashMap;

#[derive(Clone, Default)]
pub struct Params {
    names: Vec<String>,
    vars: Vec<Var>,
    index: HashMap<String, usize>,
    /// [`Params::frozen`]: `get` hands out detached tensors.
    frozen: bool,
    /// [`Params::train_only`]: the names `get` hands out tracked (the others detached);
    /// `None` = all of them.
    trainable: Option<std::sync::Arc<std::collections::HashSet<String>>>,
    /// [`Params::with_low_rank`]: models built from this store run the LoRA side path of
    /// every module whose adapter matrices it holds ([`crate::lowrank`]).
    low_rank: Option<LowRankSpec>,
}

impl Params {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a variable holding `value` (copied into a fresh buffer).
    pub fn insert(&mut self, name: impl Into<String>, value: Tensor) -> Result<()> {
        self.insert_shared(name, Var::from_tensor(&value.copy()?)?);
        Ok(())
    }

    /// Adds `var` itself, not a copy: this store and the one it came from then read and update
    /// the same buffer (an optimizer's store holding some of a model's variables).
    pub fn insert_shared(&mut self, name: impl Into<String>, var: Var) {
        let name = name.into();
        match self.index.get(&name) {
            Some(&i) => self.vars[i] = var,
            None => {
                self.index.insert(name.clone(), self.names.len());
                self.names.push(name);
                self.vars.push(var);
            }
        }
    }

    /// The variable's tensor; operations on it are recorded for backward (unless this is a
    /// [`Params::frozen`] view).
    pub fn get(&self, name: &str) -> Result<Tensor> {
        self.var(name).map(|v| match self.is_tracked(name) {
            false => v.as_tensor().detach(),
            true => v.as_tensor().clone(),
        })
    }

    /// A view of the same variables in which only `names` are recorded for backward: models
    /// built from it read every other variable as a constant, so that candle computes no
    /// gradient for it (a frozen base model, LoRA). Names not in the store are ignored.
    pub fn train_only<'a>(&self, names: impl IntoIterator<Item = &'a str>) -> Params {
        Params {
            trainable: Some(std::sync::Arc::new(
                names.into_iter().map(str::to_string).collect(),
            )),
            ..self.clone()
        }
    }

    /// Whether models built from this view record operations on `name` for backward.
    pub fn is_tracked(&self, name: &str) -> bool {
        !self.frozen && self.trainable.as_ref().is_none_or(|t| t.contains(name))
    }

    /// A view of the same variables for inference: models built from it read the same
    /// buffers (so they see every optimizer update) through detached tensors, so that candle
    /// records no graph. With variables as inputs, every op of a forward would keep its inputs
    /// alive until the output is dropped: an evaluation would hold all of a training step's
    /// activations.
    pub fn frozen(&self) -> Params {
        Params {
            frozen: true,
            ..self.clone()
        }
    }

    /// The same store, whose models add the low-rank side path `spec` describes to each linear
    /// layer whose adapter matrices ([`crate::lowrank::adapter_names`]) it holds.
    pub fn with_low_rank(&self, spec: LowRankSpec) -> Params {
        Params {
            low_rank: Some(spec),
            ..self.clone()
        }
    }

    /// The low-rank settings models built from this store use, if any.
    pub fn low_rank(&self) -> Option<LowRankSpec> {
        self.low_rank
    }

    pub fn var(&self, name: &str) -> Result<&Var> {
        self.index
            .get(name)
            .map(|&i| &self.vars[i])
            .ok_or_else(|| Error::NoSuchParam(name.to_string()))
    }

    pub fn names(&self) -> &[String] {
        &self.names
    }

    pub fn vars(&self) -> &[Var] {
        &self.vars
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &Var)> {
        self.names.iter().map(String::as_str).zip(self.vars.iter())
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    pub fn num_elements(&self) -> usize {
        self.vars.iter().map(|v| v.elem_count()).sum()
    }

    /// The same parameters in another dtype/device, as new variables.
    pub fn to(&self, device: &Device, dtype: DType) -> Result<Params> {
        let mut out = Params::new();
        for (n, v) in self.iter() {
            out.insert(n, v.as_tensor().to_device(device)?.to_dtype(dtype)?)?;
        }
        Ok(out)
    }
}
