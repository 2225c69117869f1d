//! Our SqliteStore in the peers benchmark: the workload of `benches/peers/workload.rs` on
//! `SqliteStore` (a temp file, the defaults) through `TowerSessionsStore`, as
//! `peers-sqlite/<phase>`, function `ours`.
//!
//! It lives in the main crate because rusqlite and sqlx's SQLite both link libsqlite3, so our
//! SQLite store and tower-sessions-sqlx-store's cannot be built together; the peer runs in the
//! `benches/peers` crate, and `benches/report.sh` alternates the two phase by phase.

mod common;
#[path = "peers/workload.rs"]
mod workload;

use session_stores::{SqliteStore, TowerSessionsStore};
use workload::{Failures, Tower, store};

fn main() {
    let rt = common::runtime();
    let mut c = common::criterion();
    let failures = Failures::default();
    let dir = tempfile::tempdir().expect("temp dir");
    let ours = rt
        .block_on(SqliteStore::open(dir.path().join("ours.db")))
        .expect("open our store");
    let stores = [store("ours", Tower(TowerSessionsStore::new(ours)))];
    workload::run(&mut c, &rt, "sqlite", &stores, &failures);
    c.final_summary();
}
