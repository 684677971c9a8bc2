//! Hints that bring memory into the processor's caches before it is read, without waiting for it.
//!
//! A simulated mesh of 10,000 nodes keeps about 200 MiB of relay and link state, and a control round reads a
//! little of each node's in turn: most of those reads missed every cache and waited for memory, one after
//! another. Asked for a few nodes ahead, the lines arrive while the nodes before are run (BENCHMARKS,
//! "Prefetching the next nodes' link state"). The processor's prefetch instruction needs unsafe code, kept to
//! this module: it reads nothing the program sees and never faults.

/// Asks for the cache lines of `value`.
pub fn value<T>(value: &T) {
    lines(std::ptr::from_ref(value).cast(), std::mem::size_of::<T>());
}

/// Asks for the cache lines of `items`.
pub fn slice<T>(items: &[T]) {
    lines(items.as_ptr().cast(), std::mem::size_of_val(items));
}

const LINE: usize = 64;

#[allow(unsafe_code)] // the prefetch instruction, see the module doc
fn lines(start: *const u8, bytes: usize) {
    #[cfg(target_arch = "x86_64")]
    for offset in (0..bytes).step_by(LINE) {
        // SAFETY: a prefetch is a hint: it never faults, whatever the address, and changes nothing the program
        // can read. `wrapping_add` computes the address without claiming it lies in an allocation.
        unsafe {
            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(start.wrapping_add(offset).cast())
        };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (start, bytes, LINE);
}
