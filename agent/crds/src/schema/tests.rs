use serde_json::json;

use super::*;

#[test]
fn a_typed_tree_is_structural() {
    let schema = json!({
        "type": "object",
        "properties": {
            "a": {"type": "string", "nullable": true},
            "b": {"type": "array", "items": {"type": "integer"}},
            "c": {"type": "object", "additionalProperties": {"type": "string"}},
            "d": {"x-kubernetes-preserve-unknown-fields": true},
            "e": {"x-kubernetes-int-or-string": true, "anyOf": [{"type": "integer"}, {"type": "string"}]},
        }
    });
    assert_eq!(structural_problems(&schema), Vec::<String>::new());
}

#[test]
fn untyped_and_referenced_nodes_are_found_with_their_paths() {
    let schema = json!({
        "type": "object",
        "properties": {
            "a": {"description": "no type"},
            "b": {"$ref": "#/definitions/B", "type": "object", "properties": {}},
            "c": {"type": "object"},
            "d": {"type": ["string", "null"]},
            "e": {"type": "string", "anyOf": [{"type": "string"}]},
            "f": {"type": "array"},
        }
    });
    assert_eq!(
        structural_problems(&schema),
        vec![
            "openAPIV3Schema.properties.a: no type",
            "openAPIV3Schema.properties.b: $ref",
            "openAPIV3Schema.properties.c: an object that says nothing of its fields",
            "openAPIV3Schema.properties.d: type [\"string\",\"null\"] is not one string",
            "openAPIV3Schema.properties.e.anyOf[0]: type inside a logical junctor",
            "openAPIV3Schema.properties.f: an array without items",
        ]
    );
}

#[test]
fn objects_are_checked_for_types_required_fields_enums_and_pruning() {
    let schema = json!({
        "type": "object",
        "required": ["spec"],
        "properties": {
            "spec": {
                "type": "object",
                "required": ["n"],
                "properties": {
                    "n": {"type": "integer"},
                    "e": {"type": "string", "enum": ["A", "B"], "nullable": true},
                    "p": {"x-kubernetes-int-or-string": true, "anyOf": [{"type": "integer"}, {"type": "string"}]},
                    "m": {"type": "object", "additionalProperties": {"type": "string"}},
                    "k": {"x-kubernetes-preserve-unknown-fields": true},
                    "l": {"type": "array", "items": {"type": "boolean"}},
                }
            }
        }
    });
    let good = json!({"apiVersion": "x/v1", "kind": "K", "metadata": {"name": "a"},
        "spec": {"n": 1, "e": null, "p": "http", "m": {"a": "b"}, "k": {"any": [1]}, "l": [true]}});
    assert_eq!(object_problems(&schema, &good), Vec::<String>::new());
    let bad = json!({"spec": {"e": "C", "p": 1.5, "m": {"a": 1}, "l": [1], "extra": 1}});
    assert_eq!(
        object_problems(&schema, &bad),
        vec![
            ".spec.n: required",
            ".spec.e: \"C\" is not one of [\"A\",\"B\"]",
            ".spec.extra: not in the schema (pruned)",
            ".spec.l[0]: 1 is not of type \"boolean\"",
            ".spec.m.a: 1 is not of type \"string\"",
            ".spec.p: 1.5 is neither an integer nor a string",
        ]
    );
}
