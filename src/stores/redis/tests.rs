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
    assert!(WRITE_LUA.contains(&format!("#v > {MAX_VERSION_DIGITS}")));
    assert!(TOUCH_LUA.contains(&format!("#v > {MAX_VERSION_DIGITS}")));
    assert!(CREATE_LUA.contains(&format!("#v > {MAX_VERSION_DIGITS}")));
    // The script's largest version is MAX_VERSION, which has MAX_VERSION_DIGITS digits.
    use crate::session::MAX_VERSION;
    assert!(WRITE_LUA.contains(&format!("cur < {MAX_VERSION}")));
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
/// of its text, and a change is a change of behaviour): these are those of the scripts the
/// single-file module composed, except the two write scripts, which since check that their
/// `SET` stored something before they `APPEND` (no immortal key when Redis' clock is past the
/// expiry), and then, with the two create scripts, recognise their own completed write when
/// redis-rs resends them (no collision with itself). The single server's `destroy` script is
/// gone: a transaction of `GETRANGE` and `UNLINK`, then `reclaim` for an owned session.
#[test]
fn scripts_are_the_ones_of_before_the_lua_files() {
    let store = RedisStore::builder("redis://127.0.0.1").build().unwrap();
    let write = "d3f1a5487f0d02b5c54bd9b019fa363a035d0a0e";
    assert_eq!(store.write.get_hash(), write);
    let touch = "97472aa23f6ea97f146250b80194f82942cccd12";
    assert_eq!(store.touch.get_hash(), touch);
    let create = "02ea1c9a1a51259ec4132639addb37f3f9ffa227";
    assert_eq!(store.create.get_hash(), create);
    let index = "2cfed487651757f1a006cfd473c38132e8b0cf1d";
    assert_eq!(store.index.get_hash(), index);
    let write_owned = "02c4a52119f3079b452dcd358525d69ec3944ef9";
    assert_eq!(store.write_owned.get_hash(), write_owned);
    let create_owned = "4f826868c07b6f7d6779c8e79bb6599e76ee33c6";
    assert_eq!(store.create_owned.get_hash(), create_owned);
    let destroy_owned = "e00b5bdbae3a37036f0a5127a3dce9c20afa4fbe";
    assert_eq!(store.destroy_owned.get_hash(), destroy_owned);
    let reclaim = "83b3efc97a93afc9f568177e694d17ef7ac1cb17";
    assert_eq!(store.reclaim.get_hash(), reclaim);
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
