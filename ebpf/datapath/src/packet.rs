//! Bounds-checked reads from the packet, the only place that touches raw
//! packet memory.

use core::mem::size_of;

use aya_ebpf::programs::TcContext;

/// The deepest header offset the datapath reads. Keeping every offset below
/// a constant bound is what lets the verifier prove the reads safe; no header
/// chain Weir parses comes close.
pub const MAX_HEADER_OFFSET: usize = 1024;

/// Reads of fixed-size values at byte offsets of the packet.
pub struct Packet<'a> {
    ctx: &'a TcContext,
}

impl<'a> Packet<'a> {
    pub fn new(ctx: &'a TcContext) -> Self {
        Packet { ctx }
    }

    /// Total length of the packet, linear part and fragments.
    #[inline(always)]
    pub fn len(&self) -> usize {
        self.ctx.len() as usize
    }

    /// Reads a `T` at `offset`, or `None` if the packet ends first.
    ///
    /// Direct packet access first; when the bytes exist but are outside the
    /// linear area of the skb, pull them in once and retry.
    #[inline(always)]
    pub fn read<T: Copy>(&self, offset: usize) -> Option<T> {
        if offset > MAX_HEADER_OFFSET {
            return None;
        }
        if let Some(value) = self.read_linear(offset) {
            return Some(value);
        }
        let end = offset + size_of::<T>();
        if end > self.len() || self.ctx.pull_data(end as u32).is_err() {
            return None;
        }
        self.read_linear(offset)
    }

    #[inline(always)]
    fn read_linear<T: Copy>(&self, offset: usize) -> Option<T> {
        let (start, end) = self.linear_bounds();
        if start + offset + size_of::<T>() > end {
            return None;
        }
        // SAFETY: [start + offset, start + offset + size_of::<T>()) lies
        // inside [data, data_end), checked just above; T is Copy and read
        // unaligned, so any byte pattern at any address is fine for the
        // integer arrays this is used with.
        Some(unsafe { ((start + offset) as *const T).read_unaligned() })
    }

    /// `skb->data` and `skb->data_end`, loaded afresh on every call.
    ///
    /// The loads are volatile on purpose: if LLVM reuses an earlier load it
    /// re-zero-extends the 32-bit field in a register, which turns the
    /// verifier's packet pointer into a plain scalar and the program is
    /// rejected. A fresh load is also required after `bpf_skb_pull_data`,
    /// which invalidates earlier packet pointers.
    #[inline(always)]
    fn linear_bounds(&self) -> (usize, usize) {
        let skb = self.ctx.skb.skb;
        // SAFETY: `skb` is the context pointer the kernel passed to the
        // program; reading its data/data_end fields is always allowed.
        unsafe {
            (
                core::ptr::read_volatile(&(*skb).data) as usize,
                core::ptr::read_volatile(&(*skb).data_end) as usize,
            )
        }
    }
}
