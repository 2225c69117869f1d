use deadpool_redis::redis::{self, ErrorKind as RedisErrorKind, RedisError};

use super::codec::{
    HEAD_BYTES, MAX_VERSION_DIGITS, decode_head, decode_value, encode_value, owner_field, payload,
};
use super::error::{breaks_connection, is_reply, redis_error};
use super::keyspace::{AsyncBatch, escape_glob, is_index_key, is_own_key};
use super::scripts::{
    CREATE_LUA, CREATE_OWNED_CALL, DESTROY_OWNED_LUA, INDEX_FN, OWNER_FN, RECLAIM_LUA, TOUCH_LUA,
    WRITE_LUA, WRITE_OWNED_CALL, as_function,
};
use super::*;

fn id() -> SessionId {
    SessionId::new("abcdefghijkl").unwrap()
}

#[test]
fn values_round_trip() {
    let data = br#"{"user":"ada","n":[1,2]}"#;
    let raw = encode_value(7, 1_767_225_600_000, data);
    assert_eq!(&raw[..17], b"7:1767225600000:{");
    let session = decode_value(&id(), &raw).unwrap();
    assert_eq!(session.version(), 7);
    assert_eq!(session.expires_at_millis(), 1_767_225_600_000);
    assert_eq!(
        session.get::<String>("user").unwrap().as_deref(),
        Some("ada")
    );
}

#[test]
fn owned_values_round_trip_and_old_values_have_no_owner() {
    let owner = Owner::new("user:{42} é").unwrap();
    let mut session = Session::new(Duration::from_secs(60));
    session.set_owner(Some(owner.clone()));
    let data = payload(&session, br#"{"a":1}"#.to_vec());
    let raw = encode_value(7, 1_767_225_600_000, &data);
    let text = format!(
        "7:1767225600000:~{}:user:{{42}} é{{\"a\":1}}",
        owner.as_str().len()
    );
    assert_eq!(raw, text.as_bytes());
    let back = decode_value(&id(), &raw).unwrap();
    assert_eq!(back.owner(), Some(&owner));
    assert_eq!(back.version(), 7);
    assert_eq!(back.get::<i64>("a").unwrap(), Some(1));
    // The head alone (as `sessions_of` reads it without the data) names the owner.
    let head = decode_head(&raw[..raw.len() - 3]).unwrap();
    assert_eq!(head.owner, Some(owner.as_str().as_bytes()));
    // A value written before owners: no owner; and an unowned write is unchanged.
    let old = decode_value(&id(), b"3:1767225600000:{\"u\":2}").unwrap();
    assert_eq!(old.owner(), None);
    let unowned = Session::new(Duration::from_secs(60));
    assert_eq!(payload(&unowned, b"{}".to_vec()), b"{}");
    // The field is prefix-free: one owner's field never starts another's value.
    assert!(
        !owner_field(&Owner::new("ab").unwrap())
            .starts_with(&owner_field(&Owner::new("a").unwrap()))
    );
}

#[test]
fn malformed_owner_fields_are_decode_errors() {
    for raw in [
        &b"1:1:~"[..],
        b"1:1:~5",
        b"1:1:~5:abc{}",
        b"1:1:~x:a{}",
        b"1:1:~1000:a{}",
        b"1:1:~0:{}",
        b"1:1:~1:\n{}",
        b"1:1:~2:\xff\xfe{}",
        b"1:1:~1:a",
        b"1:1:~1:a[1]",
    ] {
        let err = decode_value(&id(), raw).unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Decode, "{raw:?}");
    }
}

#[test]
fn owner_index_keys_are_never_session_keys() {
    let store = RedisStore::builder("redis://127.0.0.1")
        .key_prefix("p:")
        .build()
        .unwrap();
    let key = store.owner_key_for(&Owner::new("a{b}:c").unwrap());
    assert_eq!(key, "p:owner:{617b627d3a63}");
    assert!(is_index_key("p:", key.as_bytes()));
    assert!(!is_own_key("p:", key.as_bytes()));
    for other in [
        &b"p:owner:{}"[..],
        b"p:owner:{6}",
        b"p:owner:{6G}",
        b"p:owner:{61}x",
        b"p:owner:61",
        b"q:owner:{61}",
        b"p:x:owner:{61}",
    ] {
        assert!(!is_index_key("p:", other), "{other:?}");
    }
    let longest = store.owner_key_for(&Owner::new("x".repeat(Owner::MAX_LEN)).unwrap());
    assert!(is_index_key("p:", longest.as_bytes()));
}

