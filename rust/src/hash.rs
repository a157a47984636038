//! File hashing for cache validation: streaming, bounded memory.

use std::fs::File;
use std::io::{ErrorKind, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

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
/// Large files are split into BLAKE3 subtrees that rayon workers hash
/// independently, each `pread`ing its own range into a small reused buffer;
/// the subtree chaining values are then merged up to the root. Against
/// memory-mapping plus `update_rayon` (what the `blake3` package's
/// `update_mmap` does), the copy out of the page cache costs about what
/// mapping costs when the cache holds large folios, and less when it holds
/// small ones (files written in small pieces), where every 64 KiB of mapping
/// is a page fault. Reads also cannot SIGBUS if the file is truncated
/// underneath us. `cancel` is checked between reads.
pub fn blake3_file(path: &Path, cancel: Option<&AtomicBool>) -> Result<String> {
    blake3_file_with(path, cancel, &Blake3Plan::default())
}

/// How `blake3_file` divides the work; only tests use other values.
#[derive(Debug, Clone, Copy)]
struct Blake3Plan {
    /// Files up to this size are hashed on the calling thread: handing work
    /// to the pool costs more than it saves on a few hundred microseconds.
    parallel_min: u64,
    /// A worker hashes a subtree in one go once it is no larger than a
    /// quarter of the file's share per thread, kept within these bounds: far
    /// smaller than a share, so that a worker that finishes early (or was
    /// preempted less) steals what is left, yet large enough that the cost
    /// of a subtree (a buffer, a join, a merge) vanishes.
    leaf_min: u64,
    leaf_max: u64,
    /// Read size. Small enough that what one read copied is still in L2 when
    /// it is hashed (AMD Zen 3: 512 KiB per core); 64-256 KiB measured alike.
    buf: usize,
}

impl Default for Blake3Plan {
    fn default() -> Self {
        Blake3Plan {
            parallel_min: 1 << 20,
            leaf_min: 256 << 10,
            leaf_max: 16 << 20,
            buf: 128 << 10,
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
    let threads = rayon::current_num_threads().max(1) as u64;
    let range = Range {
        file: &file,
        path,
        cancel,
        buf: plan.buf.max(1),
        leaf: (len / (4 * threads))
            .min(plan.leaf_max)
            .max(plan.leaf_min)
            .max(blake3::CHUNK_LEN as u64),
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

    /// Feeds `len` bytes at `offset` to `hasher`, one buffer at a time.
    fn hash_into(&self, hasher: &mut blake3::Hasher, offset: u64, len: u64) -> Result<()> {
        let end = offset + len;
        let mut buf = vec![0u8; (self.buf as u64).min(len) as usize];
        let mut pos = offset;
        while pos < end {
            if self.cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
                return Err(CoreError::Cancelled);
            }
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

    #[test]
    fn blake3_deep_trees_and_odd_reads() {
        // One-chunk leaves make every parent node a merge of ours; reads that
        // straddle chunk boundaries check that short updates add up.
        let tiny = Blake3Plan {
            parallel_min: 0,
            leaf_min: KIB as u64,
            leaf_max: KIB as u64,
            buf: 1000,
        };
        let small = Blake3Plan {
            parallel_min: 0,
            leaf_min: 4 * KIB as u64,
            leaf_max: 4 * KIB as u64,
            buf: 3 * KIB,
        };
        let mut sizes = vec![0, 1, KIB - 1, KIB, KIB + 1, 3 * KIB - 1, 3 * KIB + 5];
        for k in 11..=17 {
            let p = 1usize << k;
            sizes.extend([p - 1, p, p + 1, 3 * p - KIB, 3 * p - 1]);
        }
        for len in sizes {
            check_blake3(len, &tiny);
            check_blake3(len, &small);
        }
    }

    #[test]
    fn blake3_cancels_between_reads() {
        let f = file_with(&pattern(2 * MIB + 1));
        let cancel = AtomicBool::new(true);
        assert!(matches!(
            blake3_file(f.path(), Some(&cancel)),
            Err(CoreError::Cancelled)
        ));
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
        let range = Range {
            file: &file,
            path: f.path(),
            cancel: None,
            buf: 4 * KIB,
            leaf: 4 * KIB as u64,
        };
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
