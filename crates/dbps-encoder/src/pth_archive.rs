//! Checks a `torch.save` archive against itself before its tensors are read.
//!
//! burn-store's PyTorch reader fills a tensor whose storage is short, or missing from the
//! archive, with zeros, and sizes its buffer by the shape the pickle declares. A damaged
//! `.pth` would then load as zero weights, and a few bytes of pickle could ask for gigabytes.
//! So dbps reads the archive's pickle first with a small pickle machine of its own that
//! executes nothing: it only follows the values `torch.save` writes (strings, integers,
//! tuples, dicts, globals by name, the storages' persistent ids and `_rebuild_tensor_v2`
//! calls), and checks every tensor against the archive: its storage entry exists, holds the
//! bytes its persistent id declares, and the tensor's extent lies inside it.
//!
//! Files that are not zip archives (PyTorch's legacy format, before 1.6 in 2020, and its tar
//! format) are refused: burn-store sizes its buffers by their pickles' declared lengths before
//! reading them (fuzzing found 2 GB allocations from a few bytes), and no torchvision weights
//! have been published in them since 2020.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io::{Read, Seek};
use std::rc::Rc;

/// The most bytes a `data.pkl` may hold: a ResNet-50 state dict's is about 30 KB.
const MAX_PICKLE_BYTES: u64 = 64 << 20;
/// How many values the checker visits when it walks the unpickled state dict (a cap on
/// self-referencing or massively shared structures).
const MAX_VISITS: usize = 1 << 20;
/// How deep dicts may nest in a state dict.
const MAX_DEPTH: usize = 32;

/// A tensor of the archive, as its pickle declares it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct DeclaredTensor {
    /// Its name in the state dict (nested dicts joined by `.`).
    pub name: String,
    /// Its storage's key (`data/<key>` in the archive).
    pub storage: String,
    /// Bytes per element of its storage's type.
    pub element_bytes: u64,
    /// True for floating-point storages (what a weight file's weights are).
    pub float: bool,
    /// Elements its storage declares.
    pub storage_elements: u64,
    /// Offset of its first element in the storage.
    pub offset: u64,
    /// Shape.
    pub sizes: Vec<u64>,
    /// Strides, in elements.
    pub strides: Vec<u64>,
}