/// The composed scripts keep the pieces' text (so a change to one script reaches its
/// owned variant) and the touch script's owner read stays within the head it reads.
#[test]
fn owned_scripts_are_composed_from_the_plain_ones() {
    let write = format!(
        "{INDEX_FN}{}{WRITE_OWNED_CALL}",
        as_function("write", WRITE_LUA)
    );
    assert!(write.contains(WRITE_LUA));
    assert!(CREATE_OWNED_CALL.contains("create()"));
    assert!(TOUCH_LUA.contains(&format!("GETRANGE', key, 0, {}", HEAD_BYTES - 1)));
    assert!(DESTROY_OWNED_LUA.contains(&format!("GETRANGE', key, 0, {}", HEAD_BYTES - 1)));
    assert!(RECLAIM_LUA.contains(&format!("GETRANGE', key, 0, {}", HEAD_BYTES - 1)));
    assert!(WRITE_LUA.contains(&format!("GETRANGE', key, 0, {}", HEAD_BYTES - 1)));
    // The index key the scripts compute is the store's.
    assert!(OWNER_FN.contains(&format!("'{OWNER_KEY_INFIX}' .. hexed .. '}}'")));
    // The longest head fits HEAD_BYTES.
    let owner = Owner::new("x".repeat(Owner::MAX_LEN)).unwrap();
    let mut field = format!("{}:{}:", crate::session::MAX_VERSION, i64::MAX).into_bytes();
    field.extend_from_slice(&owner_field(&owner));
    assert!(field.len() <= HEAD_BYTES, "{}", field.len());
}

#[test]
fn malformed_values_are_decode_errors_never_panics() {
    let cases: &[&[u8]] = &[
        b"",
        b"garbage",
        b"1:2",
        b"x:1:{}",
        b"+1:1:{}",
        b"1:-5:{}",
        b"1:1:not json",
        b"1:1:[1,2]",
        b"99999999999999999999999:1:{}",
        b"1000000000000000:1:{}",
        b"9007199254740993:1:{}",
        b"1:99999999999999999999:{}",
        b"\xff\xfe:1:{}",
    ];
    for raw in cases {
        let err = decode_value(&id(), raw).unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Decode, "{raw:?}");
        assert!(!err.to_string().contains(id().as_str()));
    }
}

#[test]
fn fifteen_digit_versions_are_the_largest_readable() {
    let session = decode_value(&id(), b"999999999999999:1:{}").unwrap();
    assert_eq!(session.version(), 999_999_999_999_999);
    // Every script reads a head with `parse_head`, which refuses a longer version.
    use super::scripts::{HEAD_FN, ROTATE_LUA};
    assert!(HEAD_FN.contains(&format!("#v > {MAX_VERSION_DIGITS}")));
    assert!(HEAD_FN.contains(&format!("#a > {}", super::codec::MAX_ABSOLUTE_DIGITS)));
    for script in [WRITE_LUA, TOUCH_LUA, CREATE_LUA, ROTATE_LUA] {
        assert!(script.contains("parse_head("));
    }
    // The script's largest version is MAX_VERSION, which has MAX_VERSION_DIGITS digits.
    use crate::session::MAX_VERSION;
    assert!(WRITE_LUA.contains(&format!("cur < {MAX_VERSION}")));
    assert!(ROTATE_LUA.contains(&format!("old < {MAX_VERSION}")));
    assert_eq!(MAX_VERSION.to_string().len(), MAX_VERSION_DIGITS);
}

