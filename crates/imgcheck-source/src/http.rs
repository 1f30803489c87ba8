//! Remote images over http(s), read with `Range` requests.
//!
//! [`HttpSource::open`] asks the server about the file once: a `HEAD`
//! request gives the size (`Content-Length`), `Accept-Ranges`, the `ETag`
//! and the URL after redirects. Some hosts refuse `HEAD` (a presigned S3
//! URL is signed for `GET` only; some CDNs answer 405). Then the source
//! falls back to `GET` with `Range: bytes=0-0` and learns the size from
//! `Content-Range`, and remembers that `HEAD` failed: DigitalOcean's importer
//! needs `HEAD`, so the check layer reports it ([`HttpSource::head_supported`],
//! [`RemoteInfo`]).
//!
//! Reads are `Range` GETs against the URL the redirects ended at, in aligned
//! blocks ([`HttpOptions::block_size`]) kept in an LRU cache bounded by
//! [`HttpOptions::cache_bytes`]. Adjacent missing blocks are fetched in one
//! request. A random read fetches a window around itself of ~1/560 of a
//! large file, and the first read (at offset 0) twice that, so a check's
//! few hundred scattered metadata reads cost about ten requests. A sequential pass keeps only its
//! read-ahead in the cache, and frees blocks it has read past. Sequential reads double a read-ahead window up to
//! [`HttpOptions::max_readahead`]; once it is full the source opens one
//! streaming GET from the current offset to the end of the file and serves
//! the following sequential reads from that response (the streaming pass
//! over a remote `.gz` costs one request, not one per read). A jump
//! elsewhere uses a plain range request and leaves the stream to be dropped.
//!
//! What a hostile or broken server can do, and what happens:
//! * answer a range request with `200` and the whole file: the read fails
//!   with "server ignores Range requests" (nothing of the body is read);
//! * send more than was asked: only the asked bytes are read, the rest is
//!   dropped with the connection; every body read is bounded by the range;
//! * stall: connect, response-header and per-read timeouts
//!   ([`HttpOptions::connect_timeout`], [`HttpOptions::read_timeout`]), and a
//!   budget per range request ([`HttpOptions::request_timeout`]);
//! * fail transiently (`5xx`, `429`, `408`, connection reset, timeout): a
//!   bounded number of retries ([`HttpOptions::retries`]) with exponential
//!   backoff, honouring `Retry-After` up to [`HttpOptions::max_retry_after`];
//!   a body cut short is resumed from where it stopped;
//! * redirect in circles: at most [`HttpOptions::max_redirects`] hops;
//! * change the file under us: a `Content-Range` total or `ETag` that differs
//!   from what `open` saw fails the read.
//!
//! Errors name the URL, the request (`GET bytes=A-B`) and the status.
//! [`ByteSource::bytes_fetched`] counts response body bytes received.
//!
//! https uses rustls with the webpki root store (ureq's default TLS).

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Read};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use ureq::http::{self, HeaderMap, Response, StatusCode};
use ureq::typestate::WithoutBody;
use ureq::{Body, BodyReader, ResponseExt};

/// A response body cut at the length of the range asked for.
type RangeBody = io::Take<BodyReader<'static>>;

use crate::net;
use crate::{Access, ByteSource, SourceError, check_range};

/// Tuning and safety limits for [`HttpSource`].
#[derive(Debug, Clone)]
pub struct HttpOptions {
    /// TCP + TLS connect budget.
    pub connect_timeout: Duration,
    /// Longest wait for response headers, and for each read of the body.
    pub read_timeout: Duration,
    /// Whole budget for one `HEAD` or one range `GET` (not for the streaming
    /// GET, which is bounded by `read_timeout` per read instead).
    pub request_timeout: Duration,
    /// Retries after the first attempt (transient errors only).
    pub retries: u32,
    /// First backoff; doubled on each retry.
    pub backoff_initial: Duration,
    /// Longest backoff between two attempts.
    pub backoff_max: Duration,
    /// Longest `Retry-After` honoured; longer requests are cut to this.
    pub max_retry_after: Duration,
    /// Redirect hops followed per request.
    pub max_redirects: u32,
    /// Cache block: the smallest fetch, and the alignment of every fetch.
    pub block_size: u32,
    /// Largest read-ahead on sequential access.
    pub max_readahead: u64,
    /// Bytes of blocks kept in memory.
    pub cache_bytes: u64,
    /// A streaming reader skips forward over at most this many bytes rather
    /// than issuing a new request.
    pub stream_skip: u64,
    /// `User-Agent` header.
    pub user_agent: String,
}

