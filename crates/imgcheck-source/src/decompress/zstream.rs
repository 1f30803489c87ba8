//! A safe wrapper over the zlib C API as implemented in Rust by `libz-rs-sys`
//! (the same zlib-rs engine flate2's `zlib-rs` backend runs).
//!
//! Why not flate2: random access into a gzip stream (the zran method) needs
//! three things flate2's `Decompress` does not expose: `Z_BLOCK` flushing
//! (stop at a deflate block boundary), `data_type` (how many bits of the last
//! input byte are still unused there), and `inflatePrime` (feed those bits
//! back when restarting). zlib-rs's safe `Inflate` lacks them too, and its
//! internal API is feature-gated as unstable. The C API is stable, so this
//! module is the one place in the crate that calls `unsafe` functions; every
//! call passes pointers to live Rust slices of the stated lengths.
#![allow(unsafe_code)]

use libz_rs_sys as z;

/// Result of one [`RawInflate::inflate`] call.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Step {
    /// Input bytes consumed.
    pub consumed: usize,
    /// Output bytes produced.
    pub produced: usize,
    /// The deflate stream ended (final block done).
    pub stream_end: bool,
    /// zlib's `data_type`: unused bits in the bit buffer (`& 63`), +64 in
    /// the last block, +128 right after an end-of-block code.
    pub data_type: i32,
}

/// A raw-deflate (no zlib/gzip header) inflater.
pub(crate) struct RawInflate {
    // Boxed: zlib keeps a back pointer to the stream and checks it.
    strm: Box<z::z_stream>,
}

// SAFETY: the z_stream owns its state exclusively; no thread-local data.
unsafe impl Send for RawInflate {}

impl std::fmt::Debug for RawInflate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RawInflate")
    }
}

impl RawInflate {
    /// A raw inflater with a 32 KiB window.
    pub(crate) fn new() -> Result<Self, String> {
        let mut strm = Box::new(z::z_stream::default());
        let version = z::zlibVersion();
        let size = i32::try_from(std::mem::size_of::<z::z_stream>()).unwrap_or(i32::MAX);
        // SAFETY: `strm` is a valid, default-initialised z_stream; version and
        // size describe the library we link.
        let rc = unsafe { z::inflateInit2_(&mut *strm, -15, version, size) };
        if rc != z::Z_OK {
            return Err(format!("inflateInit2 failed ({rc})"));
        }
        Ok(Self { strm })
    }

    /// Forget the current stream; start a new raw deflate stream.
    pub(crate) fn reset(&mut self) -> Result<(), String> {
        // SAFETY: the stream was initialised by `new`.
        let rc = unsafe { z::inflateReset(&mut *self.strm) };
        if rc == z::Z_OK {
            Ok(())
        } else {
            Err(format!("inflateReset failed ({rc})"))
        }
    }

    /// Insert `bits` (< 16) low bits of `value` into the bit buffer.
    pub(crate) fn prime(&mut self, bits: i32, value: i32) -> Result<(), String> {
        // SAFETY: initialised stream; plain integers.
        let rc = unsafe { z::inflatePrime(&mut *self.strm, bits, value) };
        if rc == z::Z_OK {
            Ok(())
        } else {
            Err(format!("inflatePrime failed ({rc})"))
        }
    }

    /// Preload the sliding window (raw mode: right after reset/prime).
    pub(crate) fn set_dictionary(&mut self, dict: &[u8]) -> Result<(), String> {
        if dict.is_empty() {
            return Ok(());
        }
        let len = u32::try_from(dict.len()).map_err(|_| "dictionary too large".to_owned())?;
        // SAFETY: `dict` is a live slice of `len` bytes; zlib copies it.
        let rc = unsafe { z::inflateSetDictionary(&mut *self.strm, dict.as_ptr(), len) };
        if rc == z::Z_OK {
            Ok(())
        } else {
            Err(format!("inflateSetDictionary failed ({rc})"))
        }
    }

    /// Inflate from `input` into `output`. `block` asks zlib to stop at the
    /// next deflate block boundary.
    pub(crate) fn inflate(
        &mut self,
        input: &[u8],
        output: &mut [u8],
        block: bool,
    ) -> Result<Step, String> {
        let in_len = input.len().min(u32::MAX as usize);
        let out_len = output.len().min(u32::MAX as usize);
        self.strm.next_in = input.as_ptr();
        self.strm.avail_in = in_len as u32;
        self.strm.next_out = output.as_mut_ptr();
        self.strm.avail_out = out_len as u32;
        let flush = if block { z::Z_BLOCK } else { z::Z_NO_FLUSH };
        // SAFETY: next_in/next_out point into live slices of at least
        // avail_in/avail_out bytes; the stream was initialised by `new`.
        let rc = unsafe { z::inflate(&mut *self.strm, flush) };
        let consumed = in_len - self.strm.avail_in as usize;
        let produced = out_len - self.strm.avail_out as usize;
        // Drop the pointers into the caller's buffers.
        self.strm.next_in = std::ptr::null();
        self.strm.avail_in = 0;
        self.strm.next_out = std::ptr::null_mut();
        self.strm.avail_out = 0;
        let data_type = self.strm.data_type;
        match rc {
            z::Z_OK | z::Z_BUF_ERROR => Ok(Step {
                consumed,
                produced,
                stream_end: false,
                data_type,
            }),
            z::Z_STREAM_END => Ok(Step {
                consumed,
                produced,
                stream_end: true,
                data_type,
            }),
            z::Z_NEED_DICT => Err("deflate stream asks for a preset dictionary".into()),
            _ => {
                let msg = if self.strm.msg.is_null() {
                    format!("inflate error {rc}")
                } else {
                    // SAFETY: zlib sets msg to a static NUL-terminated string.
                    unsafe { std::ffi::CStr::from_ptr(self.strm.msg) }
                        .to_string_lossy()
                        .into_owned()
                };
                Err(msg)
            }
        }
    }
}

impl Drop for RawInflate {
    fn drop(&mut self) {
        // SAFETY: initialised by `new`, ended exactly once.
        unsafe {
            z::inflateEnd(&mut *self.strm);
        }
    }
}
