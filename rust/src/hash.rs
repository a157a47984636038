//! File hashing for cache validation: streaming, bounded memory.

use std::fs::File;
use std::io::{ErrorKind, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use rayon::prelude::*;
use sha2::{Digest, Sha256};

use crate::error::{CoreError, Result};

/// 1 MiB reads: large enough that syscall cost vanishes next to SHA-NI's
/// ~1.2 GB/s, small enough to stay in L2/L3 while being hashed.
const BUF_SIZE: usize = 1 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Sha256,
    Blake3,
}

impl Algorithm {
    pub fn parse(name: &str) -> Result<Self> {
        match name.to_ascii_lowercase().as_str() {
            "sha256" | "sha-256" => Ok(Algorithm::Sha256),
            "blake3" => Ok(Algorithm::Blake3),
            _ => Err(CoreError::UnknownAlgorithm(name.to_owned())),
        }
    }
}

fn open_regular(path: &Path) -> Result<File> {
    let file = File::open(path).map_err(|e| CoreError::io("cannot open", path, e))?;
    let meta = file
        .metadata()
        .map_err(|e| CoreError::io("cannot stat", path, e))?;
    if meta.is_dir() {
        return Err(CoreError::IsADirectory {
            path: path.to_path_buf(),
        });
    }
    Ok(file)
}

/// SHA-256 of a file, as lowercase hex. `sha2` picks the SHA-NI kernel at
/// run time where the CPU has it.
pub fn sha256_file(path: &Path, cancel: Option<&AtomicBool>) -> Result<String> {
    let mut file = open_regular(path)?;
    let mut hasher = Sha256::new();
    stream(&mut file, path, cancel, |chunk| hasher.update(chunk))?;
    Ok(hex::encode(hasher.finalize()))
}

/// Feeds the file to `update` in `BUF_SIZE` blocks from one reused buffer,
/// checking `cancel` between blocks. Returns the number of bytes read.
fn stream(
    file: &mut File,
    path: &Path,
    cancel: Option<&AtomicBool>,
    mut update: impl FnMut(&[u8]),
) -> Result<u64> {
    let mut buf = vec![0u8; BUF_SIZE];
    let mut read: u64 = 0;
    loop {
        if cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
            return Err(CoreError::Cancelled);
        }
        let n = match file.read(&mut buf) {
            Ok(0) => return Ok(read),
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(CoreError::io("cannot read", path, e)),
        };
        read += n as u64;
        update(&buf[..n]);
    }
}

/// BLAKE3 of a file, as lowercase hex, over the file's length when opened.
///
/// Large files are split into BLAKE3 subtrees (at `left_subtree_len`, merged
/// with the hazmat API) that rayon workers hash independently, so each worker
/// streams through long contiguous ranges. A worker reads its range from a
/// memory map while the map is cheap, and with `pread` into a small buffer
/// once it is not:
///
/// - Page cache in large folios (a file written in big pieces, or read back
///   through readahead) maps a folio per fault: mapping is then free next to
///   hashing, and a copy would cost a few percent.
/// - Page cache in small folios (a file written in small pieces, such as
///   network chunks written as they arrive) costs a fault per 64 KiB of
///   mapping plus the unmapping; there the copy out of the page cache into
///   an L2-sized buffer measured 5-25% faster on 2 cores.
///
/// Workers count the page faults their mapped blocks take; once a sample of
/// the file shows them dense, all switch to `pread`. `cancel` is checked
/// between blocks.
pub fn blake3_file(path: &Path, cancel: Option<&AtomicBool>) -> Result<String> {
    blake3_file_with(path, cancel, &Blake3Plan::default())
}