#[test]
fn only_valid_ids_under_the_prefix_are_the_store_s_keys() {
    let own = |key: &[u8]| is_own_key("p:", key);
    assert!(own(b"p:abc"));
    assert!(own(b"p:Zx81-aB9_q"));
    assert!(!own(b"p:admin:abc"));
    assert!(!own(b"p:x:y"));
    assert!(!own(b"p:"));
    assert!(!own(b"p:.."));
    assert!(!own(b"p:a b"));
    assert!(!own(b"p:\xff"));
    assert!(!own(b"q:abc"));
}

#[test]
fn glob_metacharacters_are_escaped() {
    assert_eq!(escape_glob("session:"), "session:");
    assert_eq!(escape_glob("a*b?c[d]e\\f"), r"a\*b\?c\[d\]e\\f");
    assert_eq!(escape_glob("{tag}-x^"), r"{tag}\-x\^");
}

#[test]
fn empty_prefix_and_bad_urls_are_config_errors() {
    let err = RedisStore::builder("redis://127.0.0.1")
        .key_prefix("")
        .build()
        .unwrap_err();
    assert_eq!(err.kind(), crate::ErrorKind::Config);
    let err = RedisStore::builder("not a url").build().unwrap_err();
    assert_eq!(err.kind(), crate::ErrorKind::Config);
    let none: [&str; 0] = [];
    let err = RedisStore::cluster_builder(none).build().unwrap_err();
    assert_eq!(err.kind(), crate::ErrorKind::Config);
}

#[test]
fn transient_classification() {
    let io = RedisError::from(std::io::Error::new(
        std::io::ErrorKind::ConnectionRefused,
        "refused",
    ));
    assert!(redis_error("get", Some(&id()), io).is_transient());
    let reset = RedisError::from(std::io::Error::new(
        std::io::ErrorKind::ConnectionReset,
        "reset",
    ));
    assert_eq!(
        redis_error("get", None, reset).kind(),
        crate::ErrorKind::Unavailable
    );
    let timeout = RedisError::from(std::io::Error::new(std::io::ErrorKind::TimedOut, "slow"));
    assert_eq!(
        redis_error("get", None, timeout).kind(),
        crate::ErrorKind::Timeout
    );
    let server = RedisError::from((RedisErrorKind::Client, "bad"));
    let err = redis_error("set", Some(&id()), server);
    assert_eq!(err.kind(), crate::ErrorKind::Backend);
    assert!(!err.is_transient());
    use std::error::Error as _;
    assert!(err.source().unwrap().downcast_ref::<RedisError>().is_some());
}

fn page(range: std::ops::Range<u32>) -> Vec<Vec<u8>> {
    range.map(|i| format!("p:k{i}").into_bytes()).collect()
}

/// `len`'s counter holds at most one page's worth of keys however many it counts, and
/// counts each key once.
#[test]
fn len_counts_page_by_page_holding_one_page_of_keys() {
    let mut count = RecentKeys::new(LEN_WINDOW);
    for p in 0..50 {
        count.count_page(page(p * 1000..(p + 1) * 1000));
        assert!(count.held() <= LEN_WINDOW, "holds {}", count.held());
    }
    assert_eq!(count.count, 50_000);
    assert_eq!(count.held(), LEN_WINDOW);
    // A key counted long ago is no longer held: memory does not grow with the store.
    assert!(!count.seen.contains(b"p:k0".as_slice()));
}

/// After Redis shrinks its table between two `SCAN` calls, the next page starts with
/// keys the pass returned last: they are not counted again.
#[test]
fn keys_scan_returns_again_after_a_shrink_count_once() {
    let mut count = RecentKeys::new(LEN_WINDOW);
    count.count_page(page(0..1000));
    count.count_page(page(1000..1700));
    // The rewound bucket: the last few keys again, then new ones.
    count.count_page(page(1690..2500));
    assert_eq!(count.count, 2500);
    // Within one page too.
    let mut count = RecentKeys::new(LEN_WINDOW);
    count.count_page(vec![b"a".to_vec(), b"b".to_vec(), b"a".to_vec()]);
    assert_eq!(count.count, 2);
    // A pass on another node starts afresh.
    count.start_node();
    assert_eq!(count.held(), 0);
    assert_eq!(count.count, 2);
}

