//! What the `session-stores` command needs of a Redis deployment beyond the contract
//! (feature `cli`): reading the settings that lose sessions (`maxmemory-policy`,
//! persistence) from one node, within [`ADMIN_TIMEOUT`]; finding and removing session keys
//! that have no expiry ([`RedisStore::immortal_keys`]).

use std::time::Duration;

use deadpool_redis::redis::cluster_routing::SingleNodeRoutingInfo;

use crate::admin::finding::Finding;
use crate::deadline::within;
use crate::error::Result;
use crate::url::StoreUrl;

use super::RedisStore;
use super::connection::Lease;
use super::keyspace::AsyncBatch;
use super::url::{DRIVER_OPTIONS, node_urls};

/// How long reading the configuration may take, connecting included.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(10);

/// The settings of the deployment that silently lose sessions. One node tells the policy of
/// a cluster configured as a whole.
pub(crate) async fn inspect(url: &StoreUrl) -> Vec<Finding> {
    let driver = url.without(|key| !DRIVER_OPTIONS.contains(&key));
    let first = if url.kind() == crate::StoreKind::RedisCluster {
        match node_urls(&driver) {
            Ok(nodes) => nodes.into_iter().next().unwrap_or_default(),
            Err(err) => return vec![Finding::note(crate::error::chain(&err))],
        }
    } else {
        driver.to_url()
    };
    let config = async {
        let client = redis::Client::open(first.as_str())?;
        let mut conn = client.get_multiplexed_async_connection().await?;
        let mut get = async |name: &str| -> redis::RedisResult<String> {
            let pair: Vec<String> = redis::cmd("CONFIG")
                .arg("GET")
                .arg(name)
                .query_async(&mut conn)
                .await?;
            Ok(pair.get(1).cloned().unwrap_or_default())
        };
        let policy = get("maxmemory-policy").await?;
        let save = get("save").await?;
        let aof = get("appendonly").await?;
        Ok::<_, redis::RedisError>((policy, save, aof))
    };
    let mut findings = Vec::new();
    match tokio::time::timeout(ADMIN_TIMEOUT, config).await {
        Ok(Ok((policy, save, aof))) => {
            // Every session has an expiry, so the volatile-* policies evict sessions too:
            // only noeviction keeps them.
            if policy != "noeviction" {
                findings.push(Finding::problem(format!(
                    "Redis maxmemory-policy is {policy}: when Redis reaches maxmemory it evicts \
                     keys, live sessions included (every session has an expiry, so volatile-* \
                     policies evict them too), and users are logged out at random. Set \
                     `maxmemory-policy noeviction` (writes then fail loudly instead) and give \
                     Redis memory to spare"
                )));
            }
            let aof = if aof.trim().is_empty() {
                "no"
            } else {
                aof.trim()
            };
            if save.trim().is_empty() && aof == "no" {
                findings.push(Finding::problem(
                    "Redis persistence is off (no `save` points, `appendonly no`): a restart \
                     logs everyone out. Set `appendonly yes` (or `save` points)",
                ));
            }
        }
        Ok(Err(err)) => findings.push(Finding::note(format!(
            "could not read the Redis configuration (CONFIG GET): {err}"
        ))),
        Err(_) => findings.push(Finding::note("reading the Redis configuration timed out")),
    }
    findings
}

/// Removes a key only while it still has no expiry, so that a session written there since
/// (with its expiry) is never removed.
const UNLINK_IF_IMMORTAL: &str = "if redis.call('PTTL', KEYS[1]) == -1 then \
     return redis.call('UNLINK', KEYS[1]) end return 0";

/// The store's session keys that have no expiry (`PTTL` -1). Every session this crate writes
/// has one, so such a key is damage: the payload of a write that reached an older Redis
/// script after its own expiry (0.1's write scripts then left it as a key of its own), or a
/// key someone `PERSIST`ed. It never expires, `get` of its id is a `Decode` error, `len`
/// counts it and a scan stops at it. With `remove`, each is unlinked (if it still has no
/// expiry).
struct Immortal {
    remove: bool,
    found: u64,
    removed: u64,
}

#[async_trait::async_trait]
impl AsyncBatch for Immortal {
    async fn batch(
        &mut self,
        store: &RedisStore,
        lease: &mut Lease,
        _: Option<&SingleNodeRoutingInfo>,
        keys: Vec<Vec<u8>>,
    ) -> Result<()> {
        for key in keys {
            let ttl: i64 = store
                .round_trip(
                    &lease.health,
                    "repair",
                    None,
                    redis::cmd("PTTL").arg(&key).query_async(&mut lease.conn),
                )
                .await?;
            if ttl != -1 {
                continue;
            }
            self.found += 1;
            if self.remove {
                let removed: i64 = store
                    .round_trip(
                        &lease.health,
                        "repair",
                        None,
                        redis::cmd("EVAL")
                            .arg(UNLINK_IF_IMMORTAL)
                            .arg(1)
                            .arg(&key)
                            .query_async(&mut lease.conn),
                    )
                    .await?;
                self.removed += u64::try_from(removed).unwrap_or(0);
            }
        }
        Ok(())
    }
}

impl RedisStore {
    /// The store's session keys that have no expiry (see [`Immortal`]): how many were found
    /// and, with `remove`, how many were removed. One pass of `SCAN` over every primary,
    /// bounded by [`REPAIR_TIMEOUT`].
    pub(crate) async fn immortal_keys(&self, remove: bool) -> Result<(u64, u64)> {
        let mut pass = Immortal {
            remove,
            found: 0,
            removed: 0,
        };
        within(REPAIR_TIMEOUT, "repair", None, async {
            self.scan_keys("repair", &mut pass, false).await
        })
        .await?;
        Ok((pass.found, pass.removed))
    }
}

/// How long one pass over the keys for [`RedisStore::immortal_keys`] may take.
const REPAIR_TIMEOUT: Duration = Duration::from_secs(600);
