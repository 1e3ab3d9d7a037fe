//! Image GC victim selection: `node_images::gc::select_victims` over 5,000 image records
//! (deterministic pseudo-random sizes and last-used times, 10% in use, some never used),
//! freeing 20% of their total size. Reports the time per selection.
//!
//! `cargo bench -p benches --bench image_gc`

// criterion_group! generates an undocumented public function.
#![allow(missing_docs)]

use std::collections::HashSet;
use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use node_images::gc::{ImageGcPolicy, ImageRecord, select_victims};
use tokio::time::Instant;

const IMAGES: usize = 5_000;

/// A small deterministic generator (64-bit LCG, high bits), so every run selects from the same
/// records.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }
}

struct Fixture {
    records: Vec<ImageRecord>,
    in_use: HashSet<String>,
    now: Instant,
    bytes_to_free: u64,
}

fn fixture() -> Fixture {
    let mut rng = Lcg(0x5eed);
    let day = Duration::from_secs(24 * 3600);
    // Every image was detected two days before `now`, so none is protected by the minimum age.
    let detected = Instant::from_std(std::time::Instant::now());
    let now = detected + 2 * day;
    let mut records = Vec::with_capacity(IMAGES);
    let mut in_use = HashSet::new();
    for i in 0..IMAGES {
        let id = format!("sha256:{i:064x}");
        // 1 MiB .. 1 GiB.
        let size = (1 << 20) + rng.next() % (1 << 30);
        // One image in eight was never used; the others at some second of the last day.
        let last_used = if rng.next().is_multiple_of(8) {
            None
        } else {
            Some(detected + day + Duration::from_secs(rng.next() % day.as_secs()))
        };
        if i % 10 == 0 {
            in_use.insert(id.clone());
        }
        records.push(ImageRecord {
            id,
            first_detected: detected,
            last_used,
            size,
            pinned: false,
        });
    }
    let total: u64 = records.iter().map(|r| r.size).sum();
    Fixture {
        records,
        in_use,
        now,
        bytes_to_free: total / 5,
    }
}

fn selection(c: &mut Criterion) {
    let f = fixture();
    let policy = ImageGcPolicy::default();
    let victims = select_victims(&f.records, &f.in_use, f.now, &policy, f.bytes_to_free);
    assert!(
        !victims.is_empty() && victims.len() < IMAGES,
        "the fixture must select some images, not none or all"
    );
    let mut group = c.benchmark_group("image_gc");
    group.bench_function("select_victims/5000_images/free_20pct", |b| {
        b.iter(|| {
            select_victims(
                black_box(&f.records),
                black_box(&f.in_use),
                f.now,
                &policy,
                black_box(f.bytes_to_free),
            )
        })
    });
    group.finish();
}

criterion_group!(benches, selection);
criterion_main!(benches);
