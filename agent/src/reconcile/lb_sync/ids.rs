//! Ids for map entries shared between frontends (backends, reverse NAT,
//! Maglev tables), each held by a count of frontends.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

struct Held<I> {
    id: I,
    holders: usize,
}

/// Ids handed out from 1 up (0 means none). An id its last holder lets go
/// is retired: the caller removes its map entry at the end of the pass and
/// only then frees it, so an id never means two things within one pass.
///
/// Freed ids are quarantined: never-used ids are handed out first, and only
/// when those are spent the freed ones, longest-freed first. NAT and
/// affinity entries the datapath keeps per connection and per client name
/// a backend id; until the connection sweep has removed the ones of a
/// retired id (and the LRU aged out the rest), that id must not stand for
/// another service's backend (issue 16 item 4).
pub(super) struct IdPool<K: Ord, I> {
    ids: BTreeMap<K, Held<I>>,
    retired: Vec<I>,
    free: VecDeque<I>,
    next: I,
    max: I,
}

impl<K: Ord + Clone, I: Copy + Ord + From<u8> + std::ops::Add<Output = I>> IdPool<K, I> {
    pub(super) fn new(max: I) -> Self {
        IdPool {
            ids: BTreeMap::new(),
            retired: Vec::new(),
            free: VecDeque::new(),
            next: I::from(1),
            max,
        }
    }

    /// Takes over `id` for `key` from the maps an earlier agent left; it has
    /// no holder until a frontend acquires it.
    pub(super) fn adopt(&mut self, key: K, id: I) {
        self.ids.insert(key, Held { id, holders: 0 });
        if id >= self.next {
            self.next = id + I::from(1);
        }
    }

    /// The id of `key`, if it has one (held, or adopted and not retired).
    pub(super) fn get(&self, key: &K) -> Option<I> {
        self.ids.get(key).map(|held| held.id)
    }

    /// The id of `key` with one more holder; None when the pool is spent.
    pub(super) fn acquire(&mut self, key: &K) -> Option<I> {
        if let Some(held) = self.ids.get_mut(key) {
            held.holders += 1;
            return Some(held.id);
        }
        let id = if self.next <= self.max {
            let id = self.next;
            self.next = self.next + I::from(1);
            id
        } else {
            // Spent: the id freed longest ago.
            self.free.pop_front()?
        };
        self.ids.insert(key.clone(), Held { id, holders: 1 });
        Some(id)
    }

    /// One holder less for `key`; the id is retired with the last.
    pub(super) fn release(&mut self, key: &K) {
        let Some(held) = self.ids.get_mut(key) else {
            return;
        };
        held.holders = held.holders.saturating_sub(1);
        if held.holders == 0 {
            let id = held.id;
            self.ids.remove(key);
            self.retired.push(id);
        }
    }

    /// Drops every holder (a full pass acquires them again); ids keep their
    /// keys.
    pub(super) fn forget_holders(&mut self) {
        for held in self.ids.values_mut() {
            held.holders = 0;
        }
    }

    /// Retires the ids nobody holds.
    pub(super) fn retire_unheld(&mut self) {
        let unheld: Vec<K> = self
            .ids
            .iter()
            .filter(|(_, held)| held.holders == 0)
            .map(|(key, _)| key.clone())
            .collect();
        for key in unheld {
            if let Some(held) = self.ids.remove(&key) {
                self.retired.push(held.id);
            }
        }
    }

    /// The ids that belong to a key.
    pub(super) fn in_use(&self) -> BTreeSet<I> {
        self.ids.values().map(|held| held.id).collect()
    }

    /// Frees the retired ids, each after `remove` (its map entry's removal)
    /// succeeded; on an error the rest stay retired.
    pub(super) fn free_retired<E>(
        &mut self,
        mut remove: impl FnMut(I) -> Result<(), E>,
    ) -> Result<(), E> {
        while let Some(id) = self.retired.pop() {
            if let Err(error) = remove(id) {
                self.retired.push(id);
                return Err(error);
            }
            self.free.push_back(id);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::IdPool;

    #[test]
    fn ids_are_shared_stable_retired_before_reuse_and_bounded() {
        let mut pool: IdPool<&str, u16> = IdPool::new(2);
        assert_eq!(pool.acquire(&"a"), Some(1));
        assert_eq!(pool.acquire(&"b"), Some(2));
        assert_eq!(pool.acquire(&"a"), Some(1), "a second holder, same id");
        assert_eq!(pool.acquire(&"c"), None, "bounded");

        pool.release(&"a");
        assert_eq!(pool.acquire(&"c"), None, "a still has a holder");
        pool.release(&"a");
        assert_eq!(
            pool.acquire(&"c"),
            None,
            "retired, not reusable before its entry is removed"
        );
        let mut removed = Vec::new();
        pool.free_retired(|id| {
            removed.push(id);
            Ok::<_, ()>(())
        })
        .unwrap();
        assert_eq!(removed, vec![1]);
        assert_eq!(pool.acquire(&"c"), Some(1), "freed, then reused when spent");

        pool.adopt("z", 7);
        assert_eq!(pool.acquire(&"z"), Some(7));
        pool.forget_holders();
        pool.retire_unheld();
        assert!(pool.in_use().is_empty());
        assert_eq!(pool.free_retired(|_| Err("map full")), Err("map full"));
        let mut left = 0;
        pool.free_retired(|_| {
            left += 1;
            Ok::<_, ()>(())
        })
        .unwrap();
        assert_eq!(left, 3, "a failed removal keeps the ids retired");
    }

    #[test]
    fn freed_ids_wait_until_every_fresh_one_is_used_then_come_back_oldest_first() {
        let mut pool: IdPool<&str, u16> = IdPool::new(4);
        assert_eq!(pool.acquire(&"a"), Some(1));
        assert_eq!(pool.acquire(&"b"), Some(2));
        pool.release(&"a");
        pool.release(&"b");
        pool.free_retired(|_| Ok::<_, ()>(())).unwrap();
        // 1 and 2 are free, but a new service's backends get 3 and 4 first:
        // the old ids' connections and affinities have time to go.
        assert_eq!(pool.acquire(&"c"), Some(3));
        assert_eq!(pool.acquire(&"d"), Some(4));
        // Spent: the freed ids come back in the order they were freed.
        let freed_first = pool.acquire(&"e");
        let freed_next = pool.acquire(&"f");
        assert!(
            matches!((freed_first, freed_next), (Some(x), Some(y)) if x != y && x <= 2 && y <= 2),
            "{freed_first:?} {freed_next:?}"
        );
        assert_eq!(pool.acquire(&"g"), None, "bounded");
    }
}