impl Default for HttpOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(15),
            read_timeout: Duration::from_secs(30),
            request_timeout: Duration::from_secs(120),
            retries: 4,
            backoff_initial: Duration::from_millis(500),
            backoff_max: Duration::from_secs(8),
            max_retry_after: Duration::from_secs(60),
            max_redirects: 8,
            block_size: 256 * 1024,
            max_readahead: 8 * 1024 * 1024,
            cache_bytes: 64 * 1024 * 1024,
            stream_skip: 2 * 1024 * 1024,
            user_agent: concat!("imgcheck/", env!("CARGO_PKG_VERSION")).to_owned(),
        }
    }
}

impl HttpOptions {
    /// The agent settings of the shared client policy.
    pub fn client(&self) -> net::ClientOptions {
        net::ClientOptions {
            connect_timeout: self.connect_timeout,
            read_timeout: self.read_timeout,
            max_redirects: self.max_redirects,
            user_agent: self.user_agent.clone(),
        }
    }

    /// The retry settings as the shared policy.
    pub fn retry_policy(&self) -> net::RetryPolicy {
        net::RetryPolicy {
            attempts: self.retries.saturating_add(1),
            base_delay: self.backoff_initial,
            max_delay: self.backoff_max,
        }
    }
}

/// What the server said about a remote image when it was opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteInfo {
    /// The URL as given (a password in it replaced by `***`).
    pub url: String,
    /// The URL after redirects; reads go here.
    pub final_url: String,
    /// Whether `HEAD` answered 2xx. DigitalOcean's URL import needs it.
    pub head_supported: bool,
    /// The status `HEAD` answered when it did not succeed (None: it
    /// succeeded, or failed without a status, e.g. the connection dropped).
    pub head_status: Option<u16>,
    /// Size of the file in bytes.
    pub content_length: u64,
    /// The `Accept-Ranges` header, if the server sent one.
    pub accept_ranges: Option<String>,
    /// The `ETag` header, if any.
    pub etag: Option<String>,
    /// The `Last-Modified` header, if any.
    pub last_modified: Option<String>,
    /// The `Content-Type` header, if any.
    pub content_type: Option<String>,
}

/// A read-only remote file over http(s). See the module docs.
pub struct HttpSource {
    name: String,
    /// The URL as given, unredacted (siblings resolve against it).
    url: String,
    /// The URL after redirects, unredacted (reads go here).
    target: String,
    info: RemoteInfo,
    opts: HttpOptions,
    agent: ureq::Agent,
    /// The fetch block: [`HttpOptions::block_size`].
    block: u64,
    /// Blocks a random read fetches: [`read_around`] of the file's size.
    around: u64,
    fetched: AtomicU64,
    requests: AtomicU64,
    state: Mutex<State>,
    stream: Mutex<Option<Stream>>,
}

