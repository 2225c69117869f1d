//! The file store's on-disk format: any bytes in `<id>.json` give a session or a typed
//! decode error for that id, never a panic; and a `set` always repairs the file.
#![no_main]

use std::sync::OnceLock;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use session_stores::{ErrorKind, FileStore, Session, SessionId, SessionStore};

struct World {
    rt: tokio::runtime::Runtime,
    store: FileStore,
    _dir: tempfile::TempDir,
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let store = rt.block_on(FileStore::builder(dir.path()).cache_capacity(0).open()).unwrap();
        World { rt, store, _dir: dir }
    })
}

fuzz_target!(|data: &[u8]| {
    let w = world();
    let id = SessionId::new("fuzzed").unwrap();
    std::fs::write(w.store.path_of(&id), data).unwrap();
    w.rt.block_on(async {
        match w.store.get(&id).await {
            Ok(_) => {}
            Err(err) => assert_eq!(err.kind(), ErrorKind::Decode, "{err:?}"),
        }
        let _ = w.store.len().await.unwrap();
        w.store.set(&id, &Session::new(Duration::from_secs(60))).await.unwrap();
        assert!(w.store.get(&id).await.unwrap().is_some());
    });
});
