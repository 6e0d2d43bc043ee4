//! Pick latency of every policy over 1,000 endpoints, equal and unequal weights.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use sinew_balance::{Balancer, PickContext, Policy};

fn policies() -> Vec<(&'static str, Policy)> {
    vec![
        ("round_robin", Policy::RoundRobin),
        ("smooth_weighted", Policy::SmoothWeighted),
        ("random", Policy::Random),
        ("least_request", Policy::least_request()),
        ("ring_hash", Policy::ring_hash()),
        ("maglev", Policy::maglev()),
    ]
}

fn pick(c: &mut Criterion) {
    let equal = vec![1u32; 1_000];
    let unequal: Vec<u32> = (1..=1_000).collect();
    let active = |i: usize| (i as u64 * 7919) % 97;
    for (weights_name, weights) in [("equal", &equal), ("unequal", &unequal)] {
        let mut group = c.benchmark_group(format!("pick_1000_{weights_name}"));
        for (name, policy) in policies() {
            let b = Balancer::new(&policy, weights);
            let mut key = 0u64;
            group.bench_function(name, |bench| {
                bench.iter(|| {
                    key = key.wrapping_add(0x9E37_79B9_7F4A_7C15);
                    let ctx = PickContext {
                        hash: Some(key),
                        active: &active,
                    };
                    black_box(b.pick(black_box(&ctx)))
                })
            });
        }
        group.finish();
    }
}

fn build(c: &mut Criterion) {
    let unequal: Vec<u32> = (1..=1_000).collect();
    let mut group = c.benchmark_group("build_1000_unequal");
    group.sample_size(10);
    for (name, policy) in policies() {
        group.bench_function(name, |bench| {
            bench.iter(|| Balancer::new(black_box(&policy), black_box(&unequal)))
        });
    }
    group.finish();
}

criterion_group!(benches, pick, build);
criterion_main!(benches);
