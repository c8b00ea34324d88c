//! A Python pickle reader (protocols 0–5), as far as PyTorch checkpoints need it.
//!
//! A checkpoint is a pickled object graph: dicts, lists, tuples, numbers, strings, and tensors
//! that PyTorch pickles as calls to its rebuild functions (`torch._utils._rebuild_tensor_v2`,
//! `_rebuild_parameter`, …) over storages it refers to by *persistent id*. This reader runs the
//! pickle machine without executing anything: it builds [`Value`]s, turns the rebuild calls it
//! knows into [`Value::Tensor`] (a description of the tensor; the bytes stay in the file),
//! and keeps every other call as an opaque [`Value::Object`], so a Lightning checkpoint with
//! classes from packages we do not have (`AttributeDict`, `argparse.Namespace`, …) still reads.
//!
//! Spec: not a reference component; the format is Python's `pickletools` documentation and
//! PyTorch's `torch/serialization.py` (`persistent_id`, `_rebuild_tensor_v2`).
//!
//! **Deviation:** the memo stores copies, so a container mutated after it was memoised and then
//! fetched again (`BINGET`) is seen as it was when memoised. PyTorch's state dicts never do
//! this with tensors (a tensor is complete when memoised); it is documented, not hidden.

use std::fmt;

/// Element types of PyTorch storages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DType {
    F64,
    F32,
    F16,
    BF16,
    I64,
    I32,
    I16,
    I8,
    U8,
    Bool,
}

impl DType {
    /// From a storage class name (`FloatStorage`, …).
    pub fn from_storage_name(name: &str) -> Option<Self> {
        Some(match name {
            "DoubleStorage" => Self::F64,
            "FloatStorage" => Self::F32,
            "HalfStorage" => Self::F16,
            "BFloat16Storage" => Self::BF16,
            "LongStorage" => Self::I64,
            "IntStorage" => Self::I32,
            "ShortStorage" => Self::I16,
            "CharStorage" => Self::I8,
            "ByteStorage" => Self::U8,
            "BoolStorage" => Self::Bool,
            _ => return None,
        })
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Self::F64 | Self::I64 => 8,
            Self::F32 | Self::I32 => 4,
            Self::F16 | Self::BF16 | Self::I16 => 2,
            Self::I8 | Self::U8 | Self::Bool => 1,
        }
    }
}

/// A storage a tensor lives in: its key in the file, element type and length.
#[derive(Debug, Clone, PartialEq)]
pub struct StorageRef {
    /// The key under which the file keeps the bytes (`data/<key>` in a zip archive).
    pub key: String,
    /// Element type.
    pub dtype: DType,
    /// Number of elements.
    pub numel: usize,
}

/// A tensor as the pickle describes it: a strided view of a storage.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorRef {
    /// The storage.
    pub storage: StorageRef,
    /// Offset of element 0, in elements.
    pub offset: usize,
    /// Dimensions.
    pub shape: Vec<usize>,
    /// Strides in elements.
    pub stride: Vec<usize>,
}

/// A value of the object graph.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    None,
    Bool(bool),
    Int(i64),
    /// An integer too large for i64, as little-endian two's-complement bytes.
    BigInt(Vec<u8>),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    List(Vec<Value>),
    Tuple(Vec<Value>),
    /// Dict entries in insertion order (keys need not be strings).
    Dict(Vec<(Value, Value)>),
    Set(Vec<Value>),
    /// A class or function named by the pickle.
    Global {
        module: String,
        name: String,
    },
    /// A call the reader does not perform (`callable(*args)`, then `__setstate__(state)`).
    Object {
        callable: Box<Value>,
        args: Box<Value>,
        state: Option<Box<Value>>,
    },
    /// A storage, from a persistent id.
    Storage(StorageRef),
    /// A tensor.
    Tensor(TensorRef),
}

impl Value {
    /// The entry under the string key `key`, if this is a dict (or a dict-like object).
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.entries()?.iter().find(|(k, _)| matches!(k, Value::Str(s) if s == key)).map(|(_, v)| v)
    }

    /// Dict entries, also of an object built from a dict subclass (`OrderedDict`,
    /// Lightning's `AttributeDict`) whose items were set on it.
    pub fn entries(&self) -> Option<&[(Value, Value)]> {
        match self {
            Value::Dict(entries) => Some(entries),
            Value::Object { state: Some(state), .. } => state.entries(),
            _ => None,
        }
    }
}

