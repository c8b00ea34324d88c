//! A global allocator that refuses any single allocation above [`MAX_ALLOCATION`] and any
//! growth of the live total above [`MAX_LIVE`]. A refusal makes Rust abort ("memory allocation
//! of N bytes failed"), which the fuzzing parent catches as a crash: an input that asks for
//! 191 GB is a found bug, not a machine swapping to a halt. Install it in a binary or test with
//! `#[global_allocator] static A: mgca_fuzz::alloc::Capped = mgca_fuzz::alloc::Capped;`.
//!
//! Book: appendix "What happens when things go wrong" (fuzzing).
//!
//! **Deviation:** none (no reference counterpart).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

/// The largest single allocation a fuzz input may make (2 GiB).
pub const MAX_ALLOCATION: usize = 2 << 30;
/// The most memory a fuzzing process may hold at once (4 GiB).
pub const MAX_LIVE: usize = 4 << 30;

static LIVE: AtomicUsize = AtomicUsize::new(0);

/// The capped allocator (over the system allocator).
pub struct Capped;

fn reserve(size: usize) -> bool {
    if size > MAX_ALLOCATION {
        return false;
    }
    let before = LIVE.fetch_add(size, Ordering::Relaxed);
    if before + size > MAX_LIVE {
        LIVE.fetch_sub(size, Ordering::Relaxed);
        return false;
    }
    true
}

/// Bytes currently allocated through [`Capped`].
pub fn live() -> usize {
    LIVE.load(Ordering::Relaxed)
}

// SAFETY: every method forwards to `System` with the caller's layout, or returns null (which
// the `GlobalAlloc` contract allows for a refused request) without touching memory.
unsafe impl GlobalAlloc for Capped {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if !reserve(layout.size()) {
            return std::ptr::null_mut();
        }
        // SAFETY: forwarded with the caller's (valid, non-zero-size) layout.
        let p = unsafe { System.alloc(layout) };
        if p.is_null() {
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if !reserve(layout.size()) {
            return std::ptr::null_mut();
        }
        // SAFETY: as for `alloc`.
        let p = unsafe { System.alloc_zeroed(layout) };
        if p.is_null() {
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: `ptr` came from this allocator (hence `System`) with `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > MAX_ALLOCATION {
            return std::ptr::null_mut();
        }
        if new_size > layout.size() {
            if !reserve(new_size - layout.size()) {
                return std::ptr::null_mut();
            }
        } else {
            LIVE.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
        }
        // SAFETY: `ptr` came from this allocator with `layout`; `new_size` is non-zero.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if p.is_null() {
            // The old block stays allocated: undo the accounting.
            if new_size > layout.size() {
                LIVE.fetch_sub(new_size - layout.size(), Ordering::Relaxed);
            } else {
                LIVE.fetch_add(layout.size() - new_size, Ordering::Relaxed);
            }
        }
        p
    }
}
