//! `allocator::keep_freed_memory` really turns mimalloc's purging off: a large block freed and
//! allocated again is not faulted back in page by page.

use asrl_common::allocator::{keep_freed_memory, set_purge_delay_ms, MiMalloc};

#[global_allocator]
static GLOBAL: MiMalloc = MiMalloc;

fn minor_faults() -> i64 {
    // SAFETY: getrusage fills the struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) }, 0);
    u.ru_minflt
}

/// Minor page faults over `rounds` allocations of 32 MB, each written through and freed.
fn faults_over(rounds: usize) -> i64 {
    let before = minor_faults();
    for i in 0..rounds {
        let mut v = vec![0u8; 32 << 20];
        for p in v.iter_mut().step_by(4096) {
            *p = i as u8;
        }
        std::hint::black_box(&v);
    }
    minor_faults() - before
}

#[test]
fn purging_off_keeps_freed_pages() {
    set_purge_delay_ms(0);
    faults_over(2);
    let purging = faults_over(10);
    keep_freed_memory();
    faults_over(2);
    let kept = faults_over(10);
    // Purging at once refaults the block every round (16 huge pages or 8,192 small ones per
    // round; measured 160 over 10 rounds with THP); kept for 10 s, the rounds (milliseconds
    // apart) reuse the mapped pages (0).
    assert!(purging >= 10 * 8, "purge delay 0 should refault the freed block: {purging} faults");
    assert!(kept * 10 < purging, "with purging off freed pages should be reused: {kept} vs {purging} faults");
}