/// Why a pickle could not be read.
#[derive(Debug, Clone, PartialEq)]
pub struct PickleError {
    /// Byte offset into the pickle where reading failed.
    pub at: usize,
    /// What went wrong.
    pub message: String,
}

impl fmt::Display for PickleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pickle byte {}: {}", self.at, self.message)
    }
}

impl std::error::Error for PickleError {}

/// Turns a persistent id into a value (PyTorch: `('storage', type, key, location, numel)`).
pub type PersistentLoad<'a> = dyn FnMut(Value) -> Result<Value, String> + 'a;

/// PyTorch's persistent ids: `('storage', <torch.XStorage>, key, location, numel[, view])`.
pub fn torch_storage(pid: Value) -> Result<Value, String> {
    let Value::Tuple(items) = pid else { return Err(format!("persistent id {pid:?} is not a tuple")) };
    match items.as_slice() {
        [Value::Str(kind), Value::Global { name, .. }, key, _location, Value::Int(numel), ..] if kind == "storage" => {
            let dtype = DType::from_storage_name(name).ok_or_else(|| format!("unsupported storage type `{name}`"))?;
            let key = match key {
                Value::Str(s) => s.clone(),
                Value::Int(i) => i.to_string(),
                other => return Err(format!("storage key {other:?}")),
            };
            Ok(Value::Storage(StorageRef { key, dtype, numel: usize::try_from(*numel).map_err(|e| e.to_string())? }))
        }
        _ => Err(format!("persistent id {items:?} is not a storage")),
    }
}

/// Read one pickle from the start of `data`; returns the value and the bytes consumed.
pub fn read(data: &[u8], persistent: &mut PersistentLoad<'_>) -> Result<(Value, usize), PickleError> {
    let mut m = Machine { data, pos: 0, stack: Vec::new(), marks: Vec::new(), memo: Vec::new() };
    let value = m.run(persistent)?;
    Ok((value, m.pos))
}

struct Machine<'a> {
    data: &'a [u8],
    pos: usize,
    stack: Vec<Value>,
    marks: Vec<usize>,
    memo: Vec<Option<Value>>,
}

fn usize_of(v: &Value) -> Option<usize> {
    match v {
        Value::Int(i) => usize::try_from(*i).ok(),
        _ => None,
    }
}

fn usizes(v: &Value) -> Option<Vec<usize>> {
    match v {
        Value::Tuple(items) | Value::List(items) => items.iter().map(usize_of).collect(),
        _ => None,
    }
}

/// Apply a call the reader understands; anything else stays an opaque object.
fn call(callable: Value, args: Value) -> Result<Value, String> {
    let (module, name) = match &callable {
        Value::Global { module, name } => (module.as_str(), name.as_str()),
        _ => ("", ""),
    };
    let list = match &args {
        Value::Tuple(items) => items.as_slice(),
        _ => &[],
    };
    match (module, name) {
        ("torch._utils", "_rebuild_tensor_v2" | "_rebuild_tensor") => match list {
            [Value::Storage(storage), offset, size, stride, ..] => {
                let (offset, shape, stride) = (
                    usize_of(offset).ok_or("tensor storage offset")?,
                    usizes(size).ok_or("tensor size")?,
                    usizes(stride).ok_or("tensor stride")?,
                );
                if shape.len() != stride.len() {
                    return Err(format!("tensor size {shape:?} and stride {stride:?} differ in rank"));
                }
                let last = shape.iter().zip(&stride).map(|(n, s)| n.saturating_sub(1) * s).sum::<usize>();
                if shape.iter().all(|&n| n > 0) && offset + last >= storage.numel {
                    return Err(format!(
                        "tensor of size {shape:?} at offset {offset} overruns its storage of {} elements",
                        storage.numel
                    ));
                }
                Ok(Value::Tensor(TensorRef { storage: storage.clone(), offset, shape, stride }))
            }
            _ => Err(format!("{module}.{name} called with {list:?}")),
        },
        ("torch._utils", "_rebuild_parameter" | "_rebuild_parameter_with_state") => {
            list.first().cloned().ok_or_else(|| format!("{name} without data"))
        }
        // `_rebuild_from_type_v2(func, type, args, state)`: the tensor is `func(*args)`.
        ("torch._tensor", "_rebuild_from_type_v2") => match list {
            [func, _, inner, ..] => call(func.clone(), inner.clone()),
            _ => Err(format!("{module}.{name} called with {list:?}")),
        },
        ("collections", "OrderedDict") if list.is_empty() => Ok(Value::Dict(Vec::new())),
        ("builtins" | "__builtin__", "set" | "frozenset") => match list {
            [] => Ok(Value::Set(Vec::new())),
            [Value::List(items) | Value::Tuple(items) | Value::Set(items)] => Ok(Value::Set(items.clone())),
            _ => Ok(Value::Object { callable: Box::new(callable), args: Box::new(args), state: None }),
        },
        _ => Ok(Value::Object { callable: Box::new(callable), args: Box::new(args), state: None }),
    }
}