/// The state dict's tensors when the file is a zip archive every tensor of whose state dict
/// lies inside a storage the archive holds whole; otherwise the first problem, naming the
/// tensor. Only the pickle and the archive's directory are read, never a storage.
pub(crate) fn check_pth_archive<R: Read + Seek>(
    mut file: R,
    file_len: u64,
) -> Result<Vec<DeclaredTensor>, String> {
    let mut magic = [0u8; 4];
    if file.read_exact(&mut magic).is_err() || magic != *b"PK\x03\x04" {
        return Err("it is not a zip archive, the format torch.save has written since PyTorch 1.6 (2020); dbps reads no older format: load it with torch.load and save it again with a current PyTorch".into());
    }
    file.rewind().map_err(|e| e.to_string())?;
    let mut archive = zip::ZipArchive::new(file).map_err(|e| {
        format!("it is a zip archive (torch.save's format) that cannot be opened ({e}): the file is truncated or damaged")
    })?;
    // burn-store reads `data.pkl`, else `archive/data.pkl`, else the first name ending so: with
    // one such entry, the pickle checked here is the one it reads.
    let pickles: Vec<String> = archive
        .file_names()
        .filter(|n| n.ends_with("data.pkl"))
        .map(str::to_owned)
        .collect();
    let pickle_name = match pickles.as_slice() {
        [one] => one.clone(),
        [] => {
            return Err(
                "the zip archive holds no data.pkl: it is not a state dict saved with torch.save"
                    .into(),
            );
        }
        many => {
            return Err(format!(
                "the zip archive holds {} pickles ({}); torch.save writes one data.pkl",
                many.len(),
                many.join(", ")
            ));
        }
    };
    let prefix = &pickle_name[..pickle_name.len() - "data.pkl".len()];
    let mut pickle = Vec::new();
    archive
        .by_name(&pickle_name)
        .map_err(|e| format!("{pickle_name}: {e}"))?
        .take(MAX_PICKLE_BYTES + 1)
        .read_to_end(&mut pickle)
        .map_err(|e| format!("{pickle_name} cannot be read ({e}): the file is damaged"))?;
    if pickle.len() as u64 > MAX_PICKLE_BYTES {
        return Err(format!(
            "{pickle_name} is larger than {} MiB; a state dict's is a few KB",
            MAX_PICKLE_BYTES >> 20
        ));
    }
    let tensors = declared_tensors(&pickle).map_err(|e| format!("{pickle_name}: {e}"))?;
    let mut sizes: HashMap<String, u64> = HashMap::new();
    for i in 0..archive.len() {
        let entry = archive.by_index_raw(i).map_err(|e| e.to_string())?;
        if entry.compressed_size() > file_len {
            return Err(format!(
                "entry {} declares {} bytes in a file of {file_len}: the file is damaged",
                entry.name(),
                entry.compressed_size()
            ));
        }
        // torch.save stores every entry uncompressed (so that storages can be mapped); a
        // compressed entry, or one whose declared size differs from its stored bytes, is a
        // size burn-store would allocate without reading it first.
        if entry.compression() != zip::CompressionMethod::Stored {
            return Err(format!(
                "entry {} is compressed ({}), which torch.save never does: load the file with torch.load and save it again",
                entry.name(),
                entry.compression()
            ));
        }
        if entry.size() != entry.compressed_size() {
            return Err(format!(
                "entry {} declares {} bytes but stores {}: the file is damaged",
                entry.name(),
                entry.size(),
                entry.compressed_size()
            ));
        }
        sizes.insert(entry.name().to_owned(), entry.size());
    }
    for t in &tensors {
        check_tensor(
            t,
            sizes.get(&format!("{prefix}data/{}", t.storage)).copied(),
        )?;
    }
    Ok(tensors)
}

/// Checks one tensor against the size of its storage entry (`None`: absent).
fn check_tensor(t: &DeclaredTensor, stored: Option<u64>) -> Result<(), String> {
    let name = &t.name;
    let Some(stored) = stored else {
        return Err(format!(
            "tensor `{name}`: its storage `data/{}` is missing from the archive",
            t.storage
        ));
    };
    let declared = t.storage_elements.checked_mul(t.element_bytes);
    if declared.is_none_or(|d| d > stored) {
        return Err(format!(
            "tensor `{name}`: its storage `data/{}` holds {stored} bytes, but declares {} elements of {} bytes (the file is truncated or damaged)",
            t.storage, t.storage_elements, t.element_bytes
        ));
    }
    if t.sizes.contains(&0) {
        return Ok(());
    }
    // The last element a tensor reaches: offset + Σ (size − 1) · stride.
    let last = t
        .sizes
        .iter()
        .zip(&t.strides)
        .try_fold(t.offset, |acc, (&n, &s)| {
            (n - 1).checked_mul(s).and_then(|d| acc.checked_add(d))
        });
    if last.is_none_or(|l| l >= t.storage_elements) || t.sizes.len() != t.strides.len() {
        return Err(format!(
            "tensor `{name}`: shape {:?} with strides {:?} from offset {} reaches past the {} elements of its storage `data/{}`",
            t.sizes, t.strides, t.offset, t.storage_elements, t.storage
        ));
    }
    Ok(())
}

/// A value of the pickle machine. Containers are shared (`Rc`) as pickle's memo shares them.
#[derive(Debug)]
enum Value {
    Mark,
    None,
    Bool,
    Int(i64),
    Float,
    Str(String),
    Bytes,
    Global(String),
    Tuple(Vec<Rc<Value>>),
    List(RefCell<Vec<Rc<Value>>>),
    Dict(RefCell<Vec<(Rc<Value>, Rc<Value>)>>),
    /// A storage's persistent id: `('storage', type, key, location, elements)`.
    Storage {
        key: String,
        element_bytes: u64,
        float: bool,
        elements: u64,
    },
    /// `_rebuild_tensor_v2(storage, offset, sizes, strides, …)`.
    Tensor {
        storage: Rc<Value>,
        offset: u64,
        sizes: Vec<u64>,
        strides: Vec<u64>,
    },
    /// Anything else a call or an object build produced.
    Opaque,
}

