//! What the `session-stores` command needs of a Redis deployment beyond the contract
//! (feature `cli`): reading the settings that lose sessions (`maxmemory-policy`,
//! persistence) from one node, within [`ADMIN_TIMEOUT`].

use std::time::Duration;

use crate::admin::finding::Finding;
use crate::url::StoreUrl;

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
