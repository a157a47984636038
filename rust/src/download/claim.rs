//! Who owns the files beside `dest`: the advisory `<dest>.lock`, our own
//! `.part` temp (opened so that a planted file or symlink cannot redirect
//! our writes), and the leftovers of earlier runs: a dead process's
//! resumable temp is claimed, other dead leftovers removed, a live
//! process's files left alone.
//!
//! Liveness is a held lock, never a PID: the process writing a `.part` holds
//! a lock on it until it ends, however it ends. A PID says nothing in a cache
//! shared by containers (another PID namespace), where "pid 7 is alive" is
//! about someone else. [`lock_held`] is the one test of that rule for both
//! languages: the Python store calls it (`_core.lock_held`) for its own
//! owner files (`store/_live.py`).

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
    /// Whether the lock was really taken (false: locks do nothing here, or
    /// CAXTON_NO_LOCKS), i.e. whether it keeps other writers of `dest` out.
    locked: bool,
}

impl DestLock {
    pub(super) fn locked(&self) -> bool {
        self.locked
    }
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
                    locked: false,
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
                            locked: true,
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
                        locked: false,
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
    // Shared is enough: `lock_held` tests with an exclusive lock, which a
    // lock of either kind refuses. Best effort: without locks (some network
    // file systems) a leftover's owner cannot be told, and `lock_held` then
    // answers None, read as "alive".
    let _ = fs4::fs_std::FileExt::try_lock_shared(file);
}

#[cfg(not(unix))]
fn hold_alive(_file: &File) {
    // Windows locks are mandatory byte-range locks: one on the part would
    // block the hasher's reads of it. Windows has no PID namespaces sharing
    // a volume either; there `<dest>.lock` alone keeps a live download's
    // files from being claimed (see `writer_alive`).
}

/// Whether a living process holds a lock on `path`: the one liveness test of
/// the core and the Python store (`_core.lock_held`). The rule: an owner
/// holds a lock of either kind on its file for as long as it runs (the
/// kernel drops it when the process ends, however it ends); a checker tries
/// an exclusive lock without waiting, which any held lock refuses.
///
/// `Some(true)`: held. `Some(false)`: nobody holds it, or nothing is there
/// (a symlink is nobody's lock). `None`: this file system cannot tell (no
/// locks, or the file cannot be opened). Callers read `None` as "alive", or
/// leave the file to age: never take a living process's file for a dead one's.
pub fn lock_held(path: &Path) -> Option<bool> {
    let mut o = OpenOptions::new();
    o.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        // O_NONBLOCK: a FIFO planted at the name answers at once instead of
        // waiting for a writer forever; nothing changes for a regular file.
        o.custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK);
    }
    let f = match o.open(path) {
        Ok(f) => f,
        Err(e) if gone(&e) => return Some(false),
        Err(_) => return None,
    };
    match fs4::fs_std::FileExt::try_lock_exclusive(&f) {
        Ok(true) => {
            let _ = fs4::fs_std::FileExt::unlock(&f);
            Some(false)
        }
        Ok(false) => Some(true),
        Err(_) => None,
    }
}

/// An open error that means no owner's file is at the path: nothing there,
/// a path through a file, or a symlink (refused by O_NOFOLLOW).
fn gone(e: &std::io::Error) -> bool {
    if e.kind() == std::io::ErrorKind::NotFound {
        return true;
    }
    #[cfg(unix)]
    {
        matches!(e.raw_os_error(), Some(libc::ENOTDIR | libc::ELOOP))
    }
    #[cfg(not(unix))]
    {
        false
    }
}

