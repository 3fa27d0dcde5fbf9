//! `weir_events` (the ring buffer of flow events) and `weir_event_loss`
//! (events dropped because it was full).

use aya::maps::MapData;
use aya::Ebpf;
use weir_abi::map_names;

use super::{map_err, TableError};

/// Takes every event waiting in the `weir_events` ring buffer.
pub fn drain_events(ebpf: &mut Ebpf) -> Result<Vec<weir_abi::FlowEvent>, TableError> {
    let name = map_names::EVENTS;
    let map = ebpf.map_mut(name).ok_or(TableError::Missing(name))?;
    let mut ring = aya::maps::RingBuf::try_from(map).map_err(map_err(name))?;
    let mut events = Vec::new();
    while let Some(item) = ring.next() {
        events.extend(read_event(&item));
    }
    Ok(events)
}

/// The `FlowEvent` in one ring buffer record; None for a short record.
pub fn read_event(record: &[u8]) -> Option<weir_abi::FlowEvent> {
    if record.len() < size_of::<weir_abi::FlowEvent>() {
        return None;
    }
    // SAFETY: the record holds at least a FlowEvent's bytes (checked above),
    // FlowEvent is plain old data, and read_unaligned makes no alignment
    // assumption.
    Some(unsafe { std::ptr::read_unaligned(record.as_ptr().cast::<weir_abi::FlowEvent>()) })
}

/// Events lost because the ring buffer was full, summed over CPUs.
pub fn events_lost(ebpf: &mut Ebpf) -> Result<u64, TableError> {
    let name = map_names::EVENT_LOSS;
    let map = ebpf.map_mut(name).ok_or(TableError::Missing(name))?;
    let array: aya::maps::PerCpuArray<&mut MapData, u64> =
        aya::maps::PerCpuArray::try_from(map).map_err(map_err(name))?;
    let values = array.get(&0, 0).map_err(map_err(name))?;
    Ok(values.iter().sum())
}
