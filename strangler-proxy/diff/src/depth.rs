//! How deep a compared document may be, and where deep ones are handled.
//!
//! Parsing, comparing, patching, cloning and dropping a JSON value each recurse once per
//! level of nesting. `serde_json` refuses documents nested deeper than 128 levels to keep
//! that within any thread's stack; this crate compares documents up to [`MAX_DEPTH`] levels
//! instead: a document deeper than 128 is parsed and compared on a thread of its own whose
//! stack is sized for [`MAX_DEPTH`] ([`with_deep_stack`]), so no caller's thread (a proxy's
//! 2 MiB workers, the comparer thread) ever runs that recursion. A body nested deeper than
//! [`MAX_DEPTH`] is not JSON to the diff engine: it is compared as text, line by line, which
//! recurses on nothing.
//!
//! What leaves that thread is shallow: a [`crate::Difference`] shows its values at most
//! [`SHOWN_DEPTH`] levels deep ([`shown`]), so a sample written as JSON text reads back with
//! `serde_json`'s default limit, and nothing downstream recurses deeply.

use serde::Deserialize;
use serde_json::Value;

/// Deepest nesting of arrays and objects a JSON body may have to be compared structurally.
pub const MAX_DEPTH: usize = 10_000;
/// Deepest a value inside a [`crate::Difference`] is shown; deeper, a note says so.
pub const SHOWN_DEPTH: usize = 64;
/// Nesting `serde_json` and any thread's stack handle without help.
const SHALLOW: usize = 128;
/// Stack of the thread that handles a deep document: parsing, comparing, patching,
/// printing and dropping one of [`MAX_DEPTH`] levels was measured to need under 16 MiB in an
/// unoptimised build (about 1.6 KiB per level), so this leaves room to spare. Reserved, not
/// committed: pages are touched only as deep as the document goes.
const DEEP_STACK: usize = MAX_DEPTH * 4 * 1024 + (4 << 20);

/// Why bytes are not a JSON document the diff engine compares structurally.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JsonError {
    /// Not JSON at all.
    Syntax(String),
    /// JSON nested deeper than [`MAX_DEPTH`].
    TooDeep,
}

impl std::fmt::Display for JsonError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JsonError::Syntax(message) => f.write_str(message),
            JsonError::TooDeep => write!(f, "nested deeper than {MAX_DEPTH} levels"),
        }
    }
}

impl std::error::Error for JsonError {}

/// How deeply `bytes` nest arrays and objects (strings skipped), counting no further than
/// `MAX_DEPTH + 1`. Linear, no recursion.
pub fn nesting(bytes: &[u8]) -> usize {
    let (mut depth, mut deepest, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for &b in bytes {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
                if deepest > MAX_DEPTH {
                    return deepest;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

/// Whether `bytes` nest deeper than a caller's thread handles (see the module's docs): then
/// [`parse`] and what follows run inside [`with_deep_stack`].
pub fn is_deep(bytes: &[u8]) -> bool {
    nesting(bytes) > SHALLOW
}

/// Parses a JSON document of at most [`MAX_DEPTH`] levels. A document deeper than 128
/// levels recurses that deep, here and in everything done with the value (dropping it too):
/// see [`is_deep`] and [`with_deep_stack`].
pub fn parse(bytes: &[u8]) -> Result<Value, JsonError> {
    if nesting(bytes) > MAX_DEPTH {
        return Err(JsonError::TooDeep);
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    de.disable_recursion_limit();
    let value = Value::deserialize(&mut de).map_err(|e| JsonError::Syntax(e.to_string()))?;
    de.end().map_err(|e| JsonError::Syntax(e.to_string()))?;
    Ok(value)
}

/// Runs `f` on a thread whose stack holds a [`MAX_DEPTH`] document's recursion, and answers
/// what it returned; `None` when no thread could be started (out of memory or threads).
/// Only for documents [`is_deep`] says need it: a thread per call.
pub fn with_deep_stack<T: Send>(f: impl FnOnce() -> T + Send) -> Option<T> {
    std::thread::scope(|scope| {
        let handle = std::thread::Builder::new()
            .name("strangler-deep-json".to_string())
            .stack_size(DEEP_STACK)
            .spawn_scoped(scope, f)
            .ok()?;
        match handle.join() {
            Ok(value) => Some(value),
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

/// Whether `err` is `serde_json` refusing a document nested deeper than its default limit
/// (128), which [`parse`] takes up to [`MAX_DEPTH`].
pub fn over_default_limit(err: &serde_json::Error) -> bool {
    err.to_string().starts_with("recursion limit exceeded")
}

/// `value` as a difference shows it: nested at most [`SHOWN_DEPTH`] levels, deeper
/// arrays and objects replaced by a note.
pub fn shown(value: &Value) -> Value {
    shown_at(value, 0)
}

fn shown_at(value: &Value, depth: usize) -> Value {
    match value {
        Value::Array(_) | Value::Object(_) if depth >= SHOWN_DEPTH => {
            Value::String(format!("(nested deeper than {SHOWN_DEPTH} levels)"))
        }
        Value::Array(items) => Value::Array(items.iter().map(|v| shown_at(v, depth + 1)).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), shown_at(v, depth + 1)))
                .collect(),
        ),
        other => other.clone(),
    }
}
