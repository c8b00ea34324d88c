//! PyTorch checkpoint files: `torch.save`'s zip archive (PyTorch ≥ 1.6: `.pth`, `.bin`,
//! Lightning `.ckpt`), its legacy stream format (PyTorch < 1.6, e.g. 2019 Hugging Face
//! `pytorch_model.bin`), and safetensors, read into float32 host tensors.
//!
//! A zip checkpoint holds `<archive>/data.pkl` (the pickled object, see [`super::pickle`]) and
//! one stored (uncompressed) entry `<archive>/data/<key>` per storage. A legacy file is five
//! pickles in a row (magic number, protocol version, system info, the object, the list of
//! storage keys) followed by each storage as an 8-byte element count and its bytes. Only the
//! storages of the tensors asked for are read, so a 1 GB Lightning checkpoint's optimizer
//! state costs nothing.
//!
//! Book: "Checkpoints and weight loading". Reference: the checkpoints
//! `mgca/models/backbones/encoder.py` (`ImageEncoder.__init__`, `BertEncoder.__init__`) and
//! `mgca/models/mgca/mgca_module.py` (`MGCA`, Lightning's `state_dict`) load, at HKU-MedAI/MGCA
//! `680fe4a6ee0c` (DeiT `model`, Bio_ClinicalBERT, torchvision); the container formats are
//! PyTorch's `torch/serialization.py`.
//!
//! **Deviation:** none. Values are converted to float32 (from f64, f16, bf16, and integers
//! up to 2²⁴ in magnitude, such as `num_batches_tracked`); a larger integer is an error naming
//! the key rather than a silently rounded value. Big-endian archives are refused.

use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use super::pickle::{self, DType, TensorRef, Value};
use crate::tensor_file::{HostTensor, TensorFile};

/// Why a checkpoint could not be read. Every variant names the file (and the key).
#[derive(Debug)]
pub enum CheckpointError {
    /// The file could not be read.
    Io { path: PathBuf, source: std::io::Error },
    /// The container is not what it claims to be, or is unsupported.
    Format { path: PathBuf, message: String },
    /// The pickled object could not be read.
    Pickle { path: PathBuf, source: pickle::PickleError },
    /// No state dict was found where it was looked for.
    NoStateDict { path: PathBuf, message: String },
    /// One tensor could not be read.
    Tensor { path: PathBuf, key: String, message: String },
}

impl fmt::Display for CheckpointError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io { path, source } => write!(f, "{}: {source}", path.display()),
            Self::Format { path, message } => write!(f, "{}: {message}", path.display()),
            Self::Pickle { path, source } => write!(f, "{}: {source}", path.display()),
            Self::NoStateDict { path, message } => write!(f, "{}: {message}", path.display()),
            Self::Tensor { path, key, message } => write!(f, "{}: tensor `{key}`: {message}", path.display()),
        }
    }
}

impl std::error::Error for CheckpointError {}

/// The container of a checkpoint file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `torch.save` ≥ 1.6: a zip archive.
    TorchZip,
    /// `torch.save` < 1.6 (or `_use_new_zipfile_serialization=False`).
    TorchLegacy,
    /// A safetensors file.
    Safetensors,
}

/// Where each storage's bytes start in the file.
#[derive(Debug)]
enum Storages {
    /// Storage key → (offset, length in bytes) of its stored zip entry.
    Zip(HashMap<String, (u64, u64)>),
    /// Storage key → (offset of its first element, length in bytes).
    Legacy(HashMap<String, (u64, u64)>),
    /// Everything, already read.
    Safetensors(TensorFile),
}

/// The entry a state dict was found under (`None`: the top level) and its named tensors.
pub type StateDict = (Option<String>, Vec<(String, TensorRef)>);

/// Where a checkpoint's bytes are: a file, or memory (the fuzz harness, tests).
enum Source {
    File { file: File, len: u64 },
    Bytes(Vec<u8>),
}

impl fmt::Debug for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File { len, .. } => write!(f, "File({len} bytes)"),
            Self::Bytes(b) => write!(f, "Bytes({} bytes)", b.len()),
        }
    }
}

impl Source {
    fn len(&self) -> u64 {
        match self {
            Self::File { len, .. } => *len,
            Self::Bytes(b) => b.len() as u64,
        }
    }

    /// `len` bytes at `offset`; a span past the end is an error before anything is allocated,
    /// so no length read from the file can ask for more memory than the file holds.
    fn read_at(&self, offset: u64, len: u64) -> std::io::Result<Vec<u8>> {
        let end = offset.checked_add(len).filter(|&end| end <= self.len()).ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!(
                    "bytes {offset}..{offset}+{len} lie beyond the end of the file ({} bytes; truncated?)",
                    self.len()
                ),
            )
        })?;
        match self {
            Self::File { file, .. } => {
                let mut buf = vec![0; (end - offset) as usize];
                read_exact_at(file, &mut buf, offset)?;
                Ok(buf)
            }
            Self::Bytes(b) => Ok(b[offset as usize..end as usize].to_vec()),
        }
    }
}