/// Bytes per element of a torch storage type (`torch.FloatStorage` → 4), or `None` for a
/// type torch.save does not write.
fn storage_element_bytes(global: &str) -> Option<u64> {
    let name = global.strip_prefix("torch.")?;
    Some(match name {
        "DoubleStorage" | "LongStorage" | "ComplexFloatStorage" => 8,
        "FloatStorage" | "IntStorage" => 4,
        "HalfStorage" | "BFloat16Storage" | "ShortStorage" => 2,
        "ByteStorage" | "CharStorage" | "BoolStorage" | "UntypedStorage" => 1,
        "ComplexDoubleStorage" => 16,
        _ => return None,
    })
}

/// Reads a little pickle stream of `torch.save`'s opcodes and returns the tensors of the
/// state dict it builds. Executes nothing: globals are names, calls build descriptions.
pub(crate) fn declared_tensors(pickle: &[u8]) -> Result<Vec<DeclaredTensor>, String> {
    let mut stack: Vec<Rc<Value>> = Vec::new();
    let mut memo: HashMap<u32, Rc<Value>> = HashMap::new();
    let mut at = 0usize;
    let take = |at: &mut usize, n: usize| -> Result<&[u8], String> {
        let end = at
            .checked_add(n)
            .filter(|&e| e <= pickle.len())
            .ok_or_else(|| {
                format!(
                    "the pickle ends at byte {} inside an opcode's argument (truncated)",
                    pickle.len()
                )
            })?;
        let bytes = &pickle[*at..end];
        *at = end;
        Ok(bytes)
    };
    let le = |bytes: &[u8]| {
        bytes
            .iter()
            .rev()
            .fold(0u64, |acc, &b| (acc << 8) | u64::from(b))
    };
    let pop = |stack: &mut Vec<Rc<Value>>| {
        stack
            .pop()
            .ok_or("the pickle pops an empty stack (damaged)")
    };
    let pop_mark = |stack: &mut Vec<Rc<Value>>| -> Result<Vec<Rc<Value>>, String> {
        let mark = stack
            .iter()
            .rposition(|v| matches!(**v, Value::Mark))
            .ok_or("the pickle closes a mark it never set (damaged)")?;
        let items = stack.split_off(mark + 1);
        stack.pop();
        Ok(items)
    };
    loop {
        let op = *take(&mut at, 1)?.first().unwrap_or(&0);
        let value = match op {
            0x80 => {
                take(&mut at, 1)?;
                continue;
            }
            0x95 => {
                take(&mut at, 8)?;
                continue;
            }
            b'.' => break,
            b'(' => Value::Mark,
            b'N' => Value::None,
            0x88 | 0x89 => Value::Bool,
            b'}' => Value::Dict(RefCell::default()),
            b']' => Value::List(RefCell::default()),
            b')' => Value::Tuple(Vec::new()),
            b'K' => Value::Int(i64::from(take(&mut at, 1)?[0])),
            b'M' => Value::Int(le(take(&mut at, 2)?) as i64),
            b'J' => Value::Int(i64::from(le(take(&mut at, 4)?) as u32 as i32)),
            0x8a => {
                let n = usize::from(take(&mut at, 1)?[0]);
                let bytes = take(&mut at, n)?;
                if n > 8 {
                    Value::Opaque
                } else {
                    // Two's complement, little-endian, `n` bytes.
                    let raw = le(bytes);
                    let shift = 64 - 8 * n as u32;
                    Value::Int(if n == 0 {
                        0
                    } else {
                        ((raw << shift) as i64) >> shift
                    })
                }
            }
            b'G' => {
                take(&mut at, 8)?;
                Value::Float
            }
            b'X' | 0x8c | 0x8d => {
                let n = match op {
                    0x8c => take(&mut at, 1)?[0] as u64,
                    b'X' => le(take(&mut at, 4)?),
                    _ => le(take(&mut at, 8)?),
                };
                let bytes = take(&mut at, usize::try_from(n).unwrap_or(usize::MAX))?;
                Value::Str(String::from_utf8_lossy(bytes).into_owned())
            }
            b'C' | b'B' | 0x8e => {
                let n = match op {
                    b'C' => take(&mut at, 1)?[0] as u64,
                    b'B' => le(take(&mut at, 4)?),
                    _ => le(take(&mut at, 8)?),
                };
                take(&mut at, usize::try_from(n).unwrap_or(usize::MAX))?;
                Value::Bytes
            }
            b'c' => {
                let mut line = || -> Result<String, String> {
                    let rest = &pickle[at..];
                    let end = rest
                        .iter()
                        .position(|&b| b == b'\n')
                        .ok_or("a GLOBAL name runs to the end of the pickle (truncated)")?;
                    at += end + 1;
                    Ok(String::from_utf8_lossy(&rest[..end]).into_owned())
                };
                let module = line()?;
                let name = line()?;
                Value::Global(format!("{module}.{name}"))
            }
            0x93 => {
                let name = pop(&mut stack)?;
                let module = pop(&mut stack)?;
                match (&*module, &*name) {
                    (Value::Str(m), Value::Str(n)) => Value::Global(format!("{m}.{n}")),
                    _ => return Err("STACK_GLOBAL of values that are not names".into()),
                }
            }
            b'q' | b'r' | 0x94 => {
                let key = match op {
                    b'q' => u32::from(take(&mut at, 1)?[0]),
                    b'r' => le(take(&mut at, 4)?) as u32,
                    _ => memo.len() as u32,
                };
                let top = stack.last().ok_or("the pickle memoizes an empty stack")?;
                memo.insert(key, Rc::clone(top));
                continue;
            }
            b'h' | b'j' => {
                let key = if op == b'h' {
                    u32::from(take(&mut at, 1)?[0])
                } else {
                    le(take(&mut at, 4)?) as u32
                };
                let value = memo.get(&key).ok_or_else(|| {
                    format!("the pickle reads memo entry {key}, never written (damaged)")
                })?;
                stack.push(Rc::clone(value));
                continue;
            }
            b't' => Value::Tuple(pop_mark(&mut stack)?),
            0x85..=0x87 => {
                let n = usize::from(op - 0x84);
                if stack.len() < n {
                    return Err("the pickle builds a tuple from an empty stack (damaged)".into());
                }
                Value::Tuple(stack.split_off(stack.len() - n))
            }
            b'Q' => {
                let pid = pop(&mut stack)?;
                persistent_storage(&pid)?
            }
            b'R' => {
                let args = pop(&mut stack)?;
                let callable = pop(&mut stack)?;
                call(&callable, &args)
            }
            0x81 => {
                pop(&mut stack)?;
                pop(&mut stack)?;
                Value::Opaque
            }
            b'b' => {
                pop(&mut stack)?;
                continue;
            }
            b's' | b'u' => {
                let items = if op == b's' {
                    let v = pop(&mut stack)?;
                    let k = pop(&mut stack)?;
                    vec![k, v]
                } else {
                    pop_mark(&mut stack)?
                };
                if items.len() % 2 != 0 {
                    return Err("SETITEMS with an odd number of values (damaged)".into());
                }
                let target = stack.last().ok_or("SETITEMS on an empty stack")?;
                if let Value::Dict(entries) = &**target {
                    let mut it = items.into_iter();
                    while let (Some(k), Some(v)) = (it.next(), it.next()) {
                        entries.borrow_mut().push((k, v));
                    }
                }
                continue;
            }
            b'a' | b'e' => {
                let items = if op == b'a' {
                    vec![pop(&mut stack)?]
                } else {
                    pop_mark(&mut stack)?
                };
                let target = stack.last().ok_or("APPENDS on an empty stack")?;
                if let Value::List(list) = &**target {
                    list.borrow_mut().extend(items);
                }
                continue;
            }
            other => {
                return Err(format!(
                    "pickle opcode {other:#04x} at byte {} is not one torch.save writes",
                    at - 1
                ));
            }
        };
        stack.push(Rc::new(value));
    }
    let root = stack
        .pop()
        .ok_or("the pickle stops with an empty stack (damaged)")?;
    let mut out = Vec::new();
    let mut visits = 0;
    collect_tensors(&root, "", 0, &mut visits, &mut out)?;
    Ok(out)
}

