//! Reading and writing named f32/bf16/f16 tensors as safetensors, with errors that name the file.
//!
//! Loading validates the header (the safetensors crate checks offsets against the buffer, so a
//! truncated or lying file is an error, never an out-of-bounds read or a huge allocation):
//! the declared header length must fit the file (and 100 MB) before it is read, every tensor's
//! byte range must lie inside the data section, ranges must tile it without overlap, and each
//! range must be exactly `shape × dtype size` bytes. PyTorch pickle files are refused by name.

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

/// Names of PyTorch pickle weight files that may sit where `model.safetensors` is missing.
const PICKLE_NAMES: [&str; 5] = [
    "pytorch_model.bin",
    "model.bin",
    "model.pt",
    "model.pth",
    "model.ckpt",
];

/// [`refuse_pickle`] for a weights file, and, when it does not exist, for a PyTorch pickle
/// beside it: a folder that holds only `pytorch_model.bin` gets the refusal that explains how
/// to convert it rather than "missing".
pub fn refuse_pickle_weights(path: &Path) -> Result<()> {
    refuse_pickle(path)?;
    if !path.exists() {
        if let Some(p) = path.parent().and_then(|dir| {
            PICKLE_NAMES
                .map(|n| dir.join(n))
                .into_iter()
                .find(|p| p.is_file())
        }) {
            refuse_pickle(&p)?;
        }
    }
    Ok(())
}

/// Reads every tensor of a safetensors file onto `device`, converted to `dtype`.
pub fn load(path: &Path, device: &Device, dtype: DType) -> Result<BTreeMap<String, Tensor>> {
    convert(load_raw(path, device)?, dtype)
}

/// [`load`], refusing tensors that are not floating point (f32/bf16/f16/f64): weights and
/// optimizer moments stored as integers are a corrupt or foreign file, not something to cast.
pub fn load_float(path: &Path, device: &Device, dtype: DType) -> Result<BTreeMap<String, Tensor>> {
    let tensors = load_raw(path, device)?;
    check_float(&tensors, path)?;
    convert(tensors, dtype)
}

/// Every tensor of a safetensors file in its stored dtype. Where `path` does not exist but the
/// index of a sharded save does ([`shard_index`]), the tensors of every shard it lists.
pub fn load_raw(path: &Path, device: &Device) -> Result<BTreeMap<String, Tensor>> {
    refuse_pickle(path)?;
    if !path.exists() {
        if let Some(index) = shard_index(path) {
            return load_sharded(&index, device);
        }
    }
    let bytes = std::fs::read(path).map_err(|e| file_err(path, e))?;
    parse(&bytes, path, device)
}

/// The index transformers writes in place of `<name>.safetensors` when it saves a model in
/// several files (`model.safetensors.index.json` beside `model-00001-of-00004.safetensors`,
/// ...), if there is one beside `path`.
pub fn shard_index(path: &Path) -> Option<std::path::PathBuf> {
    let name = path.file_name()?.to_str()?;
    let index = path.with_file_name(format!("{name}.index.json"));
    index.is_file().then_some(index)
}

/// Whether the weights `path` names are there: the file, or the index of its shards.
pub fn exists(path: &Path) -> bool {
    path.is_file() || shard_index(path).is_some()
}

/// The tensors an index's `weight_map` (tensor name → shard file) lists, each read from its
/// shard, as transformers loads a sharded save. Errors name the index or the shard: a shard
/// that is missing or not a plain file name beside the index, a tensor the index puts in a
/// shard that does not hold it. Tensors a shard holds beyond the index are not read.
fn load_sharded(index: &Path, device: &Device) -> Result<BTreeMap<String, Tensor>> {
    let text = std::fs::read_to_string(index).map_err(|e| file_err(index, e))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| file_err(index, format!("invalid JSON: {e}")))?;
    let map = v
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| {
            file_err(
                index,
                "no \"weight_map\" object (tensor name -> shard file)",
            )
        })?;
    let mut shards: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (name, file) in map {
        let file = file.as_str().ok_or_else(|| {
            file_err(
                index,
                format!("weight_map.{name} is {file}, not a file name"),
            )
        })?;
        shards.entry(file).or_default().push(name);
    }
    let dir = index.parent().unwrap_or(Path::new("."));
    let mut out = BTreeMap::new();
    for (file, names) in shards {
        let plain = Path::new(file).file_name().and_then(|f| f.to_str()) == Some(file);
        if !plain || !file.ends_with(".safetensors") {
            return Err(file_err(
                index,
                format!("shard {file:?} is not a .safetensors file beside the index"),
            ));
        }
        let shard = dir.join(file);
        if !shard.is_file() {
            return Err(file_err(index, format!("lists {file}, which is missing")));
        }
        let bytes = std::fs::read(&shard).map_err(|e| file_err(&shard, e))?;
        let mut tensors = parse(&bytes, &shard, device)?;
        for name in names {
            let t = tensors.remove(name).ok_or_else(|| {
                file_err(
                    &shard,
                    format!("has no tensor {name}, which {} puts there", index.display()),
                )
            })?;
            out.insert(name.to_string(), t);
        }
    }
    Ok(out)
}