/// Which errors discard the shared connection: I/O failures, not timeouts and not the
/// server's error replies.
#[test]
fn only_broken_connections_are_discarded() {
    let io = |kind| RedisError::from(std::io::Error::new(kind, "x"));
    for kind in [
        std::io::ErrorKind::ConnectionRefused,
        std::io::ErrorKind::ConnectionReset,
        std::io::ErrorKind::BrokenPipe,
        std::io::ErrorKind::UnexpectedEof,
        std::io::ErrorKind::NotConnected,
    ] {
        assert!(breaks_connection(&io(kind)), "{kind:?}");
        assert!(!is_reply(&io(kind)), "{kind:?}");
    }
    assert!(!breaks_connection(&io(std::io::ErrorKind::TimedOut)));
    assert!(breaks_connection(&RedisError::from((
        RedisErrorKind::ClusterConnectionNotFound,
        "no node"
    ))));
    for code in [
        "LOADING",
        "CLUSTERDOWN",
        "TRYAGAIN",
        "MASTERDOWN",
        "READONLY",
        "WRONGTYPE",
        "NOSCRIPT",
    ] {
        let err = match redis::parse_redis_value(format!("-{code} x\r\n").as_bytes()) {
            Ok(reply) => reply.extract_error().unwrap_err(),
            Err(err) => err,
        };
        assert_eq!(err.code(), Some(code));
        assert!(!breaks_connection(&err), "{code}");
        assert!(is_reply(&err), "{code}");
    }
}

#[test]
fn debug_hides_urls() {
    let builder = RedisStore::builder("redis://user:hunter2@127.0.0.1");
    assert!(!format!("{builder:?}").contains("hunter2"));
}

/// Without `redis-tls` (and no TLS in redis-rs from elsewhere), a `rediss://` URL and
/// the TLS URL options are configuration errors naming the feature.
#[cfg(not(feature = "redis-tls"))]
#[tokio::test]
async fn tls_without_the_feature_names_it() {
    let builders = [
        RedisStore::builder("rediss://127.0.0.1:1"),
        RedisStore::cluster_builder(["rediss://127.0.0.1:1", "rediss://127.0.0.1:2"]),
    ];
    for builder in builders {
        let err = builder.build().unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Config, "{err}");
        assert!(err.to_string().contains("`redis-tls` feature"), "{err}");
    }
    for url in [
        "rediss://127.0.0.1:1",
        "rediss+cluster://127.0.0.1:1,127.0.0.1:2",
        "redis://127.0.0.1:1?tls_ca_file=/ca.pem",
        "rediss://127.0.0.1:1?tls_ca_file=/ca.pem",
    ] {
        let err = crate::connect(url).await.map(drop).unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Config, "{url}: {err}");
        assert!(
            err.to_string().contains("`redis-tls` feature"),
            "{url}: {err}"
        );
    }
}

#[cfg(feature = "redis-tls")]
#[test]
fn debug_hides_tls_keys() {
    let builder = RedisStore::builder("rediss://127.0.0.1")
        .tls_client_certificate_pem("CERT-BYTES", "SECRET-KEY-BYTES");
    let debug = format!("{builder:?}");
    assert!(!debug.contains("SECRET"), "{debug}");
    assert!(debug.contains("client_certificate: true"), "{debug}");
}

