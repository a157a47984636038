//! A small HTTP/1.1 server on 127.0.0.1 for unit tests: each path either
//! redirects or serves bytes (with single `Range` support), and every
//! request's headers are recorded, so tests can check what was sent where.
//! One thread per connection and `Connection: close` on every response keep
//! it simple; it lives as long as the test process.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

pub enum Route {
    /// 302 to this `Location`.
    Redirect(String),
    /// 200, or 206 for a `Range: bytes=a-b` request.
    Bytes(Vec<u8>),
}

/// One request as the server saw it; header names lower-case.
#[derive(Clone, Debug)]
pub struct Seen {
    pub path: String,
    pub headers: Vec<(String, String)>,
}

impl Seen {
    pub fn has(&self, name: &str) -> bool {
        self.headers.iter().any(|(k, _)| k == name)
    }
}

pub struct Server {
    listener: TcpListener,
    pub port: u16,
    log: Arc<Mutex<Vec<Seen>>>,
}

impl Server {
    /// Binds a free port; routes are given to `start`, once the ports of
    /// every server of a test (redirect targets) are known.
    pub fn bind() -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
        let port = listener.local_addr().expect("local addr").port();
        Server {
            listener,
            port,
            log: Arc::default(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        self.url_at("127.0.0.1", path)
    }

    /// The URL under another host name (`localhost`: same socket, another origin).
    pub fn url_at(&self, host: &str, path: &str) -> String {
        format!("http://{host}:{}{path}", self.port)
    }

    pub fn start(self, routes: Vec<(&str, Route)>) -> Running {
        let routes: Arc<Vec<(String, Route)>> = Arc::new(
            routes
                .into_iter()
                .map(|(p, r)| (p.to_string(), r))
                .collect(),
        );
        let log = Arc::clone(&self.log);
        let listener = self.listener;
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let (routes, log) = (Arc::clone(&routes), Arc::clone(&log));
                std::thread::spawn(move || {
                    let _ = handle(conn, &routes, &log);
                });
            }
        });
        Running {
            port: self.port,
            log: self.log,
        }
    }
}

pub struct Running {
    pub port: u16,
    log: Arc<Mutex<Vec<Seen>>>,
}

impl Running {
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

fn handle(
    mut conn: TcpStream,
    routes: &[(String, Route)],
    log: &Mutex<Vec<Seen>>,
) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if conn.read(&mut byte)? == 0 {
            return Ok(());
        }
        head.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let mut lines = text.split("\r\n");
    let path = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .unwrap_or("/")
        .to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let range = headers
        .iter()
        .find(|(k, _)| k == "range")
        .map(|(_, v)| v.clone());
    log.lock().unwrap_or_else(|e| e.into_inner()).push(Seen {
        path: path.clone(),
        headers,
    });
    let route = routes.iter().find(|(p, _)| *p == path).map(|(_, r)| r);
    let (status, extra, body): (&str, String, &[u8]) = match route {
        None => ("404 Not Found", String::new(), b""),
        Some(Route::Redirect(to)) => ("302 Found", format!("Location: {to}\r\n"), b""),
        Some(Route::Bytes(data)) => match range.as_deref().and_then(|r| parse_range(r, data.len()))
        {
            Some((a, b)) => (
                "206 Partial Content",
                format!("Content-Range: bytes {a}-{}/{}\r\n", b - 1, data.len()),
                &data[a..b],
            ),
            None => ("200 OK", String::new(), &data[..]),
        },
    };
    write!(
        conn,
        "HTTP/1.1 {status}\r\nETag: \"v1\"\r\nAccept-Ranges: bytes\r\n{extra}\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    conn.write_all(body)?;
    conn.flush()
}

/// `bytes=a-b` or `bytes=a-` as `[a, b+1)` within `len`.
fn parse_range(v: &str, len: usize) -> Option<(usize, usize)> {
    let (a, b) = v.strip_prefix("bytes=")?.split_once('-')?;
    let a: usize = a.parse().ok()?;
    let b: usize = if b.is_empty() {
        len
    } else {
        b.parse::<usize>().ok()? + 1
    };
    let b = b.min(len);
    (a < b).then_some((a, b))
}
