//! An ordered store of named trainable variables.
//!
//! Order matters: it fixes the order of initialisation draws, of optimizer state and of
//! gradient buckets, so two processes that build the same model agree on everything.

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
}

impl Params {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a variable holding `value` (copied into a fresh buffer).
    pub fn insert(&mut self, name: impl Into<String>, value: Tensor) -> Result<()> {
        let name = name.into();
        let var = Var::from_tensor(&value.copy()?)?;
        match self.index.get(&name) {
            Some(&i) => self.vars[i] = var,
            None => {
                self.index.insert(name.clone(), self.names.len());
                self.names.push(name);
                self.vars.push(var);
            }
        }
        Ok(())
    }

    /// The variable's tensor; operations on it are recorded for backward (unless this is a
    /// [`Params::frozen`] view).
    pub fn get(&self, name: &str) -> Result<Tensor> {
        self.var(name).map(|v| match self.frozen {
            true => v.as_tensor().detach(),
            false => v.as_tensor().clone(),
        })
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
