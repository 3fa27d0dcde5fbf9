//! Pins an earlier agent left that this datapath cannot reuse, in the real
//! kernel: a map of another layout, a maglev map sized by other options,
//! an older ABI version. Each is replaced by a new map of the object's
//! layout, and the version is recorded pending until the caller says the
//! new programs are attached.

use std::ffi::CString;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::Path;

use weir_abi::{map_names, ABI_VERSION};
use weir_agent::datapath::pins::{self, MapLayout, Recorded};
use weir_agent::datapath::{object, Datapath, LoadOptions};
use weir_tests::datapath::PinDir;
use weir_tests::require_root;

/// The layouts this agent's object pins (maglev at the default options).
fn expected() -> std::collections::BTreeMap<String, MapLayout> {
    let options = LoadOptions::default();
    let maglev = options.maglev_table_size * options.maglev_tables;
    pins::expected(object().unwrap(), &[(map_names::LB4_MAGLEV, maglev)]).unwrap()
}

fn layout(pins: &Path, map: &str) -> MapLayout {
    pins::pinned(&pins.join(map))
        .unwrap()
        .unwrap_or_else(|| panic!("{map} is pinned"))
}

fn map_id(pins: &Path, map: &str) -> u32 {
    aya::maps::MapData::from_pin(pins.join(map))
        .unwrap()
        .info()
        .unwrap()
        .id()
}

/// Creates a map of `layout` and pins it at `path`, as an agent built with
/// that layout would have.
fn pin_map(path: &Path, layout: &MapLayout, raw_type: u32) {
    #[repr(C)]
    struct MapCreate {
        map_type: u32,
        key_size: u32,
        value_size: u32,
        max_entries: u32,
        map_flags: u32,
        rest: [u32; 27],
    }
    #[repr(C)]
    struct ObjPin {
        pathname: u64,
        bpf_fd: u32,
        file_flags: u32,
        path_fd: i32,
        pad: u32,
    }
    let create = MapCreate {
        map_type: raw_type,
        key_size: layout.key_size,
        value_size: layout.value_size,
        max_entries: layout.max_entries,
        map_flags: layout.flags,
        rest: [0; 27],
    };
    // SAFETY: BPF_MAP_CREATE (0) reads `create`, a zero-padded bpf_attr
    // prefix of the size passed, and returns a new fd or -1.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            0,
            &create as *const MapCreate,
            size_of::<MapCreate>(),
        )
    };
    assert!(
        fd >= 0,
        "BPF_MAP_CREATE: {}",
        std::io::Error::last_os_error()
    );
    let fd = i32::try_from(fd).unwrap();
    // SAFETY: the kernel returned `fd` just now and nothing else owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let path = CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    let pin = ObjPin {
        pathname: path.as_ptr() as u64,
        bpf_fd: u32::try_from(std::os::fd::AsRawFd::as_raw_fd(&fd)).unwrap(),
        file_flags: 0,
        path_fd: 0,
        pad: 0,
    };
    // SAFETY: BPF_OBJ_PIN (6) reads `pin`, whose path outlives the call.
    let pinned =
        unsafe { libc::syscall(libc::SYS_bpf, 6, &pin as *const ObjPin, size_of::<ObjPin>()) };
    assert_eq!(
        pinned,
        0,
        "BPF_OBJ_PIN: {}",
        std::io::Error::last_os_error()
    );
}

#[test]
fn a_fresh_directory_and_a_reload_replace_nothing() {
    require_root();
    let pins = PinDir::new();
    let first = Datapath::load(pins.path()).unwrap();
    assert!(first.replaced_pins().is_empty());
    assert!(!first.fill_before_attach());
    assert_eq!(
        pins::recorded(pins.path()).unwrap(),
        Recorded::Serving(ABI_VERSION)
    );
    drop(first);
    // Every map of the object, as the kernel reports it, is what the check
    // expects: a reload reuses them all.
    for (map, expected) in expected() {
        assert_eq!(layout(pins.path(), &map), expected, "{map}");
    }
    let policy = map_id(pins.path(), map_names::POLICY);
    let again = Datapath::load(pins.path()).unwrap();
    assert!(
        again.replaced_pins().is_empty(),
        "{:?}",
        again.replaced_pins()
    );
    assert!(!again.fill_before_attach());
    assert_eq!(map_id(pins.path(), map_names::POLICY), policy, "reused");
}

