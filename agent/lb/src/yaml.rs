//! Reading fields out of one YAML document with every type problem reported
//! at its path (a typed `serde` parse would stop at the first one). Absent
//! and `null` fields are the same thing, as in Kubernetes; unknown fields
//! are ignored, as `kubectl apply` keeps them.

use std::collections::BTreeMap;

use serde_yaml_ng::{Mapping, Value};
use weir_types::IntOrString;

use crate::error::{FieldErrors, Path};

/// `value.name`, or None when absent, `null`, or `value` is not a mapping.
pub(crate) fn field<'a>(value: &'a Value, name: &str) -> Option<&'a Value> {
    value.get(name).filter(|v| !v.is_null())
}

/// Looks through YAML tags (`!foo value`), which Kubernetes has no use for.
fn untagged(value: &Value) -> &Value {
    match value {
        Value::Tagged(tagged) => untagged(&tagged.value),
        other => other,
    }
}

fn kind_of(value: &Value) -> &'static str {
    match untagged(value) {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}

pub(crate) fn mapping<'a>(
    value: Option<&'a Value>,
    path: &Path,
    errors: &mut FieldErrors,
) -> Option<&'a Mapping> {
    match untagged(value?) {
        Value::Mapping(m) => Some(m),
        other => {
            errors.push(
                path.clone(),
                format!("must be a mapping, not {}", kind_of(other)),
            );
            None
        }
    }
}

/// The items of a list; an absent list is empty.
pub(crate) fn sequence<'a>(
    value: Option<&'a Value>,
    path: &Path,
    errors: &mut FieldErrors,
) -> &'a [Value] {
    match value.map(untagged) {
        None => &[],
        Some(Value::Sequence(items)) => items,
        Some(other) => {
            errors.push(
                path.clone(),
                format!("must be a list, not {}", kind_of(other)),
            );
            &[]
        }
    }
}

pub(crate) fn string<'a>(
    value: Option<&'a Value>,
    path: &Path,
    errors: &mut FieldErrors,
) -> Option<&'a str> {
    match untagged(value?) {
        Value::String(s) => Some(s),
        other => {
            errors.push(
                path.clone(),
                format!("must be a string, not {}", kind_of(other)),
            );
            None
        }
    }
}

pub(crate) fn boolean(
    value: Option<&Value>,
    path: &Path,
    errors: &mut FieldErrors,
) -> Option<bool> {
    match untagged(value?) {
        Value::Bool(b) => Some(*b),
        other => {
            errors.push(
                path.clone(),
                format!("must be true or false, not {}", kind_of(other)),
            );
            None
        }
    }
}

pub(crate) fn integer(value: Option<&Value>, path: &Path, errors: &mut FieldErrors) -> Option<i64> {
    match untagged(value?) {
        Value::Number(n) if n.as_i64().is_some() => n.as_i64(),
        other => {
            errors.push(
                path.clone(),
                format!("must be an integer, not {}", kind_of(other)),
            );
            None
        }
    }
}

pub(crate) fn int_or_string(
    value: Option<&Value>,
    path: &Path,
    errors: &mut FieldErrors,
) -> Option<IntOrString> {
    match untagged(value?) {
        Value::String(s) => Some(IntOrString::String(s.clone())),
        Value::Number(n) if n.as_i64().is_some() => n.as_i64().map(IntOrString::Int),
        other => {
            errors.push(
                path.clone(),
                format!("must be an integer or a string, not {}", kind_of(other)),
            );
            None
        }
    }
}

/// A `string: string` map (labels, annotations, selectors).
pub(crate) fn string_map(
    value: Option<&Value>,
    path: &Path,
    errors: &mut FieldErrors,
) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let Some(map) = mapping(value, path, errors) else {
        return out;
    };
    for (key, value) in map {
        let Some(key) = untagged(key).as_str() else {
            errors.push(
                path.clone(),
                format!("keys must be strings, not {}", kind_of(key)),
            );
            continue;
        };
        let entry = path.key(key);
        if let Some(value) = string(Some(value), &entry, errors) {
            out.insert(key.to_string(), value.to_string());
        }
    }
    out
}

/// Checks `apiVersion` and `kind`; a mismatch is reported, not fatal, so the
/// rest of the document is still checked.
pub(crate) fn expect_kind(
    document: &Value,
    api_version: &str,
    kind: &str,
    errors: &mut FieldErrors,
) {
    let pairs = [("apiVersion", api_version), ("kind", kind)];
    for (name, want) in pairs {
        let path = Path::root(name);
        let Some(value) = field(document, name) else {
            errors.push(path, format!("required: {want:?}"));
            continue;
        };
        match string(Some(value), &path, errors) {
            Some(got) if got != want => errors.push(path, format!("must be {want:?}, not {got:?}")),
            _ => {}
        }
    }
}