impl std::fmt::Debug for HttpSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpSource")
            .field("info", &self.info)
            .field("bytes_fetched", &self.fetched.load(Ordering::Relaxed))
            .field("requests", &self.requests.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// Read pattern and cache, behind one lock (never held across a request).
struct State {
    cache: BlockCache,
    /// End of the previous read (`u64::MAX` before the first).
    next_expected: u64,
    /// Current read-ahead in bytes (0 for random access).
    readahead: u64,
}

/// An open streaming GET positioned at `pos`.
struct Stream {
    reader: RangeBody,
    pos: u64,
    end: u64,
}

/// One attempt's failure: worth retrying, or not.
enum Fail {
    /// Transient: try again after a backoff (or `after`, from Retry-After).
    Retry {
        msg: String,
        after: Option<Duration>,
        transport: bool,
    },
    /// Permanent.
    Fatal { msg: String, transport: bool },
}

impl Fail {
    fn fatal(msg: impl Into<String>) -> Self {
        Fail::Fatal {
            msg: msg.into(),
            transport: false,
        }
    }
}

/// Why a request gave up: the message, and whether it failed below HTTP
/// (no status to judge the server by).
struct Failure {
    msg: String,
    transport: bool,
}

impl HttpSource {
    /// Opens `url` (`http://` or `https://`): one `HEAD`, or a
    /// `GET bytes=0-0` if `HEAD` is refused.
    pub fn open(url: &str, opts: &HttpOptions) -> Result<Self, SourceError> {
        let name = redact(url);
        let open_err = |msg: String| SourceError::open(&name, io::Error::other(msg));
        let lower = url.get(..8).unwrap_or(url).to_ascii_lowercase();
        if !(lower.starts_with("http://") || lower.starts_with("https://")) {
            return Err(open_err("not an http:// or https:// URL".into()));
        }
        http::Uri::try_from(url).map_err(|e| open_err(format!("invalid URL: {e}")))?;
        let opts = opts.clone();
        let block = u64::from(opts.block_size.max(4096));
        // The shared policy's agent, asking for the bytes as stored (a
        // transfer encoding would break byte ranges).
        let agent: ureq::Agent = net::agent_config(&opts.client())
            .accept_encoding("identity")
            .build()
            .into();
        let mut src = Self {
            name: name.clone(),
            url: url.to_owned(),
            target: url.to_owned(),
            info: RemoteInfo {
                url: name.clone(),
                final_url: name.clone(),
                head_supported: false,
                head_status: None,
                content_length: 0,
                accept_ranges: None,
                etag: None,
                last_modified: None,
                content_type: None,
            },
            agent,
            block,
            around: 1,
            fetched: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            state: Mutex::new(State {
                cache: BlockCache::new(block, opts.cache_bytes),
                next_expected: u64::MAX,
                readahead: 0,
            }),
            stream: Mutex::new(None),
            opts,
        };
        src.probe().map_err(open_err)?;
        src.around = read_around(block, src.info.content_length);
        Ok(src)
    }

    /// What the server said at open time.
    pub fn info(&self) -> &RemoteInfo {
        &self.info
    }

    /// Whether the server answered `HEAD` (DigitalOcean needs it).
    pub fn head_supported(&self) -> bool {
        self.info.head_supported
    }

    /// The URL after redirects (reads go there).
    pub fn final_url(&self) -> &str {
        &self.info.final_url
    }

    /// HTTP requests sent so far (every attempt, including retries).
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    fn block(&self) -> u64 {
        self.block
    }

    /// HEAD, then the `bytes=0-0` fallback. Fills `self.info`.
    fn probe(&mut self) -> Result<(), String> {
        let url = self.url.clone();
        let head = self.with_retries(|| {
            let resp = self.send(self.agent.head(&url), true)?;
            let status = resp.status();
            if retryable_status(status) {
                return Err(Fail::Retry {
                    msg: status_text(status),
                    after: retry_after(resp.headers(), &self.opts),
                    transport: false,
                });
            }
            Ok(resp)
        });
        let mut need_size = true;
        match head {
            Ok(resp) if resp.status().is_success() => {
                self.info.head_supported = true;
                self.note_headers(&resp);
                if let Some(n) = header_u64(resp.headers(), "content-length") {
                    self.info.content_length = n;
                    need_size = false;
                }
            }
            Ok(resp) => self.info.head_status = Some(resp.status().as_u16()),
            Err(f) if f.transport => return Err(format!("HEAD: {}", f.msg)),
            Err(_) => {}
        }
        if need_size {
            self.probe_get().map_err(|e| {
                if self.info.head_supported {
                    e
                } else {
                    let head = self
                        .info
                        .head_status
                        .map_or("failed".to_owned(), |s| format!("answered {s}"));
                    format!("{e} (HEAD {head} too)")
                }
            })?;
        }
        Ok(())
    }

    /// `GET bytes=0-0`: learns the size from `Content-Range`.
    fn probe_get(&mut self) -> Result<(), String> {
        let url = self.url.clone();
        let what = "GET bytes=0-0";
        let head_ok = self.info.head_supported;
        let (resp, total) = self
            .with_retries(|| {
                let resp = self.send(self.agent.get(&url).header("range", "bytes=0-0"), true)?;
                let status = resp.status();
                if retryable_status(status) {
                    return Err(Fail::Retry {
                        msg: status_text(status),
                        after: retry_after(resp.headers(), &self.opts),
                        transport: false,
                    });
                }
                let total = match status.as_u16() {
                    206 => match content_range(resp.headers()) {
                        Some((0, 0, Some(total))) => total,
                        _ => {
                            return Err(Fail::fatal(format!(
                                "206 with an unusable Content-Range {:?}",
                                header_str(resp.headers(), "content-range").unwrap_or("(none)")
                            )));
                        }
                    },
                    // An empty file: a range of it is unsatisfiable.
                    416 => match content_range_unsatisfied(resp.headers()) {
                        Some(total) => total,
                        None => return Err(Fail::fatal(status_text(status))),
                    },
                    200 => match header_u64(resp.headers(), "content-length") {
                        // The server ignores Range but told the size; reads
                        // will fail with a clear message. The body is not read.
                        Some(n) => n,
                        None => {
                            return Err(Fail::fatal(
                                "200 without Content-Length to a range request: the size is unknown and the server ignores Range requests",
                            ));
                        }
                    },
                    _ => return Err(Fail::fatal(status_text(status))),
                };
                Ok((resp, total))
            })
            .map_err(|f| format!("{what}: {}", f.msg))?;
        if !head_ok {
            self.note_headers(&resp);
        }
        // Read the one byte so the connection can be reused (bounded).
        if resp.status().as_u16() == 206 {
            let mut body = resp.into_body();
            let mut one = [0u8; 2];
            let n = body.as_reader().take(1).read(&mut one).unwrap_or(0);
            self.fetched.fetch_add(n as u64, Ordering::Relaxed);
        }
        self.info.content_length = total;
        Ok(())
    }

    fn note_headers(&mut self, resp: &Response<Body>) {
        let h = resp.headers();
        self.info.final_url = redact(&resp.get_uri().to_string());
        self.info.accept_ranges = header_str(h, "accept-ranges").map(str::to_owned);
        self.info.etag = header_str(h, "etag").map(str::to_owned);
        self.info.last_modified = header_str(h, "last-modified").map(str::to_owned);
        self.info.content_type = header_str(h, "content-type").map(str::to_owned);
        self.target = resp.get_uri().to_string();
    }
}

impl HttpSource {
    /// Sends one request. `bounded`: apply the whole-request budget (not for
    /// the streaming GET).
    fn send(
        &self,
        req: ureq::RequestBuilder<WithoutBody>,
        bounded: bool,
    ) -> Result<Response<Body>, Fail> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let req = if bounded {
            req.config()
                .timeout_per_call(Some(self.opts.request_timeout))
                .build()
        } else {
            req
        };
        req.call().map_err(|e| transport_fail(&e, &self.opts))
    }

    /// Runs `f` up to `1 + retries` times, sleeping between transient
    /// failures. The message of a give-up says how many attempts were made.
    fn with_retries<T>(&self, mut f: impl FnMut() -> Result<T, Fail>) -> Result<T, Failure> {
        let mut attempt: u32 = 0;
        loop {
            match f() {
                Ok(v) => return Ok(v),
                Err(Fail::Fatal { msg, transport }) => return Err(Failure { msg, transport }),
                Err(Fail::Retry {
                    msg,
                    after,
                    transport,
                }) => {
                    if attempt >= self.opts.retries {
                        let msg = if attempt == 0 {
                            msg
                        } else {
                            format!("{msg} (gave up after {} attempts)", attempt + 1)
                        };
                        return Err(Failure { msg, transport });
                    }
                    std::thread::sleep(backoff(&self.opts, attempt, after));
                    attempt += 1;
                }
            }
        }
    }

    /// Fills `out` with the bytes at `start..start + out.len()` using range
    /// GETs (retried and resumed).
    fn fetch_range(&self, start: u64, out: &mut [u8]) -> Result<(), SourceError> {
        let len = out.len() as u64;
        let end = start + len; // checked by the caller: end <= self.len
        let what = format!("GET bytes={}-{}", start, end.saturating_sub(1));
        let mut done: usize = 0;
        let r = self.with_retries(|| {
            let from = start + done as u64;
            let req = self
                .agent
                .get(&self.target)
                .header("range", format!("bytes={}-{}", from, end - 1));
            let resp = self.send(req, true)?;
            let mut reader = self.check_partial(resp, from, end)?;
            self.read_body(&mut reader, out, &mut done)
        });
        r.map_err(|f| self.read_err(start, len, format!("{what}: {}", f.msg)))
    }

    /// Validates a response to `Range: bytes=from-(end-1)` and returns its
    /// body reader.
    fn check_partial(&self, resp: Response<Body>, from: u64, end: u64) -> Result<RangeBody, Fail> {
        let status = resp.status();
        if retryable_status(status) {
            return Err(Fail::Retry {
                msg: status_text(status),
                after: retry_after(resp.headers(), &self.opts),
                transport: false,
            });
        }
        if status == StatusCode::OK {
            if from == 0 && end == self.info.content_length {
                // Asked for the whole file and got it: fine.
                if let Some(n) = header_u64(resp.headers(), "content-length")
                    && n != end
                {
                    return Err(self.changed(format!("size is now {n}")));
                }
                return Ok(resp.into_body().into_reader().take(end));
            }
            return Err(Fail::fatal(
                "server ignores Range requests (it answered 200 with the whole file instead of 206 with the range); imgcheck reads remote images by range, so download the file first or serve it from a host that supports Range",
            ));
        }
        if status != StatusCode::PARTIAL_CONTENT {
            return Err(Fail::fatal(status_text(status)));
        }
        if let Some(enc) = header_str(resp.headers(), "content-encoding")
            && !enc.eq_ignore_ascii_case("identity")
        {
            return Err(Fail::fatal(format!(
                "206 with Content-Encoding {enc:?} although identity was asked for"
            )));
        }
        let Some((a, b, total)) = content_range(resp.headers()) else {
            return Err(Fail::fatal(format!(
                "206 with an unusable Content-Range {:?}",
                header_str(resp.headers(), "content-range").unwrap_or("(none)")
            )));
        };
        if let Some(t) = total
            && t != self.info.content_length
        {
            return Err(self.changed(format!(
                "size was {} at open, Content-Range says {t}",
                self.info.content_length
            )));
        }
        if let (Some(was), Some(now)) = (&self.info.etag, header_str(resp.headers(), "etag"))
            && was != now
        {
            return Err(self.changed(format!("ETag was {was}, now {now}")));
        }
        if a != from || b < a || b >= end {
            return Err(Fail::fatal(format!(
                "206 for bytes {a}-{b}, not the range asked for"
            )));
        }
        // A shorter range than asked is legal: read what came; the caller
        // asks again for the rest.
        Ok(resp.into_body().into_reader().take(b - a + 1))
    }

    fn changed(&self, what: String) -> Fail {
        Fail::fatal(format!(
            "the file changed on the server while reading it ({what})"
        ))
    }

    /// Reads from `reader` into `out[*done..]` until the body ends or `out`
    /// is full; a body that ends before `out` is full is retried (resumed).
    fn read_body(
        &self,
        reader: &mut impl Read,
        out: &mut [u8],
        done: &mut usize,
    ) -> Result<(), Fail> {
        let before = *done;
        while *done < out.len() {
            match reader.read(&mut out[*done..]) {
                Ok(0) => break,
                Ok(n) => {
                    *done += n;
                    self.fetched.fetch_add(n as u64, Ordering::Relaxed);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    return Err(Fail::Retry {
                        msg: format!("body broke off after {} bytes: {e}", *done - before),
                        after: None,
                        transport: true,
                    });
                }
            }
        }
        if *done < out.len() {
            // The server sent a shorter range (or closed early): ask again.
            return Err(Fail::Retry {
                msg: format!(
                    "body ended after {} of {} bytes",
                    *done - before,
                    out.len() - before
                ),
                after: None,
                transport: true,
            });
        }
        Ok(())
    }

    fn read_err(&self, offset: u64, len: u64, msg: String) -> SourceError {
        SourceError::io(&self.name, offset, len, io::Error::other(msg))
    }

    fn lock_state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Fetches `start..start + out.len()` from the streaming GET, opening or
    /// repositioning it as needed. Falls back to range requests if the
    /// stream breaks.
    fn fetch_streaming(&self, start: u64, out: &mut [u8]) -> Result<(), SourceError> {
        let mut guard = self.stream.lock().unwrap_or_else(|p| p.into_inner());
        let usable = match guard.as_ref() {
            Some(s) => s.pos <= start && start - s.pos <= self.opts.stream_skip && s.end >= start,
            None => false,
        };
        if !usable {
            *guard = None;
            let end = self.info.content_length;
            let what = format!("GET bytes={start}-{} (streaming)", end.saturating_sub(1));
            let opened = self.with_retries(|| {
                let req = self
                    .agent
                    .get(&self.target)
                    .header("range", format!("bytes={start}-{}", end - 1));
                let resp = self.send(req, false)?;
                self.check_partial(resp, start, end)
            });
            match opened {
                Ok(reader) => {
                    *guard = Some(Stream {
                        reader,
                        pos: start,
                        end,
                    })
                }
                Err(f) => {
                    return Err(self.read_err(
                        start,
                        out.len() as u64,
                        format!("{what}: {}", f.msg),
                    ));
                }
            }
        }
        let Some(s) = guard.as_mut() else {
            return self.fetch_range(start, out);
        };
        // Skip forward (a gap the cache already holds, or a small hole).
        let mut ok = true;
        if s.pos < start {
            let gap = start - s.pos;
            let mut sink = io::sink();
            match io::copy(&mut (&mut s.reader).take(gap), &mut sink) {
                Ok(n) => {
                    self.fetched.fetch_add(n, Ordering::Relaxed);
                    s.pos += n;
                    ok = n == gap;
                }
                Err(_) => ok = false,
            }
        }
        let mut done = 0usize;
        if ok {
            let r = self.read_body(&mut s.reader, out, &mut done);
            s.pos += done as u64;
            ok = r.is_ok();
        }
        if ok {
            return Ok(());
        }
        // The stream broke: drop it and finish with range requests; the
        // next sequential read opens a new stream.
        *guard = None;
        drop(guard);
        let from = start + done as u64;
        self.fetch_range(from, &mut out[done..])
    }

    /// Fetches blocks `first..last` (exclusive) into one buffer.
    fn fetch_blocks(&self, first: u64, last: u64, streaming: bool) -> Result<Vec<u8>, SourceError> {
        let bs = self.block();
        let start = first * bs;
        let end = (last * bs).min(self.info.content_length);
        let n = usize::try_from(end - start)
            .map_err(|_| self.read_err(start, end - start, "range too large for memory".into()))?;
        let mut buf = vec![0u8; n];
        if streaming {
            self.fetch_streaming(start, &mut buf)?;
        } else {
            self.fetch_range(start, &mut buf)?;
        }
        Ok(buf)
    }
}

