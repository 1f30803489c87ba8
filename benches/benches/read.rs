//! Placeholder bench so the crate builds; real benches are added below.
use criterion::{Criterion, criterion_group, criterion_main};
fn detect_raw(c: &mut Criterion) {
    let src = imgcheck_source::MemSource::new("m", vec![0u8; 1 << 20]);
    c.bench_function("detect/raw-1MiB", |b| {
        b.iter(|| imgcheck_disk::detect(&src).unwrap())
    });
}
criterion_group!(benches, detect_raw);
criterion_main!(benches);
