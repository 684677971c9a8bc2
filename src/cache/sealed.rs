//! Cached bodies kept in sealed memory files, so that the edge can hand them to a socket with `sendfile(2)`
//! instead of copying them.
//!
//! Why this module needs `unsafe`: a profile of the edge serving a hot 1 MiB segment to `wrk -t2 -c100`
//! put 44 % of its CPU in the kernel's `_copy_from_iter`, the copy of each response body from the cache's
//! memory into socket buffers, and left it at 0.77-0.88x of nginx, which sends the same file from the page
//! cache with `sendfile` (BENCHMARKS.md, "Edge serving, hot cache"). To send from a file, the body must
//! live in one; to still be an ordinary [`Bytes`] for everything else (the mesh, HTTP/2, tests), that file
//! must be mapped into memory. Mapping, unmapping and viewing the mapping as a slice are the three unsafe
//! operations, and they are all here.
//!
//! [`seal`] copies a body once into a fresh `memfd`, seals it against any write, growth or shrinking, maps
//! it read-only and returns it as [`Bytes`] whose owner unmaps the file and closes its descriptor when the
//! last view is dropped, so evicting an object frees its memory as before. [`SealedSlice::find`] tells the
//! socket layer ([`crate::http::sendfile`]) whether a slice it is asked to write lies inside such a mapping,
//! and at which offset of which file. This module does not decide which bodies to seal (the cache does) and
//! writes no sockets.
//!
//! Each sealed body holds one file descriptor. They may use at most their [`fd_budget`] of the open-file
//! limit (the node raises its soft limit to the hard limit at start, [`raise_fd_limit`]); past that, and
//! whenever the kernel refuses, bodies stay on the heap and are copied into each response as before.

use std::collections::BTreeMap;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock, Weak};

use bytes::Bytes;
use rustix::fs::{MemfdFlags, SealFlags};
use rustix::mm::{MapFlags, ProtFlags};
use rustix::process::{Resource, Rlimit};

/// Bodies shorter than this stay on the heap. For them the copy into the socket costs less than what a
/// sealed body costs: a descriptor, a mapping rounded up to whole pages, the five syscalls that make it and
/// the two that undo it, and a separate write for the response head. Playlists (a few hundred bytes to a few
/// KiB), the most requested objects, already beat nginx while being copied; segments (hundreds of KiB and
/// more) are what the copy slows down.
pub const MIN_SEALED_BYTES: usize = 64 * 1024;

/// The descriptors sealed bodies of a cache bounded at `cache_bytes` may hold, of `fd_limit`: a body per
/// [`MIN_SEALED_BYTES`] of the bound, twice over (evicted bodies still being sent hold theirs a while), and
/// never more than half of the limit. The rest is for viewer connections, the mesh socket and whatever else
/// the node opens: with a 256 MiB cache that is 8,192, which leaves a limit of 20,000 over 11,000 for
/// connections, where half the limit left 9,488.
pub fn fd_budget(fd_limit: u64, cache_bytes: u64) -> u64 {
    (fd_limit / 2).min(2 * cache_bytes.div_ceil(MIN_SEALED_BYTES as u64))
}

/// Why a body could not be sealed (it then stays on the heap).
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// Sealed bodies already hold their share of the open-file limit.
    #[error("{0} sealed bodies already hold their share of the open-file limit")]
    Budget(usize),
    /// The kernel refused one of the steps (memfd_create, write, fcntl, mmap).
    #[error("{step} failed: {source}")]
    Kernel {
        step: &'static str,
        #[source]
        source: io::Error,
    },
}

/// Sealed bodies alive now (each holds one descriptor).
static LIVE: AtomicUsize = AtomicUsize::new(0);
/// Numbers the files, so that `/proc/PID/maps` and `/proc/PID/fd` tell them apart.
static NEXT_ID: AtomicU64 = AtomicU64::new(0);
/// Every live mapping by its start address. Holds `Weak`s: the bodies' owners decide when a mapping goes.
static MAPPINGS: RwLock<BTreeMap<usize, Weak<Mapping>>> = RwLock::new(BTreeMap::new());

/// One sealed, read-only mapped memory file holding one body.
struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
    file: OwnedFd,
}

// SAFETY: the mapping is read-only and its file is sealed against writes, so no thread can change the bytes
// another thread reads; the pointer is only ever read through, and `Drop` unmaps once, with exclusive access.
unsafe impl Send for Mapping {}
// SAFETY: as above: shared access only ever reads immutable bytes.
unsafe impl Sync for Mapping {}