impl ByteSource for HttpSource {
    fn name(&self) -> &str {
        &self.name
    }

    fn len(&self) -> u64 {
        self.info.content_length
    }

    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), SourceError> {
        let end = check_range(&self.name, offset, buf.len(), self.len())?;
        if buf.is_empty() {
            return Ok(());
        }
        let bs = self.block();
        let nblocks = self.len().div_ceil(bs);
        let first = offset / bs;
        let last = (end - 1) / bs + 1; // exclusive
        // Under the lock: the access pattern, cached blocks, the plan.
        let (runs, streaming, sequential) = {
            let mut st = self.lock_state();
            let sequential = st.next_expected != u64::MAX
                && offset <= st.next_expected
                && end > st.next_expected
                || offset == st.next_expected;
            st.readahead = if sequential {
                (st.readahead.saturating_mul(2))
                    .max(bs)
                    .min(self.opts.max_readahead)
            } else {
                0
            };
            st.next_expected = end;
            let streaming = sequential && st.readahead >= self.opts.max_readahead;
            let mut runs: Vec<(u64, u64)> = Vec::new();
            for b in first..last {
                if let Some(data) = st.cache.get(b) {
                    copy_block(b, bs, data, offset, buf);
                    // A streaming pass is done with a block it read to
                    // the end: free it rather than let read-ahead pile up.
                    if streaming && (b + 1) * bs <= end {
                        st.cache.remove(b);
                    }
                } else {
                    match runs.last_mut() {
                        Some((_, e)) if *e == b => *e = b + 1,
                        _ => runs.push((b, b + 1)),
                    }
                }
            }
            if runs.is_empty() {
                return Ok(());
            }
            // Read ahead past the last missing block (and, for a random
            // read, a little behind the first), up to a cached block.
            let (back, mut ahead) = if sequential {
                (0, st.readahead.div_ceil(bs))
            } else if (buf.len() as u64) < self.around * bs {
                (self.around / 4, self.around - self.around / 4)
            } else {
                // A read as large as the window says what it wants (a
                // compressed block, a decoder's input chunk).
                (0, 0)
            };
            if offset == 0 && st.cache.is_empty() {
                // The first read of the file: every format keeps its
                // headers and first tables at the front, and the guest's
                // partition table and first filesystem metadata follow.
                ahead = ahead.max(2 * self.around);
            }
            extend_runs(&st.cache, &mut runs, (first, last), (back, ahead), nblocks);
            (runs, streaming, sequential)
        };
        for &(a, b) in &runs {
            let data = self.fetch_blocks(a, b, streaming)?;
            let mut st = self.lock_state();
            // A sequential pass (a decompressor's open pass) will not come
            // back to what it read: caching it all would only fill memory.
            let whole = !sequential && data.len() as u64 <= self.opts.cache_bytes / 4;
            for (i, chunk) in data
                .chunks(usize::try_from(bs).unwrap_or(usize::MAX))
                .enumerate()
            {
                let idx = a + i as u64;
                copy_block(idx, bs, chunk, offset, buf);
                // A huge run (bulk read) would flush the cache: keep its
                // edges (neighbouring small reads may want them) and the
                // read-ahead past the requested end.
                if whole || idx == a || idx + 1 >= last.min(b) {
                    st.cache.insert(idx, chunk.to_vec());
                }
            }
        }
        Ok(())
    }

    fn access(&self) -> Access {
        Access::Slow
    }

    fn bytes_fetched(&self) -> u64 {
        self.fetched.load(Ordering::Relaxed)
    }

    /// Resolves `name` against the directory of the URL as given (query and
    /// fragment dropped) and opens it with the same options. The name is
    /// percent-encoded as one path segment, so it cannot leave the directory;
    /// whether it may be followed at all is the disk layer's decision.
    fn open_sibling(&self, name: &str) -> Result<Arc<dyn ByteSource>, SourceError> {
        let url = sibling_url(&self.url, name).ok_or_else(|| {
            SourceError::open(
                &format!("{} (sibling {name:?})", self.name),
                io::Error::other("cannot resolve a sibling of this URL"),
            )
        })?;
        Ok(Arc::new(HttpSource::open(&url, &self.opts)?))
    }
}

