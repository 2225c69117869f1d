//! The cost of one deadline (`session_stores::deadline::within`) around an operation that is
//! ready at once, against the same operation bare: what every store operation pays for its
//! bound (a read of the timer slot, one `getpid`, registering and dropping a sleep on the
//! timer thread). One task, and 16 tasks at once on a 2-thread runtime.

use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use session_stores::deadline::within;

async fn ready() -> session_stores::Result<u64> {
    Ok(std::hint::black_box(7))
}

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let mut group = c.benchmark_group("deadline");
    group
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(500));
    group.bench_function("bare, 1 task", |b| {
        b.to_async(&runtime)
            .iter(|| async { ready().await.unwrap() })
    });
    group.bench_function("within, 1 task", |b| {
        b.to_async(&runtime).iter(|| async {
            within(Duration::from_secs(5), "get", None, ready())
                .await
                .unwrap()
        })
    });
    for (name, bounded) in [("bare, 16 tasks", false), ("within, 16 tasks", true)] {
        group.bench_function(name, |b| {
            b.to_async(&runtime).iter(|| async move {
                let tasks: Vec<_> = (0..16)
                    .map(|_| {
                        tokio::spawn(async move {
                            if bounded {
                                within(Duration::from_secs(5), "get", None, ready()).await
                            } else {
                                ready().await
                            }
                        })
                    })
                    .collect();
                for task in tasks {
                    task.await.unwrap().unwrap();
                }
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
