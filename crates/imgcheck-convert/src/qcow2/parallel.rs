//! The body of a plain-file qcow2 (data clusters and L2 tables), written
//! by the workers themselves.
//!
//! Each worker takes the next job (a few clusters of guest space), reads
//! it, finds its data clusters, and writes them with positional writes
//! while they are still in its CPU cache, as the raw writer does. Only the
//! host placement is sequential: jobs get their host clusters strictly in
//! guest order ("turns"), so the file is laid out exactly as a single
//! sequential pass would lay it out (data clusters in guest order, each L2
//! table after its region's data), whatever the scheduling. Taking a turn
//! is a few additions under a lock; the reads, zero checks and writes run
//! in parallel.
//!
//! A job whose clusters all read as zero needs no host clusters and never
//! waits for its turn: it leaves a mark and the turn skips it. Workers run
//! at most [`WINDOW`] jobs ahead of the turn, so the marks stay bounded.
//!
//! Before this, one thread appended every chunk through a buffered stream:
//! a user-space copy of every data byte, and all writes on one thread while
//! the workers only read.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};

use super::{Body, CLUSTER, CLUSTER_LEN, COPIED, L2_ENTRIES, Sink, Tables, Target, fill_job};
use crate::raw::{preallocate, write_at};
use crate::{ConvertError, run_workers};

/// Clusters per job: 1 MiB, about a core's L2 cache, so the write copy
/// reads what the read copy just wrote. Divides [`L2_ENTRIES`], so a job
/// never spans two L2 regions.
const JOB_CLUSTERS: usize = 16;
/// Bytes per job.
const JOB_BYTES: usize = JOB_CLUSTERS * CLUSTER_LEN;
/// How far (in jobs) workers may run ahead of the turn.
const WINDOW: usize = 64;

/// The slot of job `j` in the ring of marks.
fn slot(j: u64) -> usize {
    // The remainder is below WINDOW: it fits.
    usize::try_from(j % WINDOW as u64).unwrap_or(0)
}

/// Writes the data clusters and L2 tables of `t.disk` to `t.out` from
/// cluster 1 on, with `threads` workers (0 = one per core), recording the
/// mappings in `tables` (the last L2 table is left for the caller to
/// flush). Returns the body, positioned after the last cluster written,
/// the tables and the bytes read.
pub(super) fn write_body<'a>(
    t: &Target<'a>,
    threads: usize,
    tables: Tables,
) -> Result<(Body<'a>, Tables, u64), ConvertError> {
    let threads = crate::worker_count(threads);
    let placed = Placement {
        body: Body {
            w: Sink::File(t.out),
            next: 1,
            path: t.path,
        },
        tables,
        taken: 0,
        turn: 0,
        passed: vec![false; WINDOW],
        sleeping: 0,
    };
    let shared = Shared {
        t,
        jobs: t.size.div_ceil(JOB_BYTES as u64),
        state: Mutex::new(placed),
        moved: Condvar::new(),
        stop: AtomicBool::new(false),
        error: Mutex::new(None),
        write_turn: Mutex::new(()),
        read: AtomicU64::new(0),
    };
    run_workers(threads, || shared.work(), |e| shared.fail(e));
    if let Some(e) = shared.error.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(e);
    }
    let placed = shared.state.into_inner().unwrap_or_else(|p| p.into_inner());
    Ok((placed.body, placed.tables, shared.read.into_inner()))
}

/// Host placement, under [`Shared::state`].
struct Placement<'a> {
    /// Counts host clusters (`next`); writes the L2 tables.
    body: Body<'a>,
    tables: Tables,
    /// Jobs handed out so far.
    taken: u64,
    /// The job whose clusters are placed next.
    turn: u64,
    /// Jobs after `turn` that finished without data, by index mod WINDOW.
    passed: Vec<bool>,
    /// Workers sleeping on [`Shared::moved`]: a notify is a syscall even
    /// with nobody to wake, and most turns move with nobody waiting.
    sleeping: u32,
}

impl Placement<'_> {
    /// Moves the turn past job `turn` and every job already passed.
    fn advance(&mut self) {
        self.turn += 1;
        loop {
            let slot = &mut self.passed[slot(self.turn)];
            if !*slot {
                break;
            }
            *slot = false;
            self.turn += 1;
        }
    }

    /// Gives the `count` data clusters of job `j` (flags in `data`) host
    /// clusters and maps them; returns the host offset of the first.
    fn place(&mut self, j: u64, data: &[bool], count: u64) -> Result<u64, ConvertError> {
        let first = j * JOB_CLUSTERS as u64;
        let region = first / L2_ENTRIES;
        if region != self.tables.region {
            self.tables.flush_l2(&mut self.body)?;
            self.tables.region = region;
        }
        let at = self.body.next * CLUSTER;
        let mut host = at;
        for (k, _) in data.iter().enumerate().filter(|(_, d)| **d) {
            let g = first + k as u64;
            self.tables.l2[(g % L2_ENTRIES) as usize] = host | COPIED;
            host += CLUSTER;
        }
        self.tables.used = true;
        self.body.next += count;
        Ok(at)
    }
}