/// Largest random-read window ([`read_around`]).
const MAX_AROUND: u64 = 4 << 20;

/// Blocks a random read fetches around the bytes asked for, in a file of
/// `len` bytes: about 1/560 of the file (at least one block, at most
/// [`MAX_AROUND`]). A check reads a few hundred small pieces of metadata
/// that cluster in a handful of areas of the file (format tables, the
/// filesystem's inode tables and directories); a window per area costs a
/// request each, and ten windows stay under 2% of the file (10/560 = 1.8%,
/// rounded up to whole blocks). A quarter of the window goes before the
/// read, the rest after it. A read at least as large as the window gets no
/// window.
fn read_around(block: u64, len: u64) -> u64 {
    (len / 560).min(MAX_AROUND).div_ceil(block).max(1)
}

/// Extends the first run back by up to `back` blocks (if it starts at
/// `first`) and the last run on by up to `ahead` blocks (if it ends at
/// `last`), stopping at cached blocks and at the end of the file.
fn extend_runs(
    cache: &BlockCache,
    runs: &mut [(u64, u64)],
    (first, last): (u64, u64),
    (back, ahead): (u64, u64),
    nblocks: u64,
) {
    if let Some((a, _)) = runs.first_mut()
        && *a == first
    {
        let limit = first.saturating_sub(back);
        while *a > limit && !cache.contains(*a - 1) {
            *a -= 1;
        }
    }
    if let Some((_, e)) = runs.last_mut()
        && *e == last
    {
        let limit = last.saturating_add(ahead).min(nblocks);
        while *e < limit && !cache.contains(*e) {
            *e += 1;
        }
    }
}

