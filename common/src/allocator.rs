//! The binaries' global allocator: mimalloc, told to keep the pages it frees.
//!
//! A training step allocates and frees the same few hundred MB of activations every step. By
//! default mimalloc hands freed memory back to the OS after a delay (1 s in v3, about one step),
//! and the next step faults it back in, each page zeroed by the kernel: 40,000 page faults and
//! ~10 % of a SmolLM2 SFT step on 2 cores (`perf stat -e page-faults`, `bench sft --steps 3`).
//! With purging off, 1,000. Peak RSS stays the high-water mark it was; what changes is that the
//! process keeps it between steps.
//!
//! Each binary declares `#[global_allocator] static GLOBAL: MiMalloc = MiMalloc;` and calls
//! [`keep_freed_memory`] first thing in `main`.

pub use mimalloc::MiMalloc;

/// mimalloc v3's `mi_option_purge_delay` (the position in its `mi_option_e`; libmimalloc-sys
/// names no constant for it). `tests/allocator.rs` checks it is the purge delay by its effect.
const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Turns mimalloc's purging off for the rest of the process: freed pages stay mapped for the
/// next allocation. Only effective when mimalloc is the global allocator.
pub fn keep_freed_memory() {
    set_purge_delay_ms(-1);
}

/// mimalloc's purge delay in ms (0: purge at once, -1: never). Public for the test that checks
/// the option's position.
pub fn set_purge_delay_ms(ms: i64) {
    // SAFETY: mi_option_set writes one entry of mimalloc's option table (a plain store); any
    // value is valid for the purge delay.
    unsafe { libmimalloc_sys::mi_option_set(PURGE_DELAY, ms as _) }
}