/// What the workers of one [`write_body`] share.
struct Shared<'t, 'a> {
    t: &'t Target<'a>,
    jobs: u64,
    state: Mutex<Placement<'a>>,
    /// Signalled when the turn moves (and on failure).
    moved: Condvar,
    stop: AtomicBool,
    error: Mutex<Option<ConvertError>>,
    /// One data writer at a time, as in the raw writer (see there).
    write_turn: Mutex<()>,
    read: AtomicU64,
}

impl<'a> Shared<'_, 'a> {
    fn lock(&self) -> MutexGuard<'_, Placement<'a>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sleeps until the turn moves (or the run fails).
    fn wait<'g>(&self, mut st: MutexGuard<'g, Placement<'a>>) -> MutexGuard<'g, Placement<'a>> {
        st.sleeping += 1;
        let mut st = self.moved.wait(st).unwrap_or_else(|p| p.into_inner());
        st.sleeping -= 1;
        st
    }

    /// Moves the turn past job `turn` and wakes whoever waits for it.
    fn advance(&self, st: &mut Placement<'_>) {
        st.advance();
        if st.sleeping > 0 {
            self.moved.notify_all();
        }
    }

    /// Keeps the first error, stops the others and wakes the waiting.
    fn fail(&self, e: ConvertError) {
        self.stop.store(true, Ordering::Relaxed);
        self.error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_or_insert(e);
        // Under the state lock, so no waiter misses the wake-up between
        // checking `stop` and sleeping.
        let _st = self.lock();
        self.moved.notify_all();
    }

    /// The next job, once it is inside the window; `None` when all are
    /// taken or the run failed.
    fn take(&self) -> Option<u64> {
        let mut st = self.lock();
        loop {
            if self.stop.load(Ordering::Relaxed) || st.taken >= self.jobs {
                return None;
            }
            if st.taken < st.turn + WINDOW as u64 {
                st.taken += 1;
                return Some(st.taken - 1);
            }
            st = self.wait(st);
        }
    }

    /// One worker: jobs until none is left or something failed.
    fn work(&self) {
        let mut buf = vec![0u8; JOB_BYTES];
        let mut data = vec![false; JOB_CLUSTERS];
        while let Some(j) = self.take() {
            // A panicking worker would leave its turn untaken and the
            // others waiting for it: turn the panic into an error.
            let r = std::panic::catch_unwind(AssertUnwindSafe(|| self.job(j, &mut buf, &mut data)));
            match r {
                Ok(Ok(len)) => (self.t.progress)(len),
                Ok(Err(e)) => return self.fail(e),
                Err(_) => {
                    return self.fail(ConvertError::Internal(format!(
                        "a worker panicked on guest bytes from {}",
                        j * JOB_BYTES as u64
                    )));
                }
            }
        }
    }

    /// Reads, places and writes job `j`; returns its length in guest bytes.
    fn job(&self, j: u64, buf: &mut [u8], data: &mut [bool]) -> Result<u64, ConvertError> {
        let start = j * JOB_BYTES as u64;
        let len = usize::try_from(self.t.size - start).map_or(JOB_BYTES, |l| l.min(JOB_BYTES));
        let n = len.div_ceil(CLUSTER_LEN);
        let (buf, data) = (&mut buf[..n * CLUSTER_LEN], &mut data[..n]);
        let read = fill_job(self.t.disk, start, buf, data)?;
        self.read.fetch_add(read.unwrap_or(0), Ordering::Relaxed);
        let count = data.iter().filter(|d| **d).count() as u64;
        let mut st = self.lock();
        if count == 0 {
            // Nothing to place: pass without waiting.
            if st.turn == j {
                self.advance(&mut st);
            } else {
                st.passed[slot(j)] = true;
            }
            return Ok(len as u64);
        }
        while st.turn != j {
            if self.stop.load(Ordering::Relaxed) {
                return Err(ConvertError::Internal("cancelled".into()));
            }
            st = self.wait(st);
        }
        let at = st.place(j, data, count)?;
        self.advance(&mut st);
        drop(st);
        self.write_runs(buf, data, at)?;
        Ok(len as u64)
    }

    /// Writes the data clusters of `buf` (flags in `data`) back to back
    /// from host offset `at`, one write per run of neighbouring clusters.
    fn write_runs(&self, buf: &[u8], data: &[bool], at: u64) -> Result<(), ConvertError> {
        const C: usize = CLUSTER_LEN;
        let _turn = self.write_turn.lock().unwrap_or_else(|p| p.into_inner());
        let count = data.iter().filter(|d| **d).count();
        preallocate(self.t.out, at, (count * C) as u64);
        let mut host = at;
        let mut k = 0;
        while k < data.len() {
            if !data[k] {
                k += 1;
                continue;
            }
            let run = data[k..].iter().take_while(|d| **d).count();
            write_at(self.t.out, &buf[k * C..(k + run) * C], host).map_err(|source| {
                ConvertError::Write {
                    path: self.t.path.to_path_buf(),
                    source,
                }
            })?;
            host += (run * C) as u64;
            k += run;
        }
        Ok(())
    }
}
