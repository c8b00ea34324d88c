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
//! Spec: `architecture.md` §1 (the checkpoints MGCA loads: DeiT `model`, Bio_ClinicalBERT,
//! torchvision, Lightning `state_dict`).
//!
//! **Deviation:** none. Values are converted to float32 (from f64, f16, bf16, and integers
//! up to 2²⁴ in magnitude, such as `num_batches_tracked`); a larger integer is an error naming
//! the key rather than a silently rounded value. Big-endian archives are refused.

use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use super::pickle::{self, DType, TensorRef, Value};
use crate::parity::{HostTensor, TensorFile};

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
    /// Storage key → offset of its first element.
    Legacy(HashMap<String, u64>),
    /// Everything, already read.
    Safetensors(TensorFile),
}

/// The entry a state dict was found under (`None`: the top level) and its named tensors.
pub type StateDict = (Option<String>, Vec<(String, TensorRef)>);

/// An opened checkpoint: its object graph, and where its tensors' bytes are.
#[derive(Debug)]
pub struct Checkpoint {
    path: PathBuf,
    file: File,
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
        let mut file = File::open(path).map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        let mut head = [0u8; 16];
        let n = (&file).take(16).read(&mut head).map_err(io)?;
        let head = &head[..n];
        if head.starts_with(b"PK\x03\x04") {
            Self::open_zip(path, file, len)
        } else if head.len() >= 14 && head[..2] == [0x80, 0x02] && head[2] == 0x8a && head[4..14] == LEGACY_MAGIC {
            Self::open_legacy(path, file, len)
        } else if head.len() >= 9 && head[8] == b'{' {
            let tensors = TensorFile::read_numeric(path)
                .map_err(|e| CheckpointError::Format { path: path.into(), message: e.to_string() })?;
            file.rewind().map_err(io)?;
            let root = Value::Dict(
                tensors.tensors.keys().map(|k| (Value::Str(k.clone()), Value::Str("safetensors".into()))).collect(),
            );
            Ok(Self {
                path: path.into(),
                file,
                format: Format::Safetensors,
                root,
                storages: Storages::Safetensors(tensors),
            })
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

    fn open_zip(path: &Path, file: File, len: u64) -> Result<Self, CheckpointError> {
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
        let prefix = &pkl[..pkl.len() - "data.pkl".len()];
        let read_entry = |name: &str| -> Result<Vec<u8>, CheckpointError> {
            let &(offset, size) = &entries[name];
            read_at(&file, offset, size as usize).map_err(|source| CheckpointError::Io { path: path.into(), source })
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
        Ok(Self { path: path.into(), file, format: Format::TorchZip, root, storages: Storages::Zip(storages) })
    }

    fn open_legacy(path: &Path, file: File, len: u64) -> Result<Self, CheckpointError> {
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
            offset += used as u64;
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
        let root = values.pop().expect("four pickles read");
        let mut storages = HashMap::new();
        for key in keys {
            let Value::Str(key) = key else {
                return Err(CheckpointError::Format { path: path.into(), message: "non-string storage key".into() });
            };
            let dtype = *dtypes.get(&key).ok_or_else(|| CheckpointError::Format {
                path: path.into(),
                message: format!("storage `{key}` is listed but no tensor uses it"),
            })?;
            let count =
                read_at(&file, offset, 8).map_err(|source| CheckpointError::Io { path: path.into(), source })?;
            let numel = u64::from_le_bytes(count.try_into().expect("8 bytes"));
            storages.insert(key, offset + 8);
            offset += 8 + numel * dtype.size() as u64;
            if offset > len {
                return Err(CheckpointError::Format {
                    path: path.into(),
                    message: format!("truncated: storage data runs to byte {offset} of {len}"),
                });
            }
        }
        Ok(Self { path: path.into(), file, format: Format::TorchLegacy, root, storages: Storages::Legacy(storages) })
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
                let &offset =
                    offsets.get(&t.storage.key).ok_or_else(|| bad(format!("storage `{}` is absent", t.storage.key)))?;
                (offset, (t.storage.numel * t.storage.dtype.size()) as u64)
            }
        };
        let size = t.storage.dtype.size();
        let numel: usize = t.shape.iter().product();
        // The span of storage elements the view touches.
        let last = t.shape.iter().zip(&t.stride).map(|(n, s)| n.saturating_sub(1) * s).sum::<usize>();
        let span = if numel == 0 { 0 } else { last + 1 };
        if ((t.offset + span) * size) as u64 > available {
            return Err(bad(format!(
                "needs {} bytes of storage `{}`, which has {available}",
                (t.offset + span) * size,
                t.storage.key
            )));
        }
        let bytes = read_at(&self.file, start + (t.offset * size) as u64, span * size)
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

fn read_at(file: &File, offset: u64, len: usize) -> std::io::Result<Vec<u8>> {
    let mut f = file;
    f.seek(SeekFrom::Start(offset))?;
    let mut buf = vec![0; len];
    f.read_exact(&mut buf)?;
    Ok(buf)
}

/// Read one pickle starting at `offset`, growing the window until it fits.
#[allow(clippy::type_complexity)]
fn pickle_at(
    file: &File,
    offset: u64,
    len: u64,
    persistent: &mut pickle::PersistentLoad<'_>,
) -> Result<(Value, usize), Result<pickle::PickleError, std::io::Error>> {
    let mut window = 1 << 16;
    loop {
        let n = window.min((len - offset) as usize);
        let bytes = read_at(file, offset, n).map_err(Err)?;
        match pickle::read(&bytes, persistent) {
            Ok(done) => return Ok(done),
            Err(e) if e.message.starts_with("truncated") && n < (len - offset) as usize => window *= 4,
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
        DType::F32 => Ok(bytes.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect()),
        DType::F64 => Ok(bytes.chunks_exact(8).map(|b| f64::from_le_bytes(b.try_into().unwrap()) as f32).collect()),
        DType::F16 => Ok(bytes.chunks_exact(2).map(|b| f16_to_f32(u16::from_le_bytes([b[0], b[1]]))).collect()),
        DType::BF16 => {
            Ok(bytes.chunks_exact(2).map(|b| f32::from_bits((u16::from_le_bytes([b[0], b[1]]) as u32) << 16)).collect())
        }
        DType::I64 => ints(bytes.chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().unwrap())).collect()),
        DType::I32 => ints(bytes.chunks_exact(4).map(|b| i32::from_le_bytes(b.try_into().unwrap()) as i64).collect()),
        DType::I16 => Ok(bytes.chunks_exact(2).map(|b| i16::from_le_bytes([b[0], b[1]]) as f32).collect()),
        DType::I8 => Ok(bytes.iter().map(|&b| b as i8 as f32).collect()),
        DType::U8 | DType::Bool => Ok(bytes.iter().map(|&b| b as f32).collect()),
    }
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
    let contiguous = shape
        .iter()
        .zip(stride)
        .rev()
        .try_fold(1usize, |expected, (&n, &s)| (n == 1 || s == expected).then_some(expected * n));
    if contiguous.is_some() {
        return values[..numel].to_vec();
    }
    let mut out = Vec::with_capacity(numel);
    let mut index = vec![0usize; shape.len()];
    for _ in 0..numel {
        out.push(values[index.iter().zip(stride).map(|(i, s)| i * s).sum::<usize>()]);
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

/// The stored entries of a zip archive: name → (data offset, size).
fn zip_entries(file: &File, len: u64) -> Result<HashMap<String, (u64, u64)>, String> {
    let io = |e: std::io::Error| format!("reading the zip directory: {e}");
    let tail_len = len.min(22 + 65_535) as usize;
    let tail = read_at(file, len - tail_len as u64, tail_len).map_err(io)?;
    let eocd = (0..=tail.len().saturating_sub(22))
        .rev()
        .find(|&i| tail[i..i + 4] == [0x50, 0x4b, 0x05, 0x06])
        .ok_or("zip archive without an end-of-central-directory record (truncated?)")?;
    let u16_at = |b: &[u8], i: usize| u16::from_le_bytes([b[i], b[i + 1]]) as u64;
    let u32_at = |b: &[u8], i: usize| u32::from_le_bytes(b[i..i + 4].try_into().unwrap()) as u64;
    let u64_at = |b: &[u8], i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap());
    let mut count = u16_at(&tail, eocd + 10);
    let mut cd_size = u32_at(&tail, eocd + 12);
    let mut cd_offset = u32_at(&tail, eocd + 16);
    if count == 0xffff || cd_size == 0xffff_ffff || cd_offset == 0xffff_ffff {
        // Zip64: the locator sits right before the end record.
        let locator = eocd.checked_sub(20).filter(|&l| tail[l..l + 4] == [0x50, 0x4b, 0x06, 0x07]);
        let locator = locator.ok_or("zip64 archive without a zip64 locator")?;
        let record = read_at(file, u64_at(&tail, locator + 8), 56).map_err(io)?;
        if record[..4] != [0x50, 0x4b, 0x06, 0x06] {
            return Err("zip64 end record not found where the locator points".into());
        }
        count = u64_at(&record, 32);
        cd_size = u64_at(&record, 40);
        cd_offset = u64_at(&record, 48);
    }
    if cd_offset + cd_size > len {
        return Err(format!("zip central directory at {cd_offset}+{cd_size} lies beyond the file's {len} bytes"));
    }
    let cd = read_at(file, cd_offset, cd_size as usize).map_err(io)?;
    let mut entries = HashMap::new();
    let mut p = 0usize;
    for _ in 0..count {
        if p + 46 > cd.len() || cd[p..p + 4] != [0x50, 0x4b, 0x01, 0x02] {
            return Err(format!("zip central directory entry at byte {} is malformed", cd_offset as usize + p));
        }
        let method = u16_at(&cd, p + 10);
        let (mut size, mut local) = (u32_at(&cd, p + 20), u32_at(&cd, p + 42));
        let uncompressed = u32_at(&cd, p + 24);
        let (name_len, extra_len, comment_len) =
            (u16_at(&cd, p + 28) as usize, u16_at(&cd, p + 30) as usize, u16_at(&cd, p + 32) as usize);
        let name = String::from_utf8_lossy(&cd[p + 46..p + 46 + name_len]).into_owned();
        let mut extra = &cd[p + 46 + name_len..p + 46 + name_len + extra_len];
        while extra.len() >= 4 {
            let (id, n) = (u16_at(extra, 0), u16_at(extra, 2) as usize);
            if id == 1 {
                let mut field = &extra[4..4 + n];
                let mut next = || {
                    let v = u64_at(field, 0);
                    field = &field[8..];
                    v
                };
                if uncompressed == 0xffff_ffff {
                    next();
                }
                if size == 0xffff_ffff {
                    size = next();
                }
                if local == 0xffff_ffff {
                    local = next();
                }
            }
            extra = &extra[4 + n..];
        }
        if method != 0 {
            return Err(format!("zip entry `{name}` is compressed (method {method}); torch.save stores entries"));
        }
        let header = read_at(file, local, 30).map_err(io)?;
        if header[..4] != [0x50, 0x4b, 0x03, 0x04] {
            return Err(format!("zip entry `{name}`: no local header at byte {local}"));
        }
        let data = local + 30 + u16_at(&header, 26) + u16_at(&header, 28);
        if data + size > len {
            return Err(format!("zip entry `{name}` runs past the end of the file (truncated?)"));
        }
        entries.insert(name, (data, size));
        p += 46 + name_len + extra_len + comment_len;
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

    #[test]
    fn large_integers_are_refused_not_rounded() {
        let bytes: Vec<u8> = [5i64, (1 << 24) + 1].iter().flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!(decode(&bytes, DType::I64), Err((1, (1 << 24) + 1)));
    }
}
