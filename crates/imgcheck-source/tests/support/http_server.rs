//! A small HTTP/1.1 file server for tests, on 127.0.0.1 with an ephemeral
//! port: `GET`/`HEAD` with single `Range: bytes=A-B` support and keep-alive,
//! plus misbehaviours a real host shows: refusing `HEAD`, ignoring `Range`,
//! transient 503s, dropped connections, bodies cut short, redirects (and
//! redirect loops), slow answers. It serves only the names it was given and
//! stops when dropped. Shared by the http tests of imgcheck-source and
//! imgcheck (`#[path]`-included).

#![allow(dead_code, clippy::cast_possible_truncation)]

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// What a path serves.
#[derive(Clone)]
pub enum Content {
    /// Bytes in memory.
    Mem(Arc<Vec<u8>>),
    /// A local file, read with pread.
    File(PathBuf),
}

impl Content {
    fn len(&self) -> u64 {
        match self {
            Content::Mem(v) => v.len() as u64,
            Content::File(p) => std::fs::metadata(p).map(|m| m.len()).unwrap_or(0),
        }
    }
}

/// Misbehaviours; counters count down per request that hits them.
#[derive(Default)]
pub struct Behaviour {
    /// Answer HEAD with 405.
    pub refuse_head: bool,
    /// Answer every GET with 200 and the whole file.
    pub ignore_range: bool,
    /// Answer this many requests with 503 first.
    pub fail_503: AtomicU32,
    /// Retry-After seconds sent with those 503s.
    pub retry_after: Option<u32>,
    /// Close this many connections right after reading a request.
    pub drop_conn: AtomicU32,
    /// Send only half of the body of this many GETs, then close.
    pub cut_body: AtomicU32,
    /// Sleep this long before each answer.
    pub delay: Option<Duration>,
    /// path → Location answered with 302.
    pub redirects: HashMap<String, String>,
}

