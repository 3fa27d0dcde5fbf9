use super::*;

fn layout() -> MapLayout {
    MapLayout {
        map_type: MapType::LpmTrie,
        key_size: 24,
        value_size: 8,
        max_entries: 65_536,
        flags: 1,
    }
}

#[test]
fn the_same_layout_matches() {
    assert_eq!(mismatch(&layout(), &layout()), None);
}

#[test]
fn every_difference_is_named() {
    let found = MapLayout {
        map_type: MapType::Hash,
        value_size: 12,
        max_entries: 1024,
        ..layout()
    };
    assert_eq!(
        mismatch(&layout(), &found).as_deref(),
        Some(
            "map type Hash, expected LpmTrie, value size 12, expected 8, \
             max entries 1024, expected 65536"
        )
    );
    let found = MapLayout {
        key_size: 20,
        flags: 0,
        ..layout()
    };
    assert_eq!(
        mismatch(&layout(), &found).as_deref(),
        Some("key size 20, expected 24, flags 0, expected 1")
    );
}

#[test]
fn recorded_versions_parse() {
    assert_eq!(parse_recorded("v3"), Some(Recorded::Serving(3)));
    assert_eq!(parse_recorded("v12-pending"), Some(Recorded::Pending(12)));
    assert_eq!(parse_recorded("3"), None);
    assert_eq!(parse_recorded("v"), None);
    assert_eq!(parse_recorded("v3-done"), None);
}

#[test]
fn ring_buffers_are_whole_pages_a_power_of_two_of_them() {
    assert_eq!(ring_size(1 << 20, 4096), 1 << 20);
    assert_eq!(ring_size(4097, 4096), 8192);
    assert_eq!(ring_size(3 * 4096, 4096), 4 * 4096);
    assert_eq!(ring_size(0, 4096), 0);
}
