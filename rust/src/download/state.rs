//! The resume state beside a `.part` file: which byte ranges are on disk,
//! each with the XXH3 of its bytes.
//!
//! Why checksums rather than fsync ordering: a crash (kill -9) keeps the page
//! cache, but a power cut may lose data the state already claims. Instead of
//! an fdatasync before every state write (which would cap downloads at the
//! disk's sync speed, ~135 MB/s on the test machine, far below the network),
//! every claimed range carries its XXH3-64 and is re-read and checked before
//! it is trusted. A range whose bytes did not survive is fetched again. The
//! state itself is written to a temp file and renamed, so it is always
//! either the old or the new version, never a torn one.

use std::io::Write;
use std::path::{Path, PathBuf};

use xxhash_rust::xxh3::Xxh3;

use super::io::read_exact_at;

const MAGIC: &str = "caxton-part 1";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Piece {
    pub start: u64,
    pub end: u64,
    pub xxh3: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct State {
    /// Redacted URL (no query): a resume must be for the same resource.
    pub url: String,
    pub size: u64,
    /// Strong ETag of the resource, sent as If-Range when resuming.
    pub etag: Option<String>,
    pub sha256: Option<String>,
    pub pieces: Vec<Piece>,
}

impl State {
    pub fn encode(&self) -> String {
        let mut s = format!("{MAGIC}\nurl {}\nsize {}\n", self.url, self.size);
        if let Some(e) = &self.etag {
            s.push_str(&format!("etag {e}\n"));
        }
        if let Some(h) = &self.sha256 {
            s.push_str(&format!("sha256 {h}\n"));
        }
        for p in &self.pieces {
            s.push_str(&format!("piece {} {} {:016x}\n", p.start, p.end, p.xxh3));
        }
        s.push_str("end\n");
        s
    }

    /// Parses a state file; anything odd means "no usable state".
    pub fn decode(text: &str) -> Option<State> {
        let mut lines = text.lines();
        if lines.next()? != MAGIC {
            return None;
        }
        let mut st = State::default();
        let mut complete = false;
        let mut sized = false;
        for line in lines {
            let (key, rest) = line.split_once(' ').unwrap_or((line, ""));
            match key {
                "url" => st.url = rest.to_string(),
                // One size, before any piece: a later one could leave pieces
                // past the end of the file (found by fuzzing).
                "size" if !sized && st.pieces.is_empty() => {
                    st.size = rest.parse().ok()?;
                    sized = true;
                }
                "etag" => st.etag = Some(rest.to_string()),
                "sha256" => st.sha256 = Some(rest.to_string()),
                "piece" => {
                    let mut it = rest.split(' ');
                    let start: u64 = it.next()?.parse().ok()?;
                    let end: u64 = it.next()?.parse().ok()?;
                    let xxh3 = u64::from_str_radix(it.next()?, 16).ok()?;
                    if start >= end || end > st.size {
                        return None;
                    }
                    st.pieces.push(Piece { start, end, xxh3 });
                }
                "end" => complete = true,
                _ => return None,
            }
        }
        complete.then_some(st)
    }

    pub fn read(path: &Path) -> Option<State> {
        let text = std::fs::read_to_string(path).ok()?;
        State::decode(&text)
    }

    /// Writes via a unique temp file + rename (atomic on POSIX and NTFS).
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        let tmp = tmp_name(path);
        let res = (|| {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(self.encode().as_bytes())?;
            drop(f);
            std::fs::rename(&tmp, path)
        })();
        if res.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        res
    }
}

fn tmp_name(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".tmp{:08x}", fastrand::u32(..)));
    PathBuf::from(s)
}

/// XXH3-64 of `[start, end)` of `file`, read with a reused buffer.
pub fn xxh3_range(
    file: &std::fs::File,
    start: u64,
    end: u64,
    buf: &mut [u8],
) -> std::io::Result<u64> {
    let mut h = Xxh3::new();
    let mut at = start;
    while at < end {
        let n = ((end - at) as usize).min(buf.len());
        read_exact_at(file, &mut buf[..n], at)?;
        h.update(&buf[..n]);
        at += n as u64;
    }
    Ok(h.digest())
}

/// Keeps the pieces whose bytes on disk still match their checksum.
pub fn verify_pieces(file: &std::fs::File, pieces: &[Piece], file_len: u64) -> Vec<Piece> {
    let mut buf = vec![0u8; 1 << 20];
    pieces
        .iter()
        .filter(|p| p.end <= file_len)
        .filter(|p| xxh3_range(file, p.start, p.end, &mut buf).ok() == Some(p.xxh3))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> State {
        State {
            url: "http://h/x".into(),
            size: 100,
            etag: Some("\"abc\"".into()),
            sha256: None,
            pieces: vec![
                Piece {
                    start: 0,
                    end: 10,
                    xxh3: 0xdead,
                },
                Piece {
                    start: 20,
                    end: 100,
                    xxh3: 1,
                },
            ],
        }
    }

    #[test]
    fn roundtrip() {
        let s = sample();
        assert_eq!(State::decode(&s.encode()), Some(s));
    }

    #[test]
    fn rejects_truncated_or_odd() {
        let text = sample().encode();
        for cut in 0..text.len() - 1 {
            let t = &text[..cut];
            // A prefix without the final "end" line is never accepted.
            assert_eq!(State::decode(t), None, "accepted prefix of length {cut}");
        }
        assert_eq!(
            State::decode("caxton-part 1\nsize 10\npiece 5 20 0\nend\n"),
            None
        );
        assert_eq!(State::decode("caxton-part 1\nwhat 1\nend\n"), None);
        // A second size after the pieces would leave them past the end.
        assert_eq!(
            State::decode("caxton-part 1\nsize 100\npiece 0 50 0\nsize 10\nend\n"),
            None
        );
        assert_eq!(
            State::decode("caxton-part 1\nsize 100\nsize 10\nend\n"),
            None
        );
    }

    #[test]
    fn write_read_and_verify() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..100u8).collect();
        let fpath = dir.path().join("f.part");
        std::fs::write(&fpath, &data).unwrap();
        let f = std::fs::File::open(&fpath).unwrap();
        let mut buf = vec![0u8; 7];
        let good = xxh3_range(&f, 0, 10, &mut buf).unwrap();
        assert_eq!(good, xxhash_rust::xxh3::xxh3_64(&data[..10]));
        let mut st = sample();
        st.pieces[0].xxh3 = good;
        let spath = dir.path().join("f.part.state");
        st.write(&spath).unwrap();
        let back = State::read(&spath).unwrap();
        assert_eq!(back, st);
        let kept = verify_pieces(&f, &back.pieces, 100);
        assert_eq!(kept, vec![st.pieces[0].clone()]);
    }
}