#[cfg(unix)]
fn read_exact_at(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    file.read_exact_at(buf, offset)
}

#[cfg(not(unix))]
fn read_exact_at(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    use std::io::{Seek, SeekFrom};
    let mut f = file;
    f.seek(SeekFrom::Start(offset))?;
    f.read_exact(buf)
}

/// The name error messages give a checkpoint read from memory.
pub const IN_MEMORY: &str = "<checkpoint in memory>";

/// Every tensor of a `torch.save` checkpoint (zip or legacy) held in memory, as
/// [`super::read_tensors`] reads a file; errors name [`IN_MEMORY`]. Never panics on any input
/// (the entry point of the fuzz harness).
pub fn read_from_bytes(bytes: &[u8]) -> Result<TensorFile, CheckpointError> {
    Checkpoint::from_bytes(bytes.to_vec(), Path::new(IN_MEMORY))?.tensors(None, |_| true)
}

/// An opened checkpoint: its object graph, and where its tensors' bytes are.
#[derive(Debug)]
pub struct Checkpoint {
    path: PathBuf,
    source: Source,
    /// The container.
    pub format: Format,
    /// The pickled object (a dict of the safetensors' tensors for safetensors files).
    pub root: Value,
    storages: Storages,
}

const LEGACY_MAGIC: [u8; 10] = [0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19];

impl Checkpoint {
    /// Open `path`, recognising the container by its first bytes.
    pub fn open(path: &Path) -> Result<Self, CheckpointError> {
        let io = |source| CheckpointError::Io { path: path.into(), source };
        let file = File::open(path).map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        let mut head = [0u8; 16];
        let n = (&file).take(16).read(&mut head).map_err(io)?;
        let head = &head[..n];
        if head.get(8) == Some(&b'{') && !head.starts_with(b"PK\x03\x04") && !is_torch(head) {
            let tensors = TensorFile::read_numeric(path)
                .map_err(|e| CheckpointError::Format { path: path.into(), message: e.to_string() })?;
            let root = Value::Dict(
                tensors.tensors.keys().map(|k| (Value::Str(k.clone()), Value::Str("safetensors".into()))).collect(),
            );
            return Ok(Self {
                path: path.into(),
                source: Source::File { file, len },
                format: Format::Safetensors,
                root,
                storages: Storages::Safetensors(tensors),
            });
        }
        Self::open_source(path, Source::File { file, len }, head)
    }

    /// A `torch.save` checkpoint (zip or legacy) held in memory; `name` is what errors call
    /// it. Safetensors files are read from disk only ([`Checkpoint::open`]).
    pub fn from_bytes(bytes: Vec<u8>, name: &Path) -> Result<Self, CheckpointError> {
        let head = bytes[..bytes.len().min(16)].to_vec();
        if head.get(8) == Some(&b'{') && !head.starts_with(b"PK\x03\x04") && !is_torch(&head) {
            return Err(CheckpointError::Format {
                path: name.into(),
                message: "a safetensors file: read it from disk (Checkpoint::open)".into(),
            });
        }
        Self::open_source(name, Source::Bytes(bytes), &head)
    }

    fn open_source(path: &Path, source: Source, head: &[u8]) -> Result<Self, CheckpointError> {
        let len = source.len();
        if head.starts_with(b"PK\x03\x04") {
            Self::open_zip(path, source, len)
        } else if is_torch(head) {
            Self::open_legacy(path, source, len)
        } else if head.len() >= 2 && head[0] == 0x80 {
            Err(CheckpointError::Format {
                path: path.into(),
                message: "a plain pickle without PyTorch's magic number: not a torch.save checkpoint".into(),
            })
        } else {
            Err(CheckpointError::Format {
                path: path.into(),
                message: "not a PyTorch checkpoint (zip or legacy) or a safetensors file".into(),
            })
        }
    }

