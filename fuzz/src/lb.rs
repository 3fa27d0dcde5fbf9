//! Service and EndpointSlice (`weir_lb`): each document of a YAML stream
//! read by [`Service::from_document`] and [`EndpointSlice::from_document`],
//! and what validates compiled into frontends for a node.
//!
//! What must hold for any input:
//! - nothing panics; a refusal lists at least one field problem, each
//!   with its path and reason;
//! - compiling is independent of the order of its input (the crate's
//!   promise: sorted output that does not depend on input order), for
//!   services and slices with distinct names;
//! - every frontend is unique by key and sorted, and a Maglev table can be
//!   built for one with active backends.

use std::collections::BTreeSet;

use serde::Deserialize as _;
use serde_yaml_ng::Value;
use weir_lb::{compile, EndpointSlice, FieldErrors, LbOptions, NodeContext, Service};

pub fn fuzz(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut services = Vec::new();
    let mut slices = Vec::new();
    for document in serde_yaml_ng::Deserializer::from_str(text).take(16) {
        let Ok(value) = Value::deserialize(document) else {
            break;
        };
        // Both readers on every document: each must refuse the other's
        // kind (or anything else) with a reason, never panic.
        match Service::from_document(&value) {
            Ok(service) => services.push(service),
            Err(errors) => check_refusal(&errors),
        }
        match EndpointSlice::from_document(&value) {
            Ok(slice) => slices.push(slice),
            Err(errors) => check_refusal(&errors),
        }
    }
    dedup_by_name(&mut services, |s| (s.namespace.clone(), s.name.clone()));
    dedup_by_name(&mut slices, |s| (s.namespace.clone(), s.name.clone()));

    let node = NodeContext {
        name: "n1".to_string(),
        addresses: vec![[10, 77, 0, 11].into(), [192, 168, 0, 11].into()],
        addresses_v6: Vec::new(),
    };
    let options = LbOptions::default();
    let state = compile(&services, &slices, &node, &options);
    let mut reversed_services = services.clone();
    reversed_services.reverse();
    let mut reversed_slices = slices.clone();
    reversed_slices.reverse();
    assert_eq!(
        state,
        compile(&reversed_services, &reversed_slices, &node, &options),
        "compiling depends on the order of the input"
    );
    let keys: Vec<_> = state.frontends.iter().map(|f| f.key()).collect();
    assert!(
        keys.windows(2).all(|w| w[0] < w[1]),
        "frontends are not sorted and unique by key"
    );
    if let Some(frontend) = state.frontends.iter().find(|f| {
        f.backends
            .iter()
            .any(|b| b.state == weir_lb::BackendState::Active)
    }) {
        frontend
            .maglev_table(options.maglev_table_size)
            .expect("a Maglev table for a frontend with active backends");
    }
}

fn check_refusal(errors: &FieldErrors) {
    assert!(!errors.is_empty(), "a refusal without a field problem");
    for error in errors.iter() {
        let text = error.to_string();
        assert!(!text.trim().is_empty(), "a field problem without text");
    }
}

/// Keeps the first object of each (namespace, name).
fn dedup_by_name<T>(objects: &mut Vec<T>, name: impl Fn(&T) -> (String, String)) {
    let mut seen = BTreeSet::new();
    objects.retain(|object| seen.insert(name(object)));
}