/// The scripts a store runs are pinned by their SHA1s (Redis caches a script by the SHA1
/// of its text, and a change is a change of behaviour). Since the absolute expiry and
/// rotation, every script that reads a head does so with `parse_head` (`head_fn.lua`),
/// which reads the `@` and `>` fields: every SHA1 but the index's changed then.
#[test]
fn scripts_are_pinned() {
    let store = RedisStore::builder("redis://127.0.0.1").build().unwrap();
    let scripts = [
        (
            "write",
            &store.write,
            "f426eb93823ff5ec79327424f540a1e11c97a54d",
        ),
        (
            "touch",
            &store.touch,
            "d4235d3f8ceef0d8e4c913eff8cbd3c9822efee2",
        ),
        (
            "create",
            &store.create,
            "1ac8e2a7c057eab73df82d3896c28c5ebd48723d",
        ),
        (
            "index",
            &store.index,
            "2cfed487651757f1a006cfd473c38132e8b0cf1d",
        ),
        (
            "write_owned",
            &store.write_owned,
            "3b6a759a41cc925631877ad902d20df6f43598c7",
        ),
        (
            "create_owned",
            &store.create_owned,
            "78418ffdcd26b4bbf90b2fb6ebaf610e5d1159ca",
        ),
        (
            "destroy_owned",
            &store.destroy_owned,
            "339fee80ce6dc0dbe2709f1a57f634d7c5327ab2",
        ),
        (
            "reclaim",
            &store.reclaim,
            "5d04cf1fb068701703a2f68cc2898068f20228eb",
        ),
        (
            "rotate",
            &store.rotate,
            "78391e3df523ac7d87c3dcfb96cf7efd5ce410b8",
        ),
        (
            "rotate_claim",
            &store.rotate_claim,
            "bc2af64b40fa02cdb72a08d68fa3a6ec056647eb",
        ),
        (
            "rotate_mark",
            &store.rotate_mark,
            "38a4a5defebe58242c524448d1e913f5c50d5bcc",
        ),
        (
            "rotate_release",
            &store.rotate_release,
            "ec63917424c3ac921547b4c75b15e4c7958d2232",
        ),
        (
            "rotate_confirm",
            &store.rotate_confirm,
            "421c9c6eec8f0fde7727fe6040ac1d57b6d2ab4c",
        ),
    ];
    let wrong: Vec<String> = scripts
        .iter()
        .filter(|(_, script, sha)| script.get_hash() != *sha)
        .map(|(name, script, _)| format!("{name}: {}", script.get_hash()))
        .collect();
    assert!(wrong.is_empty(), "{wrong:#?}");
}

/// What a cluster connection resends: what the cluster certainly did not run (redirects,
/// refusals, a missing node connection), and after an I/O error only a command that reads;
/// never after a timeout, never a script.
#[test]
fn a_cluster_resends_only_what_did_not_run() {
    use super::connection::{Resend, reads_only, resend};
    use deadpool_redis::redis::cluster_routing::SingleNodeRoutingInfo;
    let reply = |text: &str| match redis::parse_redis_value(format!("-{text}\r\n").as_bytes()) {
        Ok(reply) => reply.extract_error().unwrap_err(),
        Err(err) => err,
    };
    let node = |host: &str, port: u16| SingleNodeRoutingInfo::ByAddress {
        host: host.to_string(),
        port,
    };
    for reads in [false, true] {
        match resend(&reply("MOVED 3999 127.0.0.1:6381"), reads) {
            Some(Resend::Moved(to)) => assert_eq!(to, node("127.0.0.1", 6381)),
            _ => panic!("MOVED is resent to the node it names"),
        }
        match resend(&reply("ASK 3999 10.0.0.2:7002"), reads) {
            Some(Resend::Ask(to)) => assert_eq!(to, node("10.0.0.2", 7002)),
            _ => panic!("ASK is resent to the node it names"),
        }
        for code in [
            "TRYAGAIN x",
            "CLUSTERDOWN x",
            "MASTERDOWN x",
            "LOADING x",
            "READONLY x",
        ] {
            assert!(
                matches!(resend(&reply(code), reads), Some(Resend::Later)),
                "{code}"
            );
        }
        for code in ["WRONGTYPE x", "NOSCRIPT x", "ERR x"] {
            assert!(resend(&reply(code), reads).is_none(), "{code}");
        }
        let not_found = RedisError::from((RedisErrorKind::ClusterConnectionNotFound, "no node"));
        assert!(matches!(resend(&not_found, reads), Some(Resend::Later)));
        let refused = RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert!(matches!(resend(&refused, reads), Some(Resend::Later)));
        let timeout = RedisError::from(std::io::Error::from(std::io::ErrorKind::TimedOut));
        assert!(
            resend(&timeout, reads).is_none(),
            "a timed-out request may have run"
        );
    }
    for kind in [
        std::io::ErrorKind::ConnectionReset,
        std::io::ErrorKind::BrokenPipe,
        std::io::ErrorKind::UnexpectedEof,
        // Not a dropped connection, but an I/O error all the same.
        std::io::ErrorKind::Other,
    ] {
        let broken = RedisError::from(std::io::Error::from(kind));
        assert!(
            resend(&broken, false).is_none(),
            "a write is not resent after {kind:?}"
        );
        assert!(
            matches!(resend(&broken, true), Some(Resend::Later)),
            "{kind:?}"
        );
    }
    // A redirect whose address cannot be read: resent later, routed by its keys.
    assert!(matches!(
        resend(&reply("MOVED 3999 nowhere"), false),
        Some(Resend::Later)
    ));

    for read in [
        "GET", "get", "GETRANGE", "MGET", "SCAN", "ZSCAN", "ZRANGE", "PING", "EXISTS",
    ] {
        assert!(reads_only(&redis::cmd(read)), "{read}");
    }
    for write in [
        "EVALSHA",
        "EVAL",
        "SET",
        "UNLINK",
        "DEL",
        "ZADD",
        "ZREM",
        "ZREMRANGEBYSCORE",
        "GETDEL",
        "PEXPIREAT",
    ] {
        assert!(!reads_only(&redis::cmd(write)), "{write}");
    }
}

