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

/// Files below this are read, not mapped: a mapping costs more than it saves.
const MMAP_MIN: u64 = 1 << 20;

/// BLAKE3 of a file, as lowercase hex. Large files are memory-mapped and
/// hashed on all cores with BLAKE3's tree mode. The mapping is not
/// pre-populated: MAP_POPULATE runs on one thread up front, while plain faults
/// (16 pages each, with the kernel's fault-around) are spread over the
/// hashing threads; measured faster on 2 cores.
pub fn blake3_file(path: &Path) -> Result<String> {
    let mut file = open_regular(path)?;
    let len = file
        .metadata()
        .map_err(|e| CoreError::io("cannot stat", path, e))?
        .len();
    let mut hasher = blake3::Hasher::new();
    if len >= MMAP_MIN {
        // SAFETY: the map is read-only and dropped before returning. A file
        // truncated underneath us can SIGBUS, as with any mmap reader; cache
        // files are replaced by rename, never truncated in place.
        let map = unsafe { memmap2::MmapOptions::new().map(&file) }
            .map_err(|e| CoreError::io("cannot map", path, e))?;
        hasher.update_rayon(&map);
    } else {
        let mut buf = Vec::with_capacity(len as usize);
        file.read_to_end(&mut buf)
            .map_err(|e| CoreError::io("cannot read", path, e))?;
        hasher.update(&buf);
    }
    Ok(hasher.finalize().to_hex().to_string())
}

pub fn hash_file(path: &Path, algorithm: Algorithm, cancel: Option<&AtomicBool>) -> Result<String> {
    match algorithm {
        Algorithm::Sha256 => sha256_file(path, cancel),
        Algorithm::Blake3 => blake3_file(path),
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

    #[test]
    fn blake3_matches_reference() {
        let data = vec![7u8; 3 * 1024 * 1024 + 5];
        let f = file_with(&data);
        assert_eq!(
            blake3_file(f.path()).unwrap(),
            blake3::hash(&data).to_hex().to_string()
        );
        let empty = file_with(b"");
        assert_eq!(
            blake3_file(empty.path()).unwrap(),
            blake3::hash(b"").to_hex().to_string()
        );
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
            blake3_file(dir.path()),
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
