//! Resident memory per live session in the MemoryStore (and in the raw `Mutex<LruCache>`
//! baseline holding the same data), for each payload size.
//!
//! Each measurement runs in a fresh child process, so memory freed by one measurement cannot
//! hide the cost of the next. Prints a JSON line per measurement and writes them all to
//! `<target>/criterion/footprint.json` for `benches/report.py`.

mod common;

use std::num::NonZeroUsize;
use std::process::Command;
use std::sync::Mutex;

use lru::LruCache;
use serde_json::{Map, Value, json};
use session_stores::{MemoryStore, SessionId, SessionStore};

const SESSIONS: usize = 100_000;

fn rss_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: usize = statm
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn measure(kind: &str, bytes: usize) -> f64 {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let ids: Vec<SessionId> = (0..SESSIONS).map(|_| SessionId::generate()).collect();
    let session = common::sample(bytes, 0);
    let before = rss_bytes();
    let held: Box<dyn std::any::Any> = match kind {
        "store" => {
            let store = MemoryStore::new(SESSIONS * 2);
            rt.block_on(async {
                for id in &ids {
                    store.set(id, &session).await.expect("set");
                }
            });
            Box::new(store)
        }
        _ => {
            let cap = NonZeroUsize::new(SESSIONS * 2).expect("non-zero");
            let mut raw: LruCache<String, (Map<String, Value>, i64, u64)> = LruCache::new(cap);
            for id in &ids {
                raw.push(
                    id.as_str().to_string(),
                    (session.data().clone(), session.expires_at_millis(), 1),
                );
            }
            Box::new(Mutex::new(raw))
        }
    };
    let after = rss_bytes();
    drop(held);
    (after.saturating_sub(before)) as f64 / SESSIONS as f64
}

fn main() {
    if let (Ok(kind), Ok(bytes)) = (
        std::env::var("FOOTPRINT_KIND"),
        std::env::var("FOOTPRINT_BYTES"),
    ) {
        let bytes: usize = bytes.parse().expect("FOOTPRINT_BYTES");
        println!("{}", measure(&kind, bytes));
        return;
    }
    // `cargo bench` passes flags such as `--bench`; a filter that is not ours skips the run.
    let filter = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    if filter.as_deref().is_some_and(|f| !"footprint".contains(f)) {
        return;
    }
    let exe = std::env::current_exe().expect("current exe");
    let mut rows = Vec::new();
    for (payload, bytes) in common::PAYLOADS {
        for kind in ["store", "raw"] {
            let out = Command::new(&exe)
                .env("FOOTPRINT_KIND", kind)
                .env("FOOTPRINT_BYTES", bytes.to_string())
                .output()
                .expect("child");
            let per: f64 = String::from_utf8_lossy(&out.stdout)
                .trim()
                .parse()
                .expect("bytes per session");
            let row = json!({"payload": payload, "kind": kind, "sessions": SESSIONS, "bytes_per_session": per.round()});
            println!("{row}");
            rows.push(row);
        }
    }
    let dir = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into());
    let path = std::path::Path::new(&dir).join("criterion");
    std::fs::create_dir_all(&path).expect("criterion dir");
    std::fs::write(
        path.join("footprint.json"),
        serde_json::to_string_pretty(&rows).expect("json"),
    )
    .expect("write footprint.json");
}