/// Hash slots as Redis computes them (each number read from `CLUSTER KEYSLOT` of Redis 7.0),
/// hash tags included.
#[test]
fn hash_slots_are_the_clusters() {
    use super::connection::hash_slot;
    assert_eq!(hash_slot(b"somekey"), 11058);
    assert_eq!(hash_slot(b"foo"), 12182);
    assert_eq!(hash_slot(b"{foo}bar"), 12182);
    assert_eq!(hash_slot(b"x{foo}y{bar}"), 12182);
    // An empty tag is no tag: the whole key.
    assert_eq!(hash_slot(b"{}foo"), 9500);
    assert_eq!(hash_slot(b"foo{"), 7673);
    assert_eq!(hash_slot(b""), 0);
}

#[test]
fn absolute_and_moved_to_fields_round_trip_and_old_values_have_none() {
    use super::codec::{absolute_field, decode_stored, marks_rotated};
    let owner = Owner::new("ada").unwrap();
    let mut fields = absolute_field(Some(1_767_225_660_000));
    fields.extend_from_slice(b">5:abcde");
    fields.extend_from_slice(&owner_field(&owner));
    fields.extend_from_slice(br#"{"a":1}"#);
    let raw = encode_value(7, 1_767_225_600_000, &fields);
    assert_eq!(
        raw,
        b"7:1767225600000:@1767225660000:>5:abcde~3:ada{\"a\":1}".to_vec()
    );
    let (session, moved_to) = decode_stored(&id(), &raw).unwrap();
    assert_eq!(session.absolute_expiry_millis(), Some(1_767_225_660_000));
    assert_eq!(moved_to.as_ref().map(SessionId::as_str), Some("abcde"));
    assert_eq!(session.owner(), Some(&owner));
    assert_eq!(session.version(), 7);
    assert!(marks_rotated(&raw));
    let head = decode_head(&raw).unwrap();
    assert_eq!(&raw[head.owner_at..head.owner_at + 1], b"~");
    // Each field on its own, and none (a value of before).
    for (raw, abs, moved) in [
        (&b"1:2:@3:{}"[..], Some(3), None),
        (b"1:2:>1:x{}", None, Some("x")),
        (b"1:2:{}", None, None),
        (b"1:2:~1:o{}", None, None),
    ] {
        let (session, moved_to) = decode_stored(&id(), raw).unwrap();
        assert_eq!(session.absolute_expiry_millis(), abs, "{raw:?}");
        assert_eq!(moved_to.as_ref().map(SessionId::as_str), moved, "{raw:?}");
        assert_eq!(marks_rotated(raw), moved.is_some(), "{raw:?}");
    }
    assert_eq!(absolute_field(None), b"");
    // The longest head still fits HEAD_BYTES, and the rotated mark fits its bytes.
    let longest = format!(
        "{}:{}:@999999999999999:>128:{}~128:{}",
        crate::session::MAX_VERSION,
        i64::MAX,
        "i".repeat(128),
        "o".repeat(128)
    );
    assert!(longest.len() <= HEAD_BYTES);
    assert!(marks_rotated(
        &longest.as_bytes()[..super::codec::ROTATED_MARK_BYTES]
    ));
}

#[test]
fn malformed_absolute_and_moved_to_fields_are_decode_errors() {
    for raw in [
        &b"1:1:@"[..],
        b"1:1:@x:{}",
        b"1:1:@:{}",
        b"1:1:@1234567890123456:{}",
        b"1:1:@5{}",
        b"1:1:>0:{}",
        b"1:1:>5:ab{}",
        b"1:1:>1000:a{}",
        b"1:1:>1:*{}",
        b"1:1:>x:a{}",
        b"1:1:>1:a@5:{}",
        b"1:1:~1:a@5:{}",
    ] {
        let err = decode_value(&id(), raw).unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Decode, "{raw:?}");
    }
}

