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
