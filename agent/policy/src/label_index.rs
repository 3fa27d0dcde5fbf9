//! Identities by label, so a selector with an `In` requirement is matched
//! against the few identities that carry one of its values instead of
//! every identity (what makes resolving 1,000 policies over 10,000
//! identities fast). The index only narrows: every candidate is still
//! matched by the selector itself.

use std::collections::{BTreeSet, HashMap};

use crate::identity::{ClusterView, NumericIdentity};
use crate::labels::LabelSet;
use crate::rule::{Entity, Peer};
use crate::selector::{Operator, Selector};

/// (key without its source, value) → identities with that label.
#[derive(Debug, Clone, Default)]
pub(crate) struct LabelIndex {
    by_label: HashMap<(String, String), BTreeSet<NumericIdentity>>,
}

fn bare(full_key: &str) -> &str {
    weir_types::labels::split_source(full_key).1
}

impl LabelIndex {
    pub(crate) fn of(view: &ClusterView) -> LabelIndex {
        let mut index = LabelIndex::default();
        for identity in view.identities.values() {
            index.add(identity.id, &identity.labels);
        }
        index
    }

    pub(crate) fn add(&mut self, id: NumericIdentity, labels: &LabelSet) {
        for (key, value) in labels.iter() {
            let slot = (bare(key).to_string(), value.to_string());
            self.by_label.entry(slot).or_default().insert(id);
        }
    }

    pub(crate) fn remove(&mut self, id: NumericIdentity, labels: &LabelSet) {
        for (key, value) in labels.iter() {
            let slot = (bare(key).to_string(), value.to_string());
            if let Some(ids) = self.by_label.get_mut(&slot) {
                ids.remove(&id);
                if ids.is_empty() {
                    self.by_label.remove(&slot);
                }
            }
        }
    }

    /// A superset of the identities `peers` select by label; None when some
    /// peer can only be answered by looking at every identity.
    pub(crate) fn candidates(&self, peers: &[Peer]) -> Option<BTreeSet<NumericIdentity>> {
        let mut out = BTreeSet::new();
        for peer in peers {
            match peer {
                Peer::Any | Peer::Cidr { .. } => {}
                Peer::Entity(
                    Entity::All
                    | Entity::None
                    | Entity::World
                    | Entity::WorldIpv4
                    | Entity::WorldIpv6,
                ) => {}
                Peer::Entity(_) => return None,
                Peer::Endpoints(selector) => out.extend(self.selector_candidates(selector)?),
            }
        }
        Some(out)
    }

    /// The identities with a value of the selector's narrowest `In`
    /// requirement.
    fn selector_candidates(&self, selector: &Selector) -> Option<BTreeSet<NumericIdentity>> {
        let candidates = |requirement: &crate::selector::Requirement| {
            let key = bare(&requirement.key).to_string();
            requirement
                .values
                .iter()
                .filter_map(|value| self.by_label.get(&(key.clone(), value.clone())))
                .flatten()
                .copied()
                .collect::<BTreeSet<_>>()
        };
        selector
            .requirements()
            .filter(|r| r.operator == Operator::In)
            .map(candidates)
            .min_by_key(BTreeSet::len)
    }
}