/// How `blake3_file` divides the work; only tests use other values.
#[derive(Debug, Clone, Copy)]
struct Blake3Plan {
    /// Files up to this size are hashed on the calling thread: handing work
    /// to the pool costs more than it saves on a few hundred microseconds.
    parallel_min: u64,
    /// A worker hashes a subtree in one go once it is no larger than 1/32 of
    /// the file's share per thread, kept within these bounds. Small pieces
    /// let a worker that finishes early (or was preempted less, on a busy
    /// machine) steal what is left, as `update_rayon`'s fine-grained split
    /// does: with 8 pieces per thread a 64 MiB file measured 5-10% behind
    /// it. A piece costs a `Hasher`, a join and a merge, next to ~60 us of
    /// hashing for 256 KiB.
    leaf_min: u64,
    leaf_max: u64,
    /// Read size. Small enough that what one read copied is still in L2 when
    /// it is hashed (AMD Zen 3: 512 KiB per core); 64-256 KiB measured alike.
    buf: usize,
    /// Files at least this large are mapped first (on Linux, where a thread
    /// can count its own page faults; elsewhere they are always read).
    map_min: u64,
    /// Mapped bytes hashed between two looks at the fault count and the
    /// cancel flag.
    map_block: usize,
    /// The first this many bytes hashed from the map, by all workers
    /// together, are a sample: if their page faults brought in less than
    /// `dense_fault_bytes` each on average, every worker switches to `pread`;
    /// otherwise the map is kept and faults are no longer counted. Kernels
    /// that map a whole large folio per fault (6.18 does) bring in ~1 MiB per
    /// fault when a file was written in big pieces; small folios, or the
    /// 64 KiB fault-around window, bring in 64 KiB. Folio sizes vary within a
    /// file (readahead starts small), hence a sample rather than the first
    /// block. Measured break-even on 2 cores: ~256 KiB per fault (1 MiB:
    /// mapping 2-4% faster; 128 KiB: reading 5-10% faster; 64 KiB: reading
    /// 5-25% faster).
    map_probe: u64,
    dense_fault_bytes: u64,
}

impl Default for Blake3Plan {
    fn default() -> Self {
        Blake3Plan {
            parallel_min: 1 << 20,
            leaf_min: 256 << 10,
            leaf_max: 4 << 20,
            buf: 128 << 10,
            map_min: 1 << 20,
            map_block: 4 << 20,
            map_probe: 32 << 20,
            dense_fault_bytes: 256 << 10,
        }
    }
}

#[cfg(any(unix, windows))]
fn blake3_file_with(path: &Path, cancel: Option<&AtomicBool>, plan: &Blake3Plan) -> Result<String> {
    use blake3::hazmat::{left_subtree_len, merge_subtrees_root, Mode};

    let file = open_regular(path)?;
    let len = file
        .metadata()
        .map_err(|e| CoreError::io("cannot stat", path, e))?
        .len();
    // SAFETY: the map is read-only and dropped before returning. A file
    // truncated underneath us can SIGBUS, as with any mmap reader; cache
    // files are replaced by rename, never truncated in place. A file that
    // cannot be mapped is read instead.
    let map = if cfg!(target_os = "linux") && len >= plan.map_min {
        unsafe { memmap2::MmapOptions::new().map(&file) }.ok()
    } else {
        None
    };
    let threads = rayon::current_num_threads().max(1) as u64;
    let range = Range {
        file: &file,
        path,
        cancel,
        buf: plan.buf.max(1),
        leaf: (len / (32 * threads))
            .min(plan.leaf_max)
            .max(plan.leaf_min)
            .max(blake3::CHUNK_LEN as u64),
        map: map.as_deref(),
        map_block: plan.map_block.max(1),
        map_probe: plan.map_probe,
        dense_fault_bytes: plan.dense_fault_bytes,
        mapped: AtomicU64::new(0),
        faults: AtomicU64::new(0),
        map_judged: AtomicBool::new(false),
        map_is_slow: AtomicBool::new(false),
    };
    let hash = if len <= plan.parallel_min.max(blake3::CHUNK_LEN as u64) {
        let mut hasher = blake3::Hasher::new();
        range.hash_into(&mut hasher, 0, len)?;
        hasher.finalize()
    } else {
        // The root node is the one parent that is finalised differently, so
        // the top split happens here and every subtree below is non-root.
        let left = left_subtree_len(len);
        let (l, r) = rayon::join(
            || range.subtree_cv(0, left),
            || range.subtree_cv(left, len - left),
        );
        merge_subtrees_root(&l?, &r?, Mode::Hash)
    };
    Ok(hash.to_hex().to_string())
}

