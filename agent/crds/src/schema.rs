//! Structural OpenAPI schemas from Rust types, and the CRD around them for
//! the kinds written by hand ([`crate::policy`]); also the structural check
//! the tests run on every generated CRD.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceColumnDefinition, CustomResourceDefinition, CustomResourceDefinitionNames,
    CustomResourceDefinitionSpec, CustomResourceDefinitionVersion, CustomResourceSubresourceStatus,
    CustomResourceSubresources, CustomResourceValidation, JSONSchemaProps,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde_json::Value;

/// The generator of the hand-written kinds: kube's derive's (kube-derive
/// 5's `crd()`: OpenAPI v3, subschemas inlined (no `$ref`), `Option` as
/// `nullable`, enums and untagged unions rewritten into structural form),
/// without defaults.
pub fn generator() -> SchemaGenerator {
    schemars::generate::SchemaSettings::openapi3()
        .with(|s| {
            s.inline_subschemas = true;
            s.meta_schema = None;
        })
        .with_transform(schemars::transform::AddNullable::default())
        .with_transform(kube::core::schema::StructuralSchemaRewriter)
        .with_transform(kube::core::schema::OptionalEnum)
        .with_transform(kube::core::schema::OptionalIntOrString)
        // No defaults: the API server stores a policy as written (the
        // engine has its own defaults), and a 1.20 API server refuses the
        // `default: ""` that `#[serde(default)]` strings would get.
        .with_transform(schemars::transform::RecursiveTransform(
            |schema: &mut Schema| {
                schema.remove("default");
            },
        ))
        .into_generator()
}

/// The names of a hand-written kind.
pub struct CrdNames<'a> {
    pub kind: &'a str,
    pub plural: &'a str,
    pub singular: &'a str,
    pub short_names: &'a [&'a str],
    pub namespaced: bool,
}

/// One `additionalPrinterColumns` entry.
pub struct Column(CustomResourceColumnDefinition);

impl Column {
    pub fn new(name: &str, column_type: &str, json_path: &str) -> Self {
        Self(CustomResourceColumnDefinition {
            name: name.into(),
            type_: column_type.into(),
            json_path: json_path.into(),
            ..Default::default()
        })
    }

    pub fn description(mut self, description: &str) -> Self {
        self.0.description = Some(description.into());
        self
    }
}

/// The CRD of a hand-written root `T` (schema from `T`'s `JsonSchema`),
/// shaped as the derive shapes its own: one served and stored version, the
/// status subresource, category `weir`.
pub fn crd<T: JsonSchema>(names: &CrdNames<'_>, columns: &[Column]) -> CustomResourceDefinition {
    let schema = generator().into_root_schema_for::<T>();
    // A schemars schema is JSON and JSONSchemaProps its Kubernetes type, so
    // this cannot fail for the schemas here; were it to, the schema would
    // be empty and the structural test fails on it (`crd()` cannot return
    // an error: kube's trait).
    let props: JSONSchemaProps = serde_json::from_value(schema.to_value()).unwrap_or_default();
    CustomResourceDefinition {
        metadata: ObjectMeta {
            name: Some(format!("{}.{}", names.plural, crate::GROUP)),
            ..Default::default()
        },
        spec: CustomResourceDefinitionSpec {
            group: crate::GROUP.into(),
            names: CustomResourceDefinitionNames {
                kind: names.kind.into(),
                plural: names.plural.into(),
                singular: Some(names.singular.into()),
                short_names: Some(names.short_names.iter().map(|s| s.to_string()).collect()),
                categories: Some(vec!["weir".into()]),
                ..Default::default()
            },
            scope: if names.namespaced {
                "Namespaced"
            } else {
                "Cluster"
            }
            .into(),
            versions: vec![CustomResourceDefinitionVersion {
                name: crate::VERSION.into(),
                served: true,
                storage: true,
                schema: Some(CustomResourceValidation {
                    open_api_v3_schema: Some(props),
                }),
                subresources: Some(CustomResourceSubresources {
                    status: Some(CustomResourceSubresourceStatus(Value::Object(
                        Default::default(),
                    ))),
                    ..Default::default()
                }),
                additional_printer_columns: Some(columns.iter().map(|c| c.0.clone()).collect()),
                ..Default::default()
            }],
            ..Default::default()
        },
        status: None,
    }
}

/// A Kubernetes protocol (`TCP`, `UDP`, `SCTP`), for `weir_types::Protocol`
/// fields (that crate has no schema dependency).
pub fn protocol(_: &mut SchemaGenerator) -> Schema {
    schemars::json_schema!({ "type": "string", "enum": ["TCP", "UDP", "SCTP"] })
}

/// Every way `schema` (an `openAPIV3Schema`) is not structural, each with
/// its JSON path; empty when it is. The rules checked are the API server's
/// (`apiextensions-apiserver` structural schema validation): every node has
/// a `type` unless it is int-or-string or keeps unknown fields; no `$ref`;
/// no `properties` beside `additionalProperties`; inside `anyOf`/`allOf`/
/// `oneOf`/`not`, no `type`, `description`, `default`, `nullable`,
/// `additionalProperties` or `x-kubernetes-*`; an object says what it
/// holds (`properties`, `additionalProperties` or preserve-unknown-fields).
pub fn structural_problems(schema: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    check(schema, "openAPIV3Schema", false, &mut problems);
    problems
}

