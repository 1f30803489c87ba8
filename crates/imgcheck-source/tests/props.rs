//! Property tests: every source obeys the exact-read contract.

use std::sync::Arc;

use imgcheck_source::{ByteSource, MemSource, SliceSource};
use proptest::prelude::*;

proptest! {
    #[test]
    fn mem_and_slice_reads_match_the_buffer(
        data in proptest::collection::vec(any::<u8>(), 0..4096),
        start in 0u64..5000, len in 0u64..5000, off in 0u64..5000, n in 0usize..600,
    ) {
        let mem: Arc<dyn ByteSource> = Arc::new(MemSource::new("m", data.clone()));
        let slice = SliceSource::new(mem.clone(), start, len, "s");
        let s0 = (start as usize).min(data.len());
        let s1 = (start.saturating_add(len) as usize).min(data.len()).max(s0);
        let window = &data[s0..s1];
        prop_assert_eq!(slice.len() as usize, window.len());
        let mut buf = vec![0u8; n];
        let r = slice.read_exact_at(off, &mut buf);
        if (off as usize).saturating_add(n) <= window.len() && off <= window.len() as u64 {
            prop_assert!(r.is_ok());
            prop_assert_eq!(&buf[..], &window[off as usize..off as usize + n]);
        } else {
            prop_assert!(r.is_err());
        }
    }
}