    fn open_zip(path: &Path, file: Source, len: u64) -> Result<Self, CheckpointError> {
        let entries =
            zip_entries(&file, len).map_err(|message| CheckpointError::Format { path: path.into(), message })?;
        let pkl = entries
            .keys()
            .filter(|name| name.ends_with("/data.pkl") || name.as_str() == "data.pkl")
            .min_by_key(|name| name.len())
            .cloned()
            .ok_or_else(|| CheckpointError::Format {
                path: path.into(),
                message: "zip archive without data.pkl: not a torch.save checkpoint".into(),
            })?;
        let prefix = pkl.strip_suffix("data.pkl").unwrap_or_default();
        let read_entry = |name: &str| -> Result<Vec<u8>, CheckpointError> {
            let &(offset, size) = entries.get(name).ok_or_else(|| CheckpointError::Format {
                path: path.into(),
                message: format!("zip archive without `{name}`"),
            })?;
            file.read_at(offset, size).map_err(|source| CheckpointError::Io { path: path.into(), source })
        };
        if let Some(order) =
            entries.get(&format!("{prefix}byteorder")).map(|_| read_entry(&format!("{prefix}byteorder")))
        {
            let order = order?;
            if order != b"little" {
                return Err(CheckpointError::Format {
                    path: path.into(),
                    message: format!("byte order {:?} is not supported", String::from_utf8_lossy(&order)),
                });
            }
        }
        let data = read_entry(&pkl)?;
        let (root, _) = pickle::read(&data, &mut pickle::torch_storage)
            .map_err(|source| CheckpointError::Pickle { path: path.into(), source })?;
        let storages = entries
            .iter()
            .filter_map(|(name, &loc)| name.strip_prefix(&format!("{prefix}data/")).map(|key| (key.to_string(), loc)))
            .collect();
        Ok(Self { path: path.into(), source: file, format: Format::TorchZip, root, storages: Storages::Zip(storages) })
    }

    fn open_legacy(path: &Path, file: Source, len: u64) -> Result<Self, CheckpointError> {
        let mut offset = 0u64;
        let mut values = Vec::new();
        let mut dtypes: HashMap<String, DType> = HashMap::new();
        for index in 0..5 {
            let (value, used) = pickle_at(&file, offset, len, &mut |pid| {
                let storage = pickle::torch_storage(pid)?;
                if let Value::Storage(s) = &storage {
                    dtypes.insert(s.key.clone(), s.dtype);
                }
                Ok(storage)
            })
            .map_err(|e| match e {
                Ok(source) => CheckpointError::Pickle { path: path.into(), source },
                Err(source) => CheckpointError::Io { path: path.into(), source },
            })?;
            if index == 1 && value != Value::Int(1001) {
                return Err(CheckpointError::Format {
                    path: path.into(),
                    message: format!("legacy checkpoint protocol {value:?} is not 1001"),
                });
            }
            if index == 2 && value.get("little_endian") == Some(&Value::Bool(false)) {
                return Err(CheckpointError::Format { path: path.into(), message: "big-endian checkpoint".into() });
            }
            offset = offset.saturating_add(used as u64);
            values.push(value);
        }
        let keys = match values.pop() {
            Some(Value::List(keys)) => keys,
            other => {
                return Err(CheckpointError::Format {
                    path: path.into(),
                    message: format!("legacy checkpoint: storage key list is {other:?}"),
                });
            }
        };
        let root = values.pop().unwrap_or(Value::None);
        let mut storages = HashMap::new();
        for key in keys {
            let Value::Str(key) = key else {
                return Err(CheckpointError::Format { path: path.into(), message: "non-string storage key".into() });
            };
            let dtype = *dtypes.get(&key).ok_or_else(|| CheckpointError::Format {
                path: path.into(),
                message: format!("storage `{key}` is listed but no tensor uses it"),
            })?;
            let count = file.read_at(offset, 8).map_err(|source| CheckpointError::Io { path: path.into(), source })?;
            let numel = u64::from_le_bytes(std::array::from_fn(|i| count.get(i).copied().unwrap_or(0)));
            let end = numel
                .checked_mul(dtype.size() as u64)
                .and_then(|bytes| bytes.checked_add(offset + 8))
                .filter(|&end| end <= len)
                .ok_or_else(|| CheckpointError::Format {
                    path: path.into(),
                    message: format!(
                        "storage `{key}` at byte {offset} claims {numel} elements of {} bytes, past the file's {len} bytes (truncated or corrupt)",
                        dtype.size()
                    ),
                })?;
            storages.insert(key, (offset + 8, end - offset - 8));
            offset = end;
        }
        Ok(Self {
            path: path.into(),
            source: file,
            format: Format::TorchLegacy,
            root,
            storages: Storages::Legacy(storages),
        })
    }