/// No positional reads on this platform: one sequential stream.
#[cfg(not(any(unix, windows)))]
fn blake3_file_with(
    path: &Path,
    cancel: Option<&AtomicBool>,
    _plan: &Blake3Plan,
) -> Result<String> {
    let mut file = open_regular(path)?;
    let mut hasher = blake3::Hasher::new();
    stream(&mut file, path, cancel, |chunk| {
        hasher.update(chunk);
    })?;
    Ok(hasher.finalize().to_hex().to_string())
}

/// One file being hashed by several workers at once.
#[cfg(any(unix, windows))]
struct Range<'a> {
    file: &'a File,
    path: &'a Path,
    cancel: Option<&'a AtomicBool>,
    buf: usize,
    /// Subtrees up to this size are hashed by one worker.
    leaf: u64,
    /// The whole file, when it could be mapped.
    map: Option<&'a [u8]>,
    map_block: usize,
    map_probe: u64,
    dense_fault_bytes: u64,
    /// The sample so far: bytes hashed from the map, and the page faults
    /// that took.
    mapped: AtomicU64,
    faults: AtomicU64,
    /// Set once the sample is complete.
    map_judged: AtomicBool,
    /// Set if the sample showed dense faults; every worker reads from then on.
    map_is_slow: AtomicBool,
}

#[cfg(any(unix, windows))]
impl Range<'_> {
    /// Chaining value of the subtree covering `len` bytes at `offset`.
    /// Callers split only at `left_subtree_len`, which keeps every piece a
    /// valid BLAKE3 subtree (any other split gives a wrong digest).
    fn subtree_cv(&self, offset: u64, len: u64) -> Result<blake3::hazmat::ChainingValue> {
        use blake3::hazmat::{left_subtree_len, merge_subtrees_non_root, HasherExt, Mode};

        if len <= self.leaf {
            let mut hasher = blake3::Hasher::new();
            hasher.set_input_offset(offset);
            self.hash_into(&mut hasher, offset, len)?;
            return Ok(hasher.finalize_non_root());
        }
        let left = left_subtree_len(len);
        let (l, r) = rayon::join(
            || self.subtree_cv(offset, left),
            || self.subtree_cv(offset + left, len - left),
        );
        Ok(merge_subtrees_non_root(&l?, &r?, Mode::Hash))
    }

    fn cancelled(&self) -> Result<()> {
        if self.cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
            return Err(CoreError::Cancelled);
        }
        Ok(())
    }

    /// Feeds `len` bytes at `offset` to `hasher`: from the map while it is
    /// cheap, then with reads.
    fn hash_into(&self, hasher: &mut blake3::Hasher, offset: u64, len: u64) -> Result<()> {
        let end = offset + len;
        let mut pos = offset;
        if let Some(map) = self.map {
            while pos < end && !self.map_is_slow.load(Ordering::Relaxed) {
                self.cancelled()?;
                let n = (end - pos).min(self.map_block as u64);
                // In bounds: the map covers the length every range is cut from.
                let block = &map[pos as usize..(pos + n) as usize];
                if self.map_judged.load(Ordering::Relaxed) {
                    hasher.update(block);
                } else {
                    let before = thread_minor_faults();
                    hasher.update(block);
                    if let (Some(before), Some(after)) = (before, thread_minor_faults()) {
                        self.sample_map(n, after.saturating_sub(before));
                    }
                }
                pos += n;
            }
        }
        self.read_into(hasher, pos, end)
    }

    /// Adds one mapped block to the sample; once it is complete, gives up on
    /// the map if its faults were dense.
    fn sample_map(&self, bytes: u64, faults: u64) {
        let mapped = self.mapped.fetch_add(bytes, Ordering::Relaxed) + bytes;
        let faults = self.faults.fetch_add(faults, Ordering::Relaxed) + faults;
        if mapped >= self.map_probe {
            if faults.saturating_mul(self.dense_fault_bytes) > mapped {
                self.map_is_slow.store(true, Ordering::Relaxed);
            }
            self.map_judged.store(true, Ordering::Relaxed);
        }
    }

    /// Feeds bytes `pos..end` to `hasher`, one buffer-full at a time.
    fn read_into(&self, hasher: &mut blake3::Hasher, mut pos: u64, end: u64) -> Result<()> {
        if pos >= end {
            return Ok(());
        }
        let mut buf = vec![0u8; (self.buf as u64).min(end - pos) as usize];
        while pos < end {
            self.cancelled()?;
            let want = (end - pos).min(buf.len() as u64) as usize;
            let n = match read_at(self.file, &mut buf[..want], pos) {
                Ok(0) => {
                    return Err(CoreError::io(
                        "file changed size while hashing",
                        self.path,
                        std::io::Error::new(
                            ErrorKind::UnexpectedEof,
                            format!("expected bytes up to offset {end}, the file ends at {pos}"),
                        ),
                    ))
                }
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(CoreError::io("cannot read", self.path, e)),
            };
            hasher.update(&buf[..n]);
            pos += n as u64;
        }
        Ok(())
    }
}

