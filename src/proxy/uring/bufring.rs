//! The provided buffer ring (`IORING_REGISTER_PBUF_RING`) that receives land in.
//!
//! The kernel picks a free buffer when data arrives on a socket, so a connection holds no
//! receive buffer while it is idle. The driver hands the bytes to the handler straight from
//! the buffer and gives the buffer back ([`BufRing::release`]) right after the callback.
//!
//! Incremental consumption (`IOU_PBUF_RING_INC`, Linux 6.12), used where the kernel has it: a
//! receive takes only the bytes it needs from the buffer at the ring's head, and the next
//! receive (from any socket) continues in the same buffer. Without it every receive holds a
//! whole buffer until the driver has handled it, so a burst of small receives from more
//! sockets than there are buffers ends most multishot receives with ENOBUFS, each re-armed at
//! the cost of a new submission (64 upstream responses in one batch against 8 buffers cost
//! about 4.6 wasted receives per request). A buffer's completions arrive in the order the
//! kernel filled it; [`BufRing::advance`] tracks where each begins, and the buffer goes back to
//! the kernel after the completion without `IORING_CQE_F_BUF_MORE` (the kernel is done with it).
//!
//! Memory: one page-aligned array of `entries` ring slots (16 bytes each; the kernel reads the
//! tail from the last two bytes of the first slot) and one block of `entries * size` bytes,
//! mapped anonymously so that a page only becomes resident once a receive writes into it: a
//! 16 KiB buffer that only ever holds small requests costs one page, not four (a zeroed heap
//! allocation would be cleared, and so made resident, in full by the allocator).
//! Both stay allocated until the driver has unregistered the ring and seen every operation
//! complete; if that cannot be confirmed the memory is leaked on purpose instead of freed.

use std::alloc::{Layout, alloc_zeroed, dealloc};
use std::io;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::types::BufRingEntry;

const PAGE: usize = 4096;

/// `IOU_PBUF_RING_INC` (`include/uapi/linux/io_uring.h`, Linux 6.12): buffers are consumed
/// incrementally (not exported by the io-uring crate).
const IOU_PBUF_RING_INC: u16 = 2;

/// A registered ring of equally sized receive buffers.
pub(crate) struct BufRing {
    ring: NonNull<BufRingEntry>,
    ring_layout: Layout,
    /// `entries * size` bytes of anonymous mapping.
    bufs: NonNull<u8>,
    bufs_bytes: usize,
    entries: u16,
    size: u32,
    /// Our copy of the tail (next slot to fill).
    tail: u16,
    pub bgid: u16,
    /// Per buffer, when registered with incremental consumption (empty otherwise): bytes the
    /// kernel has filled since it was last given back (where the next completion's bytes begin).
    consumed: Box<[u32]>,
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
        let bufs = map_anonymous(bufs_bytes)?;
        // SAFETY: the layout has a non-zero size (at least one page).
        let Some(ring) = NonNull::new(unsafe { alloc_zeroed(ring_layout) }.cast::<BufRingEntry>())
        else {
            // SAFETY: mapped just above with this length and not shared with anyone.
            unsafe { unmap(bufs, bufs_bytes) };
            return Err(io::Error::new(
                io::ErrorKind::OutOfMemory,
                "cannot allocate the receive buffer ring",
            ));
        };
        let mut br = BufRing {
            ring,
            ring_layout,
            bufs,
            bufs_bytes,
            entries,
            size,
            tail: 0,
            bgid,
            consumed: Box::default(),
            leak_on_drop: false,
        };
        for bid in 0..entries {
            br.recycle(bid);
        }
        Ok(br)
    }

    /// Registers the ring with `submitter` under `self.bgid`, with incremental consumption when
    /// `incremental` (the kernel must support it: [`super::Support::incremental_buffers`]).
    pub fn register(
        &mut self,
        submitter: &io_uring::Submitter<'_>,
        incremental: bool,
    ) -> io::Result<()> {
        let flags = if incremental { IOU_PBUF_RING_INC } else { 0 };
        // SAFETY: the ring memory is page aligned, holds `entries` slots, and stays allocated
        // until `unregister` succeeded and no operation is in flight, or forever (leak_on_drop).
        unsafe {
            submitter.register_buf_ring_with_flags(
                self.ring.as_ptr() as u64,
                self.entries,
                self.bgid,
                flags,
            )?;
        }
        self.leak_on_drop = true;
        if incremental {
            self.consumed = vec![0; usize::from(self.entries)].into_boxed_slice();
        }
        Ok(())
    }

    /// Accounts for a completion that put `len` bytes into buffer `bid` and returns the offset
    /// in the buffer where they begin (always 0 without incremental consumption). Call once per
    /// completion naming the buffer, in completion order, before [`BufRing::slice`].
    pub fn advance(&mut self, bid: u16, len: usize) -> usize {
        let Some(c) = self.consumed.get_mut(usize::from(bid)) else {
            return 0;
        };
        let start = *c;
        *c = c.saturating_add(u32::try_from(len).unwrap_or(u32::MAX));
        start as usize
    }

    /// Done with a completion's bytes in buffer `bid`: gives the buffer back to the kernel,
    /// unless the completion carried `IORING_CQE_F_BUF_MORE` (incremental consumption: the
    /// kernel keeps filling the rest of it).
    pub fn release(&mut self, bid: u16, buf_more: bool) {
        if buf_more && !self.consumed.is_empty() {
            return;
        }
        self.recycle(bid);
    }

    /// Unregisters the ring. Call only once no operation that may pick a buffer is in flight;
    /// on success the memory is freed on drop.
    pub fn unregister(&mut self, submitter: &io_uring::Submitter<'_>) -> io::Result<()> {
        submitter.unregister_buf_ring(self.bgid)?;
        self.leak_on_drop = false;
        Ok(())
    }

    /// How many buffers the ring has.
    pub fn entries(&self) -> u16 {
        self.entries
    }

    #[cfg(test)]
    pub fn buf_size(&self) -> u32 {
        self.size
    }

    /// `len` bytes of buffer `bid` from offset `start` (from [`BufRing::advance`]), as the
    /// kernel filled them; `None` if that range is not inside the buffer.
    pub fn slice(&self, bid: u16, start: usize, len: usize) -> Option<&[u8]> {
        let end = start.checked_add(len)?;
        if bid >= self.entries || end > self.size as usize {
            return None;
        }
        // SAFETY: bid < entries and start + len <= size keep the range inside the buffer
        // block; the kernel wrote these bytes before posting the completion that named them and
        // does not touch them again: it only fills bytes past them (incremental consumption)
        // or the buffer once it is recycled.
        Some(unsafe {
            std::slice::from_raw_parts(
                self.bufs
                    .as_ptr()
                    .add(usize::from(bid) * self.size as usize + start),
                len,
            )
        })
    }

    /// Gives buffer `bid` back to the kernel, whole.
    fn recycle(&mut self, bid: u16) {
        if bid >= self.entries {
            return;
        }
        if let Some(c) = self.consumed.get_mut(usize::from(bid)) {
            *c = 0;
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
        // SAFETY: allocated and mapped in `new` with exactly this layout and length; not
        // registered any more.
        unsafe {
            dealloc(self.ring.as_ptr().cast(), self.ring_layout);
            unmap(self.bufs, self.bufs_bytes);
        }
    }
}

