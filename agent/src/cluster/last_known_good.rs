//! Last known good: an object whose new version is invalid (a file that no
//! longer parses, a policy that fails validation) keeps its previous valid
//! version in force, shown as stale with the new version's errors, so a typo
//! never opens traffic a rule closed nor drops a pod out of enforcement.
//! Removing the object removes it; an object never valid contributes nothing.

use std::collections::BTreeMap;

/// The versions of one object: what is in force and what is wrong.
#[derive(Clone, Debug, PartialEq)]
pub enum Version<V, E> {
    /// The latest version is valid and in force.
    Valid(V),
    /// The latest version is invalid; the previous valid one stays in force.
    Stale { good: V, errors: E },
    /// No version was ever valid: nothing is in force.
    Invalid(E),
}

impl<V, E> Version<V, E> {
    /// The object's version after `latest`, given the one before it (None
    /// for a new object).
    pub fn next(previous: Option<Self>, latest: Result<V, E>) -> Self {
        match (latest, previous) {
            (Ok(good), _) => Version::Valid(good),
            (Err(errors), Some(Version::Valid(good) | Version::Stale { good, .. })) => {
                Version::Stale { good, errors }
            }
            (Err(errors), Some(Version::Invalid(_)) | None) => Version::Invalid(errors),
        }
    }

    /// The version in force, if any.
    pub fn in_force(&self) -> Option<&V> {
        match self {
            Version::Valid(good) | Version::Stale { good, .. } => Some(good),
            Version::Invalid(_) => None,
        }
    }

    /// Why the latest version is invalid, if it is.
    pub fn errors(&self) -> Option<&E> {
        match self {
            Version::Valid(_) => None,
            Version::Stale { errors, .. } | Version::Invalid(errors) => Some(errors),
        }
    }

    pub fn is_stale(&self) -> bool {
        matches!(self, Version::Stale { .. })
    }
}

/// The versions of a set of objects, by key.
#[derive(Clone, Debug)]
pub struct LastKnownGood<K, V, E> {
    versions: BTreeMap<K, Version<V, E>>,
}

impl<K, V, E> Default for LastKnownGood<K, V, E> {
    fn default() -> Self {
        LastKnownGood {
            versions: BTreeMap::new(),
        }
    }
}

impl<K: Ord, V, E> LastKnownGood<K, V, E> {
    /// Takes every object's latest version; objects not among them were
    /// deleted and are forgotten.
    pub fn update(&mut self, latest: impl IntoIterator<Item = (K, Result<V, E>)>) {
        let mut previous = std::mem::take(&mut self.versions);
        self.versions = latest
            .into_iter()
            .map(|(key, latest)| {
                let before = previous.remove(&key);
                let version = Version::next(before, latest);
                (key, version)
            })
            .collect();
    }

    /// Every object with its versions.
    pub fn iter(&self) -> impl Iterator<Item = (&K, &Version<V, E>)> {
        self.versions.iter()
    }

    /// The versions in force, by key.
    pub fn in_force(&self) -> impl Iterator<Item = (&K, &V)> {
        self.versions
            .iter()
            .filter_map(|(key, version)| version.in_force().map(|v| (key, v)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Store = LastKnownGood<&'static str, u32, &'static str>;

    fn in_force(store: &Store) -> Vec<(&'static str, u32)> {
        store.in_force().map(|(k, v)| (*k, *v)).collect()
    }

    #[test]
    fn an_invalid_edit_keeps_the_old_version_in_force_as_stale() {
        let mut store = Store::default();
        store.update([("a", Ok(1))]);
        store.update([("a", Err("typo"))]);
        assert_eq!(in_force(&store), [("a", 1)]);
        let (_, version) = store.iter().next().unwrap();
        assert!(version.is_stale());
        assert_eq!(version.errors(), Some(&"typo"));
        // Still invalid (another typo): the same good version stays.
        store.update([("a", Err("another"))]);
        assert_eq!(in_force(&store), [("a", 1)]);
        assert_eq!(store.iter().next().unwrap().1.errors(), Some(&"another"));
    }

    #[test]
    fn a_fixed_edit_replaces_the_old_version() {
        let mut store = Store::default();
        store.update([("a", Ok(1))]);
        store.update([("a", Err("typo"))]);
        store.update([("a", Ok(2))]);
        assert_eq!(in_force(&store), [("a", 2)]);
        assert_eq!(store.iter().next().unwrap().1, &Version::Valid(2));
    }

    #[test]
    fn deleting_removes_even_a_stale_object() {
        let mut store = Store::default();
        store.update([("a", Ok(1)), ("b", Ok(2))]);
        store.update([("a", Err("typo")), ("b", Ok(2))]);
        store.update([("b", Ok(2))]);
        assert_eq!(in_force(&store), [("b", 2)]);
        // Created again invalid: nothing of the deleted version comes back.
        store.update([("a", Err("typo")), ("b", Ok(2))]);
        assert_eq!(in_force(&store), [("b", 2)]);
    }

    #[test]
    fn an_invalid_first_version_contributes_nothing() {
        let mut store = Store::default();
        store.update([("a", Err("typo"))]);
        assert!(in_force(&store).is_empty());
        let (_, version) = store.iter().next().unwrap();
        assert!(!version.is_stale());
        assert_eq!(version.errors(), Some(&"typo"));
        // Still nothing after a second invalid version.
        store.update([("a", Err("again"))]);
        assert!(in_force(&store).is_empty());
    }
}
