//! The process's memory settings.

/// Turns transparent huge pages off for this process. mimalloc asks for
/// them on its arenas, and then each page it hands back to the kernel and
/// touches again costs a fault that zeroes 2 MiB: at a 10,000-seat bell
/// that was ~6 % of both cores in the broker, ~0.5 % with 4 KiB pages.
/// Elsewhere than Linux, or where the kernel refuses, nothing changes.
pub fn without_huge_pages() {
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_THP_DISABLE only sets a flag on this process.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}
