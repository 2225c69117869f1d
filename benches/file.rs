//! FileStore against raw "write a temporary file, then rename it" with serde_json, in one run.
//!
//! Both keep one pretty-printed JSON file per session, `<dir>/<id>.json` holding
//! `{"data": ..., "expires_at": <ms>, "version": <n>}` followed by a newline, exactly the
//! store's format, and both write through a temporary file in the same directory that is
//! renamed over the session file (not `fsync`ed: the store's default, `durable(false)`).
//!
//! The raw client reads the current version from the file before each write and takes no
//! locks at all (the store takes an in-process mutex and an `flock` per id), and it runs its
//! blocking file calls directly on the executor thread (the store hands them to tokio's
//! blocking pool). The store has a write-skip cache the raw client does not: an unchanged
//! `set` costs it a `stat` instead of a write, and a write learns the current version from a
//! `stat` instead of reading and parsing the file. The ratios include all of that.

mod common;

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use common::{Plan, StoreTarget, Target};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use session_stores::{FileStore, Session, SessionId, now_millis};

/// The file format, for writing (the same shape as the store's).
#[derive(Serialize)]
struct StoredRef<'a> {
    data: &'a Map<String, Value>,
    expires_at: i64,
    version: u64,
}

/// The file format, for reading.
#[derive(Deserialize)]
struct Stored {
    data: Map<String, Value>,
    expires_at: i64,
    version: u64,
}

fn path_of(dir: &Path, id: &SessionId) -> PathBuf {
    dir.join(format!("{}.json", id.as_str()))
}

fn encode(data: &Map<String, Value>, expires_at: i64, version: u64) -> Vec<u8> {
    let mut bytes = serde_json::to_vec_pretty(&StoredRef {
        data,
        expires_at,
        version,
    })
    .expect("encode");
    bytes.push(b'\n');
    bytes
}

/// Writes `sessions` straight into `dir` (no temporary file: nothing reads them meanwhile),
/// version 1.
fn bulk_fill(dir: &Path, ids: &[SessionId], session: &Session) {
    let content = encode(session.data(), session.expires_at_millis(), 1);
    for id in ids {
        fs::write(path_of(dir, id), &content).expect("bulk write");
    }
}

/// The raw baseline: plain `std::fs` and serde_json on one directory.
struct RawFiles {
    dir: PathBuf,
}

impl RawFiles {
    /// The decoded file of `id`, `None` when there is none.
    fn load(&self, id: &SessionId) -> Option<Stored> {
        match fs::read(path_of(&self.dir, id)) {
            Ok(bytes) => Some(serde_json::from_slice(&bytes).expect("decode")),
            Err(err) if err.kind() == io::ErrorKind::NotFound => None,
            Err(err) => panic!("read: {err}"),
        }
    }

    /// The decoded file of `id` if it holds a live session.
    fn live(&self, id: &SessionId) -> Option<Stored> {
        self.load(id).filter(|s| s.expires_at > now_millis())
    }

    /// The version of the live session under `id`, 0 if there is none.
    fn live_version(&self, id: &SessionId) -> u64 {
        self.live(id).map_or(0, |s| s.version)
    }

    /// Writes a temporary file in the directory and renames it over `<id>.json`.
    fn write(&self, id: &SessionId, data: &Map<String, Value>, expires_at: i64, version: u64) {
        let content = encode(data, expires_at, version);
        let mut tmp = tempfile::Builder::new()
            .prefix(".tmp-")
            .suffix(".partial")
            .tempfile_in(&self.dir)
            .expect("temp file");
        tmp.write_all(&content).expect("write");
        tmp.persist(path_of(&self.dir, id)).expect("rename");
    }
}

#[async_trait]
impl Target for RawFiles {
    async fn get(&self, id: &SessionId) -> bool {
        match self.live(id) {
            Some(s) => {
                std::hint::black_box(Session::from_parts(s.data, s.expires_at, s.version));
                true
            }
            None => false,
        }
    }

    async fn set(&self, id: &SessionId, session: &Session) {
        let version = self.live_version(id) + 1;
        self.write(id, session.data(), session.expires_at_millis(), version);
    }

    async fn touch(&self, id: &SessionId, expires_at: i64) -> bool {
        match self.live(id) {
            Some(s) => {
                self.write(id, &s.data, expires_at, s.version);
                true
            }
            None => false,
        }
    }

    async fn destroy(&self, id: &SessionId) {
        match fs::remove_file(path_of(&self.dir, id)) {
            Ok(()) => {}
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            Err(err) => panic!("remove: {err}"),
        }
    }

    async fn create(&self, id: &SessionId, session: &Session) -> bool {
        if self.live(id).is_some() {
            return false;
        }
        self.write(id, session.data(), session.expires_at_millis(), 1);
        true
    }

    async fn cas(&self, id: &SessionId, session: &Session) -> bool {
        // Read the session (as a caller would, to learn its version), then re-read the
        // current version right before the write and write only on a match.
        let expected = match self.live(id) {
            Some(s) => std::hint::black_box(s).version,
            None => 0,
        };
        if self.live_version(id) != expected {
            return false;
        }
        self.write(
            id,
            session.data(),
            session.expires_at_millis(),
            expected + 1,
        );
        true
    }

    async fn fill(&self, ids: &[SessionId], session: &Session) {
        bulk_fill(&self.dir, ids, session);
    }
}

fn main() {
    let mut c = common::criterion();
    let rt = common::runtime();
    let tmp = tempfile::tempdir().expect("temp dir");
    let store_dir = tmp.path().join("store");
    let raw_dir = tmp.path().join("raw");
    fs::create_dir_all(&raw_dir).expect("raw dir");
    let store = rt.block_on(FileStore::new(&store_dir)).expect("open store");
    let fill_dir = store_dir.clone();
    let store = Arc::new(StoreTarget::with_bulk_fill(
        store,
        Arc::new(move |ids: &[SessionId], session: &Session| bulk_fill(&fill_dir, ids, session)),
    ));
    let raw = Arc::new(RawFiles { dir: raw_dir });
    let plan = Plan {
        backend: "file",
        // One file per session: a million files would cost minutes to create and remove.
        populations: vec![1_000, 100_000],
        expiry_only_set: true,
    };
    common::run_all(&mut c, &rt, &plan, store, raw);
    c.final_summary();
}