    /// The path it was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The dict of tensors to load: the entry `entry` of the top-level dict if given; otherwise
    /// `state_dict` (Lightning), else `model` (DeiT, timm), else `module`, else the top level.
    /// Returns the entry's name (`None` for the top level) and its tensors in file order;
    /// non-tensor values are skipped.
    pub fn state_dict(&self, entry: Option<&str>) -> Result<StateDict, CheckpointError> {
        let no = |message: String| CheckpointError::NoStateDict { path: self.path.clone(), message };
        let top = self.root.entries().ok_or_else(|| no("the checkpoint is not a dict".into()))?;
        let tensors = |v: &Value| -> Vec<(String, TensorRef)> {
            v.entries()
                .unwrap_or_default()
                .iter()
                .filter_map(|(k, v)| match (k, v) {
                    (Value::Str(k), Value::Tensor(t)) => Some((k.clone(), t.clone())),
                    _ => None,
                })
                .collect()
        };
        if let Storages::Safetensors(file) = &self.storages {
            return Ok((None, file.tensors.keys().map(|k| (k.clone(), placeholder(k))).collect()));
        }
        let keys = || top.iter().filter_map(|(k, _)| if let Value::Str(s) = k { Some(s.as_str()) } else { None });
        let chosen = match entry {
            Some(name) => Some(name.to_string()),
            None => ["state_dict", "model", "module"]
                .into_iter()
                .find(|name| self.root.get(name).is_some_and(|v| !tensors(v).is_empty()))
                .map(str::to_string),
        };
        match chosen {
            Some(name) => {
                let value = self.root.get(&name).ok_or_else(|| {
                    no(format!("no entry `{name}`; the top level has {}", keys().collect::<Vec<_>>().join(", ")))
                })?;
                let found = tensors(value);
                if found.is_empty() {
                    return Err(no(format!("entry `{name}` holds no tensors")));
                }
                Ok((Some(name), found))
            }
            None => {
                let found = tensors(&self.root);
                if found.is_empty() {
                    return Err(no(format!(
                        "no tensors at the top level, and no `state_dict`, `model` or `module` entry; the top level has {}",
                        keys().collect::<Vec<_>>().join(", ")
                    )));
                }
                Ok((None, found))
            }
        }
    }

    /// Read one tensor as float32.
    pub fn read_tensor(&self, key: &str, t: &TensorRef) -> Result<HostTensor, CheckpointError> {
        let bad = |message: String| CheckpointError::Tensor { path: self.path.clone(), key: key.into(), message };
        let (start, available) = match &self.storages {
            Storages::Safetensors(file) => {
                return file.tensors.get(key).cloned().ok_or_else(|| bad("not in the file".into()));
            }
            Storages::Zip(entries) => {
                let &(offset, size) =
                    entries.get(&t.storage.key).ok_or_else(|| bad(format!("storage `{}` is absent", t.storage.key)))?;
                (offset, size)
            }
            Storages::Legacy(offsets) => {
                let &(offset, size) =
                    offsets.get(&t.storage.key).ok_or_else(|| bad(format!("storage `{}` is absent", t.storage.key)))?;
                (offset, size)
            }
        };
        if t.shape.len() != t.stride.len() {
            return Err(bad(format!("size {:?} and stride {:?} differ in rank", t.shape, t.stride)));
        }
        let size = t.storage.dtype.size() as u64;
        let too_big = || bad(format!("size {:?} with stride {:?} does not fit in memory", t.shape, t.stride));
        let numel = t.shape.iter().try_fold(1usize, |a, &n| a.checked_mul(n)).ok_or_else(too_big)?;
        // The span of storage elements the view touches: [offset, end).
        let end = if numel == 0 {
            t.offset
        } else {
            pickle::last_element(t.offset, &t.shape, &t.stride).and_then(|l| l.checked_add(1)).ok_or_else(too_big)?
        };
        let needed = (end as u64).checked_mul(size).ok_or_else(too_big)?;
        if needed > available {
            return Err(bad(format!("needs {needed} bytes of storage `{}`, which has {available}", t.storage.key)));
        }
        // A broadcast view (stride 0) may be larger than its storage, but not without bound.
        let cap = self.source.len().max(MIN_ELEMENT_CAP);
        if numel as u64 > cap {
            return Err(bad(format!(
                "{numel} elements from a file of {} bytes: a view this much larger than its data is refused",
                self.source.len()
            )));
        }
        let span = end - t.offset.min(end);
        let bytes = self
            .source
            .read_at(start + t.offset as u64 * size, span as u64 * size)
            .map_err(|source| CheckpointError::Io { path: self.path.clone(), source })?;
        let values = decode(&bytes, t.storage.dtype).map_err(|(index, v)| {
            bad(format!("integer {v} at storage element {index} does not fit float32 exactly"))
        })?;
        Ok(HostTensor { shape: t.shape.clone(), values: gather(&values, &t.shape, &t.stride) })
    }

    /// Read the tensors of [`Checkpoint::state_dict`]`(entry)` whose key `keep` accepts.
    pub fn tensors(&self, entry: Option<&str>, keep: impl Fn(&str) -> bool) -> Result<TensorFile, CheckpointError> {
        let (_, entries) = self.state_dict(entry)?;
        let mut file = TensorFile::default();
        for (key, t) in entries.iter().filter(|(k, _)| keep(k)) {
            file.tensors.insert(key.clone(), self.read_tensor(key, t)?);
        }
        Ok(file)
    }
}