/// A running server.
pub struct Server {
    /// The port on 127.0.0.1.
    pub port: u16,
    /// "METHOD /path range" per request received.
    pub log: Arc<Mutex<Vec<String>>>,
    /// Response body bytes written (what a client downloaded).
    pub body_bytes: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Server {
    /// Serves `files` (name without leading slash → content).
    pub fn start(files: Vec<(&str, Content)>, behaviour: Behaviour) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("local addr").port();
        let files: Arc<HashMap<String, Content>> = Arc::new(
            files
                .into_iter()
                .map(|(n, c)| (format!("/{n}"), c))
                .collect(),
        );
        let behaviour = Arc::new(behaviour);
        let log = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let body_bytes = Arc::new(AtomicU64::new(0));
        let (l2, s2, c2) = (log.clone(), stop.clone(), body_bytes.clone());
        let handle = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (f, b, l, c) = (files.clone(), behaviour.clone(), l2.clone(), c2.clone());
                std::thread::spawn(move || {
                    let _ = conn.set_read_timeout(Some(Duration::from_secs(30)));
                    let _ = serve_conn(conn, &f, &b, &l, &c);
                });
            }
        });
        Server {
            port,
            log,
            body_bytes,
            stop,
            handle: Some(handle),
        }
    }

    /// `http://127.0.0.1:PORT/name`.
    pub fn url(&self, name: &str) -> String {
        format!("http://127.0.0.1:{}/{name}", self.port)
    }

    /// Requests received so far.
    pub fn requests(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn take(counter: &AtomicU32) -> bool {
    counter
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
}

fn serve_conn(
    conn: TcpStream,
    files: &HashMap<String, Content>,
    b: &Behaviour,
    log: &Mutex<Vec<String>>,
    sent: &AtomicU64,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut out = conn;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let mut parts = line.split_whitespace();
        let method = parts.next().unwrap_or("").to_owned();
        let target = parts.next().unwrap_or("");
        // The query (a signature, say) is ignored, as a static host would.
        let path = target.split('?').next().unwrap_or("").to_owned();
        let mut range: Option<String> = None;
        let mut close = false;
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h)? == 0 {
                return Ok(());
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                let k = k.trim().to_ascii_lowercase();
                if k == "range" {
                    range = Some(v.trim().to_owned());
                } else if k == "connection" && v.trim().eq_ignore_ascii_case("close") {
                    close = true;
                }
            }
        }
        log.lock().unwrap().push(format!(
            "{method} {path} {}",
            range.as_deref().unwrap_or("-")
        ));
        if let Some(d) = b.delay {
            std::thread::sleep(d);
        }
        if take(&b.drop_conn) {
            return Ok(());
        }
        if take(&b.fail_503) {
            let ra = b
                .retry_after
                .map(|s| format!("Retry-After: {s}\r\n"))
                .unwrap_or_default();
            write!(
                out,
                "HTTP/1.1 503 Service Unavailable\r\n{ra}Content-Length: 4\r\n\r\nbusy"
            )?;
            continue;
        }
        if let Some(loc) = b.redirects.get(&path) {
            write!(
                out,
                "HTTP/1.1 302 Found\r\nLocation: {loc}\r\nContent-Length: 0\r\n\r\n"
            )?;
            continue;
        }
        let Some(content) = files.get(&path) else {
            write!(out, "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")?;
            continue;
        };
        let len = content.len();
        let etag = format!("\"{len:x}\"");
        if method == "HEAD" {
            if b.refuse_head {
                write!(
                    out,
                    "HTTP/1.1 405 Method Not Allowed\r\nAllow: GET\r\nContent-Length: 0\r\n\r\n"
                )?;
            } else {
                write!(
                    out,
                    "HTTP/1.1 200 OK\r\nContent-Length: {len}\r\nAccept-Ranges: bytes\r\nETag: {etag}\r\nContent-Type: application/octet-stream\r\n\r\n"
                )?;
            }
            if close {
                return Ok(());
            }
            continue;
        }
        if method != "GET" {
            write!(
                out,
                "HTTP/1.1 501 Not Implemented\r\nContent-Length: 0\r\n\r\n"
            )?;
            continue;
        }
        let parsed = range.as_deref().and_then(|r| parse_range(r, len));
        let (status, start, end) = match (&range, parsed) {
            (Some(_), Some((a, e))) if !b.ignore_range => ("206 Partial Content", a, e),
            (Some(_), None) if !b.ignore_range => {
                write!(
                    out,
                    "HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */{len}\r\nContent-Length: 0\r\n\r\n"
                )?;
                continue;
            }
            _ => ("200 OK", 0, len),
        };
        let mut head = format!(
            "HTTP/1.1 {status}\r\nContent-Length: {}\r\nAccept-Ranges: bytes\r\nETag: {etag}\r\n",
            end - start
        );
        if status.starts_with("206") {
            head.push_str(&format!(
                "Content-Range: bytes {start}-{}/{len}\r\n",
                end - 1
            ));
        }
        head.push_str("\r\n");
        out.write_all(head.as_bytes())?;
        let cut = take(&b.cut_body);
        let send_end = if cut { start + (end - start) / 2 } else { end };
        write_body(&mut out, content, start, send_end, sent)?;
        if cut || close {
            return Ok(());
        }
    }
}

fn write_body(
    out: &mut TcpStream,
    c: &Content,
    start: u64,
    end: u64,
    sent: &AtomicU64,
) -> std::io::Result<()> {
    match c {
        Content::Mem(v) => {
            out.write_all(&v[start as usize..end as usize])?;
            sent.fetch_add(end - start, Ordering::Relaxed);
            Ok(())
        }
        Content::File(p) => {
            let f = File::open(p)?;
            let mut buf = vec![0u8; 1 << 20];
            let mut pos = start;
            while pos < end {
                let n = ((end - pos) as usize).min(buf.len());
                f.read_exact_at(&mut buf[..n], pos)?;
                out.write_all(&buf[..n])?;
                sent.fetch_add(n as u64, Ordering::Relaxed);
                pos += n as u64;
            }
            Ok(())
        }
    }
}

/// `bytes=A-B`, `bytes=A-`, `bytes=-N` → half-open range, None if
/// unsatisfiable or malformed.
fn parse_range(r: &str, len: u64) -> Option<(u64, u64)> {
    let spec = r.strip_prefix("bytes=")?;
    let (a, b) = spec.split_once('-')?;
    if a.is_empty() {
        let n: u64 = b.parse().ok()?;
        return (n > 0 && len > 0).then(|| (len.saturating_sub(n), len));
    }
    let a: u64 = a.parse().ok()?;
    let e = if b.is_empty() {
        len
    } else {
        b.parse::<u64>().ok()?.saturating_add(1).min(len)
    };
    (a < len && a < e).then_some((a, e))
}