/// Minor page faults taken so far by the calling thread.
#[cfg(target_os = "linux")]
fn thread_minor_faults() -> Option<u64> {
    // SAFETY: getrusage only writes the struct we pass; all-zero is a valid
    // `rusage`.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut usage) } != 0 {
        return None;
    }
    u64::try_from(usage.ru_minflt).ok()
}

#[cfg(all(any(unix, windows), not(target_os = "linux")))]
fn thread_minor_faults() -> Option<u64> {
    None
}

/// `pread`: reads at `offset` without moving a shared file position, so
/// workers can read one `File` concurrently. May return fewer bytes.
#[cfg(unix)]
fn read_at(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
    std::os::unix::fs::FileExt::read_at(file, buf, offset)
}

/// Windows moves the handle's position too, which nothing here relies on.
#[cfg(windows)]
fn read_at(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
    std::os::windows::fs::FileExt::seek_read(file, buf, offset)
}

pub fn hash_file(path: &Path, algorithm: Algorithm, cancel: Option<&AtomicBool>) -> Result<String> {
    match algorithm {
        Algorithm::Sha256 => sha256_file(path, cancel),
        Algorithm::Blake3 => blake3_file(path, cancel),
    }
}

/// Git's blob id of a file: SHA-1 over `"blob <size>\0"` then the bytes.
/// The Hub uses it as the ETag of small (non-LFS) files, so a mirror must
/// compute it to look like the Hub to huggingface_hub's cache.
pub fn git_blob_sha1_file(path: &Path, cancel: Option<&AtomicBool>) -> Result<String> {
    use sha1::Sha1;
    let mut file = open_regular(path)?;
    let size = file
        .metadata()
        .map_err(|e| CoreError::io("cannot stat", path, e))?
        .len();
    let mut hasher = Sha1::new();
    hasher.update(format!("blob {size}\0").as_bytes());
    let read = stream(&mut file, path, cancel, |chunk| hasher.update(chunk))?;
    if read != size {
        // The header already committed to `size`; a file that changed while
        // we read it would give an id that matches no blob.
        return Err(CoreError::io(
            "file changed size while hashing",
            path,
            std::io::Error::other(format!("expected {size} bytes, read {read}")),
        ));
    }
    Ok(hex::encode(hasher.finalize()))
}

