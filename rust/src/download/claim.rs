//! Who owns the files beside `dest`: the advisory `<dest>.lock`, our own
//! `.part` temp (opened so that a planted file or symlink cannot redirect
//! our writes), and the leftovers of earlier runs: a dead process's
//! resumable temp is claimed, other dead leftovers removed, a live
//! process's files left alone.
//!
//! Liveness is a held lock, never a PID (the Python store's rule too, see
//! `store/_live.py`): the process writing a `.part` holds a lock on it until
//! it ends, however it ends. A PID says nothing in a cache shared by
//! containers (another PID namespace), where "pid 7 is alive" is about
//! someone else.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use super::job::io_err;
use super::state::State;
use crate::error::Result;
use crate::http;
/// The advisory lock on `<dest>.lock`, removed when dropped.
pub(super) struct DestLock {
    file: File,
    path: PathBuf,
}

impl Drop for DestLock {
    fn drop(&mut self) {
        // Unlink before unlocking: a waiter that then locks the old inode
        // notices it is no longer at the path and retries.
        let _ = std::fs::remove_file(&self.path);
        let _ = fs4::fs_std::FileExt::unlock(&self.file);
    }
}

fn same_file(f: &File, path: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        match (f.metadata(), std::fs::metadata(path)) {
            (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
            _ => false,
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (f, path);
        true
    }
}

/// Takes the lock, waiting (and watching `cancel`) while another process
/// holds it. Returns whether we had to wait.
pub(super) async fn take_lock(path: &Path, cancel: &AtomicBool) -> Result<(DestLock, bool)> {
    let mut waited = false;
    // Test-only, one switch for both languages (the cache lock in Python reads
    // it too), as huggingface_hub's tests patch flock: behave as on a
    // filesystem where locks do nothing, to prove correctness without them.
    let no_lock = std::env::var_os("CAXTON_NO_LOCKS").is_some_and(|v| v == "1");
    loop {
        let file = open_lock_file(path)?;
        if no_lock {
            return Ok((
                DestLock {
                    file,
                    path: path.to_path_buf(),
                },
                false,
            ));
        }
        match fs4::fs_std::FileExt::try_lock_exclusive(&file) {
            Ok(true) => {
                if same_file(&file, path) {
                    return Ok((
                        DestLock {
                            file,
                            path: path.to_path_buf(),
                        },
                        waited,
                    ));
                }
                continue;
            }
            Ok(false) => {}
            // Locks unsupported here (some network filesystems): go on
            // without; unique temp files keep us correct.
            Err(_) => {
                return Ok((
                    DestLock {
                        file,
                        path: path.to_path_buf(),
                    },
                    false,
                ))
            }
        }
        waited = true;
        http::sleep_cancellable(Duration::from_millis(100), cancel).await?;
    }
}

/// Opens `path` read-write without following a symlink at it (RELIABILITY
/// row 25): `create_new` for a file that must not exist yet, `create` to
/// open or create one. The one way this module opens files beside `dest`.
fn open_nofollow(path: &Path, create: bool, create_new: bool) -> std::io::Result<File> {
    let mut o = OpenOptions::new();
    o.read(true).write(true);
    if create_new {
        o.create_new(true);
    } else if create {
        o.create(true).truncate(false);
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.custom_flags(libc::O_NOFOLLOW);
    }
    o.open(path)
}

/// Opens (creating) `<dest>.lock`. A symlink planted there is removed, never
/// followed (a lock opened through it would create or lock a file elsewhere).
fn open_lock_file(path: &Path) -> Result<File> {
    match open_nofollow(path, true, false) {
        Ok(f) => Ok(f),
        Err(_) if is_symlink(path) => {
            std::fs::remove_file(path).map_err(|e| io_err("remove a symlink at", path, e))?;
            open_nofollow(path, false, true).map_err(|e| io_err("create lock file", path, e))
        }
        Err(e) => Err(io_err("create lock file", path, e)),
    }
}

fn is_symlink(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink())
}

