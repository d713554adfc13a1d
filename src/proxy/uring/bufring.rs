//! The provided buffer ring (`IORING_REGISTER_PBUF_RING`) that receives land in.
//!
//! The kernel picks a free buffer when data arrives on a socket, so a connection holds no
//! receive buffer while it is idle. The driver hands the bytes to the handler straight from
//! the buffer and gives the buffer back ([`BufRing::recycle`]) right after the callback.
//!
//! Memory: one page-aligned array of `entries` ring slots (16 bytes each; the kernel reads the
//! tail from the last two bytes of the first slot) and one block of `entries * size` bytes.
//! Both stay allocated until the driver has unregistered the ring and seen every operation
//! complete; if that cannot be confirmed the memory is leaked on purpose instead of freed.

use std::alloc::{Layout, alloc_zeroed, dealloc};
use std::io;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::types::BufRingEntry;

const PAGE: usize = 4096;

/// A registered ring of equally sized receive buffers.
pub(crate) struct BufRing {
    ring: NonNull<BufRingEntry>,
    ring_layout: Layout,
    bufs: NonNull<u8>,
    bufs_layout: Layout,
    entries: u16,
    size: u32,
    /// Our copy of the tail (next slot to fill).
    tail: u16,
    pub bgid: u16,
    /// Set once the kernel may still touch the memory (registered and not confirmed idle).
    leak_on_drop: bool,
}

impl BufRing {
    /// Allocates `entries` (a power of two, at most 32768) buffers of `size` bytes, all
    /// available to the kernel once registered.
    pub fn new(entries: u16, size: u32, bgid: u16) -> io::Result<Self> {
        if entries == 0 || !entries.is_power_of_two() || entries > 32768 || size == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "receive buffer count must be a power of two in 1..=32768 and size non-zero",
            ));
        }
        let ring_bytes = usize::from(entries) * std::mem::size_of::<BufRingEntry>();
        let ring_layout = Layout::from_size_align(ring_bytes.max(PAGE), PAGE)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let bufs_bytes = usize::from(entries)
            .checked_mul(size as usize)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "buffer ring too large"))?;
        let bufs_layout = Layout::from_size_align(bufs_bytes, PAGE)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        // SAFETY: both layouts have a non-zero size (checked above: entries > 0, size > 0).
        let ring = NonNull::new(unsafe { alloc_zeroed(ring_layout) }.cast::<BufRingEntry>());
        // SAFETY: as above.
        let bufs = NonNull::new(unsafe { alloc_zeroed(bufs_layout) });
        let (Some(ring), Some(bufs)) = (ring, bufs) else {
            // SAFETY: each pointer is freed only if it was allocated with its layout.
            unsafe {
                if let Some(r) = ring {
                    dealloc(r.as_ptr().cast(), ring_layout);
                }
                if let Some(b) = bufs {
                    dealloc(b.as_ptr(), bufs_layout);
                }
            }
            return Err(io::Error::new(
                io::ErrorKind::OutOfMemory,
                "cannot allocate the receive buffer ring",
            ));
        };
        let mut br = BufRing {
            ring,
            ring_layout,
            bufs,
            bufs_layout,
            entries,
            size,
            tail: 0,
            bgid,
            leak_on_drop: false,
        };
        for bid in 0..entries {
            br.recycle(bid);
        }
        Ok(br)
    }

    /// Registers the ring with `submitter` under `self.bgid`.
    pub fn register(&mut self, submitter: &io_uring::Submitter<'_>) -> io::Result<()> {
        // SAFETY: the ring memory is page aligned, holds `entries` slots, and stays allocated
        // until `unregister` succeeded and no operation is in flight, or forever (leak_on_drop).
        unsafe {
            submitter.register_buf_ring_with_flags(
                self.ring.as_ptr() as u64,
                self.entries,
                self.bgid,
                0,
            )?;
        }
        self.leak_on_drop = true;
        Ok(())
    }

    /// Unregisters the ring. Call only once no operation that may pick a buffer is in flight;
    /// on success the memory is freed on drop.
    pub fn unregister(&mut self, submitter: &io_uring::Submitter<'_>) -> io::Result<()> {
        submitter.unregister_buf_ring(self.bgid)?;
        self.leak_on_drop = false;
        Ok(())
    }

    #[cfg(test)]
    pub fn buf_size(&self) -> u32 {
        self.size
    }

    /// The first `len` bytes of buffer `bid`, as the kernel filled them.
    pub fn slice(&self, bid: u16, len: usize) -> Option<&[u8]> {
        if bid >= self.entries || len > self.size as usize {
            return None;
        }
        // SAFETY: bid < entries and len <= size keep the range inside the buffer block; the
        // kernel wrote this buffer before posting the completion that named it and does not
        // touch it again until it is recycled.
        Some(unsafe {
            std::slice::from_raw_parts(
                self.bufs
                    .as_ptr()
                    .add(usize::from(bid) * self.size as usize),
                len,
            )
        })
    }

    /// Gives buffer `bid` back to the kernel.
    pub fn recycle(&mut self, bid: u16) {
        if bid >= self.entries {
            return;
        }
        let slot = usize::from(self.tail & (self.entries - 1));
        // SAFETY: slot < entries, inside the ring allocation. The kernel only reads slots
        // between its head and the published tail, and this slot is past the tail.
        unsafe {
            let entry = &mut *self.ring.as_ptr().add(slot);
            entry.set_addr(
                self.bufs
                    .as_ptr()
                    .add(usize::from(bid) * self.size as usize) as u64,
            );
            entry.set_len(self.size);
            entry.set_bid(bid);
        }
        self.tail = self.tail.wrapping_add(1);
        // SAFETY: the tail is the u16 at offset 14 of the first slot, inside the allocation,
        // suitably aligned, and shared with the kernel only through atomic accesses; Release
        // publishes the slot written above before the new tail.
        unsafe {
            let tail = BufRingEntry::tail(self.ring.as_ptr()) as *const AtomicU16;
            (*tail).store(self.tail, Ordering::Release);
        }
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        if self.leak_on_drop {
            // The kernel may still reference this memory: never free it.
            return;
        }
        // SAFETY: allocated in `new` with exactly these layouts; not registered any more.
        unsafe {
            dealloc(self.ring.as_ptr().cast(), self.ring_layout);
            dealloc(self.bufs.as_ptr(), self.bufs_layout);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_bad_geometry() {
        assert!(BufRing::new(0, 4096, 0).is_err());
        assert!(BufRing::new(3, 4096, 0).is_err());
        assert!(BufRing::new(4, 0, 0).is_err());
    }

    #[test]
    fn slices_are_bounds_checked() {
        let br = BufRing::new(4, 1024, 0).expect("alloc");
        assert_eq!(br.slice(3, 1024).map(<[u8]>::len), Some(1024));
        assert!(br.slice(4, 1).is_none());
        assert!(br.slice(0, 1025).is_none());
        assert_eq!(br.buf_size(), 1024);
    }
}