/// A stand-in reference for safetensors entries (their values are read already).
fn placeholder(key: &str) -> TensorRef {
    TensorRef {
        storage: pickle::StorageRef { key: key.into(), dtype: DType::F32, numel: 0 },
        offset: 0,
        shape: Vec::new(),
        stride: Vec::new(),
    }
}

/// Whether `head` opens a legacy `torch.save` stream (protocol 2, then the magic number).
fn is_torch(head: &[u8]) -> bool {
    head.len() >= 14 && head[..3] == [0x80, 0x02, 0x8a] && head[4..14] == LEGACY_MAGIC
}

/// The most elements a tensor may have regardless of the file's size (a broadcast view of a
/// small storage); beyond it, no more elements than the file has bytes.
pub const MIN_ELEMENT_CAP: u64 = 1 << 20;

/// Read one pickle starting at `offset`, growing the window until it fits.
#[allow(clippy::type_complexity)]
fn pickle_at(
    file: &Source,
    offset: u64,
    len: u64,
    persistent: &mut pickle::PersistentLoad<'_>,
) -> Result<(Value, usize), Result<pickle::PickleError, std::io::Error>> {
    let left = len.saturating_sub(offset);
    let mut window = 1u64 << 16;
    loop {
        let n = window.min(left);
        let bytes = file.read_at(offset, n).map_err(Err)?;
        match pickle::read(&bytes, persistent) {
            Ok(done) => return Ok(done),
            Err(e) if e.message.starts_with("truncated") && n < left => window = window.saturating_mul(4),
            Err(e) => return Err(Ok(e)),
        }
    }
}

/// Little-endian elements as f32; an integer beyond 2²⁴ is `(index, value)`.
fn decode(bytes: &[u8], dtype: DType) -> Result<Vec<f32>, (usize, i64)> {
    let ints = |v: Vec<i64>| match v.iter().position(|x| x.unsigned_abs() > 1 << 24) {
        Some(i) => Err((i, v[i])),
        None => Ok(v.into_iter().map(|x| x as f32).collect()),
    };
    match dtype {
        DType::F32 => Ok(bytes.chunks_exact(4).map(|b| f32::from_le_bytes(le(b))).collect()),
        DType::F64 => Ok(bytes.chunks_exact(8).map(|b| f64::from_le_bytes(le(b)) as f32).collect()),
        DType::F16 => Ok(bytes.chunks_exact(2).map(|b| f16_to_f32(u16::from_le_bytes([b[0], b[1]]))).collect()),
        DType::BF16 => {
            Ok(bytes.chunks_exact(2).map(|b| f32::from_bits((u16::from_le_bytes([b[0], b[1]]) as u32) << 16)).collect())
        }
        DType::I64 => ints(bytes.chunks_exact(8).map(|b| i64::from_le_bytes(le(b))).collect()),
        DType::I32 => ints(bytes.chunks_exact(4).map(|b| i32::from_le_bytes(le(b)) as i64).collect()),
        DType::I16 => Ok(bytes.chunks_exact(2).map(|b| i16::from_le_bytes([b[0], b[1]]) as f32).collect()),
        DType::I8 => Ok(bytes.iter().map(|&b| b as i8 as f32).collect()),
        DType::U8 | DType::Bool => Ok(bytes.iter().map(|&b| b as f32).collect()),
    }
}

/// The first `N` bytes of `b` (zero-filled if shorter; callers pass exact chunks).
fn le<const N: usize>(b: &[u8]) -> [u8; N] {
    std::array::from_fn(|i| b.get(i).copied().unwrap_or(0))
}

/// IEEE half precision to single precision, exactly (subnormals, infinities, NaN included).
fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h >> 15) as u32) << 31;
    let exp = ((h >> 10) & 0x1f) as u32;
    let frac = (h & 0x3ff) as u32;
    let bits = match (exp, frac) {
        (0, 0) => sign,
        (0, f) => {
            // Subnormal: value = f · 2⁻²⁴.
            return if sign != 0 { -(f as f32) * 2f32.powi(-24) } else { f as f32 * 2f32.powi(-24) };
        }
        (0x1f, f) => sign | 0x7f80_0000 | (f << 13),
        (e, f) => sign | ((e + 112) << 23) | (f << 13),
    };
    f32::from_bits(bits)
}