/// Opens our temp file: a fresh one with O_EXCL (a planted file or symlink at
/// that name makes us fail rather than write through it), a claimed one
/// without following symlinks. Either way it is locked for as long as we
/// hold it: the lock is what tells another process we are alive.
pub(super) fn open_part(part: &Path, fresh: bool) -> std::io::Result<File> {
    let file = open_nofollow(part, false, fresh)?;
    hold_alive(&file);
    Ok(file)
}

#[cfg(unix)]
fn hold_alive(file: &File) {
    // Best effort: without locks (some network file systems) a leftover's
    // owner cannot be told, and `held` then answers "alive".
    let _ = fs4::fs_std::FileExt::try_lock_shared(file);
}

#[cfg(not(unix))]
fn hold_alive(_file: &File) {
    // Windows locks are mandatory byte-range locks: one on the part would
    // block the hasher's reads of it. Windows has no PID namespaces sharing
    // a volume either; there `<dest>.lock` alone keeps a live download's
    // files from being claimed, as before.
}

/// Whether a living process holds the lock on `part` (it is writing it);
/// a file that is gone is held by nobody. Where locks do not work, the
/// answer is "held": a leftover is kept rather than taken from the living.
fn held(part: &Path) -> bool {
    if cfg!(not(unix)) {
        return false; // see hold_alive: `<dest>.lock` is the guard there
    }
    let mut o = OpenOptions::new();
    o.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.custom_flags(libc::O_NOFOLLOW);
    }
    let Ok(f) = o.open(part) else {
        return false;
    };
    match fs4::fs_std::FileExt::try_lock_exclusive(&f) {
        Ok(true) => {
            let _ = fs4::fs_std::FileExt::unlock(&f);
            false
        }
        Ok(false) | Err(_) => true,
    }
}

/// The `.part` a leftover belongs to: itself, or the data file of a
/// `.part.state` or of a `.part.state.tmp…` being written.
fn data_part(dir: &Path, f: &str) -> PathBuf {
    match f.find(".part") {
        Some(i) => dir.join(format!("{}.part", &f[..i])),
        None => dir.join(f),
    }
}