/// Copies the part of block `idx` that overlaps the read at `offset` into
/// `buf`.
fn copy_block(idx: u64, bs: u64, data: &[u8], offset: u64, buf: &mut [u8]) {
    let bstart = idx * bs;
    let bend = bstart + data.len() as u64;
    let rend = offset + buf.len() as u64;
    let from = bstart.max(offset);
    let to = bend.min(rend);
    if from >= to {
        return;
    }
    let (Ok(src_a), Ok(dst_a), Ok(n)) = (
        usize::try_from(from - bstart),
        usize::try_from(from - offset),
        usize::try_from(to - from),
    ) else {
        return;
    };
    if let (Some(dst), Some(src)) = (buf.get_mut(dst_a..dst_a + n), data.get(src_a..src_a + n)) {
        dst.copy_from_slice(src);
    }
}

/// Bounded LRU of fixed-size blocks.
struct BlockCache {
    blocks: HashMap<u64, (Vec<u8>, u64)>,
    /// stamp → block index, oldest first.
    order: BTreeMap<u64, u64>,
    bytes: u64,
    budget: u64,
    tick: u64,
}

impl BlockCache {
    fn new(_block: u64, budget: u64) -> Self {
        Self {
            blocks: HashMap::new(),
            order: BTreeMap::new(),
            bytes: 0,
            budget,
            tick: 0,
        }
    }

    fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }

    fn contains(&self, idx: u64) -> bool {
        self.blocks.contains_key(&idx)
    }

    fn get(&mut self, idx: u64) -> Option<&[u8]> {
        self.tick += 1;
        let tick = self.tick;
        let (data, stamp) = self.blocks.get_mut(&idx)?;
        self.order.remove(stamp);
        *stamp = tick;
        self.order.insert(tick, idx);
        Some(data.as_slice())
    }

    fn remove(&mut self, idx: u64) {
        if let Some((old, stamp)) = self.blocks.remove(&idx) {
            self.order.remove(&stamp);
            self.bytes -= old.len() as u64;
        }
    }

    fn insert(&mut self, idx: u64, data: Vec<u8>) {
        let size = data.len() as u64;
        if size > self.budget {
            return;
        }
        if let Some((old, stamp)) = self.blocks.remove(&idx) {
            self.order.remove(&stamp);
            self.bytes -= old.len() as u64;
        }
        while self.bytes + size > self.budget {
            let Some((_, victim)) = self.order.pop_first() else {
                break;
            };
            if let Some((old, _)) = self.blocks.remove(&victim) {
                self.bytes -= old.len() as u64;
            }
        }
        self.tick += 1;
        self.order.insert(self.tick, idx);
        self.blocks.insert(idx, (data, self.tick));
        self.bytes += size;
    }
}

/// A transport error, retried when the shared policy says another attempt
/// may help ([`net::Transient::of`]; every request here is a GET or HEAD).
fn transport_fail(e: &ureq::Error, opts: &HttpOptions) -> Fail {
    if net::Transient::of(e).is_some() {
        return Fail::Retry {
            msg: e.to_string(),
            after: None,
            transport: true,
        };
    }
    match e {
        ureq::Error::TooManyRedirects => Fail::Fatal {
            msg: format!("too many redirects (more than {})", opts.max_redirects),
            transport: true,
        },
        _ => Fail::Fatal {
            msg: e.to_string(),
            transport: true,
        },
    }
}

fn retryable_status(s: StatusCode) -> bool {
    net::retryable_status(s.as_u16())
}

fn status_text(s: StatusCode) -> String {
    match s.canonical_reason() {
        Some(r) => format!("HTTP {} {r}", s.as_u16()),
        None => format!("HTTP {}", s.as_u16()),
    }
}

/// What the server asked to wait ([`net::server_wait`]: `Retry-After` in
/// seconds or as an HTTP-date, or a rate-limit reset), capped at
/// `max_retry_after`.
fn retry_after(h: &HeaderMap, opts: &HttpOptions) -> Option<Duration> {
    let lookup = |n: &str| header_str(h, n).map(str::to_owned);
    net::server_wait(&lookup, SystemTime::now()).map(|d| d.min(opts.max_retry_after))
}