/// The row-major values of a strided view (element 0 at index 0 of `values`).
fn gather(values: &[f32], shape: &[usize], stride: &[usize]) -> Vec<f32> {
    let numel: usize = shape.iter().product();
    let contiguous =
        shape.iter().zip(stride).rev().try_fold(1usize, |expected, (&n, &s)| {
            (n == 1 || s == expected).then(|| expected.checked_mul(n)).flatten()
        });
    if contiguous.is_some() {
        return values[..numel.min(values.len())].to_vec();
    }
    let mut out = Vec::with_capacity(numel);
    let mut index = vec![0usize; shape.len()];
    for _ in 0..numel {
        // In bounds: the caller read every element up to the view's last one.
        let at = index.iter().zip(stride).fold(0usize, |a, (i, s)| a.saturating_add(i.saturating_mul(*s)));
        out.push(values.get(at).copied().unwrap_or(f32::NAN));
        for d in (0..shape.len()).rev() {
            index[d] += 1;
            if index[d] < shape[d] {
                break;
            }
            index[d] = 0;
        }
    }
    out
}

/// Little-endian fields of a byte slice; a field past its end is an error, not a panic.
struct Fields<'a>(&'a [u8], &'static str);

impl Fields<'_> {
    fn bytes<const N: usize>(&self, at: usize) -> Result<[u8; N], String> {
        at.checked_add(N)
            .and_then(|end| self.0.get(at..end))
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| format!("{} is cut short (a field at byte {at} of {})", self.1, self.0.len()))
    }
    fn u16(&self, at: usize) -> Result<u64, String> {
        self.bytes::<2>(at).map(|b| u16::from_le_bytes(b) as u64)
    }
    fn u32(&self, at: usize) -> Result<u64, String> {
        self.bytes::<4>(at).map(|b| u32::from_le_bytes(b) as u64)
    }
    fn u64(&self, at: usize) -> Result<u64, String> {
        self.bytes::<8>(at).map(u64::from_le_bytes)
    }
    fn slice(&self, at: usize, len: usize) -> Result<&[u8], String> {
        at.checked_add(len)
            .and_then(|end| self.0.get(at..end))
            .ok_or_else(|| format!("{} is cut short ({len} bytes at byte {at} of {})", self.1, self.0.len()))
    }
}