/// The scripts' head parser (`parse_head`, [`HEAD_FN`]) and [`decode_head`] read every
/// value the same way: the same version, expiry, absolute expiry, moved-to id and owner
/// field position, or both refuse it. Against a real Redis (skipped without one).
#[tokio::test]
async fn the_scripts_and_decode_head_agree_on_every_head() {
    use super::scripts::HEAD_FN;
    let url = std::env::var("SESSION_STORES_REDIS_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379".to_string());
    let Ok(client) = redis::Client::open(url) else {
        return;
    };
    let Ok(mut conn) = client.get_multiplexed_async_connection().await else {
        eprintln!("SKIPPED: no Redis for the head agreement test");
        return;
    };
    let script = redis::Script::new(&format!(
        "{HEAD_FN}\nlocal v, e, a, m, at = parse_head(ARGV[1])\n\
         if not v then return 0 end\nreturn {{v, e, a or '', m or '', at}}"
    ));
    let cases: &[&[u8]] = &[
        b"1:2:{}",
        b"7:1767225600000:@1767225660000:>5:abcde~3:ada{\"a\":1}",
        b"1:2:@3:{}",
        b"1:2:@999999999999999:{}",
        b"1:2:@1234567890123456:{}",
        b"1:2:@:{}",
        b"1:2:@x:{}",
        b"1:2:@5{}",
        b"1:2:>1:x{}",
        b"1:2:>3:abc~1:o{}",
        b"1:2:>0:{}",
        b"1:2:>1000:a{}",
        b"1:2:>9:abc",
        b"1:2:>x:a{}",
        b"1:2:@3:>2:ab{}",
        b"1:2:>2:ab@3:{}",
        b"1:2:~1:o{}",
        b"999999999999999:1:{}",
        b"1000000000000000:1:{}",
        b"x:1:{}",
        b"1:x:{}",
        b"",
        b"1:2",
    ];
    for &raw in cases {
        let lua: redis::Value = script.arg(raw).invoke_async(&mut conn).await.unwrap();
        let rust = decode_head(raw).map(|head| {
            (
                head.version.to_string(),
                head.expires_at.to_string(),
                head.absolute.map(|a| a.to_string()).unwrap_or_default(),
                head.moved_to
                    .map(|m| String::from_utf8(m.to_vec()).unwrap())
                    .unwrap_or_default(),
                i64::try_from(head.owner_at + 1).unwrap(),
            )
        });
        let lua = match lua {
            redis::Value::Int(0) => None,
            other => Some(
                redis::from_redis_value::<(String, String, String, String, i64)>(other).unwrap(),
            ),
        };
        assert_eq!(lua, rust, "{:?}", String::from_utf8_lossy(raw));
    }
}