/// Whether the writer of the leftover `part` may still be running. On Unix
/// its lock answers, "cannot tell" counting as alive. Elsewhere writers hold
/// no lock on a part (see `hold_alive`): every writer holds `<dest>.lock`
/// for its whole run, so when we hold it for real (`dest_locked`) the
/// leftovers' writers are gone; when we could not take it, we cannot tell,
/// and the answer is again "alive".
fn writer_alive(part: &Path, dest_locked: bool) -> bool {
    if cfg!(unix) {
        lock_held(part) != Some(false)
    } else {
        !dest_locked
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
/// `dest_locked`: whether we really hold `<dest>.lock` ([`DestLock::locked`]).
pub(super) fn claim_leftovers(
    dest: &Path,
    part: &Path,
    state_path: &Path,
    url: &str,
    sha: &Option<String>,
    dest_locked: bool,
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
        if p == part || p == state_path || writer_alive(&data_part(&dir, f), dest_locked) {
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
        /// Runs the claim as a new process with token `me` would, holding
        /// `<dest>.lock`.
        fn claim(&self, sha: Option<&str>) -> (Option<State>, PathBuf) {
            self.claim_with(sha, true)
        }
        fn claim_with(&self, sha: Option<&str>, dest_locked: bool) -> (Option<State>, PathBuf) {
            let me = format!("{}-00000001", std::process::id());
            let part = self.path(&format!("f.bin.{me}.part"));
            let state = self.path(&format!("f.bin.{me}.part.state"));
            let sha = sha.map(str::to_string);
            let got = claim_leftovers(&self.path("f.bin"), &part, &state, URL, &sha, dest_locked);
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
    fn without_the_dest_lock_only_the_parts_own_lock_says_dead() {
        // <dest>.lock not taken (a file system without locks, CAXTON_NO_LOCKS).
        let d = Dir::new();
        d.leftover(&format!("{DEAD}-0000abcd"), b"0123456789", URL, &[(0, 10)]);
        let (st, _) = d.claim_with(None, false);
        // Unix: nobody holds the part's lock, so its writer is gone. Elsewhere
        // writers hold none on a part, so nothing tells: kept, as if alive.
        assert_eq!(st.is_some(), cfg!(unix));
    }

    #[test]
    fn lock_held_is_true_only_while_a_lock_is_held() {
        let d = Dir::new();
        let p = d.path("owner");
        assert_eq!(lock_held(&p), Some(false), "nothing there");
        std::fs::write(&p, b"x").unwrap();
        assert_eq!(lock_held(&p), Some(false), "nobody holds it");
        // Either kind of lock is a living holder: the core's parts hold a
        // shared one, the Python store's owner files an exclusive one.
        for exclusive in [false, true] {
            let holder = File::open(&p).unwrap();
            if exclusive {
                fs4::fs_std::FileExt::lock_exclusive(&holder).unwrap();
            } else {
                fs4::fs_std::FileExt::lock_shared(&holder).unwrap();
            }
            assert_eq!(lock_held(&p), Some(true), "exclusive={exclusive}");
            // Checking took nothing from the holder.
            assert_eq!(lock_held(&p), Some(true), "exclusive={exclusive}");
            drop(holder);
            assert_eq!(lock_held(&p), Some(false), "exclusive={exclusive}");
        }
        let holder = open_part(&p, false).unwrap();
        // Windows writers hold no lock on a part (see hold_alive).
        assert_eq!(lock_held(&p), Some(cfg!(unix)), "a part being written");
        drop(holder);
        assert_eq!(lock_held(&p.join("below-a-file")), Some(false));
    }

    #[cfg(unix)]
    #[test]
    fn lock_held_follows_no_symlink_and_waits_for_no_fifo() {
        let d = Dir::new();
        let target = d.path("target");
        std::fs::write(&target, b"x").unwrap();
        let _holder = open_part(&target, false).unwrap();
        let link = d.path("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert_eq!(lock_held(&link), Some(false), "a symlink is nobody's lock");
        let fifo = d.path("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path; mkfifo only reads it.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        assert_eq!(
            lock_held(&fifo),
            Some(false),
            "returned at once, nobody holds it"
        );
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