impl Machine<'_> {
    fn err(&self, at: usize, message: impl Into<String>) -> PickleError {
        PickleError { at, message: message.into() }
    }

    fn take(&mut self, n: usize) -> Result<&[u8], PickleError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.data.len());
        let end = end.ok_or_else(|| self.err(self.pos, format!("truncated: {n} more bytes needed")))?;
        let bytes = &self.data[self.pos..end];
        self.pos = end;
        Ok(bytes)
    }

    fn u8(&mut self) -> Result<u8, PickleError> {
        Ok(self.take(1)?[0])
    }

    fn le<const N: usize>(&mut self) -> Result<[u8; N], PickleError> {
        Ok(self.take(N)?.try_into().expect("N bytes"))
    }

    fn line(&mut self) -> Result<String, PickleError> {
        let start = self.pos;
        let len = self.data[start..].iter().position(|&b| b == b'\n').ok_or_else(|| self.err(start, "no newline"))?;
        let s = String::from_utf8_lossy(&self.data[start..start + len]).into_owned();
        self.pos = start + len + 1;
        Ok(s)
    }

    fn pop(&mut self, at: usize) -> Result<Value, PickleError> {
        if self.marks.last().is_some_and(|&m| m >= self.stack.len()) {
            return Err(self.err(at, "pop across a mark"));
        }
        self.stack.pop().ok_or_else(|| self.err(at, "stack underflow"))
    }

    fn pop_mark(&mut self, at: usize) -> Result<Vec<Value>, PickleError> {
        let mark = self.marks.pop().ok_or_else(|| self.err(at, "no mark"))?;
        Ok(self.stack.split_off(mark))
    }

    fn top(&mut self, at: usize) -> Result<&mut Value, PickleError> {
        let e = self.err(at, "stack underflow");
        self.stack.last_mut().ok_or(e)
    }

    fn memo_put(&mut self, index: usize, at: usize) -> Result<(), PickleError> {
        let v = self.stack.last().cloned().ok_or_else(|| self.err(at, "memoise on an empty stack"))?;
        if self.memo.len() <= index {
            self.memo.resize(index + 1, None);
        }
        self.memo[index] = Some(v);
        Ok(())
    }

    fn memo_get(&mut self, index: usize, at: usize) -> Result<(), PickleError> {
        let v = self.memo.get(index).cloned().flatten().ok_or_else(|| self.err(at, format!("memo {index} unset")))?;
        self.stack.push(v);
        Ok(())
    }

    fn set_items(&mut self, items: Vec<Value>, at: usize) -> Result<(), PickleError> {
        if !items.len().is_multiple_of(2) {
            return Err(self.err(at, "odd number of dict items"));
        }
        let mut pairs = Vec::with_capacity(items.len() / 2);
        let mut it = items.into_iter();
        while let (Some(k), Some(v)) = (it.next(), it.next()) {
            pairs.push((k, v));
        }
        match self.top(at)? {
            Value::Dict(entries) => {
                for (k, v) in pairs {
                    match entries.iter_mut().find(|(key, _)| *key == k) {
                        Some(slot) => slot.1 = v,
                        None => entries.push((k, v)),
                    }
                }
                Ok(())
            }
            // A dict subclass the reader does not know: keep its items as its state.
            Value::Object { state, .. } => {
                let entries = state.get_or_insert_with(|| Box::new(Value::Dict(Vec::new())));
                if let Value::Dict(e) = entries.as_mut() {
                    e.extend(pairs);
                }
                Ok(())
            }
            other => Err(PickleError { at, message: format!("SETITEMS on {}", kind(other)) }),
        }
    }

    fn append(&mut self, items: Vec<Value>, at: usize) -> Result<(), PickleError> {
        match self.top(at)? {
            Value::List(list) | Value::Set(list) => {
                list.extend(items);
                Ok(())
            }
            Value::Object { .. } => Ok(()), // a list subclass we do not model
            other => Err(PickleError { at, message: format!("APPENDS on {}", kind(other)) }),
        }
    }

    fn run(&mut self, persistent: &mut PersistentLoad<'_>) -> Result<Value, PickleError> {
        loop {
            let at = self.pos;
            let op = self.u8()?;
            match op {
                0x80 => {
                    let proto = self.u8()?;
                    if proto > 5 {
                        return Err(self.err(at, format!("pickle protocol {proto} is newer than 5")));
                    }
                }
                0x95 => {
                    self.le::<8>()?; // FRAME: a length hint
                }
                b'.' => return self.pop(at),
                b'(' => self.marks.push(self.stack.len()),
                b'0' => {
                    self.pop(at)?;
                }
                b'1' => {
                    self.pop_mark(at)?;
                }
                b'2' => {
                    let v = self.top(at)?.clone();
                    self.stack.push(v);
                }
                b'N' => self.stack.push(Value::None),
                0x88 => self.stack.push(Value::Bool(true)),
                0x89 => self.stack.push(Value::Bool(false)),
                b'J' => {
                    let v = i32::from_le_bytes(self.le()?);
                    self.stack.push(Value::Int(v.into()));
                }
                b'K' => {
                    let v = self.u8()?;
                    self.stack.push(Value::Int(v.into()));
                }
                b'M' => {
                    let v = u16::from_le_bytes(self.le()?);
                    self.stack.push(Value::Int(v.into()));
                }
                0x8a | 0x8b => {
                    let n = if op == 0x8a { self.u8()? as usize } else { u32::from_le_bytes(self.le()?) as usize };
                    let bytes = self.take(n)?.to_vec();
                    self.stack.push(long(bytes));
                }
                b'I' | b'L' => {
                    let line = self.line()?;
                    let text = line.trim_end_matches('L');
                    let v = match text {
                        "00" => Value::Bool(false),
                        "01" => Value::Bool(true),
                        t => Value::Int(t.parse().map_err(|_| self.err(at, format!("integer {t:?}")))?),
                    };
                    self.stack.push(v);
                }
                b'G' => {
                    let v = f64::from_be_bytes(self.le()?);
                    self.stack.push(Value::Float(v));
                }
                b'F' => {
                    let line = self.line()?;
                    let v = line.parse().map_err(|_| self.err(at, format!("float {line:?}")))?;
                    self.stack.push(Value::Float(v));
                }
                b'X' | 0x8c | 0x8d => {
                    let n = match op {
                        b'X' => u32::from_le_bytes(self.le()?) as usize,
                        0x8c => self.u8()? as usize,
                        _ => u64::from_le_bytes(self.le()?) as usize,
                    };
                    let bytes = self.take(n)?.to_vec();
                    let s = String::from_utf8(bytes).map_err(|e| self.err(at, e.to_string()))?;
                    self.stack.push(Value::Str(s));
                }
                b'V' => {
                    let s = self.line()?;
                    self.stack.push(Value::Str(s));
                }
                b'S' => {
                    let s = self.line()?;
                    self.stack.push(Value::Str(s.trim_matches(|c| c == '\'' || c == '"').to_string()));
                }
                b'U' | b'T' => {
                    let n = if op == b'U' { self.u8()? as usize } else { u32::from_le_bytes(self.le()?) as usize };
                    let s = String::from_utf8_lossy(self.take(n)?).into_owned();
                    self.stack.push(Value::Str(s));
                }
                b'C' | b'B' | 0x8e | 0x96 => {
                    let n = match op {
                        b'C' => self.u8()? as usize,
                        b'B' => u32::from_le_bytes(self.le()?) as usize,
                        _ => u64::from_le_bytes(self.le()?) as usize,
                    };
                    let bytes = self.take(n)?.to_vec();
                    self.stack.push(Value::Bytes(bytes));
                }
                b'}' => self.stack.push(Value::Dict(Vec::new())),
                b']' => self.stack.push(Value::List(Vec::new())),
                b')' => self.stack.push(Value::Tuple(Vec::new())),
                0x8f => self.stack.push(Value::Set(Vec::new())),
                b'd' => {
                    let items = self.pop_mark(at)?;
                    self.stack.push(Value::Dict(Vec::new()));
                    self.set_items(items, at)?;
                }
                b'l' => {
                    let items = self.pop_mark(at)?;
                    self.stack.push(Value::List(items));
                }
                b't' => {
                    let items = self.pop_mark(at)?;
                    self.stack.push(Value::Tuple(items));
                }
                0x85..=0x87 => {
                    let n = (op - 0x84) as usize;
                    if self.stack.len() < n || self.marks.last().is_some_and(|&m| m > self.stack.len() - n) {
                        return Err(self.err(at, "stack underflow building a tuple"));
                    }
                    let items = self.stack.split_off(self.stack.len() - n);
                    self.stack.push(Value::Tuple(items));
                }
                0x91 => {
                    let items = self.pop_mark(at)?;
                    self.stack.push(Value::Set(items));
                }
                b's' => {
                    let v = self.pop(at)?;
                    let k = self.pop(at)?;
                    self.set_items(vec![k, v], at)?;
                }
                b'u' => {
                    let items = self.pop_mark(at)?;
                    self.set_items(items, at)?;
                }
                b'a' => {
                    let v = self.pop(at)?;
                    self.append(vec![v], at)?;
                }
                b'e' | 0x90 => {
                    let items = self.pop_mark(at)?;
                    self.append(items, at)?;
                }
                b'q' => {
                    let i = self.u8()? as usize;
                    self.memo_put(i, at)?;
                }
                b'r' => {
                    let i = u32::from_le_bytes(self.le()?) as usize;
                    self.memo_put(i, at)?;
                }
                b'p' => {
                    let line = self.line()?;
                    let i = line.parse().map_err(|_| self.err(at, format!("memo index {line:?}")))?;
                    self.memo_put(i, at)?;
                }
                0x94 => {
                    let i = self.memo.len();
                    self.memo_put(i, at)?;
                }
                b'h' => {
                    let i = self.u8()? as usize;
                    self.memo_get(i, at)?;
                }
                b'j' => {
                    let i = u32::from_le_bytes(self.le()?) as usize;
                    self.memo_get(i, at)?;
                }
                b'g' => {
                    let line = self.line()?;
                    let i = line.parse().map_err(|_| self.err(at, format!("memo index {line:?}")))?;
                    self.memo_get(i, at)?;
                }
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    self.stack.push(Value::Global { module, name });
                }
                0x93 => {
                    let name = self.pop(at)?;
                    let module = self.pop(at)?;
                    match (module, name) {
                        (Value::Str(module), Value::Str(name)) => self.stack.push(Value::Global { module, name }),
                        _ => return Err(self.err(at, "STACK_GLOBAL needs two strings")),
                    }
                }
                b'R' | 0x81 => {
                    let args = self.pop(at)?;
                    let callable = self.pop(at)?;
                    let v = call(callable, args).map_err(|m| self.err(at, m))?;
                    self.stack.push(v);
                }
                0x92 => {
                    let _kwargs = self.pop(at)?;
                    let args = self.pop(at)?;
                    let callable = self.pop(at)?;
                    let v = call(callable, args).map_err(|m| self.err(at, m))?;
                    self.stack.push(v);
                }
                b'b' => {
                    let state = self.pop(at)?;
                    // OrderedDict's `_metadata` attribute and the like are not needed; an
                    // object keeps its state, unless it is a dict subclass whose items are set.
                    if let Value::Object { state: slot, .. } = self.top(at)?
                        && slot.as_ref().is_none_or(|existing| existing.entries().is_none())
                    {
                        *slot = Some(Box::new(state));
                    }
                }
                b'Q' => {
                    let pid = self.pop(at)?;
                    let v = persistent(pid).map_err(|m| self.err(at, m))?;
                    self.stack.push(v);
                }
                b'P' => {
                    let pid = Value::Str(self.line()?);
                    let v = persistent(pid).map_err(|m| self.err(at, m))?;
                    self.stack.push(v);
                }
                other => return Err(self.err(at, format!("unknown opcode 0x{other:02x}"))),
            }
        }
    }
}