/// Claims a resumable temp left by a dead process (renaming it to our own
/// unique name) and removes other dead leftovers. Returns its state.
pub(super) fn claim_leftovers(
    dest: &Path,
    part: &Path,
    state_path: &Path,
    url: &str,
    sha: &Option<String>,
) -> Option<State> {
    let dir = match dest.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = dest.file_name()?.to_str()?.to_string();
    let prefix = format!("{name}.");
    let mut claimed: Option<State> = None;
    for e in std::fs::read_dir(&dir).ok()?.flatten() {
        let fname = e.file_name();
        let Some(f) = fname.to_str() else { continue };
        if !f.starts_with(&prefix) || !f.contains(".part") {
            continue;
        }
        let p = dir.join(f);
        if p == part || p == state_path || held(&data_part(&dir, f)) {
            continue;
        }
        if let Some(data) = f.strip_suffix(".part.state") {
            let data_path = dir.join(format!("{data}.part"));
            let st = State::read(&p);
            let usable = claimed.is_none()
                && st.as_ref().is_some_and(|s| {
                    s.url == url && (sha.is_none() || s.sha256.is_none() || &s.sha256 == sha)
                });
            if usable && std::fs::rename(&data_path, part).is_ok() {
                let _ = std::fs::remove_file(&p);
                claimed = st;
            } else {
                let _ = std::fs::remove_file(&p);
                let _ = std::fs::remove_file(&data_path);
            }
        } else if f.ends_with(".part") {
            if !dir.join(format!("{f}.state")).exists() {
                let _ = std::fs::remove_file(&p);
            }
        } else if f.contains(".part.state.tmp") {
            let _ = std::fs::remove_file(&p);
        }
    }
    claimed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::download::state::{verify_pieces, xxh3_range, Piece};

    #[cfg(unix)]
    #[test]
    fn a_symlink_planted_at_the_lock_is_removed_not_followed() {
        let d = Dir::new();
        let outside = tempfile::tempdir().unwrap();
        let victim = outside.path().join("victim");
        let lock_path = d.path("f.bin.lock");
        std::os::unix::fs::symlink(&victim, &lock_path).unwrap();
        let cancel = AtomicBool::new(false);
        let rt = crate::http::runtime().unwrap();
        let (guard, waited) = rt.block_on(take_lock(&lock_path, &cancel)).unwrap();
        assert!(!waited);
        assert!(!victim.exists(), "the lock was created through the symlink");
        let meta = std::fs::symlink_metadata(&lock_path).unwrap();
        assert!(meta.file_type().is_file());
        drop(guard);
        assert!(!victim.exists() && !lock_path.exists());
    }

    #[test]
    fn leftovers_map_to_their_data_part() {
        let d = Path::new("/d");
        for f in [
            "f.bin.1-0a.part",
            "f.bin.1-0a.part.state",
            "f.bin.1-0a.part.state.tmp9",
        ] {
            assert_eq!(data_part(d, f), d.join("f.bin.1-0a.part"));
        }
    }

    /// Nobody holds a lock on these leftovers: their owner is dead (whatever
    /// the number in the name, which is only for people reading it).
    const DEAD: u32 = 2_000_000_000;
    const URL: &str = "http://h/f.bin";

    struct Dir {
        tmp: tempfile::TempDir,
    }

    impl Dir {
        fn new() -> Dir {
            Dir {
                tmp: tempfile::tempdir().unwrap(),
            }
        }
        fn path(&self, name: &str) -> PathBuf {
            self.tmp.path().join(name)
        }
        fn names(&self) -> Vec<String> {
            let mut v: Vec<String> = std::fs::read_dir(self.tmp.path())
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            v.sort();
            v
        }
        /// A leftover `f.bin.<token>.part` with `data` and a state for `url`
        /// claiming `pieces` (each with the XXH3 of `data`'s bytes there).
        fn leftover(&self, token: &str, data: &[u8], url: &str, pieces: &[(u64, u64)]) {
            let part = self.path(&format!("f.bin.{token}.part"));
            std::fs::write(&part, data).unwrap();
            let f = File::open(&part).unwrap();
            let mut buf = vec![0u8; 4096];
            let pieces = pieces
                .iter()
                .map(|&(start, end)| Piece {
                    start,
                    end,
                    xxh3: xxh3_range(&f, start, end, &mut buf).unwrap(),
                })
                .collect();
            let st = State {
                url: url.into(),
                size: data.len() as u64,
                etag: Some("\"v1\"".into()),
                sha256: None,
                pieces,
            };
            st.write(&self.path(&format!("f.bin.{token}.part.state")))
                .unwrap();
        }
        /// Runs the claim as a new process with token `me` would.
        fn claim(&self, sha: Option<&str>) -> (Option<State>, PathBuf) {
            let me = format!("{}-00000001", std::process::id());
            let part = self.path(&format!("f.bin.{me}.part"));
            let state = self.path(&format!("f.bin.{me}.part.state"));
            let sha = sha.map(str::to_string);
            let got = claim_leftovers(&self.path("f.bin"), &part, &state, URL, &sha);
            (got, part)
        }
    }

    #[test]
    fn dead_owners_part_is_taken_over() {
        let d = Dir::new();
        let data: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
        d.leftover(&format!("{DEAD}-0000abcd"), &data, URL, &[(0, 4000)]);
        let (st, part) = d.claim(None);
        let st = st.expect("claimed");
        assert_eq!(st.size, 10_000);
        assert_eq!(st.pieces.len(), 1);
        // Renamed to our own name; the dead one's state is gone.
        assert_eq!(std::fs::read(&part).unwrap(), data);
        let me = part.file_name().unwrap().to_string_lossy().into_owned();
        assert_eq!(d.names(), [me]);
    }

    #[cfg(unix)]
    #[test]
    fn live_owners_files_are_left_alone() {
        let d = Dir::new();
        // Its owner holds the part open and locked, as open_part leaves it;
        // the pid in the name is ours, which says nothing either way.
        let token = format!("{}-0000abcd", std::process::id());
        d.leftover(&token, b"0123456789", URL, &[(0, 10)]);
        let _owner = open_part(&d.path(&format!("f.bin.{token}.part")), false).unwrap();
        let before = d.names();
        let (st, part) = d.claim(None);
        assert!(st.is_none());
        assert!(!part.exists());
        assert_eq!(d.names(), before);
    }

    #[test]
    fn unrelated_and_garbage_names_are_ignored() {
        let d = Dir::new();
        let keep = [
            "f.bin",
            "f.binx.1-0.part",
            "other.bin.2000000000-0.part",
            "f.bin.lock",
            "f.bin.txt",
            "f.bin.2000000000-0.partial",
        ];
        for n in keep {
            std::fs::write(d.path(n), b"x").unwrap();
        }
        // Ours: garbage, or dead leftovers that cannot be resumed.
        for n in [
            "f.bin.notapid.part.state",
            "f.bin.2000000000-1.part",
            "f.bin.2000000000-2.part.state.tmp1234",
        ] {
            std::fs::write(d.path(n), b"junk").unwrap();
        }
        let (st, _) = d.claim(None);
        assert!(st.is_none());
        let mut want: Vec<String> = keep.iter().map(|s| s.to_string()).collect();
        want.sort();
        assert_eq!(d.names(), want);
    }

    #[test]
    fn state_that_disagrees_is_not_used() {
        let data = b"0123456789".to_vec();
        let other_sha = Some("a".repeat(64));
        for (url, sha) in [("http://h/other", None), (URL, Some("b".repeat(64)))] {
            let d = Dir::new();
            d.leftover(&format!("{DEAD}-0000abcd"), &data, url, &[(0, 10)]);
            if let Some(s) = &sha {
                let p = d.path(&format!("f.bin.{DEAD}-0000abcd.part.state"));
                let mut st = State::read(&p).unwrap();
                st.sha256 = Some(s.clone());
                st.write(&p).unwrap();
            }
            let (st, part) = d.claim(other_sha.as_deref());
            assert!(st.is_none(), "{url} {sha:?}");
            assert!(!part.exists());
            assert_eq!(d.names(), Vec::<String>::new(), "{url} {sha:?}");
        }
        // A torn or garbled state file, or one whose part is gone.
        let d = Dir::new();
        d.leftover(&format!("{DEAD}-0000abcd"), &data, URL, &[(0, 10)]);
        std::fs::write(
            d.path(&format!("f.bin.{DEAD}-0000abcd.part.state")),
            "caxton-part 1\nurl http://h/f.bin\n",
        )
        .unwrap();
        d.leftover(&format!("{DEAD}-0000beef"), &data, URL, &[(0, 10)]);
        std::fs::remove_file(d.path(&format!("f.bin.{DEAD}-0000beef.part"))).unwrap();
        assert!(d.claim(None).0.is_none());
        assert_eq!(d.names(), Vec::<String>::new());
    }

    #[test]
    fn claimed_pieces_whose_bytes_changed_are_dropped() {
        // The state claims bytes the part no longer holds (a power cut, or
        // a truncated file): only the pieces that still match are kept.
        let d = Dir::new();
        let data: Vec<u8> = (0..30_000u32).map(|i| (i % 241) as u8).collect();
        d.leftover(
            &format!("{DEAD}-0000abcd"),
            &data,
            URL,
            &[(0, 10_000), (10_000, 20_000), (20_000, 30_000)],
        );
        let (st, part) = d.claim(None);
        let st = st.expect("claimed");
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&part)
            .unwrap();
        crate::download::io::write_all_at(&f, &[0u8; 16], 12_000).unwrap();
        f.set_len(25_000).unwrap();
        let kept = verify_pieces(&f, &st.pieces, 25_000);
        assert_eq!(kept, vec![st.pieces[0].clone()]);
    }
}