#[test]
fn a_pinned_map_with_another_value_size_is_replaced() {
    require_root();
    let pins = PinDir::new();
    std::fs::create_dir_all(pins.path()).unwrap();
    let expected = expected();
    let policy = expected[map_names::POLICY];
    let wrong = MapLayout {
        value_size: policy.value_size + 4,
        ..policy
    };
    const BPF_MAP_TYPE_LPM_TRIE: u32 = 11;
    pin_map(
        &pins.path().join(map_names::POLICY),
        &wrong,
        BPF_MAP_TYPE_LPM_TRIE,
    );
    let old = map_id(pins.path(), map_names::POLICY);

    let mut datapath = Datapath::load(pins.path()).unwrap();
    let replaced = datapath.replaced_pins().to_vec();
    assert_eq!(replaced.len(), 1, "{replaced:?}");
    assert_eq!(replaced[0].map, map_names::POLICY);
    assert_eq!(
        replaced[0].reason,
        format!(
            "value size {}, expected {}",
            wrong.value_size, policy.value_size
        )
    );
    assert_eq!(layout(pins.path(), map_names::POLICY), policy);
    assert_ne!(map_id(pins.path(), map_names::POLICY), old);
    assert!(datapath.fill_before_attach());
    assert_eq!(
        pins::recorded(pins.path()).unwrap(),
        Recorded::Pending(ABI_VERSION)
    );
    // The new map is usable by the typed accessors.
    assert!(
        weir_agent::datapath::maps::policy_entries(datapath.ebpf_mut())
            .unwrap()
            .is_empty()
    );
    drop(datapath);

    // An agent that died before attaching defers the attach again, and
    // keeps the maps it created.
    let new = map_id(pins.path(), map_names::POLICY);
    let mut again = Datapath::load(pins.path()).unwrap();
    assert!(again.replaced_pins().is_empty());
    assert!(again.fill_before_attach());
    assert_eq!(map_id(pins.path(), map_names::POLICY), new);
    again.serving().unwrap();
    assert_eq!(
        pins::recorded(pins.path()).unwrap(),
        Recorded::Serving(ABI_VERSION)
    );
    drop(again);
    let after = Datapath::load(pins.path()).unwrap();
    assert!(!after.fill_before_attach());
    weir_tests::figure!(
        "pins: {} replaced ({}), pending until attached",
        replaced.len(),
        replaced[0]
    );
}

#[test]
fn a_maglev_map_sized_by_other_options_is_replaced() {
    require_root();
    let pins = PinDir::new();
    drop(Datapath::load(pins.path()).unwrap());
    let fewer = LoadOptions {
        maglev_tables: 16,
        ..LoadOptions::default()
    };
    let datapath = Datapath::load_with(pins.path(), &fewer).unwrap();
    let replaced: Vec<&str> = datapath
        .replaced_pins()
        .iter()
        .map(|pin| pin.map.as_str())
        .collect();
    assert_eq!(replaced, [map_names::LB4_MAGLEV]);
    assert_eq!(
        layout(pins.path(), map_names::LB4_MAGLEV).max_entries,
        fewer.maglev_table_size * 16
    );
}

#[test]
fn an_older_abi_version_replaces_every_pinned_map() {
    require_root();
    let pins = PinDir::new();
    drop(Datapath::load(pins.path()).unwrap());
    let before: Vec<(String, u32)> = expected()
        .into_keys()
        .map(|map| {
            let id = map_id(pins.path(), &map);
            (map, id)
        })
        .collect();
    let link = pins.path().join(pins::ABI_LINK);
    std::fs::remove_file(&link).unwrap();
    std::os::unix::fs::symlink(format!("v{}", ABI_VERSION - 1), &link).unwrap();

    let datapath = Datapath::load(pins.path()).unwrap();
    assert_eq!(datapath.replaced_pins().len(), before.len());
    assert!(datapath.replaced_pins().iter().all(|pin| pin.reason
        == format!(
            "pinned with ABI version {}, this agent has {ABI_VERSION}",
            ABI_VERSION - 1
        )));
    for (map, old) in &before {
        assert_ne!(map_id(pins.path(), map), *old, "{map} replaced");
    }
    assert!(datapath.fill_before_attach());
    weir_tests::figure!(
        "pins: ABI version {} -> {ABI_VERSION}: {} of {} maps replaced",
        ABI_VERSION - 1,
        datapath.replaced_pins().len(),
        before.len()
    );
}