/// Parses safetensors bytes (`path` is for messages) into tensors in their stored dtype.
pub fn parse(bytes: &[u8], path: &Path, device: &Device) -> Result<BTreeMap<String, Tensor>> {
    let st = SafeTensors::deserialize(bytes)
        .map_err(|e| file_err(path, format!("not a valid safetensors file ({e})")))?;
    let mut out = BTreeMap::new();
    for (name, view) in st.tensors() {
        let t = view_to_tensor(&view, device)
            .map_err(|e| file_err(path, format!("tensor {name}: {e}")))?;
        out.insert(name, t);
    }
    Ok(out)
}

/// Fails naming the first tensor whose dtype is not floating point.
pub fn check_float(tensors: &BTreeMap<String, Tensor>, path: &Path) -> Result<()> {
    for (name, t) in tensors {
        if !t.dtype().is_float() {
            return Err(file_err(
                path,
                format!(
                    "tensor {name} has dtype {:?}, expected a floating-point dtype (F32, BF16, F16)",
                    t.dtype()
                ),
            ));
        }
    }
    Ok(())
}

fn convert(tensors: BTreeMap<String, Tensor>, dtype: DType) -> Result<BTreeMap<String, Tensor>> {
    tensors
        .into_iter()
        .map(|(n, t)| Ok((n, t.to_dtype(dtype)?)))
        .collect()
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
        other => {
            return Err(Error::Config(format!(
                "unsupported dtype {other:?} (F32, BF16, F16, F64, I64 and U32 are read)"
            )))
        }
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
/// Removes from `tensors` the parameter `name`, stored under the first of `names` present (a
/// checkpoint may or may not carry the model's prefix), and checks its shape. `None` when the
/// file has it under no name. `path` is for messages.
pub fn take_shaped(
    tensors: &mut BTreeMap<String, Tensor>,
    name: &str,
    names: &[&str],
    shape: &[usize],
    path: &Path,
) -> Result<Option<Tensor>> {
    let Some(t) = names.iter().find_map(|n| tensors.remove(*n)) else {
        return Ok(None);
    };
    if t.dims() != shape {
        return Err(Error::Shape {
            path: path.to_path_buf(),
            name: name.to_string(),
            expected: shape.to_vec(),
            got: t.dims().to_vec(),
        });
    }
    Ok(Some(t))
}

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

#[cfg(test)]
mod tests {
    use super::*;

    fn header(json: &str) -> Vec<u8> {
        let mut b = (json.len() as u64).to_le_bytes().to_vec();
        b.extend_from_slice(json.as_bytes());
        b
    }

    #[test]
    fn hostile_headers_are_errors_naming_the_file() {
        let p = Path::new("dir/model.safetensors");
        let mut huge = (1u64 << 60).to_le_bytes().to_vec();
        huge.extend_from_slice(b"{}");
        let mut past_end = header(r#"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#);
        past_end.extend_from_slice(&[0; 8]);
        let mut overlap = header(
            r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#,
        );
        overlap.extend_from_slice(&[0; 12]);
        let mut wrong_size = header(r#"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#);
        wrong_size.extend_from_slice(&[0; 8]);
        for bytes in [&huge[..], &past_end, &overlap, &wrong_size, &[1, 2, 3]] {
            let e = parse(bytes, p, &Device::Cpu).unwrap_err().to_string();
            assert!(e.starts_with("dir/model.safetensors: "), "{e}");
        }
    }

    /// A model saved in two shards with transformers' index loads as the single file does;
    /// a missing shard, a tensor the index misplaces, a shard outside the folder and a broken
    /// index are errors naming the file.
    #[test]
    fn a_sharded_save_loads_as_one_file() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let t = |v: &[f32]| Tensor::new(v, &Device::Cpu).unwrap();
        let all: BTreeMap<String, Tensor> =
            [("a", t(&[1., 2.])), ("b", t(&[3.])), ("c", t(&[4., 5.]))]
                .into_iter()
                .map(|(n, t)| (n.to_string(), t))
                .collect();
        let part = |names: &[&str]| {
            let m: BTreeMap<String, Tensor> = names
                .iter()
                .map(|n| (n.to_string(), all[*n].clone()))
                .collect();
            serialize(&m).unwrap()
        };
        std::fs::write(
            dir.join("model-00001-of-00002.safetensors"),
            part(&["a", "b"]),
        )
        .unwrap();
        std::fs::write(dir.join("model-00002-of-00002.safetensors"), part(&["c"])).unwrap();
        let index = |map: &str| {
            let json = format!(r#"{{"metadata": {{"total_size": 20}}, "weight_map": {{{map}}}}}"#);
            std::fs::write(dir.join("model.safetensors.index.json"), json).unwrap();
        };
        let good = r#""a": "model-00001-of-00002.safetensors", "b": "model-00001-of-00002.safetensors", "c": "model-00002-of-00002.safetensors""#;
        index(good);
        let path = dir.join("model.safetensors");
        assert!(exists(&path) && !path.exists());
        let loaded = load_float(&path, &Device::Cpu, DType::F32).unwrap();
        assert_eq!(
            loaded.keys().collect::<Vec<_>>(),
            all.keys().collect::<Vec<_>>()
        );
        for (n, x) in &loaded {
            assert_eq!(
                x.to_vec1::<f32>().unwrap(),
                all[n].to_vec1::<f32>().unwrap(),
                "{n}"
            );
        }
        // Only what the index lists is read.
        index(r#""a": "model-00001-of-00002.safetensors""#);
        assert_eq!(load_raw(&path, &Device::Cpu).unwrap().len(), 1);
        for (map, want) in [
            (
                r#""c": "model-00001-of-00002.safetensors""#,
                "has no tensor c",
            ),
            (
                r#""a": "model-00009-of-00009.safetensors""#,
                "which is missing",
            ),
            (
                r#""a": "../model-00001-of-00002.safetensors""#,
                "beside the index",
            ),
            (r#""a": 3"#, "not a file name"),
        ] {
            index(map);
            let e = load_raw(&path, &Device::Cpu).unwrap_err().to_string();
            assert!(e.contains(want) && e.contains(".safetensors"), "{map}: {e}");
        }
        std::fs::write(dir.join("model.safetensors.index.json"), "{").unwrap();
        let e = load_raw(&path, &Device::Cpu).unwrap_err().to_string();
        assert!(
            e.contains("model.safetensors.index.json") && e.contains("JSON"),
            "{e}"
        );
        // A single file, where there is one, wins over an index.
        std::fs::write(&path, part(&["b"])).unwrap();
        assert_eq!(load_raw(&path, &Device::Cpu).unwrap().len(), 1);
    }

    #[test]
    fn integer_tensors_are_not_weights() {
        let mut m = BTreeMap::new();
        m.insert(
            "w".to_string(),
            Tensor::new(&[1u32, 2], &Device::Cpu).unwrap(),
        );
        let bytes = serialize(&m).unwrap();
        let p = Path::new("m.safetensors");
        let t = parse(&bytes, p, &Device::Cpu).unwrap();
        let e = check_float(&t, p).unwrap_err().to_string();
        assert!(
            e.contains("m.safetensors") && e.contains("tensor w") && e.contains("U32"),
            "{e}"
        );
        let e = refuse_pickle(Path::new("pytorch_model.bin"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("execute arbitrary code") && e.contains("safetensors"),
            "{e}"
        );
    }
}
