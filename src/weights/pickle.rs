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
//! Book: "Checkpoints and weight loading". Reference: not a reference component; the format is
//! Python's `pickletools` documentation and
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
    let Value::Tuple(items) = pid else { return Err(format!("persistent id {} is not a tuple", brief(&pid))) };
    match items.as_slice() {
        [Value::Str(kind), Value::Global { name, .. }, key, _location, Value::Int(numel), ..] if kind == "storage" => {
            let dtype = DType::from_storage_name(name).ok_or_else(|| format!("unsupported storage type `{name}`"))?;
            let key = match key {
                Value::Str(s) => s.clone(),
                Value::Int(i) => i.to_string(),
                other => return Err(format!("storage key {}", brief(other))),
            };
            Ok(Value::Storage(StorageRef { key, dtype, numel: usize::try_from(*numel).map_err(|e| e.to_string())? }))
        }
        _ => Err(format!("persistent id {} is not a storage", brief(&items))),
    }
}

/// The deepest nesting of containers a pickle may build. PyTorch checkpoints nest a handful of
/// levels (a Lightning checkpoint's hyper-parameters perhaps a dozen); the bound keeps the
/// recursive drop, clone and comparison of a hostile file's values off the end of the stack.
pub const MAX_DEPTH: usize = 200;

/// How much copying a pickle's memo and `DUP` may do, per byte of pickle, in [`Value::cost`]
/// units (about a byte each): a real pickle memoises each container while it is still empty
/// and each string once, so it copies a few times its own size; a hostile one that fetches a
/// list and appends it to itself doubles its size per few bytes.
pub const EXPANSION_PER_BYTE: usize = 64;

/// Copying every pickle may do regardless of its size.
pub const EXPANSION_FLOOR: usize = 64 << 20;

/// Read one pickle from the start of `data`; returns the value and the bytes consumed.
/// Never panics: malformed, truncated or hostile input (memo misuse, nesting deeper than
/// [`MAX_DEPTH`], copying beyond the expansion budget) is an error with a byte position.
pub fn read(data: &[u8], persistent: &mut PersistentLoad<'_>) -> Result<(Value, usize), PickleError> {
    let budget = data.len().saturating_mul(EXPANSION_PER_BYTE).saturating_add(EXPANSION_FLOOR);
    let mut m =
        Machine { data, pos: 0, stack: Vec::new(), marks: Vec::new(), memo: std::collections::HashMap::new(), budget };
    let value = m.run(persistent)?;
    Ok((value, m.pos))
}

/// A value on the machine's stack or in its memo, with its nesting depth (1 for a scalar).
type Slot = (Value, usize);

struct Machine<'a> {
    data: &'a [u8],
    pos: usize,
    stack: Vec<Slot>,
    marks: Vec<usize>,
    memo: std::collections::HashMap<usize, Slot>,
    /// Copying left (see [`EXPANSION_PER_BYTE`]).
    budget: usize,
}

impl Value {
    /// Roughly the bytes a copy of this value costs: 64 per node plus string and byte payloads.
    /// Recursion is bounded by the depth the reader allows.
    pub fn cost(&self) -> usize {
        const NODE: usize = 64;
        let many = |items: &[Value]| items.iter().fold(NODE, |a, v| a.saturating_add(v.cost()));
        match self {
            Value::Str(s) => NODE + s.len(),
            Value::Bytes(b) | Value::BigInt(b) => NODE + b.len(),
            Value::List(items) | Value::Tuple(items) | Value::Set(items) => many(items),
            Value::Dict(entries) => {
                entries.iter().fold(NODE, |a, (k, v)| a.saturating_add(k.cost()).saturating_add(v.cost()))
            }
            Value::Global { module, name } => NODE + module.len() + name.len(),
            Value::Object { callable, args, state } => NODE
                .saturating_add(callable.cost())
                .saturating_add(args.cost())
                .saturating_add(state.as_ref().map_or(0, |s| s.cost())),
            Value::Storage(s) => NODE + s.key.len(),
            Value::Tensor(t) => NODE + t.storage.key.len() + 8 * (t.shape.len() + t.stride.len()),
            _ => NODE,
        }
    }
}