/// The shared policy's backoff (exponential, jittered, capped) for retry
/// `attempt` (0-based here), or the server's `Retry-After`.
fn backoff(opts: &HttpOptions, attempt: u32, after: Option<Duration>) -> Duration {
    if let Some(a) = after {
        return a;
    }
    opts.retry_policy().backoff(attempt + 1)
}

fn header_str<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name)?.to_str().ok()
}

fn header_u64(h: &HeaderMap, name: &str) -> Option<u64> {
    header_str(h, name)?.trim().parse().ok()
}

/// `Content-Range: bytes A-B/TOTAL` (TOTAL may be `*`).
fn content_range(h: &HeaderMap) -> Option<(u64, u64, Option<u64>)> {
    parse_content_range(header_str(h, "content-range")?)
}

fn parse_content_range(v: &str) -> Option<(u64, u64, Option<u64>)> {
    let rest = v.trim().strip_prefix("bytes")?.trim_start();
    let (range, total) = rest.split_once('/')?;
    let (a, b) = range.trim().split_once('-')?;
    let a: u64 = a.trim().parse().ok()?;
    let b: u64 = b.trim().parse().ok()?;
    let total = match total.trim() {
        "*" => None,
        t => Some(t.parse().ok()?),
    };
    if b < a || total.is_some_and(|t| b >= t) {
        return None;
    }
    Some((a, b, total))
}

/// `Content-Range: bytes */TOTAL` on a 416.
fn content_range_unsatisfied(h: &HeaderMap) -> Option<u64> {
    let v = header_str(h, "content-range")?.trim();
    v.strip_prefix("bytes")?
        .trim_start()
        .strip_prefix("*/")?
        .trim()
        .parse()
        .ok()
}

/// The URL without credentials (the shared redaction: userinfo password
/// and signature/token query parameters).
fn redact(url: &str) -> String {
    net::redact_url(url)
}

/// `name` as one percent-encoded path segment in the directory of `url`.
fn sibling_url(url: &str, name: &str) -> Option<String> {
    if name.is_empty() {
        return None;
    }
    let scheme_end = url.find("://")? + 3;
    let cut = url[scheme_end..]
        .find(['?', '#'])
        .map_or(url.len(), |i| scheme_end + i);
    let base = &url[..cut];
    let path_start = base[scheme_end..].find('/').map(|i| scheme_end + i);
    let dir = match path_start {
        Some(p) => &base[..=(p + base[p..].rfind('/')?)],
        None => return Some(format!("{base}/{}", encode_segment(name))),
    };
    Some(format!("{dir}{}", encode_segment(name)))
}

fn encode_segment(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for &b in name.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range_parsing() {
        assert_eq!(parse_content_range("bytes 0-0/10"), Some((0, 0, Some(10))));
        assert_eq!(parse_content_range("bytes 5-9/*"), Some((5, 9, None)));
        assert_eq!(parse_content_range("bytes 5-10/10"), None);
        assert_eq!(parse_content_range("bytes 9-5/10"), None);
        assert_eq!(parse_content_range("items 0-1/2"), None);
        assert_eq!(parse_content_range("bytes 0-99999999999999999999/1"), None);
    }

    #[test]
    fn siblings_stay_in_the_directory() {
        assert_eq!(
            sibling_url("http://h/a/b/disk.vmdk?sig=1#x", "disk-flat.vmdk").as_deref(),
            Some("http://h/a/b/disk-flat.vmdk")
        );
        assert_eq!(
            sibling_url("https://h/d.vmdk", "my disk/../x").as_deref(),
            Some("https://h/my%20disk%2F..%2Fx")
        );
        assert_eq!(sibling_url("http://h", "x").as_deref(), Some("http://h/x"));
        assert_eq!(sibling_url("http://h/a/", "").as_deref(), None);
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(redact("https://u:secret@h/x"), "https://u:***@h/x");
        assert_eq!(redact("https://u@h/x"), "https://u@h/x");
        assert_eq!(redact("https://h/x?a=b@c"), "https://h/x?a=b@c");
        assert_eq!(
            redact("https://h/x?X-Amz-Signature=abc&x=1"),
            "https://h/x?X-Amz-Signature=***&x=1"
        );
    }

    #[test]
    fn lru_is_bounded() {
        let mut c = BlockCache::new(4, 8);
        c.insert(0, vec![0; 4]);
        c.insert(1, vec![1; 4]);
        assert!(c.get(0).is_some());
        c.insert(2, vec![2; 4]);
        assert!(c.contains(0) && !c.contains(1) && c.contains(2));
        assert!(c.bytes <= 8);
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let o = HttpOptions {
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_millis(300),
            ..Default::default()
        };
        assert!(backoff(&o, 0, None) < Duration::from_millis(130));
        assert!(backoff(&o, 10, None) <= Duration::from_millis(375));
        assert_eq!(
            backoff(&o, 0, Some(Duration::from_secs(2))),
            Duration::from_secs(2)
        );
    }
}