impl Mapping {
    fn bytes(&self) -> &[u8] {
        // SAFETY: `ptr` is the start of a readable mapping of exactly `len` bytes (made in `seal`,
        // len > 0), alive until `Drop` runs, which cannot happen while `&self` is borrowed. The file behind it
        // is sealed (`F_SEAL_WRITE | F_SEAL_SHRINK`), so the bytes never change and no page can vanish (no
        // SIGBUS from a truncation).
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    fn start(&self) -> usize {
        self.ptr.as_ptr() as usize
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // Forget the address before unmapping it, so a later mapping at the same address is never mistaken
        // for this one.
        MAPPINGS.write().unwrap_or_else(|e| e.into_inner()).remove(&self.start());
        // SAFETY: `ptr` and `len` are what mmap returned; every `Bytes` view of the mapping holds an `Arc` of
        // it, so the last one is gone and nothing points into the range any more. Pages that a socket still
        // sends from stay alive in the kernel, which holds its own reference to them.
        if let Err(e) = unsafe { rustix::mm::munmap(self.ptr.as_ptr().cast(), self.len) } {
            tracing::error!(error = %e, "munmap of a sealed body failed; its memory leaks");
        }
        LIVE.fetch_sub(1, Ordering::Relaxed);
        // `file` closes after this.
    }
}

/// What `Bytes::from_owner` keeps alive: one share of a mapping.
struct Owner(Arc<Mapping>);

impl AsRef<[u8]> for Owner {
    fn as_ref(&self) -> &[u8] {
        self.0.bytes()
    }
}

/// Copies `body` into a new sealed memory file and returns it as `Bytes` backed by a read-only mapping of
/// that file. Fails (and the caller keeps `body` as it is) when the process already holds `max_live` sealed
/// bodies (the cache passes its [`fd_budget`]) or the kernel refuses.
pub fn seal(body: &[u8], max_live: usize) -> Result<Bytes, SealError> {
    if body.is_empty() {
        return Ok(Bytes::new()); // nothing to map; an empty mapping is not allowed
    }
    let live = LIVE.fetch_add(1, Ordering::Relaxed);
    if live >= max_live {
        LIVE.fetch_sub(1, Ordering::Relaxed);
        return Err(SealError::Budget(live));
    }
    let made = make_mapping(body);
    if made.is_err() {
        LIVE.fetch_sub(1, Ordering::Relaxed);
    }
    let mapping = Arc::new(made?);
    MAPPINGS.write().unwrap_or_else(|e| e.into_inner()).insert(mapping.start(), Arc::downgrade(&mapping));
    Ok(Bytes::from_owner(Owner(mapping)))
}

fn make_mapping(body: &[u8]) -> Result<Mapping, SealError> {
    let kernel = |step| move |e: rustix::io::Errno| SealError::Kernel { step, source: e.into() };
    let name = format!("lightpath-body-{}", NEXT_ID.fetch_add(1, Ordering::Relaxed));
    let file = rustix::fs::memfd_create(name, MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING)
        .map_err(kernel("memfd_create"))?;
    let mut written = 0;
    while written < body.len() {
        written += rustix::io::pwrite(&file, &body[written..], written as u64).map_err(kernel("write"))?;
    }
    rustix::fs::fcntl_add_seals(&file, SealFlags::WRITE | SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL)
        .map_err(kernel("fcntl(F_ADD_SEALS)"))?;
    // SAFETY: a fresh mapping chosen by the kernel (null hint, no MAP_FIXED), so it overlaps nothing of ours;
    // shared and read-only over a file sealed against writes, growth and shrinking, so the bytes behind it can
    // neither change nor disappear while it exists.
    let ptr =
        unsafe { rustix::mm::mmap(std::ptr::null_mut(), body.len(), ProtFlags::READ, MapFlags::SHARED, &file, 0) }
            .map_err(kernel("mmap"))?;
    let ptr = NonNull::new(ptr.cast::<u8>())
        .ok_or_else(|| SealError::Kernel { step: "mmap", source: io::Error::other("mapped at address 0") })?;
    Ok(Mapping { ptr, len: body.len(), file })
}

/// A slice that lies inside a sealed body: the file to send it from and where.
pub struct SealedSlice {
    mapping: Arc<Mapping>,
    offset: u64,
    len: usize,
}

impl SealedSlice {
    /// Where `buf` lies in a sealed body, if it does. Slices shorter than [`MIN_SEALED_BYTES`] are not looked
    /// up: copying them costs less than sending them apart from their neighbours.
    pub fn find(buf: &[u8]) -> Option<Self> {
        if buf.len() < MIN_SEALED_BYTES || LIVE.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let start = buf.as_ptr() as usize;
        let mapping = {
            let mappings = MAPPINGS.read().unwrap_or_else(|e| e.into_inner());
            mappings.range(..=start).next_back()?.1.upgrade()?
        };
        let offset = start - mapping.start();
        (offset + buf.len() <= mapping.len).then(|| Self { mapping, offset: offset as u64, len: buf.len() })
    }