/// Maps `len` bytes of private anonymous memory (zero-filled on first touch, not before).
fn map_anonymous(len: usize) -> io::Result<NonNull<u8>> {
    // SAFETY: a fresh private anonymous mapping aliases nothing; the result is checked.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(
            e.kind(),
            format!("cannot map {len} bytes for the receive buffer ring: {e}"),
        ));
    }
    NonNull::new(p.cast::<u8>()).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::OutOfMemory,
            "cannot map the receive buffer ring",
        )
    })
}

/// Unmaps a block from [`map_anonymous`].
///
/// # Safety
/// `p` and `len` come from one `map_anonymous` call, and nothing (the kernel included) uses the
/// memory any more.
unsafe fn unmap(p: NonNull<u8>, len: usize) {
    // SAFETY: guaranteed by the caller. A failure (impossible for a valid mapping) leaks.
    unsafe {
        libc::munmap(p.as_ptr().cast(), len);
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
        assert_eq!(br.slice(3, 0, 1024).map(<[u8]>::len), Some(1024));
        assert_eq!(br.slice(3, 1000, 24).map(<[u8]>::len), Some(24));
        assert!(br.slice(4, 0, 1).is_none());
        assert!(br.slice(0, 0, 1025).is_none());
        assert!(br.slice(0, 1000, 25).is_none());
        assert!(br.slice(0, usize::MAX, 2).is_none());
        assert_eq!(br.buf_size(), 1024);
    }

    /// Resident pages of the buffer block, by `mincore`.
    fn resident_pages(br: &BufRing) -> usize {
        let pages = br.bufs_bytes.div_ceil(PAGE);
        let mut vec = vec![0u8; pages];
        // SAFETY: the block is a live mapping of `bufs_bytes` bytes; `vec` has one byte per page.
        let rc = unsafe { libc::mincore(br.bufs.as_ptr().cast(), br.bufs_bytes, vec.as_mut_ptr()) };
        assert_eq!(rc, 0, "mincore: {}", io::Error::last_os_error());
        vec.iter().filter(|b| *b & 1 == 1).count()
    }

    #[test]
    fn buffers_become_resident_only_where_written() {
        let br = BufRing::new(64, 16 * 1024, 0).expect("alloc");
        assert_eq!(
            resident_pages(&br),
            0,
            "a fresh ring holds no resident buffer page"
        );
        // A small receive into buffer 5 (as the kernel would write it).
        // SAFETY: buffer 5 lies inside the block; the ring is not registered.
        unsafe {
            br.bufs.as_ptr().add(5 * 16 * 1024).write_bytes(b'x', 100);
        }
        assert_eq!(resident_pages(&br), 1);
        assert_eq!(
            br.slice(5, 0, 100).map(|s| s.iter().all(|b| *b == b'x')),
            Some(true)
        );
        assert_eq!(
            br.slice(6, 0, 16).map(|s| s.iter().all(|b| *b == 0)),
            Some(true)
        );
    }
}