fn check(node: &Value, path: &str, in_junctor: bool, problems: &mut Vec<String>) {
    let Some(map) = node.as_object() else {
        problems.push(format!("{path}: not an object"));
        return;
    };
    let flag = |k: &str| map.get(k).and_then(Value::as_bool) == Some(true);
    let preserve = flag("x-kubernetes-preserve-unknown-fields");
    let int_or_string = flag("x-kubernetes-int-or-string");
    if map.contains_key("$ref") {
        problems.push(format!("{path}: $ref"));
    }
    if in_junctor {
        for k in [
            "type",
            "description",
            "default",
            "nullable",
            "additionalProperties",
        ] {
            if map.contains_key(k) {
                problems.push(format!("{path}: {k} inside a logical junctor"));
            }
        }
        if map.keys().any(|k| k.starts_with("x-kubernetes-")) {
            problems.push(format!("{path}: x-kubernetes-* inside a logical junctor"));
        }
    } else {
        match map.get("type") {
            None if !preserve && !int_or_string => problems.push(format!("{path}: no type")),
            None => {}
            Some(Value::String(t)) if t == "object" => {
                let has_props = map.contains_key("properties");
                let has_additional = map.contains_key("additionalProperties");
                if has_props && has_additional {
                    problems.push(format!("{path}: properties and additionalProperties"));
                }
                if !has_props && !has_additional && !preserve {
                    problems.push(format!("{path}: an object that says nothing of its fields"));
                }
            }
            Some(Value::String(t)) if t == "array" && !map.contains_key("items") => {
                problems.push(format!("{path}: an array without items"))
            }
            Some(Value::String(_)) => {}
            Some(t) => problems.push(format!("{path}: type {t} is not one string")),
        }
    }
    for (key, child) in map
        .get("properties")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        check(
            child,
            &format!("{path}.properties.{key}"),
            in_junctor,
            problems,
        );
    }
    for k in ["items", "additionalProperties"] {
        if let Some(child) = map.get(k).filter(|c| c.is_object()) {
            check(child, &format!("{path}.{k}"), in_junctor, problems);
        }
    }
    // The int-or-string form is the one place a junctor may carry types
    // (`anyOf: [{type: integer}, {type: string}]`).
    let junctors: &[&str] = if int_or_string {
        &[]
    } else {
        &["anyOf", "allOf", "oneOf"]
    };
    for junctor in junctors {
        for (i, child) in map
            .get(*junctor)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            check(child, &format!("{path}.{junctor}[{i}]"), true, problems);
        }
    }
    if let Some(child) = map.get("not") {
        check(child, &format!("{path}.not"), true, problems);
    }
}

#[cfg(test)]
mod tests;

/// Checks `value` (one object of the kind) against `schema` (its
/// `openAPIV3Schema`) as the API server would before storing it: types,
/// required fields, enums, and, what matters most here, fields the schema
/// does not name, which the API server prunes silently. One line per
/// problem, with its path; empty when the object would be stored as is.
/// (A subset of OpenAPI: no formats, bounds or patterns.)
pub fn object_problems(schema: &Value, value: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    let mut root = value.clone();
    // The API server owns these three; the schema leaves them out.
    if let Some(map) = root.as_object_mut() {
        for k in ["apiVersion", "kind", "metadata"] {
            map.remove(k);
        }
    }
    check_value(schema, &root, "", &mut problems);
    problems
}

fn check_value(schema: &Value, value: &Value, path: &str, problems: &mut Vec<String>) {
    let flag = |k: &str| schema.get(k).and_then(Value::as_bool) == Some(true);
    if flag("x-kubernetes-preserve-unknown-fields") && schema.get("type").is_none() {
        return;
    }
    if value.is_null() {
        if !flag("nullable") {
            problems.push(format!("{path}: null where nullable is not set (pruned)"));
        }
        return;
    }
    if flag("x-kubernetes-int-or-string") {
        if !(value.is_i64() || value.is_u64() || value.is_string()) {
            problems.push(format!(
                "{path}: {value} is neither an integer nor a string"
            ));
        }
        return;
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array) {
        if !allowed.contains(value) {
            problems.push(format!(
                "{path}: {value} is not one of {}",
                Value::from(allowed.clone())
            ));
        }
    }
    let type_ok = match schema.get("type").and_then(Value::as_str) {
        Some("object") => value.is_object(),
        Some("array") => value.is_array(),
        Some("string") => value.is_string(),
        Some("integer") => value.is_i64() || value.is_u64(),
        Some("number") => value.is_number(),
        Some("boolean") => value.is_boolean(),
        _ => true,
    };
    if !type_ok {
        problems.push(format!("{path}: {value} is not of type {}", schema["type"]));
        return;
    }
    if let Some(items) = value.as_array() {
        if let Some(item_schema) = schema.get("items") {
            for (i, item) in items.iter().enumerate() {
                check_value(item_schema, item, &format!("{path}[{i}]"), problems);
            }
        }
        return;
    }
    let Some(fields) = value.as_object() else {
        return;
    };
    for required in schema
        .get("required")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(name) = required.as_str().filter(|n| !fields.contains_key(*n)) {
            problems.push(format!("{path}.{name}: required"));
        }
    }
    let properties = schema.get("properties").and_then(Value::as_object);
    let additional = schema.get("additionalProperties").filter(|a| a.is_object());
    for (name, field) in fields {
        let field_path = format!("{path}.{name}");
        match (properties.and_then(|p| p.get(name)), additional) {
            (Some(field_schema), _) | (None, Some(field_schema)) => {
                check_value(field_schema, field, &field_path, problems)
            }
            (None, None) if flag("x-kubernetes-preserve-unknown-fields") => {}
            (None, None) => problems.push(format!("{field_path}: not in the schema (pruned)")),
        }
    }
}