/// The storage a persistent id names.
fn persistent_storage(pid: &Value) -> Result<Value, String> {
    let Value::Tuple(parts) = pid else {
        return Err("a persistent id that is not a tuple".into());
    };
    match parts.iter().map(|p| &**p).collect::<Vec<_>>().as_slice() {
        [
            Value::Str(kind),
            Value::Global(ty),
            Value::Str(key),
            _,
            Value::Int(elements),
        ] if kind == "storage" => {
            let element_bytes = storage_element_bytes(ty).ok_or_else(|| {
                format!("storage `{key}` has type {ty}, which torch.save does not write")
            })?;
            let elements = u64::try_from(*elements)
                .map_err(|_| format!("storage `{key}` declares {elements} elements"))?;
            let float = matches!(
                ty.rsplit('.').next().unwrap_or(ty),
                "FloatStorage" | "DoubleStorage" | "HalfStorage" | "BFloat16Storage"
            );
            Ok(Value::Storage {
                key: key.clone(),
                element_bytes,
                float,
                elements,
            })
        }
        _ => Err(
            "a persistent id other than torch's ('storage', type, key, location, elements)".into(),
        ),
    }
}

/// What a call produces: tensors and parameters are followed, dicts stay dicts.
fn call(callable: &Value, args: &Rc<Value>) -> Value {
    let Value::Global(name) = callable else {
        return Value::Opaque;
    };
    let Value::Tuple(args) = &**args else {
        return Value::Opaque;
    };
    let ints = |v: &Value| -> Option<Vec<u64>> {
        match v {
            Value::Tuple(items) => items
                .iter()
                .map(|i| match **i {
                    Value::Int(n) => u64::try_from(n).ok(),
                    _ => None,
                })
                .collect(),
            _ => None,
        }
    };
    match name.as_str() {
        "torch._utils._rebuild_tensor_v2" | "torch._utils._rebuild_tensor" => {
            match (args.first(), args.get(1), args.get(2), args.get(3)) {
                (Some(storage), Some(offset), Some(sizes), Some(strides)) => {
                    match (&**offset, ints(sizes), ints(strides)) {
                        (Value::Int(offset), Some(sizes), Some(strides)) if *offset >= 0 => {
                            Value::Tensor {
                                storage: Rc::clone(storage),
                                offset: *offset as u64,
                                sizes,
                                strides,
                            }
                        }
                        // Negative offsets or sizes: a tensor no archive holds; kept as a
                        // tensor that reaches past everything.
                        _ => Value::Tensor {
                            storage: Rc::clone(storage),
                            offset: u64::MAX,
                            sizes: vec![1],
                            strides: vec![1],
                        },
                    }
                }
                _ => Value::Opaque,
            }
        }
        "torch._utils._rebuild_parameter" | "torch._utils._rebuild_parameter_with_state" => {
            match args.first().map(|a| &**a) {
                Some(Value::Tensor {
                    storage,
                    offset,
                    sizes,
                    strides,
                }) => Value::Tensor {
                    storage: Rc::clone(storage),
                    offset: *offset,
                    sizes: sizes.clone(),
                    strides: strides.clone(),
                },
                _ => Value::Opaque,
            }
        }
        "collections.OrderedDict" | "builtins.dict" => Value::Dict(RefCell::default()),
        _ => Value::Opaque,
    }
}

