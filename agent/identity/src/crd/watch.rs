//! kube-rs watchers turned into the store's watch contract
//! ([`StoreEvent`]): `Upsert` per record then `Synced`; after a relist
//! (the watcher's answer to 410 Gone, or its first list) `Delete` for what
//! went away, `Upsert` for every current record and `Synced` again.
//!
//! Records are keyed by what the store keys them by (an address, an id, a
//! node name), not by object: an endpoint object claims one record per
//! address, and two objects may claim one address for a while (a pod
//! address reused on another node before the old endpoint is gone). The
//! most recently written claimant wins ([`objects::rank`]).
//!
//! [`objects::rank`]: super::objects::rank

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Debug;

use futures_util::StreamExt;
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Resource, ResourceExt};
use serde::de::DeserializeOwned;

use crate::error::StoreError;
use crate::store::{EventStream, StoreEvent};

/// What one object claims: its records, ranked against other objects'
/// claims on the same keys.
#[derive(Debug, Clone, PartialEq)]
pub struct Claims<K, V> {
    pub rank: u64,
    pub records: Vec<(K, V)>,
}

/// A watcher event with the objects decoded: keyed by `namespace/name`.
#[derive(Debug, Clone, PartialEq)]
pub enum Input<K, V> {
    Apply(String, Claims<K, V>),
    Delete(String),
    Init,
    InitApply(String, Claims<K, V>),
    InitDone,
}

/// The records as the consumer has been told them, and the objects that
/// claim them.
#[derive(Debug)]
pub struct Index<K, V> {
    objects: HashMap<String, Claims<K, V>>,
    /// Per key, its claimants by (rank, object): the last one wins.
    claimants: BTreeMap<K, BTreeSet<(u64, String)>>,
    emitted: BTreeMap<K, V>,
    /// Objects listed since `Init`, until `InitDone`.
    relisting: Option<HashMap<String, Claims<K, V>>>,
}

impl<K, V> Default for Index<K, V> {
    fn default() -> Self {
        Index {
            objects: HashMap::new(),
            claimants: BTreeMap::new(),
            emitted: BTreeMap::new(),
            relisting: None,
        }
    }
}

impl<K: Ord + Clone, V: Clone + PartialEq> Index<K, V> {
    /// The store events `input` makes.
    pub fn feed(&mut self, input: Input<K, V>) -> Vec<StoreEvent<K, V>> {
        match input {
            Input::Apply(object, claims) => {
                let mut affected = self.remove(&object);
                affected.extend(claims.records.iter().map(|(k, _)| k.clone()));
                self.insert(object, claims);
                self.changes(affected)
            }
            Input::Delete(object) => {
                let affected = self.remove(&object);
                self.changes(affected)
            }
            Input::Init => {
                self.relisting = Some(HashMap::new());
                Vec::new()
            }
            Input::InitApply(object, claims) => {
                self.relisting
                    .get_or_insert_with(HashMap::new)
                    .insert(object, claims);
                Vec::new()
            }
            Input::InitDone => self.relisted(),
        }
    }

    /// Replaces every object by the listed ones: deletes for records gone,
    /// upserts for every current one, synced.
    fn relisted(&mut self) -> Vec<StoreEvent<K, V>> {
        let listed = self.relisting.take().unwrap_or_default();
        self.objects.clear();
        self.claimants.clear();
        for (object, claims) in listed {
            self.insert(object, claims);
        }
        let current: BTreeMap<K, V> = self
            .claimants
            .keys()
            .filter_map(|k| Some((k.clone(), self.winner(k)?)))
            .collect();
        let mut events: Vec<StoreEvent<K, V>> = self
            .emitted
            .keys()
            .filter(|k| !current.contains_key(*k))
            .map(|k| StoreEvent::Delete(k.clone()))
            .collect();
        events.extend(
            current
                .iter()
                .map(|(k, v)| StoreEvent::Upsert(k.clone(), v.clone())),
        );
        events.push(StoreEvent::Synced);
        self.emitted = current;
        events
    }

    fn insert(&mut self, object: String, claims: Claims<K, V>) {
        for (key, _) in &claims.records {
            self.claimants
                .entry(key.clone())
                .or_default()
                .insert((claims.rank, object.clone()));
        }
        self.objects.insert(object, claims);
    }

    /// Forgets `object`; the keys it claimed.
    fn remove(&mut self, object: &str) -> BTreeSet<K> {
        let Some(claims) = self.objects.remove(object) else {
            return BTreeSet::new();
        };
        let mut affected = BTreeSet::new();
        for (key, _) in claims.records {
            if let Some(set) = self.claimants.get_mut(&key) {
                set.remove(&(claims.rank, object.to_string()));
                if set.is_empty() {
                    self.claimants.remove(&key);
                }
            }
            affected.insert(key);
        }
        affected
    }

    /// The record of the latest claimant of `key`.
    fn winner(&self, key: &K) -> Option<V> {
        let (_, object) = self.claimants.get(key)?.last()?;
        self.objects[object]
            .records
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
    }

    /// Events for `affected` keys whose winning record changed.
    fn changes(&mut self, affected: BTreeSet<K>) -> Vec<StoreEvent<K, V>> {
        let mut events = Vec::new();
        for key in affected {
            match self.winner(&key) {
                Some(value) if self.emitted.get(&key) != Some(&value) => {
                    self.emitted.insert(key.clone(), value.clone());
                    events.push(StoreEvent::Upsert(key, value));
                }
                Some(_) => {}
                None => {
                    if self.emitted.remove(&key).is_some() {
                        events.push(StoreEvent::Delete(key));
                    }
                }
            }
        }
        events
    }
}

/// The object's key in the index.
fn object_key<O: ResourceExt>(object: &O) -> String {
    format!(
        "{}/{}",
        object.namespace().unwrap_or_default(),
        object.name_any()
    )
}

/// A watch of every object `api` sees, as store events; `decode` gives an
/// object's claims. Errors come as items while the watcher retries with
/// kube-rs's default backoff.
pub fn watch<O, K, V>(
    api: Api<O>,
    what: &'static str,
    decode: fn(&O) -> Claims<K, V>,
) -> EventStream<StoreEvent<K, V>>
where
    O: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
    O::DynamicType: Default,
    K: Ord + Clone + Send + 'static,
    V: Clone + PartialEq + Send + 'static,
{
    let mut index = Index::default();
    watcher(api, watcher::Config::default())
        .default_backoff()
        .map(move |event| {
            let input = match event {
                Ok(watcher::Event::Apply(o)) => Input::Apply(object_key(&o), decode(&o)),
                Ok(watcher::Event::Delete(o)) => Input::Delete(object_key(&o)),
                Ok(watcher::Event::Init) => Input::Init,
                Ok(watcher::Event::InitApply(o)) => Input::InitApply(object_key(&o), decode(&o)),
                Ok(watcher::Event::InitDone) => Input::InitDone,
                Err(source) => return vec![Err(StoreError::Watch { what, source })],
            };
            index.feed(input).into_iter().map(Ok).collect::<Vec<_>>()
        })
        .flat_map(futures_util::stream::iter)
        .boxed()
}

#[cfg(test)]
mod tests;
