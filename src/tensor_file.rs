//! Tensor files: safetensors files read into float32 host tensors and written back, and the
//! FNV-1a hash the golden files use to record large outputs without a copy of them.
//!
//! Every part of the crate that reads or writes tensors on disk (checkpoints, parity cases,
//! golden outputs, caches) goes through [`TensorFile`]; this module depends on no other module
//! of the crate.
//!
//! Book: "Parity with the reference" (the case files) and "Checkpoints and weight loading".
//! Reference: not a reference component; the format is the `safetensors` crate's (a JSON header
//! of names, dtypes, shapes and offsets, then little-endian data).
//!
//! **Deviation:** none. Integer tensors read as float32 ([`TensorFile::read_numeric`]) must be
//! exact in f32 (at most 2²⁴ in magnitude); a larger one is an error naming the tensor.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

use burn::tensor::{Tensor, TensorData, backend::Backend};
use safetensors::{Dtype, SafeTensors, tensor::TensorView};

/// The largest integer magnitude float32 holds exactly (2²⁴).
pub const F32_EXACT_INTEGER: u64 = 1 << 24;

/// Why a tensor file could not be read or written. Every variant names the file.
#[derive(Debug)]
pub enum TensorFileError {
    /// The file could not be read or written.
    Io { path: PathBuf, source: std::io::Error },
    /// The file is not a valid safetensors file.
    Format { path: PathBuf, message: String },
    /// A tensor has an element type the reader does not take.
    DType { path: PathBuf, name: String, dtype: String },
    /// An integer tensor holds a value float32 cannot represent exactly.
    BadValue { path: PathBuf, name: String, index: usize, value: f32 },
}

impl fmt::Display for TensorFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io { path, source } => write!(f, "{}: {source}", path.display()),
            Self::Format { path, message } => write!(f, "{}: not a safetensors file: {message}", path.display()),
            Self::DType { path, name, dtype } => {
                write!(f, "{}: tensor `{name}` is {dtype}, expected F32", path.display())
            }
            Self::BadValue { path, name, index, value } => {
                write!(f, "{}: tensor `{name}` holds {value} at flat index {index}", path.display())
            }
        }
    }
}

impl std::error::Error for TensorFileError {}

/// A float32 tensor read from or written to a safetensors file.
#[derive(Debug, Clone, PartialEq)]
pub struct HostTensor {
    /// Dimensions, outermost first.
    pub shape: Vec<usize>,
    /// Values in row-major order.
    pub values: Vec<f32>,
}

impl HostTensor {
    /// Copy a burn tensor to the host.
    pub fn from_tensor<B: Backend, const D: usize>(t: Tensor<B, D>) -> Self {
        let shape = t.dims().to_vec();
        let values = t.into_data().convert::<f32>().to_vec::<f32>().expect("f32 data");
        Self { shape, values }
    }

    /// Copy to a burn tensor on `device` (the rank must match the shape).
    pub fn to_tensor<B: Backend, const D: usize>(&self, device: &B::Device) -> Tensor<B, D> {
        Tensor::from_data(TensorData::new(self.values.clone(), self.shape.clone()), device)
    }
}

/// FNV-1a (64 bit) of `bytes` as 16 hex digits: how the golden files record large outputs
/// (images, checkpoint tensors) without a copy of them. Python: `h = (h ^ b) * 0x100000001b3`.
pub fn fnv1a64(bytes: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h = (h ^ b as u64).wrapping_mul(0x100_0000_01b3);
    }
    format!("{h:016x}")
}

/// A safetensors file: float32 tensors by name and string metadata.
#[derive(Debug, Clone, Default)]
pub struct TensorFile {
    /// Tensors by name.
    pub tensors: BTreeMap<String, HostTensor>,
    /// Integer tensors to write (token ids) as I64: shape and values.
    pub ints: BTreeMap<String, (Vec<usize>, Vec<i64>)>,
    /// The header's `__metadata__`.
    pub metadata: HashMap<String, String>,
}

impl TensorFile {
    /// Read every tensor of `path`; all must be float32.
    pub fn read(path: &Path) -> Result<Self, TensorFileError> {
        Self::read_converting(path, false)
    }

    /// Read every tensor of `path`, converting F64, I64 and I32 tensors (a checkpoint's integer
    /// buffers, token ids) to f32; an integer that f32 cannot hold exactly is an error.
    pub fn read_numeric(path: &Path) -> Result<Self, TensorFileError> {
        Self::read_converting(path, true)
    }