/// The tensors under `value`, named by their dict keys joined with `.`.
fn collect_tensors(
    value: &Value,
    name: &str,
    depth: usize,
    visits: &mut usize,
    out: &mut Vec<DeclaredTensor>,
) -> Result<(), String> {
    *visits += 1;
    if *visits > MAX_VISITS || depth > MAX_DEPTH {
        return Err("the state dict nests deeper, or shares more, than any state dict does".into());
    }
    match value {
        Value::Dict(entries) => {
            for (k, v) in entries.borrow().iter() {
                let key = match &**k {
                    Value::Str(s) => s.clone(),
                    Value::Int(i) => i.to_string(),
                    _ => continue,
                };
                let full = if name.is_empty() {
                    key
                } else {
                    format!("{name}.{key}")
                };
                collect_tensors(v, &full, depth + 1, visits, out)?;
            }
        }
        Value::Tensor {
            storage,
            offset,
            sizes,
            strides,
        } => match &**storage {
            Value::Storage {
                key,
                element_bytes,
                float,
                elements,
            } => out.push(DeclaredTensor {
                name: name.to_owned(),
                storage: key.clone(),
                element_bytes: *element_bytes,
                float: *float,
                storage_elements: *elements,
                offset: *offset,
                sizes: sizes.clone(),
                strides: strides.clone(),
            }),
            _ => {
                return Err(format!(
                    "tensor `{name}` is built on something other than a storage"
                ));
            }
        },
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::{Cursor, Write};
    use std::path::{Path, PathBuf};

    use super::*;

    /// Protocol-2 pickle of `OrderedDict(w = _rebuild_tensor_v2(storage('0', FloatStorage,
    /// elements), 0, sizes, strides, False, OrderedDict()))`, assembled opcode by opcode.
    fn pickle(elements: u8, sizes: [u8; 2], strides: [u8; 2]) -> Vec<u8> {
        let text = |s: &str| {
            let mut v = vec![b'X'];
            v.extend((s.len() as u32).to_le_bytes());
            v.extend(s.as_bytes());
            v
        };
        let mut p = vec![0x80, 2];
        p.extend(b"ccollections\nOrderedDict\n)R");
        p.extend([b'q', 0]);
        p.extend(text("w"));
        p.extend(b"ctorch._utils\n_rebuild_tensor_v2\n((");
        p.extend(text("storage"));
        p.extend(b"ctorch\nFloatStorage\n");
        p.extend(text("0"));
        p.extend(text("cpu"));
        p.extend([b'K', elements, b't', b'Q', b'K', 0]);
        p.extend([b'K', sizes[0], b'K', sizes[1], 0x86]);
        p.extend([b'K', strides[0], b'K', strides[1], 0x86, 0x89]);
        p.extend(b"ccollections\nOrderedDict\n)Rt");
        p.extend(b"Rs.");
        p
    }

    /// A torch.save-style zip: `archive/data.pkl` and, when given, `archive/data/0`.
    fn archive(pickle: &[u8], storage: Option<&[u8]>) -> Vec<u8> {
        let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
        let stored = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored);
        zip.start_file("archive/data.pkl", stored).unwrap();
        zip.write_all(pickle).unwrap();
        if let Some(bytes) = storage {
            zip.start_file("archive/data/0", stored).unwrap();
            zip.write_all(bytes).unwrap();
        }
        zip.finish().unwrap().into_inner()
    }

    fn check(bytes: &[u8]) -> Result<(), String> {
        check_pth_archive(Cursor::new(bytes), bytes.len() as u64).map(drop)
    }

    #[test]
    fn a_whole_archive_passes_and_its_tensor_is_read() {
        let p = pickle(4, [2, 2], [2, 1]);
        assert_eq!(check(&archive(&p, Some(&[0; 16]))), Ok(()));
        let tensors = declared_tensors(&p).unwrap();
        assert_eq!(
            tensors,
            [DeclaredTensor {
                name: "w".into(),
                storage: "0".into(),
                element_bytes: 4,
                float: true,
                storage_elements: 4,
                offset: 0,
                sizes: vec![2, 2],
                strides: vec![2, 1],
            }]
        );
        // Not a zip (the legacy format): refused before burn-store parses it.
        assert!(
            check(b"\x80\x02legacy")
                .unwrap_err()
                .contains("not a zip archive")
        );
    }

    /// Each damage burn-store's reader would have filled with zeros (or sized a buffer by).
    #[test]
    fn short_missing_and_overreaching_storages_are_named() {
        let whole = pickle(4, [2, 2], [2, 1]);
        let err = check(&archive(&whole, Some(&[0; 8]))).unwrap_err();
        assert!(
            err.contains("tensor `w`") && err.contains("holds 8 bytes"),
            "{err}"
        );
        let err = check(&archive(&whole, None)).unwrap_err();
        assert!(
            err.contains("tensor `w`") && err.contains("missing"),
            "{err}"
        );
        let over = pickle(4, [3, 2], [2, 1]);
        let err = check(&archive(&over, Some(&[0; 16]))).unwrap_err();
        assert!(
            err.contains("tensor `w`") && err.contains("reaches past"),
            "{err}"
        );
        // Compressed (torch.save never compresses; burn-store allocates the declared size).
        let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
        let deflated = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        zip.start_file("archive/data.pkl", deflated).unwrap();
        zip.write_all(&whole).unwrap();
        let bytes = zip.finish().unwrap().into_inner();
        assert!(check(&bytes).unwrap_err().contains("compressed"));
        let huge = pickle(255, [255, 255], [255, 1]);
        let err = check(&archive(&huge, Some(&[0; 16]))).unwrap_err();
        assert!(err.contains("holds 16 bytes"), "{err}");
    }

    /// A second `data.pkl` (burn-store would read `data.pkl` before `archive/data.pkl`, so a
    /// check of the other would be bypassed) is refused.
    #[test]
    fn two_pickles_are_refused() {
        let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
        let stored = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored);
        for name in ["archive/data.pkl", "data.pkl"] {
            zip.start_file(name, stored).unwrap();
            zip.write_all(&pickle(4, [2, 2], [2, 1])).unwrap();
        }
        zip.start_file("archive/data/0", stored).unwrap();
        zip.write_all(&[0; 16]).unwrap();
        let bytes = zip.finish().unwrap().into_inner();
        assert!(check(&bytes).unwrap_err().contains("2 pickles"));
    }

    #[test]
    fn truncated_archives_and_pickles_are_refused() {
        let bytes = archive(&pickle(4, [2, 2], [2, 1]), Some(&[0; 16]));
        for cut in [bytes.len() - 1, bytes.len() / 2, 10] {
            let err = check(&bytes[..cut]).unwrap_err();
            assert!(err.contains("truncated or damaged"), "cut at {cut}: {err}");
        }
        let p = pickle(4, [2, 2], [2, 1]);
        for cut in 2..p.len() {
            assert!(declared_tensors(&p[..cut]).is_err(), "cut at {cut}");
        }
    }

    fn torchvision_pth() -> Option<PathBuf> {
        let dir = std::env::var_os("DBPS_TORCHVISION_DIR").map_or_else(
            || Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures/torchvision"),
            PathBuf::from,
        );
        let path = dir.join("resnet18.pth");
        if path.is_file() {
            Some(path)
        } else {
            eprintln!(
                "SKIPPED torchvision_archive_passes: no {}; set DBPS_TORCHVISION_DIR",
                path.display()
            );
            None
        }
    }

    /// The real torchvision file: every one of its 122 entries found and whole.
    #[test]
    fn torchvision_archive_passes() {
        let Some(path) = torchvision_pth() else {
            return;
        };
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(check(&bytes), Ok(()));
        let mut archive = zip::ZipArchive::new(Cursor::new(&bytes)).unwrap();
        let mut pickle = Vec::new();
        archive
            .by_name("resnet18/data.pkl")
            .unwrap()
            .read_to_end(&mut pickle)
            .unwrap();
        let tensors = declared_tensors(&pickle).unwrap();
        assert_eq!(tensors.len(), 122);
        let fc = tensors.iter().find(|t| t.name == "fc.weight").unwrap();
        assert_eq!(fc.sizes, [1000, 512]);
    }
}