/// The stored entries of a zip archive: name → (data offset, size). Every offset and length is
/// checked against the file before it is used.
fn zip_entries(file: &Source, len: u64) -> Result<HashMap<String, (u64, u64)>, String> {
    let io = |e: std::io::Error| format!("reading the zip directory: {e}");
    const EOCD: usize = 22;
    let tail_len = len.min(EOCD as u64 + 65_535);
    let tail = file.read_at(len - tail_len, tail_len).map_err(io)?;
    let eocd = (0..=tail.len().saturating_sub(EOCD))
        .rev()
        .find(|&i| tail.len() >= i + EOCD && tail[i..i + 4] == [0x50, 0x4b, 0x05, 0x06])
        .ok_or("zip archive without an end-of-central-directory record (truncated?)")?;
    let t = Fields(&tail, "the zip end record");
    let mut count = t.u16(eocd + 10)?;
    let mut cd_size = t.u32(eocd + 12)?;
    let mut cd_offset = t.u32(eocd + 16)?;
    if count == 0xffff || cd_size == 0xffff_ffff || cd_offset == 0xffff_ffff {
        // Zip64: the locator sits right before the end record.
        let locator = eocd.checked_sub(20).filter(|&l| t.bytes::<4>(l).is_ok_and(|m| m == [0x50, 0x4b, 0x06, 0x07]));
        let locator = locator.ok_or("zip64 archive without a zip64 locator")?;
        let record = file.read_at(t.u64(locator + 8)?, 56).map_err(io)?;
        let r = Fields(&record, "the zip64 end record");
        if r.bytes::<4>(0)? != [0x50, 0x4b, 0x06, 0x06] {
            return Err("zip64 end record not found where the locator points".into());
        }
        count = r.u64(32)?;
        cd_size = r.u64(40)?;
        cd_offset = r.u64(48)?;
    }
    if cd_offset.checked_add(cd_size).is_none_or(|end| end > len) {
        return Err(format!("zip central directory at {cd_offset}+{cd_size} lies beyond the file's {len} bytes"));
    }
    let cd = file.read_at(cd_offset, cd_size).map_err(io)?;
    let c = Fields(&cd, "the zip central directory");
    let mut entries = HashMap::new();
    let mut p = 0usize;
    for _ in 0..count {
        let malformed = || format!("zip central directory entry at byte {} is malformed", cd_offset + p as u64);
        if c.bytes::<4>(p).ok() != Some([0x50, 0x4b, 0x01, 0x02]) || p + 46 > cd.len() {
            return Err(malformed());
        }
        let method = c.u16(p + 10)?;
        let (mut size, mut local) = (c.u32(p + 20)?, c.u32(p + 42)?);
        let uncompressed = c.u32(p + 24)?;
        let (name_len, extra_len, comment_len) =
            (c.u16(p + 28)? as usize, c.u16(p + 30)? as usize, c.u16(p + 32)? as usize);
        let name = String::from_utf8_lossy(c.slice(p + 46, name_len)?).into_owned();
        let mut extra = c.slice(p + 46 + name_len, extra_len)?;
        while extra.len() >= 4 {
            let x = Fields(extra, "a zip extra field");
            let (id, n) = (x.u16(0)?, x.u16(2)? as usize);
            let field = x.slice(4, n)?;
            if id == 1 {
                // Zip64 sizes and offsets, present for the fields that are saturated.
                let f = Fields(field, "a zip64 extra field");
                let mut at = 0;
                let mut next = || {
                    let v = f.u64(at);
                    at += 8;
                    v
                };
                if uncompressed == 0xffff_ffff {
                    next()?;
                }
                if size == 0xffff_ffff {
                    size = next()?;
                }
                if local == 0xffff_ffff {
                    local = next()?;
                }
            }
            extra = &extra[4 + n..];
        }
        if method != 0 {
            return Err(format!("zip entry `{name}` is compressed (method {method}); torch.save stores entries"));
        }
        let header = file.read_at(local, 30).map_err(|e| format!("zip entry `{name}`: local header: {e}"))?;
        let h = Fields(&header, "a zip local header");
        if h.bytes::<4>(0)? != [0x50, 0x4b, 0x03, 0x04] {
            return Err(format!("zip entry `{name}`: no local header at byte {local}"));
        }
        let data = local + 30 + h.u16(26)? + h.u16(28)?;
        if data.checked_add(size).is_none_or(|end| end > len) {
            return Err(format!("zip entry `{name}` runs past the end of the file (truncated?)"));
        }
        entries.insert(name, (data, size));
        p = p.checked_add(46 + name_len + extra_len + comment_len).ok_or_else(malformed)?;
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_precision_converts_exactly() {
        for (bits, want) in [
            (0x3c00u16, 1.0f32),
            (0xc000, -2.0),
            (0x7bff, 65504.0),
            (0x0001, 2f32.powi(-24)),
            (0x0400, 2f32.powi(-14)),
            (0x7c00, f32::INFINITY),
            (0x3555, 0.333_251_95),
        ] {
            assert_eq!(f16_to_f32(bits), want, "{bits:#06x}");
        }
        assert!(f16_to_f32(0x7e00).is_nan());
    }

    #[test]
    fn strided_views_are_gathered_row_major() {
        // A [2, 3] tensor stored transposed ([3, 2] row-major): stride [1, 2].
        let storage = [0., 3., 1., 4., 2., 5.];
        assert_eq!(gather(&storage, &[2, 3], &[1, 2]), vec![0., 1., 2., 3., 4., 5.]);
        assert_eq!(gather(&storage, &[3, 2], &[2, 1]), storage.to_vec());
        // A broadcast (stride 0) row.
        assert_eq!(gather(&[7., 8.], &[3, 2], &[0, 1]), vec![7., 8., 7., 8., 7., 8.]);
    }

    fn fixture(name: &str) -> Vec<u8> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("golden/pytorch/checkpoints");
        std::fs::read(dir.join(name)).unwrap()
    }

    const FIXTURES: [&str; 5] = [
        "deit_style.pth",
        "bio_clinicalbert_style.bin",
        "torchvision_style.pth",
        "mgca_vit_style.ckpt",
        "mgca_resnet_style.ckpt",
    ];

    /// The byte offset of the legacy stream's first storage: after its five pickles.
    fn legacy_storage_offset(bytes: &[u8]) -> usize {
        let mut offset = 0;
        for _ in 0..5 {
            let (_, used) = pickle::read(&bytes[offset..], &mut pickle::torch_storage).unwrap();
            offset += used;
        }
        offset
    }

    /// The abort: one changed byte in a legacy storage's element count asked for a
    /// 191 GB allocation. Now it is an error naming the storage and the file's size.
    #[test]
    fn a_corrupt_legacy_storage_count_is_an_error_not_an_allocation() {
        let mut bytes = fixture("bio_clinicalbert_style.bin");
        let offset = legacy_storage_offset(&bytes);
        bytes[offset + 4] = 0x2c;
        let err = Checkpoint::from_bytes(bytes, Path::new("model.bin")).unwrap_err().to_string();
        assert!(err.starts_with("model.bin: storage `") && err.contains("past the file's"), "{err}");
    }

    /// The panic: a central-directory entry whose name length runs past the directory.
    #[test]
    fn a_bad_zip_directory_entry_is_an_error() {
        let original = fixture("deit_style.pth");
        // The last entry of the central directory (at the end of the file, so no data bytes
        // can be mistaken for it).
        let cd = original.windows(4).rposition(|w| w == [0x50, 0x4b, 0x01, 0x02]).unwrap();
        for (field, value) in [(28, [0xff, 0xff]), (30, [0xff, 0xff]), (42, [0xff, 0xff])] {
            let mut bytes = original.clone();
            bytes[cd + field..cd + field + 2].copy_from_slice(&value);
            if field == 42 {
                bytes[cd + 44..cd + 46].copy_from_slice(&[0xff, 0x7f]);
            }
            let err = Checkpoint::from_bytes(bytes, Path::new("deit.pth")).unwrap_err().to_string();
            assert!(err.starts_with("deit.pth: "), "{err}");
        }
        // torch.save writes zip64 end records: one whose directory offset overflows.
        let mut bytes = original.clone();
        let record = bytes.windows(4).rposition(|w| w == [0x50, 0x4b, 0x06, 0x06]).unwrap();
        bytes[record + 48..record + 56].copy_from_slice(&u64::MAX.to_le_bytes());
        let eocd = bytes.len() - 22;
        bytes[eocd + 16..eocd + 20].copy_from_slice(&[0xff; 4]);
        let err = Checkpoint::from_bytes(bytes, Path::new("deit.pth")).unwrap_err().to_string();
        assert!(err.contains("central directory") && err.contains("beyond"), "{err}");
        // A zip64 locator pointing past the end.
        let mut bytes = original.clone();
        let locator = bytes.windows(4).rposition(|w| w == [0x50, 0x4b, 0x06, 0x07]).unwrap();
        bytes[locator + 8..locator + 16].copy_from_slice(&(1u64 << 62).to_le_bytes());
        let eocd = bytes.len() - 22;
        bytes[eocd + 16..eocd + 20].copy_from_slice(&[0xff; 4]);
        let err = Checkpoint::from_bytes(bytes, Path::new("deit.pth")).unwrap_err().to_string();
        assert!(err.starts_with("deit.pth: ") && err.contains("beyond the end"), "{err}");
    }

    /// A deterministic mutation loop over every committed checkpoint: flipped bits, bytes set
    /// to 0x00/0xff/0x7f, 8-byte fields set to extreme values, truncations. Each case must read
    /// to `Ok` or `Err`, never panic (an abort, e.g. a huge allocation, would kill the test).
    #[test]
    fn corrupted_checkpoints_never_panic() {
        const CASES_PER_FILE: usize = 700;
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let (mut ok, mut errors, mut panics) = (0, 0, Vec::new());
        for name in FIXTURES {
            let original = fixture(name);
            assert!(read_from_bytes(&original).is_ok(), "{name} reads");
            let n = original.len();
            for case in 0..CASES_PER_FILE {
                // Half the positions in the first and last 4 KiB, where the pickle and the
                // zip directory are; the rest anywhere.
                let r = next() as usize;
                let pos = match case % 4 {
                    0 => r % n.min(4096),
                    1 => n - 1 - r % n.min(4096),
                    _ => r % n,
                };
                let mut bytes = original.clone();
                match (next() % 6) as u8 {
                    0 => bytes[pos] ^= 1 << (next() % 8),
                    1 => bytes[pos] = [0x00, 0xff, 0x7f, 0x80][(next() % 4) as usize],
                    2 => bytes[pos] = next() as u8,
                    3 => {
                        let v = [u64::MAX, 0x7fff_ffff_ffff_ffff, 0xffff_ffff, 1 << 40][(next() % 4) as usize];
                        let end = (pos + 8).min(n);
                        bytes[pos..end].copy_from_slice(&v.to_le_bytes()[..end - pos]);
                    }
                    4 => bytes.truncate(pos),
                    _ => {
                        let k = pos % 64 + 1;
                        bytes.truncate(n.saturating_sub(k));
                    }
                }
                match std::panic::catch_unwind(|| read_from_bytes(&bytes)) {
                    Ok(Ok(_)) => ok += 1,
                    Ok(Err(e)) => {
                        assert!(e.to_string().starts_with(IN_MEMORY), "{e}");
                        errors += 1;
                    }
                    Err(_) => panics.push(format!("{name} case {case} at byte {pos}")),
                }
            }
        }
        eprintln!("{ok} read, {errors} errors, {} panics", panics.len());
        assert!(panics.is_empty(), "{} panics: {panics:?}", panics.len());
        assert!(errors > 0 && ok > 0);
    }

    #[test]
    fn large_integers_are_refused_not_rounded() {
        let bytes: Vec<u8> = [5i64, (1 << 24) + 1].iter().flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!(decode(&bytes, DType::I64), Err((1, (1 << 24) + 1)));
    }
}