/// Hashes many files in parallel (one file per worker); the result keeps
/// the input order. The first error wins and stops the rest.
pub fn hash_files(
    paths: &[PathBuf],
    algorithm: Algorithm,
    cancel: Option<&AtomicBool>,
) -> Result<Vec<String>> {
    paths
        .par_iter()
        .map(|p| hash_file(p, algorithm, cancel))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn file_with(content: &[u8]) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().expect("temp file");
        f.write_all(content).expect("write");
        f
    }

    #[test]
    fn sha256_known_vectors() {
        let f = file_with(b"abc");
        assert_eq!(
            sha256_file(f.path(), None).unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let empty = file_with(b"");
        assert_eq!(
            sha256_file(empty.path(), None).unwrap(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn sha256_spans_buffer_boundaries() {
        let data: Vec<u8> = (0..(BUF_SIZE * 2 + 17)).map(|i| (i % 251) as u8).collect();
        let f = file_with(&data);
        let expected = hex::encode(Sha256::digest(&data));
        assert_eq!(sha256_file(f.path(), None).unwrap(), expected);
    }

    /// Bytes that do not repeat with any period a tree split could hide.
    fn pattern(len: usize) -> Vec<u8> {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    fn check_blake3(len: usize, plan: &Blake3Plan) {
        let data = pattern(len);
        let f = file_with(&data);
        assert_eq!(
            blake3_file_with(f.path(), None, plan).unwrap(),
            blake3::hash(&data).to_hex().to_string(),
            "{len} bytes, {plan:?}"
        );
    }

    const KIB: usize = 1 << 10;
    const MIB: usize = 1 << 20;

    #[test]
    fn blake3_matches_reference() {
        // Around the single-thread threshold and the default leaf sizes.
        let plan = Blake3Plan::default();
        for len in [
            0,
            1,
            KIB - 1,
            KIB,
            KIB + 1,
            128 * KIB + 1,
            MIB - 1,
            MIB,
            MIB + 1,
            2 * MIB,
            2 * MIB + 1,
            3 * MIB + 5,
            4 * MIB - 1,
        ] {
            check_blake3(len, &plan);
        }
        let data = pattern(3 * MIB + 5);
        let f = file_with(&data);
        assert_eq!(
            blake3_file(f.path(), None).unwrap(),
            blake3::hash(&data).to_hex().to_string()
        );
    }

    #[test]
    fn blake3_default_plan_on_a_larger_file() {
        // Large enough that the default plan splits below the top node (on
        // any core count), with a tail that is no power of two.
        check_blake3(40 * MIB + 3 * KIB + 7, &Blake3Plan::default());
    }

    /// `base` three ways: read only, mapped only, and mapped until the first
    /// block that faults at all, then read.
    fn read_mapped_switching(base: Blake3Plan) -> [Blake3Plan; 3] {
        [
            Blake3Plan {
                map_min: u64::MAX,
                ..base
            },
            Blake3Plan {
                map_min: 0,
                dense_fault_bytes: 0,
                ..base
            },
            Blake3Plan {
                map_min: 0,
                map_probe: 0,
                dense_fault_bytes: u64::MAX,
                ..base
            },
        ]
    }

    #[test]
    fn blake3_deep_trees_and_odd_blocks() {
        // One-chunk leaves make every parent node a merge of ours; reads and
        // mapped blocks that straddle chunk boundaries check that short
        // updates add up.
        let tiny = Blake3Plan {
            parallel_min: 0,
            leaf_min: KIB as u64,
            leaf_max: KIB as u64,
            buf: 1000,
            map_block: 1500,
            ..Blake3Plan::default()
        };
        let small = Blake3Plan {
            parallel_min: 0,
            leaf_min: 4 * KIB as u64,
            leaf_max: 4 * KIB as u64,
            buf: 3 * KIB,
            map_block: 5 * KIB,
            ..Blake3Plan::default()
        };
        let mut sizes = vec![0, 1, KIB - 1, KIB, KIB + 1, 3 * KIB - 1, 3 * KIB + 5];
        for k in 11..=17 {
            let p = 1usize << k;
            sizes.extend([p - 1, p, p + 1, 3 * p - KIB, 3 * p - 1]);
        }
        for len in sizes {
            for plan in read_mapped_switching(tiny)
                .iter()
                .chain(&read_mapped_switching(small))
            {
                check_blake3(len, plan);
            }
        }
    }

    #[test]
    fn blake3_default_blocks_every_way() {
        for plan in read_mapped_switching(Blake3Plan::default()) {
            for len in [MIB - 1, MIB + 1, 9 * MIB + 3 * KIB + 7] {
                check_blake3(len, &plan);
            }
        }
    }

    fn range_over<'a>(file: &'a File, path: &'a Path, map: Option<&'a [u8]>) -> Range<'a> {
        Range {
            file,
            path,
            cancel: None,
            buf: 4 * KIB,
            leaf: 4 * KIB as u64,
            map,
            map_block: 64 * KIB,
            map_probe: 0,
            dense_fault_bytes: 0,
            mapped: AtomicU64::new(0),
            faults: AtomicU64::new(0),
            map_judged: AtomicBool::new(false),
            map_is_slow: AtomicBool::new(false),
        }
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn blake3_leaves_the_map_when_it_faults_densely() {
        let data = pattern(MIB);
        let f = file_with(&data);
        let file = File::open(f.path()).unwrap();
        let expected = blake3::hash(&data);
        for (dense_fault_bytes, slow) in [(0, false), (u64::MAX, true)] {
            // A fresh map faults on its first block whatever the folio size.
            // SAFETY: nothing writes the temp file while it is mapped.
            let map = unsafe { memmap2::Mmap::map(&file) }.unwrap();
            let range = Range {
                dense_fault_bytes,
                ..range_over(&file, f.path(), Some(&map))
            };
            let mut hasher = blake3::Hasher::new();
            range.hash_into(&mut hasher, 0, MIB as u64).unwrap();
            assert_eq!(hasher.finalize(), expected);
            assert_eq!(range.map_is_slow.load(Ordering::Relaxed), slow);
        }
    }

    #[test]
    fn blake3_cancels_between_blocks() {
        let f = file_with(&pattern(2 * MIB + 1));
        let cancel = AtomicBool::new(true);
        for plan in read_mapped_switching(Blake3Plan::default()) {
            assert!(matches!(
                blake3_file_with(f.path(), Some(&cancel), &plan),
                Err(CoreError::Cancelled)
            ));
        }
        assert!(matches!(
            hash_file(f.path(), Algorithm::Blake3, Some(&cancel)),
            Err(CoreError::Cancelled)
        ));
    }

    #[test]
    fn blake3_reports_a_file_that_shrank() {
        // As if the file lost its tail after we took its length.
        let f = file_with(&pattern(10 * KIB));
        let file = File::open(f.path()).unwrap();
        let range = range_over(&file, f.path(), None);
        let mut hasher = blake3::Hasher::new();
        let err = range
            .hash_into(&mut hasher, 0, 12 * KIB as u64)
            .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("changed size"), "{msg}");
        assert!(msg.contains(&f.path().display().to_string()), "{msg}");
    }

    #[test]
    fn errors_name_the_path() {
        let missing = Path::new("/nonexistent/caxton/file.bin");
        let err = sha256_file(missing, None).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/caxton/file.bin"));
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            sha256_file(dir.path(), None),
            Err(CoreError::IsADirectory { .. })
        ));
        assert!(matches!(
            blake3_file(dir.path(), None),
            Err(CoreError::IsADirectory { .. })
        ));
    }

    #[test]
    fn git_blob_sha1_matches_git() {
        // `printf 'hello\n' | git hash-object --stdin` and `git hash-object /dev/null`.
        let f = file_with(b"hello\n");
        assert_eq!(
            git_blob_sha1_file(f.path(), None).unwrap(),
            "ce013625030ba8dba906f756967f9e9ca394464a"
        );
        let empty = file_with(b"");
        assert_eq!(
            git_blob_sha1_file(empty.path(), None).unwrap(),
            "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391"
        );
    }

    #[test]
    fn hash_files_keeps_order_and_cancels() {
        let a = file_with(b"a");
        let b = file_with(b"b");
        let paths = vec![a.path().to_path_buf(), b.path().to_path_buf()];
        let out = hash_files(&paths, Algorithm::Sha256, None).unwrap();
        assert_eq!(out[0], hex::encode(Sha256::digest(b"a")));
        assert_eq!(out[1], hex::encode(Sha256::digest(b"b")));
        let cancel = AtomicBool::new(true);
        assert!(matches!(
            hash_files(&paths, Algorithm::Sha256, Some(&cancel)),
            Err(CoreError::Cancelled)
        ));
        assert!(Algorithm::parse("md5").is_err());
    }
}
