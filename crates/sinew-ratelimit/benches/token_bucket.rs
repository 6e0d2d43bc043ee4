//! What a request pays for a local rate limit that is configured but not firing: one take
//! from an unkeyed bucket (clock read + CAS), and one from a keyed table.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use sinew_ratelimit::{BucketSpec, KeyedBuckets, TokenBucket};

fn takes(c: &mut Criterion) {
    // Big enough never to run dry during the bench: the not-firing case.
    let spec = BucketSpec::new(u32::MAX, u32::MAX, Duration::from_millis(50));
    let bucket = TokenBucket::new(spec);
    // The part of a take that is the clock read, for comparison.
    c.bench_function("clock read (now_nanos)", |b| {
        b.iter(|| std::hint::black_box(sinew_ratelimit::now_nanos()))
    });
    c.bench_function("unkeyed bucket take", |b| {
        b.iter(|| std::hint::black_box(bucket.try_take()))
    });
    let keyed = KeyedBuckets::new(spec, 10_000);
    c.bench_function("keyed bucket take (client IP)", |b| {
        b.iter(|| std::hint::black_box(keyed.try_take(b"127.0.0.1")))
    });
}

criterion_group!(benches, takes);
criterion_main!(benches);
