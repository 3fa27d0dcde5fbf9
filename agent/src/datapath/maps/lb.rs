//! Typed access to the load-balancing maps (`weir_abi::lb`): what the
//! service sync writes and what `weir bpf lb list` reads. Errors name the map.

use aya::maps::{Array, MapData};
use aya::Ebpf;
use weir_abi::lb::{Lb4Backend, Lb4Key, Lb4NatEntry, Lb4NatKey, Lb4RevNat, Lb4Service};
use weir_abi::map_names;

use super::{hash, map_err, removed, TableError};

fn upsert<K: aya::Pod, V: aya::Pod>(
    ebpf: &mut Ebpf,
    name: &'static str,
    key: K,
    value: V,
) -> Result<(), TableError> {
    hash::<K, V>(ebpf, name)?
        .insert(key, value, 0)
        .map_err(map_err(name))
}

fn remove<K: aya::Pod, V: aya::Pod>(
    ebpf: &mut Ebpf,
    name: &'static str,
    key: &K,
) -> Result<(), TableError> {
    removed(name, hash::<K, V>(ebpf, name)?.remove(key))
}

fn entries<K: aya::Pod, V: aya::Pod>(
    ebpf: &mut Ebpf,
    name: &'static str,
) -> Result<Vec<(K, V)>, TableError> {
    hash::<K, V>(ebpf, name)?
        .iter()
        .collect::<Result<Vec<_>, _>>()
        .map_err(map_err(name))
}

pub fn set_service(ebpf: &mut Ebpf, key: Lb4Key, value: Lb4Service) -> Result<(), TableError> {
    upsert(ebpf, map_names::LB4_SERVICES, key, value)
}

pub fn remove_service(ebpf: &mut Ebpf, key: &Lb4Key) -> Result<(), TableError> {
    remove::<Lb4Key, Lb4Service>(ebpf, map_names::LB4_SERVICES, key)
}

pub fn services(ebpf: &mut Ebpf) -> Result<Vec<(Lb4Key, Lb4Service)>, TableError> {
    entries(ebpf, map_names::LB4_SERVICES)
}

pub fn set_backend(ebpf: &mut Ebpf, id: u32, value: Lb4Backend) -> Result<(), TableError> {
    upsert(ebpf, map_names::LB4_BACKENDS, id, value)
}

pub fn remove_backend(ebpf: &mut Ebpf, id: u32) -> Result<(), TableError> {
    remove::<u32, Lb4Backend>(ebpf, map_names::LB4_BACKENDS, &id)
}

pub fn backends(ebpf: &mut Ebpf) -> Result<Vec<(u32, Lb4Backend)>, TableError> {
    entries(ebpf, map_names::LB4_BACKENDS)
}

pub fn set_revnat(ebpf: &mut Ebpf, id: u16, value: Lb4RevNat) -> Result<(), TableError> {
    upsert(ebpf, map_names::LB4_REVNAT, id, value)
}

pub fn remove_revnat(ebpf: &mut Ebpf, id: u16) -> Result<(), TableError> {
    remove::<u16, Lb4RevNat>(ebpf, map_names::LB4_REVNAT, &id)
}

pub fn revnats(ebpf: &mut Ebpf) -> Result<Vec<(u16, Lb4RevNat)>, TableError> {
    entries(ebpf, map_names::LB4_REVNAT)
}

/// Per-packet NAT mappings (`weir_lb4_nat`).
pub fn nat_entries(ebpf: &mut Ebpf) -> Result<Vec<(Lb4NatKey, Lb4NatEntry)>, TableError> {
    entries(ebpf, map_names::LB4_NAT)
}

/// Writes Maglev table number `table` (backend ids, one per slot).
pub fn set_maglev_table(ebpf: &mut Ebpf, table: u32, slots: &[u32]) -> Result<(), TableError> {
    let name = map_names::LB4_MAGLEV;
    let map = ebpf.map_mut(name).ok_or(TableError::Missing(name))?;
    let mut array: Array<&mut MapData, u32> = Array::try_from(map).map_err(map_err(name))?;
    let base = table * slots.len() as u32;
    for (i, id) in slots.iter().enumerate() {
        array.set(base + i as u32, id, 0).map_err(map_err(name))?;
    }
    Ok(())
}

/// Reads Maglev table number `table` of `size` slots.
pub fn maglev_table(ebpf: &mut Ebpf, table: u32, size: u32) -> Result<Vec<u32>, TableError> {
    let name = map_names::LB4_MAGLEV;
    let map = ebpf.map_mut(name).ok_or(TableError::Missing(name))?;
    let array: Array<&mut MapData, u32> = Array::try_from(map).map_err(map_err(name))?;
    (0..size)
        .map(|i| array.get(&(table * size + i), 0).map_err(map_err(name)))
        .collect()
}