    fn read_converting(path: &Path, convert: bool) -> Result<Self, TensorFileError> {
        let bytes = std::fs::read(path).map_err(|source| TensorFileError::Io { path: path.into(), source })?;
        let format =
            |e: safetensors::SafeTensorError| TensorFileError::Format { path: path.into(), message: e.to_string() };
        let (_, header) = SafeTensors::read_metadata(&bytes).map_err(format)?;
        let file = SafeTensors::deserialize(&bytes).map_err(format)?;
        let mut tensors = BTreeMap::new();
        for (name, view) in file.tensors() {
            let bytes = view.data();
            let ints = |wide: Vec<i64>| -> Result<Vec<f32>, TensorFileError> {
                match wide.iter().position(|v| v.unsigned_abs() > F32_EXACT_INTEGER) {
                    Some(index) => Err(TensorFileError::BadValue {
                        path: path.into(),
                        name: name.clone(),
                        index,
                        value: wide[index] as f32,
                    }),
                    None => Ok(wide.into_iter().map(|v| v as f32).collect()),
                }
            };
            let values: Vec<f32> = match view.dtype() {
                Dtype::F32 => bytes.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect(),
                Dtype::F64 if convert => {
                    bytes.chunks_exact(8).map(|b| f64::from_le_bytes(b.try_into().unwrap()) as f32).collect()
                }
                Dtype::I64 if convert => {
                    ints(bytes.chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().unwrap())).collect())?
                }
                Dtype::I32 if convert => {
                    ints(bytes.chunks_exact(4).map(|b| i32::from_le_bytes(b.try_into().unwrap()) as i64).collect())?
                }
                other => return Err(TensorFileError::DType { path: path.into(), name, dtype: format!("{other:?}") }),
            };
            tensors.insert(name, HostTensor { shape: view.shape().to_vec(), values });
        }
        Ok(Self { tensors, ints: BTreeMap::new(), metadata: header.metadata().clone().unwrap_or_default() })
    }

    /// Write all tensors (float32 and int64, little-endian) and the metadata to `path`.
    pub fn write(&self, path: &Path) -> Result<(), TensorFileError> {
        let floats = self.tensors.iter().map(|(name, t)| {
            (name, Dtype::F32, t.shape.clone(), t.values.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>())
        });
        let ints = self.ints.iter().map(|(name, (shape, v))| {
            (name, Dtype::I64, shape.clone(), v.iter().flat_map(|x| x.to_le_bytes()).collect())
        });
        let bytes: Vec<_> = floats.chain(ints).collect();
        let views = bytes.iter().map(|(name, dtype, shape, b)| {
            (name.as_str(), TensorView::new(*dtype, shape.clone(), b).expect("consistent view"))
        });
        let metadata = (!self.metadata.is_empty()).then(|| self.metadata.clone());
        safetensors::tensor::serialize_to_file(views, metadata, path)
            .map_err(|e| TensorFileError::Io { path: path.into(), source: std::io::Error::other(e.to_string()) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a64_matches_the_published_vectors() {
        assert_eq!(fnv1a64(b""), "cbf29ce484222325");
        assert_eq!(fnv1a64(b"a"), "af63dc4c8601ec8c");
    }

    #[test]
    fn floats_and_ints_round_trip_and_large_ints_are_refused() {
        let dir = std::env::temp_dir().join(format!("mgca-tensor-file-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut file = TensorFile::default();
        file.tensors.insert("x".into(), HostTensor { shape: vec![2, 2], values: vec![1.0, -2.0, 0.5, 3.0] });
        file.ints.insert("ids".into(), (vec![3], vec![1, 2, 3]));
        file.metadata.insert("k".into(), "v".into());
        let path = dir.join("a.safetensors");
        file.write(&path).unwrap();
        let err = TensorFile::read(&path).unwrap_err().to_string();
        assert!(err.contains("`ids` is I64, expected F32"), "{err}");
        let back = TensorFile::read_numeric(&path).unwrap();
        assert_eq!(back.tensors["x"], file.tensors["x"]);
        assert_eq!(back.tensors["ids"].values, vec![1.0, 2.0, 3.0]);
        assert_eq!(back.metadata["k"], "v");

        file.ints.insert("ids".into(), (vec![1], vec![F32_EXACT_INTEGER as i64 + 1]));
        file.write(&path).unwrap();
        let err = TensorFile::read_numeric(&path).unwrap_err().to_string();
        assert!(err.contains("`ids` holds"), "{err}");
        std::fs::remove_dir_all(dir).ok();
    }
}