/// A LONG1/LONG4 payload: little-endian two's complement.
fn long(bytes: Vec<u8>) -> Value {
    if bytes.len() <= 8 {
        let negative = bytes.last().is_some_and(|&b| b & 0x80 != 0);
        let mut full = [if negative { 0xff } else { 0 }; 8];
        full[..bytes.len()].copy_from_slice(&bytes);
        Value::Int(i64::from_le_bytes(full))
    } else {
        Value::BigInt(bytes)
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::None => "None",
        Value::Bool(_) => "a bool",
        Value::Int(_) | Value::BigInt(_) => "an int",
        Value::Float(_) => "a float",
        Value::Str(_) => "a string",
        Value::Bytes(_) => "bytes",
        Value::List(_) => "a list",
        Value::Tuple(_) => "a tuple",
        Value::Dict(_) => "a dict",
        Value::Set(_) => "a set",
        Value::Global { .. } => "a global",
        Value::Object { .. } => "an object",
        Value::Storage(_) => "a storage",
        Value::Tensor(_) => "a tensor",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_pid(v: Value) -> Result<Value, String> {
        Err(format!("unexpected persistent id {v:?}"))
    }

    /// `pickle.dumps({'a': [1, -2, 3.5], 'b': (True, None, 'x'), 'big': 2**70}, protocol=2)`.
    #[test]
    fn reads_python_protocol_2() {
        let bytes = b"\x80\x02}q\x00(X\x01\x00\x00\x00aq\x01]q\x02(K\x01J\xfe\xff\xff\xffG@\x0c\x00\x00\x00\x00\x00\x00eX\x01\x00\x00\x00bq\x03\x88NX\x01\x00\x00\x00xq\x04\x87q\x05X\x03\x00\x00\x00bigq\x06\x8a\t\x00\x00\x00\x00\x00\x00\x00\x00@u.";
        let (v, used) = read(bytes, &mut no_pid).unwrap();
        assert_eq!(used, bytes.len());
        assert_eq!(v.get("a"), Some(&Value::List(vec![Value::Int(1), Value::Int(-2), Value::Float(3.5)])));
        assert_eq!(v.get("b"), Some(&Value::Tuple(vec![Value::Bool(true), Value::None, Value::Str("x".into())])));
        assert_eq!(v.get("big"), Some(&Value::BigInt(vec![0, 0, 0, 0, 0, 0, 0, 0, 0x40])));
    }

    /// `pickle.dumps(collections.OrderedDict(k=[7]), protocol=4)` (FRAME, MEMOIZE,
    /// STACK_GLOBAL, SHORT_BINUNICODE, REDUCE).
    #[test]
    fn reads_python_protocol_4() {
        let bytes = b"\x80\x04\x95,\x00\x00\x00\x00\x00\x00\x00\x8c\x0bcollections\x94\x8c\x0bOrderedDict\x94\x93\x94)R\x94\x8c\x01k\x94]\x94K\x07as.";
        let (v, _) = read(bytes, &mut no_pid).unwrap();
        assert_eq!(v, Value::Dict(vec![(Value::Str("k".into()), Value::List(vec![Value::Int(7)]))]));
    }

    #[test]
    fn truncation_and_unknown_opcodes_are_errors_with_a_position() {
        let err = read(b"\x80\x02}q\x00(X\x05\x00\x00\x00ab", &mut no_pid).unwrap_err();
        assert!(err.message.contains("truncated") && err.at == 11, "{err}");
        let err = read(b"\x80\x02\xff", &mut no_pid).unwrap_err();
        assert_eq!((err.at, err.message.as_str()), (2, "unknown opcode 0xff"));
    }

    #[test]
    fn a_tensor_that_overruns_its_storage_is_rejected() {
        let storage = Value::Storage(StorageRef { key: "0".into(), dtype: DType::F32, numel: 5 });
        let size = Value::Tuple(vec![Value::Int(2), Value::Int(3)]);
        let stride = Value::Tuple(vec![Value::Int(3), Value::Int(1)]);
        let args = Value::Tuple(vec![storage, Value::Int(0), size, stride, Value::Bool(false), Value::None]);
        let f = Value::Global { module: "torch._utils".into(), name: "_rebuild_tensor_v2".into() };
        let err = call(f, args).unwrap_err();
        assert!(err.contains("overruns its storage of 5"), "{err}");
    }
}
