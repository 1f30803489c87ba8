//! Ordered parallel pipeline: jobs run on a rayon pool, results are consumed
//! on the calling thread strictly in job order.
//!
//! Every writer in this crate has the same shape: cut the guest disk (or
//! the output stream) into numbered pieces, do the expensive part of each
//! piece (read, zero-check, compress) on all cores, and write the results
//! sequentially in order. At most `window` jobs are in flight or waiting to
//! be consumed, so memory is bounded by `window` times one job's buffers,
//! whatever the disk size.
//!
//! The consumer runs on the calling thread, which blocks while waiting for
//! the next result. That thread must not be a worker of `pool` (it would
//! steal no work while blocked), which is why writers build their own pool
//! ([`build_pool`]) instead of using the global one.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;

use crate::ConvertError;

/// A thread pool of `threads` workers (0 = one per core).
pub(crate) fn build_pool(threads: usize) -> Result<rayon::ThreadPool, ConvertError> {
    let threads = crate::worker_count(threads);
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("imgcheck-convert-{i}"))
        .build()
        .map_err(|e| ConvertError::Internal(format!("cannot start worker threads: {e}")))
}

/// Runs `job(i)` for `i in 0..jobs` on `pool`, at most `window` ahead of
/// the consumer, and calls `consume(result)` in order on this thread.
///
/// The first error (from a job or from `consume`) stops the run: jobs not
/// yet started see the cancel flag and return at once, and the error is
/// returned after every started job has finished.
pub(crate) fn run_ordered<R, J, C>(
    pool: &rayon::ThreadPool,
    jobs: u64,
    window: usize,
    job: J,
    mut consume: C,
) -> Result<(), ConvertError>
where
    R: Send,
    J: Fn(u64) -> Result<R, ConvertError> + Sync,
    C: FnMut(R) -> Result<(), ConvertError>,
{
    let window = window.max(1) as u64;
    let cancel = AtomicBool::new(false);
    let (tx, rx) = mpsc::channel::<(u64, Result<R, ConvertError>)>();
    let job = &job;
    let cancel_ref = &cancel;
    let result = pool.in_place_scope(|s| {
        let mut next_spawn = 0u64;
        let mut next_consume = 0u64;
        let mut ready: BTreeMap<u64, Result<R, ConvertError>> = BTreeMap::new();
        let outcome = loop {
            while next_spawn < jobs && next_spawn < next_consume + window {
                let tx = tx.clone();
                let i = next_spawn;
                s.spawn(move |_| {
                    let r = if cancel_ref.load(Ordering::Relaxed) {
                        Err(ConvertError::Internal("cancelled".into()))
                    } else {
                        job(i)
                    };
                    // The receiver is gone only when the run already failed.
                    let _ = tx.send((i, r));
                });
                next_spawn += 1;
            }
            if next_consume == jobs {
                break Ok(());
            }
            let r = match ready.remove(&next_consume) {
                Some(r) => r,
                None => match rx.recv() {
                    Ok((i, r)) => {
                        ready.insert(i, r);
                        continue;
                    }
                    Err(_) => break Err(ConvertError::Internal("worker vanished".into())),
                },
            };
            next_consume += 1;
            if let Err(e) = r.and_then(&mut consume) {
                break Err(e);
            }
        };
        if outcome.is_err() {
            cancel_ref.store(true, Ordering::Relaxed);
        }
        outcome
    });
    drop(rx);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consumes_in_order() {
        let pool = build_pool(2).unwrap();
        let mut seen = Vec::new();
        run_ordered(
            &pool,
            100,
            5,
            |i| {
                // Later jobs finish first to exercise reordering.
                std::thread::sleep(std::time::Duration::from_micros(100 - i));
                Ok(i)
            },
            |r| {
                seen.push(r);
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(seen, (0..100).collect::<Vec<_>>());
    }

    #[test]
    fn first_error_stops() {
        let pool = build_pool(2).unwrap();
        let mut n = 0;
        let r = run_ordered(
            &pool,
            1000,
            4,
            |i| {
                if i == 10 {
                    Err(ConvertError::Internal("boom".into()))
                } else {
                    Ok(i)
                }
            },
            |_| {
                n += 1;
                Ok(())
            },
        );
        assert!(r.is_err());
        assert_eq!(n, 10);
    }
}
