//! Reading and writing named f32/bf16/f16 tensors as safetensors, with errors that name the file.
//!
//! Loading validates the header (the safetensors crate checks offsets against the buffer, so a
//! truncated or lying file is an error, never an out-of-bounds read or a huge allocation).

use crate::{Error, Result};
use candle_core::{DType, Device, Tensor};
use safetensors::tensor::{Dtype as StDtype, SafeTensors, TensorView};
use std::collections::BTreeMap;
use std::path::Path;

fn file_err(path: &Path, msg: impl std::fmt::Display) -> Error {
    Error::File {
        path: path.to_path_buf(),
        msg: msg.to_string(),
    }
}

/// Refuses formats that can run code when loaded, with advice on converting.
pub fn refuse_pickle(path: &Path) -> Result<()> {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    if matches!(ext, "bin" | "pt" | "pth" | "ckpt" | "pkl") {
        return Err(file_err(
            path,
            "PyTorch pickle files are refused: unpickling can execute arbitrary code. Convert it \
             with transformers (`model.save_pretrained(dir, safe_serialization=True)`) or \
             `safetensors.torch.save_file(torch.load(f, weights_only=True), 'model.safetensors')`",
        ));
    }
    Ok(())
}

/// Reads every tensor of a safetensors file onto `device`, converted to `dtype`.
pub fn load(path: &Path, device: &Device, dtype: DType) -> Result<BTreeMap<String, Tensor>> {
    refuse_pickle(path)?;
    let bytes = std::fs::read(path).map_err(|e| file_err(path, e))?;
    let st = SafeTensors::deserialize(&bytes)
        .map_err(|e| file_err(path, format!("not a valid safetensors file ({e})")))?;
    let mut out = BTreeMap::new();
    for (name, view) in st.tensors() {
        let t = view_to_tensor(&view, device)
            .map_err(|e| file_err(path, format!("tensor {name}: {e}")))?;
        out.insert(name, t.to_dtype(dtype)?);
    }
    Ok(out)
}

fn view_to_tensor(view: &TensorView<'_>, device: &Device) -> Result<Tensor> {
    let shape = view.shape().to_vec();
    let data = view.data();
    let t = match view.dtype() {
        StDtype::F32 => Tensor::from_raw_buffer(data, DType::F32, &shape, device)?,
        StDtype::BF16 => Tensor::from_raw_buffer(data, DType::BF16, &shape, device)?,
        StDtype::F16 => Tensor::from_raw_buffer(data, DType::F16, &shape, device)?,
        StDtype::F64 => Tensor::from_raw_buffer(data, DType::F64, &shape, device)?,
        StDtype::I64 => Tensor::from_raw_buffer(data, DType::I64, &shape, device)?,
        StDtype::U32 => Tensor::from_raw_buffer(data, DType::U32, &shape, device)?,
        other => return Err(Error::Config(format!("unsupported dtype {other:?}"))),
    };
    Ok(t)
}

fn st_dtype(d: DType) -> Result<StDtype> {
    Ok(match d {
        DType::F32 => StDtype::F32,
        DType::BF16 => StDtype::BF16,
        DType::F16 => StDtype::F16,
        DType::F64 => StDtype::F64,
        DType::I64 => StDtype::I64,
        DType::U32 => StDtype::U32,
        other => return Err(Error::Config(format!("cannot save dtype {other:?}"))),
    })
}

/// Serialises tensors (in name order) with `{"format": "pt"}` metadata, which some loaders
/// require. Returns the bytes; callers decide where and how atomically to write them.
pub fn serialize(tensors: &BTreeMap<String, Tensor>) -> Result<Vec<u8>> {
    let mut raw: Vec<(String, StDtype, Vec<usize>, Vec<u8>)> = Vec::with_capacity(tensors.len());
    for (name, t) in tensors {
        let t = t.to_device(&Device::Cpu)?.contiguous()?;
        let bytes = tensor_bytes(&t)?;
        raw.push((name.clone(), st_dtype(t.dtype())?, t.dims().to_vec(), bytes));
    }
    let views = raw
        .iter()
        .map(|(n, d, s, b)| {
            TensorView::new(*d, s.clone(), b)
                .map(|v| (n.clone(), v))
                .map_err(|e| Error::Config(format!("tensor {n}: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    let mut meta = std::collections::HashMap::new();
    meta.insert("format".to_string(), "pt".to_string());
    safetensors::tensor::serialize(views, Some(meta))
        .map_err(|e| Error::Config(format!("safetensors serialisation failed: {e}")))
}

fn tensor_bytes(t: &Tensor) -> Result<Vec<u8>> {
    fn le<T: Copy, const N: usize>(v: Vec<T>, f: impl Fn(T) -> [u8; N]) -> Vec<u8> {
        v.into_iter().flat_map(f).collect()
    }
    let flat = t.flatten_all()?;
    Ok(match t.dtype() {
        DType::F32 => le(flat.to_vec1::<f32>()?, f32::to_le_bytes),
        DType::F64 => le(flat.to_vec1::<f64>()?, f64::to_le_bytes),
        DType::BF16 => le(flat.to_vec1::<half::bf16>()?, half::bf16::to_le_bytes),
        DType::F16 => le(flat.to_vec1::<half::f16>()?, half::f16::to_le_bytes),
        DType::I64 => le(flat.to_vec1::<i64>()?, i64::to_le_bytes),
        DType::U32 => le(flat.to_vec1::<u32>()?, u32::to_le_bytes),
        other => return Err(Error::Config(format!("cannot save dtype {other:?}"))),
    })
}
