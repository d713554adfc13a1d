//! An allocator that counts the allocations of threads that ask for it, for the tests that
//! prove a path allocates nothing.
//!
//! A global allocator belongs to the binary that declares it, so this module only shares the
//! type: a test file that counts declares
//! `#[global_allocator] static ALLOC: common::alloc::CountingAlloc = common::alloc::CountingAlloc;`
//! itself. Only allocations made on a thread that switched counting on are counted, so tests
//! running in parallel do not disturb each other. [`allocations_during`] refuses to answer when
//! the binary did not install the allocator, so a forgotten declaration cannot pass as "zero".

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};

/// Forwards to the system allocator, counting alloc, alloc_zeroed and realloc calls of threads
/// inside [`allocations_during`].
pub struct CountingAlloc;

/// Set by the first allocation that went through [`CountingAlloc`].
static INSTALLED: AtomicBool = AtomicBool::new(false);

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

fn note() {
    if !INSTALLED.load(Ordering::Relaxed) {
        INSTALLED.store(true, Ordering::Relaxed);
    }
    if COUNTING.try_with(Cell::get).unwrap_or(false) {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
    }
}

// SAFETY: forwards every call to the system allocator unchanged; the counter only touches an
// atomic and const-initialised thread-locals without destructors, which never allocate.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note();
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note();
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note();
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

/// Allocations (alloc, alloc_zeroed, realloc) the calling thread made while `f` ran.
///
/// Panics when this binary's global allocator is not [`CountingAlloc`] (nothing would be
/// counted).
pub fn allocations_during(f: impl FnOnce()) -> u64 {
    // The test harness allocated long before any test runs, so an installed allocator has
    // seen allocations by now.
    assert!(
        INSTALLED.load(Ordering::Relaxed),
        "declare `#[global_allocator] static ALLOC: common::alloc::CountingAlloc` in this test file"
    );
    ALLOCATIONS.with(|n| n.set(0));
    COUNTING.with(|c| c.set(true));
    f();
    COUNTING.with(|c| c.set(false));
    ALLOCATIONS.with(Cell::get)
}
