//! A small HTTP/1.1 server on 127.0.0.1 for the upload tests: it plays a
//! provider API by calling a handler per request and records every request
//! (method, path, headers, body). One request per connection
//! (`Connection: close`), Content-Length and chunked request bodies.
#![allow(dead_code)]

pub mod providers;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;

/// A received request.
#[derive(Debug, Clone)]
pub struct Req {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Req {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// What the handler answers.
pub enum Resp {
    /// Status, extra headers, body.
    Reply(u16, Vec<(String, String)>, Vec<u8>),
    /// Close the connection without answering (the client sees the
    /// connection fail, as when a proxy or the network cuts an upload).
    Drop,
}

impl Resp {
    pub fn json(status: u16, v: serde_json::Value) -> Resp {
        Resp::Reply(
            status,
            vec![("Content-Type".into(), "application/json".into())],
            v.to_string().into_bytes(),
        )
    }
    pub fn with_header(self, k: &str, v: &str) -> Resp {
        match self {
            Resp::Reply(s, mut h, b) => {
                h.push((k.into(), v.into()));
                Resp::Reply(s, h, b)
            }
            d => d,
        }
    }
}

type Handler = dyn Fn(&Req) -> Resp + Send + Sync;

/// A running server. Stops when dropped (the accept thread is detached and
/// ends with the test process).
pub struct Server {
    pub base: String,
    pub log: Arc<Mutex<Vec<Req>>>,
}

impl Server {
    pub fn start(handler: impl Fn(&Req) -> Resp + Send + Sync + 'static) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
        let base = format!("http://{}", listener.local_addr().unwrap());
        let log = Arc::new(Mutex::new(Vec::new()));
        let handler: Arc<Handler> = Arc::new(handler);
        let log2 = log.clone();
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let (h, l) = (handler.clone(), log2.clone());
                thread::spawn(move || serve(stream, &*h, &l));
            }
        });
        Server { base, log }
    }

    pub fn requests(&self) -> Vec<Req> {
        self.log.lock().unwrap().clone()
    }

    pub fn count(&self, method: &str, path_prefix: &str) -> usize {
        self.requests()
            .iter()
            .filter(|r| r.method == method && r.path.starts_with(path_prefix))
            .count()
    }
}

fn serve(stream: TcpStream, handler: &Handler, log: &Mutex<Vec<Req>>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_owned();
    let path = parts.next().unwrap_or("").to_owned();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 {
            return;
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_owned(), v.trim().to_owned()));
        }
    }
    let get = |n: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(n))
            .map(|(_, v)| v.clone())
    };
    let mut req = Req {
        method,
        path,
        headers: headers.clone(),
        body: Vec::new(),
    };
    if let Some(n) = get("content-length").and_then(|v| v.parse::<usize>().ok()) {
        req.body = vec![0u8; n];
        if reader.read_exact(&mut req.body).is_err() {
            return;
        }
    } else if get("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        loop {
            let mut size = String::new();
            if reader.read_line(&mut size).unwrap_or(0) == 0 {
                return;
            }
            let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
            let mut chunk = vec![0u8; n + 2];
            if reader.read_exact(&mut chunk).is_err() {
                return;
            }
            if n == 0 {
                break;
            }
            req.body.extend_from_slice(&chunk[..n]);
        }
    }
    let resp = handler(&req);
    log.lock().unwrap().push(req);
    let mut out = stream;
    match resp {
        Resp::Drop => {}
        Resp::Reply(status, headers, body) => {
            // A HEAD reply may carry the length of the body it does not send.
            let mut head = format!("HTTP/1.1 {status} X\r\nConnection: close\r\n");
            if !headers
                .iter()
                .any(|(k, _)| k.eq_ignore_ascii_case("content-length"))
            {
                head.push_str(&format!("Content-Length: {}\r\n", body.len()));
            }
            for (k, v) in headers {
                head.push_str(&format!("{k}: {v}\r\n"));
            }
            head.push_str("\r\n");
            let _ = out.write_all(head.as_bytes());
            let _ = out.write_all(&body);
        }
    }
}
