use super::*;

fn claims(rank: u64, records: &[(u8, &'static str)]) -> Claims<u8, &'static str> {
    Claims {
        rank,
        records: records.to_vec(),
    }
}

fn apply(object: &str, rank: u64, records: &[(u8, &'static str)]) -> Input<u8, &'static str> {
    Input::Apply(object.into(), claims(rank, records))
}

fn listed(object: &str, rank: u64, records: &[(u8, &'static str)]) -> Input<u8, &'static str> {
    Input::InitApply(object.into(), claims(rank, records))
}

#[test]
fn the_first_list_upserts_everything_then_syncs_and_changes_follow() {
    let mut index = Index::default();
    assert!(index.feed(Input::Init).is_empty());
    assert!(index
        .feed(listed("a", 1, &[(1, "a1"), (2, "a2")]))
        .is_empty());
    assert_eq!(
        index.feed(Input::InitDone),
        vec![
            StoreEvent::Upsert(1, "a1"),
            StoreEvent::Upsert(2, "a2"),
            StoreEvent::Synced
        ]
    );
    // The object drops a record and changes another.
    assert_eq!(
        index.feed(apply("a", 2, &[(1, "a1'")])),
        vec![StoreEvent::Upsert(1, "a1'"), StoreEvent::Delete(2)]
    );
    // A write that changes nothing the consumer sees says nothing.
    assert!(index.feed(apply("a", 3, &[(1, "a1'")])).is_empty());
    assert_eq!(
        index.feed(Input::Delete("a".into())),
        vec![StoreEvent::Delete(1)]
    );
    assert!(index.feed(Input::Delete("a".into())).is_empty());
}

#[test]
fn the_latest_claimant_of_a_key_wins_and_the_other_takes_over_when_it_goes() {
    let mut index = Index::default();
    index.feed(Input::Init);
    index.feed(Input::InitDone);
    assert_eq!(
        index.feed(apply("old", 5, &[(7, "old")])),
        vec![StoreEvent::Upsert(7, "old")]
    );
    assert_eq!(
        index.feed(apply("new", 9, &[(7, "new")])),
        vec![StoreEvent::Upsert(7, "new")]
    );
    // The stale claimant going away changes nothing.
    assert!(index.feed(Input::Delete("old".into())).is_empty());
    index.feed(apply("old", 10, &[(7, "old")]));
    assert_eq!(
        index.feed(Input::Delete("old".into())),
        vec![StoreEvent::Upsert(7, "new")]
    );
}

#[test]
fn a_relist_deletes_what_went_away_and_upserts_every_current_record() {
    let mut index = Index::default();
    index.feed(Input::Init);
    index.feed(listed("a", 1, &[(1, "a")]));
    index.feed(listed("b", 2, &[(2, "b")]));
    index.feed(Input::InitDone);
    // 410 Gone: the watcher lists again. b went away, c is new, a is as
    // it was; nothing is said until the list is complete.
    assert!(index.feed(Input::Init).is_empty());
    assert!(index.feed(listed("a", 1, &[(1, "a")])).is_empty());
    assert!(index.feed(listed("c", 4, &[(3, "c")])).is_empty());
    assert_eq!(
        index.feed(Input::InitDone),
        vec![
            StoreEvent::Delete(2),
            StoreEvent::Upsert(1, "a"),
            StoreEvent::Upsert(3, "c"),
            StoreEvent::Synced
        ]
    );
    assert_eq!(
        index.feed(Input::Delete("c".into())),
        vec![StoreEvent::Delete(3)]
    );
}
