//! The binaries' global allocator: mimalloc, told to keep the pages it frees.
//!
//! A training step allocates and frees the same few hundred MB of activations every step. By
//! default mimalloc hands freed memory back to the OS after 1 s, about one SmolLM2 step on 2
//! cores, and the next step faults it back in, each page zeroed by the kernel: 40,000 page
//! faults per `bench sft --steps 6` and ~10 % of a step. Kept for [`PURGE_AFTER_MS`] instead:
//! 5,500 even with steps slowed to 2.3 s by other load; never returned: 1,000.
//!
//! Never returning it costs memory where a step is long and its allocations vary: at
//! Qwen3-0.6B's shape and 2000 tokens (a 90 s step) peak RSS went from 7131 to 7692 MiB, since
//! freed blocks that no later allocation fits stay resident. With the 10 s delay: 7253 MiB.
//!
//! Each binary declares `#[global_allocator] static GLOBAL: MiMalloc = MiMalloc;` and calls
//! [`keep_freed_memory`] first thing in `main`.

pub use mimalloc::MiMalloc;

/// mimalloc v3's `mi_option_purge_delay` (the position in its `mi_option_e`; libmimalloc-sys
/// names no constant for it). `tests/allocator.rs` checks it is the purge delay by its effect.
const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// How long freed memory stays mapped for reuse before mimalloc returns it to the OS.
pub const PURGE_AFTER_MS: i64 = 10_000;

/// Freed pages stay mapped for [`PURGE_AFTER_MS`] for the next allocation, for the rest of the
/// process. Only effective when mimalloc is the global allocator.
pub fn keep_freed_memory() {
    set_purge_delay_ms(PURGE_AFTER_MS);
}

/// mimalloc's purge delay in ms (0: purge at once, -1: never). Public for the test that checks
/// the option's position.
pub fn set_purge_delay_ms(ms: i64) {
    // SAFETY: mi_option_set writes one entry of mimalloc's option table (a plain store); any
    // value is valid for the purge delay.
    unsafe { libmimalloc_sys::mi_option_set(PURGE_DELAY, ms as _) }
}