/// The nesting depth of `v`, counting no further than `limit + 1` levels.
fn depth(v: &Value, limit: usize) -> usize {
    if limit == 0 {
        return 1;
    }
    let deepest = |items: &mut dyn Iterator<Item = &Value>| items.map(|x| depth(x, limit - 1)).max().unwrap_or(0);
    1 + match v {
        Value::List(items) | Value::Tuple(items) | Value::Set(items) => deepest(&mut items.iter()),
        Value::Dict(entries) => deepest(&mut entries.iter().flat_map(|(k, v)| [k, v])),
        Value::Object { callable, args, state } => {
            deepest(&mut [callable.as_ref(), args.as_ref()].into_iter().chain(state.as_deref()))
        }
        _ => 0,
    }
}

/// `v`'s `Debug` text, cut to a length an error message can carry.
fn brief(v: &impl fmt::Debug) -> String {
    const MAX: usize = 200;
    let text = format!("{v:?}");
    match text.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
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

/// The last storage element a view of `shape` and `stride` at `offset` touches, or `None`
/// when that does not fit in `usize`.
pub fn last_element(offset: usize, shape: &[usize], stride: &[usize]) -> Option<usize> {
    shape
        .iter()
        .zip(stride)
        .try_fold(offset, |acc, (&n, &s)| n.saturating_sub(1).checked_mul(s).and_then(|x| acc.checked_add(x)))
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
                if shape.iter().try_fold(1usize, |a, &n| a.checked_mul(n)).is_none() {
                    return Err(format!("tensor size {shape:?} has more elements than fit in memory"));
                }
                let last = last_element(offset, &shape, &stride);
                if shape.iter().all(|&n| n > 0) && last.is_none_or(|last| last >= storage.numel) {
                    return Err(format!(
                        "tensor of size {shape:?} at offset {offset} overruns its storage of {} elements",
                        storage.numel
                    ));
                }
                Ok(Value::Tensor(TensorRef { storage: storage.clone(), offset, shape, stride }))
            }
            _ => Err(format!("{module}.{name} called with {}", brief(&list))),
        },
        ("torch._utils", "_rebuild_parameter" | "_rebuild_parameter_with_state") => {
            list.first().cloned().ok_or_else(|| format!("{name} without data"))
        }
        // `_rebuild_from_type_v2(func, type, args, state)`: the tensor is `func(*args)`. A
        // nested `_rebuild_from_type_v2` as `func` is not followed (PyTorch never writes one).
        ("torch._tensor", "_rebuild_from_type_v2") => match list {
            [func, _, inner, ..]
                if !matches!(func, Value::Global { module: m, name: n }
                    if m == "torch._tensor" && n == "_rebuild_from_type_v2") =>
            {
                call(func.clone(), inner.clone())
            }
            _ => Err(format!("{module}.{name} called with {}", brief(&list))),
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
        let [b] = self.le::<1>()?;
        Ok(b)
    }

    fn le<const N: usize>(&mut self) -> Result<[u8; N], PickleError> {
        let at = self.pos;
        let bytes = self.take(N)?;
        bytes.try_into().map_err(|_| PickleError { at, message: format!("truncated: {N} bytes needed") })
    }

    /// A length field, which must fit in what is left of the pickle.
    fn length(&mut self, n: u64) -> Result<usize, PickleError> {
        usize::try_from(n).map_err(|_| self.err(self.pos, format!("truncated: {n} more bytes needed")))
    }

    fn line(&mut self) -> Result<String, PickleError> {
        let start = self.pos;
        let rest = self.data.get(start..).unwrap_or_default();
        let len = rest.iter().position(|&b| b == b'\n').ok_or_else(|| self.err(start, "truncated: no newline"))?;
        let s = String::from_utf8_lossy(&rest[..len]).into_owned();
        self.pos = start + len + 1;
        Ok(s)
    }

    /// Charge the copy of a value of `cost` to the expansion budget.
    fn spend(&mut self, cost: usize, at: usize) -> Result<(), PickleError> {
        self.budget = self.budget.checked_sub(cost).ok_or_else(|| {
            self.err(at, "the pickle copies values beyond its expansion budget (a memo reference bomb?)")
        })?;
        Ok(())
    }

    fn push(&mut self, v: Value, depth: usize, at: usize) -> Result<(), PickleError> {
        if depth > MAX_DEPTH {
            return Err(self.err(at, format!("values nest deeper than {MAX_DEPTH} levels")));
        }
        self.stack.push((v, depth));
        Ok(())
    }

    fn scalar(&mut self, v: Value) {
        self.stack.push((v, 1));
    }

    fn pop(&mut self, at: usize) -> Result<Slot, PickleError> {
        if self.marks.last().is_some_and(|&m| m >= self.stack.len()) {
            return Err(self.err(at, "pop across a mark"));
        }
        self.stack.pop().ok_or_else(|| self.err(at, "stack underflow"))
    }

    fn pop_mark(&mut self, at: usize) -> Result<(Vec<Value>, usize), PickleError> {
        let mark = self.marks.pop().ok_or_else(|| self.err(at, "no mark"))?;
        if mark > self.stack.len() {
            return Err(self.err(at, "stack underflow below a mark"));
        }
        let items = self.stack.split_off(mark);
        let depth = items.iter().map(|(_, d)| *d).max().unwrap_or(0);
        Ok((items.into_iter().map(|(v, _)| v).collect(), depth))
    }

    fn top(&mut self, at: usize) -> Result<&mut Slot, PickleError> {
        if self.marks.last().is_some_and(|&m| m >= self.stack.len()) {
            return Err(self.err(at, "no value above the mark"));
        }
        let e = self.err(at, "stack underflow");
        self.stack.last_mut().ok_or(e)
    }

    /// Nest items of depth `depth` into the top value.
    fn deepen_top(&mut self, depth: usize, at: usize) -> Result<(), PickleError> {
        let top = self.top(at)?;
        top.1 = top.1.max(depth + 1);
        if top.1 > MAX_DEPTH {
            return Err(self.err(at, format!("values nest deeper than {MAX_DEPTH} levels")));
        }
        Ok(())
    }

    fn memo_put(&mut self, index: usize, at: usize) -> Result<(), PickleError> {
        let (v, d) = self.top(at).map_err(|_| PickleError { at, message: "memoise on an empty stack".into() })?;
        let cost = v.cost();
        let slot = (v.clone(), *d);
        self.spend(cost, at)?;
        self.memo.insert(index, slot);
        Ok(())
    }

    fn memo_get(&mut self, index: usize, at: usize) -> Result<(), PickleError> {
        let (v, d) = self.memo.get(&index).ok_or_else(|| self.err(at, format!("memo {index} unset")))?;
        let cost = v.cost();
        let slot = (v.clone(), *d);
        self.spend(cost, at)?;
        self.stack.push(slot);
        Ok(())
    }

    fn set_items(&mut self, items: Vec<Value>, depth: usize, at: usize) -> Result<(), PickleError> {
        if !items.len().is_multiple_of(2) {
            return Err(self.err(at, "odd number of dict items"));
        }
        self.deepen_top(depth, at)?;
        let mut pairs = Vec::with_capacity(items.len() / 2);
        let mut it = items.into_iter();
        while let (Some(k), Some(v)) = (it.next(), it.next()) {
            pairs.push((k, v));
        }
        match &mut self.top(at)?.0 {
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

    fn append(&mut self, items: Vec<Value>, depth: usize, at: usize) -> Result<(), PickleError> {
        self.deepen_top(depth, at)?;
        match &mut self.top(at)?.0 {
            Value::List(list) | Value::Set(list) => {
                list.extend(items);
                Ok(())
            }
            Value::Object { .. } => Ok(()), // a list subclass we do not model
            other => Err(PickleError { at, message: format!("APPENDS on {}", kind(other)) }),
        }
    }

    fn persistent(&mut self, pid: Value, persistent: &mut PersistentLoad<'_>, at: usize) -> Result<(), PickleError> {
        let v = persistent(pid).map_err(|m| self.err(at, m))?;
        let d = depth(&v, MAX_DEPTH);
        self.push(v, d, at)
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
                b'.' => return Ok(self.pop(at)?.0),
                b'(' => self.marks.push(self.stack.len()),
                b'0' => {
                    self.pop(at)?;
                }
                b'1' => {
                    self.pop_mark(at)?;
                }
                b'2' => {
                    let (v, d) = self.top(at)?;
                    let (v, d) = (v.clone(), *d);
                    self.spend(v.cost(), at)?;
                    self.stack.push((v, d));
                }
                b'N' => self.scalar(Value::None),
                0x88 => self.scalar(Value::Bool(true)),
                0x89 => self.scalar(Value::Bool(false)),
                b'J' => {
                    let v = i32::from_le_bytes(self.le()?);
                    self.scalar(Value::Int(v.into()));
                }
                b'K' => {
                    let v = self.u8()?;
                    self.scalar(Value::Int(v.into()));
                }
                b'M' => {
                    let v = u16::from_le_bytes(self.le()?);
                    self.scalar(Value::Int(v.into()));
                }
                0x8a | 0x8b => {
                    let n = if op == 0x8a { self.u8()? as u64 } else { u32::from_le_bytes(self.le()?) as u64 };
                    let n = self.length(n)?;
                    let bytes = self.take(n)?.to_vec();
                    self.scalar(long(bytes));
                }
                b'I' | b'L' => {
                    let line = self.line()?;
                    let text = line.trim_end_matches('L');
                    let v = match text {
                        "00" => Value::Bool(false),
                        "01" => Value::Bool(true),
                        t => Value::Int(t.parse().map_err(|_| self.err(at, format!("integer {}", brief(&t))))?),
                    };
                    self.scalar(v);
                }
                b'G' => {
                    let v = f64::from_be_bytes(self.le()?);
                    self.scalar(Value::Float(v));
                }
                b'F' => {
                    let line = self.line()?;
                    let v = line.parse().map_err(|_| self.err(at, format!("float {}", brief(&line))))?;
                    self.scalar(Value::Float(v));
                }
                b'X' | 0x8c | 0x8d => {
                    let n = match op {
                        b'X' => u32::from_le_bytes(self.le()?) as u64,
                        0x8c => self.u8()? as u64,
                        _ => u64::from_le_bytes(self.le()?),
                    };
                    let n = self.length(n)?;
                    let bytes = self.take(n)?.to_vec();
                    let s = String::from_utf8(bytes).map_err(|e| self.err(at, e.to_string()))?;
                    self.scalar(Value::Str(s));
                }
                b'V' => {
                    let s = self.line()?;
                    self.scalar(Value::Str(s));
                }
                b'S' => {
                    let s = self.line()?;
                    self.scalar(Value::Str(s.trim_matches(|c| c == '\'' || c == '"').to_string()));
                }
                b'U' | b'T' => {
                    let n = if op == b'U' { self.u8()? as u64 } else { u32::from_le_bytes(self.le()?) as u64 };
                    let n = self.length(n)?;
                    let s = String::from_utf8_lossy(self.take(n)?).into_owned();
                    self.scalar(Value::Str(s));
                }
                b'C' | b'B' | 0x8e | 0x96 => {
                    let n = match op {
                        b'C' => self.u8()? as u64,
                        b'B' => u32::from_le_bytes(self.le()?) as u64,
                        _ => u64::from_le_bytes(self.le()?),
                    };
                    let n = self.length(n)?;
                    let bytes = self.take(n)?.to_vec();
                    self.scalar(Value::Bytes(bytes));
                }
                b'}' => self.scalar(Value::Dict(Vec::new())),
                b']' => self.scalar(Value::List(Vec::new())),
                b')' => self.scalar(Value::Tuple(Vec::new())),
                0x8f => self.scalar(Value::Set(Vec::new())),
                b'd' => {
                    let (items, d) = self.pop_mark(at)?;
                    self.scalar(Value::Dict(Vec::new()));
                    self.set_items(items, d, at)?;
                }
                b'l' | b't' | 0x91 => {
                    let (items, d) = self.pop_mark(at)?;
                    let v = match op {
                        b'l' => Value::List(items),
                        b't' => Value::Tuple(items),
                        _ => Value::Set(items),
                    };
                    self.push(v, d + 1, at)?;
                }
                0x85..=0x87 => {
                    let n = (op - 0x84) as usize;
                    if self.stack.len() < n || self.marks.last().is_some_and(|&m| m > self.stack.len() - n) {
                        return Err(self.err(at, "stack underflow building a tuple"));
                    }
                    let items = self.stack.split_off(self.stack.len() - n);
                    let d = items.iter().map(|(_, d)| *d).max().unwrap_or(0);
                    self.push(Value::Tuple(items.into_iter().map(|(v, _)| v).collect()), d + 1, at)?;
                }
                b's' => {
                    let (v, dv) = self.pop(at)?;
                    let (k, dk) = self.pop(at)?;
                    self.set_items(vec![k, v], dv.max(dk), at)?;
                }
                b'u' => {
                    let (items, d) = self.pop_mark(at)?;
                    self.set_items(items, d, at)?;
                }
                b'a' => {
                    let (v, d) = self.pop(at)?;
                    self.append(vec![v], d, at)?;
                }
                b'e' | 0x90 => {
                    let (items, d) = self.pop_mark(at)?;
                    self.append(items, d, at)?;
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
                    let i = line.parse().map_err(|_| self.err(at, format!("memo index {}", brief(&line))))?;
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
                    let i = line.parse().map_err(|_| self.err(at, format!("memo index {}", brief(&line))))?;
                    self.memo_get(i, at)?;
                }
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    self.scalar(Value::Global { module, name });
                }
                0x93 => {
                    let (name, _) = self.pop(at)?;
                    let (module, _) = self.pop(at)?;
                    match (module, name) {
                        (Value::Str(module), Value::Str(name)) => self.scalar(Value::Global { module, name }),
                        _ => return Err(self.err(at, "STACK_GLOBAL needs two strings")),
                    }
                }
                b'R' | 0x81 => {
                    let (args, da) = self.pop(at)?;
                    let (callable, dc) = self.pop(at)?;
                    let v = call(callable, args).map_err(|m| self.err(at, m))?;
                    self.push(v, da.max(dc) + 1, at)?;
                }
                0x92 => {
                    let _kwargs = self.pop(at)?;
                    let (args, da) = self.pop(at)?;
                    let (callable, dc) = self.pop(at)?;
                    let v = call(callable, args).map_err(|m| self.err(at, m))?;
                    self.push(v, da.max(dc) + 1, at)?;
                }
                b'b' => {
                    let (state, d) = self.pop(at)?;
                    // OrderedDict's `_metadata` attribute and the like are not needed; an
                    // object keeps its state, unless it is a dict subclass whose items are set.
                    if let Value::Object { state: slot, .. } = &self.top(at)?.0
                        && slot.as_ref().is_none_or(|existing| existing.entries().is_none())
                    {
                        self.deepen_top(d + 1, at)?;
                        if let Value::Object { state: slot, .. } = &mut self.top(at)?.0 {
                            *slot = Some(Box::new(state));
                        }
                    }
                }
                b'Q' => {
                    let (pid, _) = self.pop(at)?;
                    self.persistent(pid, persistent, at)?;
                }
                b'P' => {
                    let pid = Value::Str(self.line()?);
                    self.persistent(pid, persistent, at)?;
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

    /// A huge memo index is a sparse entry, not an allocation of billions of slots; an unset
    /// one is an error.
    #[test]
    fn memo_indices_are_not_allocations() {
        let (v, _) = read(b"\x80\x02]r\xff\xff\xff\xffj\xff\xff\xff\xff\x86.", &mut no_pid).unwrap();
        assert_eq!(v, Value::Tuple(vec![Value::List(vec![]), Value::List(vec![])]));
        let err = read(b"\x80\x02j\x00\x00\x00\x10.", &mut no_pid).unwrap_err();
        assert!(err.message.contains("memo 268435456 unset"), "{err}");
        let err = read(b"\x80\x02p99999999999999999999999\n.", &mut no_pid).unwrap_err();
        assert!(err.message.contains("memo index"), "{err}");
    }

    /// Nesting deeper than MAX_DEPTH is an error (the value's drop would otherwise overflow the
    /// stack); so is a pickle that doubles a value through the memo until memory runs out.
    #[test]
    fn deep_nesting_and_memo_bombs_are_errors() {
        let mut deep = b"\x80\x02".to_vec();
        deep.extend(std::iter::repeat_n(b']', 100_000));
        deep.extend(std::iter::repeat_n(b'a', 100_000));
        deep.push(b'.');
        let err = read(&deep, &mut no_pid).unwrap_err();
        assert!(err.message.contains("nest deeper"), "{err}");
        let mut marks = b"\x80\x02".to_vec();
        marks.extend(std::iter::repeat_n(b'(', 100_000));
        marks.extend(std::iter::repeat_n(b't', 100_000));
        marks.push(b'.');
        assert!(read(&marks, &mut no_pid).unwrap_err().message.contains("nest deeper"));
        // T₀ = (); Tₖ₊₁ = (Tₖ, Tₖ): 2¹⁵⁰ nodes from 900 bytes.
        let mut bomb = b"\x80\x02)q\x000".to_vec();
        for _ in 0..150 {
            bomb.extend_from_slice(b"h\x00h\x00\x86q\x000");
        }
        bomb.extend_from_slice(b"h\x00.");
        let err = read(&bomb, &mut no_pid).unwrap_err();
        assert!(err.message.contains("expansion budget"), "{err}");
    }

    /// Stack and mark misuse, and lengths past the end, are errors with a position.
    #[test]
    fn stack_misuse_and_huge_lengths_are_errors() {
        for (bytes, words) in [
            (&b"\x80\x02."[..], "stack underflow"),
            (b"\x80\x02(.", "pop across a mark"),
            (b"\x80\x02N(e", "APPENDS"),
            (b"\x80\x02Ne", "no mark"),
            (b"\x80\x02(s", "pop across a mark"),
            (b"\x80\x02K\x01(u", "SETITEMS"),
            (b"\x80\x02\x8d\xff\xff\xff\xff\xff\xff\xff\xff", "truncated"),
            (b"\x80\x02\x8b\xff\xff\xff\x7f", "truncated"),
            (b"\x80\x02\x93", "stack underflow"),
            (b"\x80\x02(\x86", "stack underflow"),
        ] {
            let err = read(bytes, &mut no_pid).unwrap_err();
            assert!(err.message.contains(words), "{bytes:?}: {err}");
        }
    }

    #[test]
    fn a_tensor_that_overruns_its_storage_is_rejected() {
        let storage = Value::Storage(StorageRef { key: "0".into(), dtype: DType::F32, numel: 5 });
        let size = Value::Tuple(vec![Value::Int(2), Value::Int(3)]);
        let stride = Value::Tuple(vec![Value::Int(3), Value::Int(1)]);
        let args = Value::Tuple(vec![storage, Value::Int(0), size, stride, Value::Bool(false), Value::None]);
        let f = Value::Global { module: "torch._utils".into(), name: "_rebuild_tensor_v2".into() };
        let err = call(f.clone(), args).unwrap_err();
        assert!(err.contains("overruns its storage of 5"), "{err}");
        // Sizes and strides whose products overflow are refused, not wrapped.
        let storage = Value::Storage(StorageRef { key: "0".into(), dtype: DType::F32, numel: 5 });
        let huge = Value::Tuple(vec![Value::Int(i64::MAX), Value::Int(i64::MAX)]);
        let args = Value::Tuple(vec![storage.clone(), Value::Int(0), huge.clone(), huge.clone()]);
        assert!(call(f.clone(), args).unwrap_err().contains("more elements than fit"));
        let size = Value::Tuple(vec![Value::Int(2)]);
        let stride = Value::Tuple(vec![Value::Int(i64::MAX)]);
        let args = Value::Tuple(vec![storage, Value::Int(i64::MAX), size, stride]);
        assert!(call(f, args).unwrap_err().contains("overruns"));
    }
}