    /// The sealed file holding the slice.
    pub fn file(&self) -> BorrowedFd<'_> {
        self.mapping.file.as_fd()
    }

    /// Where the slice starts in [`Self::file`].
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The slice's length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false: sealed slices are never shorter than [`MIN_SEALED_BYTES`].
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// Raises this process's soft limit on open files to its hard limit (each sealed body holds a descriptor,
/// and so does each viewer connection) and returns the soft limit now in force.
pub fn raise_fd_limit() -> io::Result<u64> {
    let limit = rustix::process::getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        rustix::process::setrlimit(Resource::Nofile, Rlimit { current: limit.maximum, maximum: limit.maximum })?;
    }
    Ok(limit.maximum.unwrap_or(u64::MAX))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Distinct bytes at every offset, so a shifted or reordered copy would not compare equal.
    pub(crate) fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i as u32).wrapping_mul(2_654_435_761).rotate_right(13) as u8).collect()
    }

    /// Lines of `/proc/self/maps` and targets of `/proc/self/fd/*` that name `file`.
    pub(crate) fn traces_of(file: &str) -> Vec<String> {
        let mut found: Vec<String> = std::fs::read_to_string("/proc/self/maps")
            .unwrap()
            .lines()
            .filter(|l| l.contains(file))
            .map(Into::into)
            .collect();
        for entry in std::fs::read_dir("/proc/self/fd").unwrap().flatten() {
            if let Ok(target) = std::fs::read_link(entry.path()) {
                let target = target.to_string_lossy().into_owned();
                if target.contains(file) {
                    found.push(target);
                }
            }
        }
        found
    }

    /// The memfd name behind a sealed body (unique per body).
    pub(crate) fn file_name(body: &Bytes) -> String {
        let slice = SealedSlice::find(body).expect("sealed");
        let link = std::fs::read_link(format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&slice.file())));
        let link = link.unwrap().to_string_lossy().into_owned();
        // "/memfd:lightpath-body-17 (deleted)" -> "lightpath-body-17 "
        let name = link.trim_start_matches("/memfd:").split(' ').next().unwrap().to_owned();
        assert!(name.starts_with("lightpath-body-"), "{link}");
        format!("{name} ")
    }

    #[test]
    fn a_sealed_body_reads_back_and_cannot_be_changed() {
        let data = pattern(MIN_SEALED_BYTES * 3 + 17);
        let body = seal(&data, usize::MAX).unwrap();
        assert_eq!(&body[..], &data[..]);
        let slice = SealedSlice::find(&body[1000..]).expect("a slice of a sealed body is found");
        assert_eq!((slice.offset(), slice.len()), (1000, data.len() - 1000));
        // The file refuses writes, so the mapping can never change under a reader.
        assert!(rustix::io::pwrite(slice.file(), b"x", 0).is_err());
        assert!(rustix::fs::ftruncate(slice.file(), 1).is_err());
        // Bytes elsewhere are not mistaken for it, nor is a slice running past its end.
        assert!(SealedSlice::find(&data).is_none());
        assert!(SealedSlice::find(&body[..MIN_SEALED_BYTES - 1]).is_none());
    }

    #[test]
    fn dropping_the_last_view_unmaps_and_closes_the_file() {
        let body = seal(&pattern(MIN_SEALED_BYTES * 2), usize::MAX).unwrap();
        let name = file_name(&body);
        assert_eq!(traces_of(&name).len(), 2, "one mapping and one descriptor: {:?}", traces_of(&name));
        let view = body.slice(5..);
        drop(body);
        assert_eq!(traces_of(&name).len(), 2, "a remaining view keeps the body");
        assert_eq!(view[0], pattern(6)[5]);
        drop(view);
        assert_eq!(traces_of(&name), Vec::<String>::new(), "memory and descriptor released");
    }

    #[test]
    fn past_the_budget_bodies_are_refused() {
        let data = pattern(MIN_SEALED_BYTES);
        assert!(matches!(seal(&data, 0), Err(SealError::Budget(_))));
    }

    #[test]
    fn the_fd_limit_is_raised_to_the_hard_limit() {
        let soft = raise_fd_limit().unwrap();
        let now = rustix::process::getrlimit(Resource::Nofile);
        assert_eq!(now.current, now.maximum);
        assert_eq!(now.current.unwrap_or(u64::MAX), soft);
    }
}
