//! A fault-injecting TCP proxy on loopback (toxiproxy is the model), for the tests that put a
//! slow or broken network between a store and its server:
//!
//! - **latency** with **jitter**: each chunk read from one side is written to the other
//!   `latency ± jitter` later, in order (a chunk never overtakes the one before it), in both
//!   directions, without limiting throughput (a pipeline of requests is delayed, not
//!   serialized);
//! - a **pause** of N ms: nothing is forwarded until it ends (what arrives meanwhile waits);
//! - **resets**: every open connection is closed at once with a TCP RST, in the middle of
//!   whatever it carried;
//! - **half-open**: connections stay open and accept bytes, but nothing is forwarded, as
//!   with a peer that vanished without a FIN, until it is turned off (or a reset);
//! - **stalled connections**: the connections open now forward nothing from then on (a
//!   peer gone without a FIN, or a firewall that lost their state), while new ones work;
//! - a **lost reply**: the next chunk the server sends is dropped and its connection closed
//!   with a RST, so the server has run a request whose reply the client never gets.
//!
//! New connections are accepted throughout; each is its own pair of pumps.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// What the proxy does to the traffic now; changed while it runs.
#[derive(Default)]
struct Faults {
    latency_us: AtomicU64,
    jitter_us: AtomicU64,
    /// Nothing is forwarded before this (microseconds since `epoch`).
    paused_until_us: AtomicU64,
    half_open: AtomicBool,
    /// The next chunk from the server is dropped and its connection reset (one flag may be
    /// shared by several proxies: [`Proxy::start_sharing_lost_reply`]).
    lose_reply: Arc<AtomicBool>,
    /// Connections numbered below this forward nothing (connections are numbered from 1 as
    /// they are accepted).
    stalled_below: AtomicU64,
    /// Chunks forwarded, both directions.
    chunks: AtomicU64,
    /// Connections accepted.
    accepted: AtomicU64,
}

/// A running proxy; dropping it stops accepting and closes every connection.
pub struct Proxy {
    addr: SocketAddr,
    faults: Arc<Faults>,
    epoch: Instant,
    /// Bumped by [`reset`](Proxy::reset): every connection watching it closes with a RST.
    resets: Arc<watch::Sender<u64>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.resets.send_modify(|n| *n += 1);
    }
}

impl Proxy {
    /// A proxy on a free loopback port that forwards every connection to `target`.
    pub async fn start(target: SocketAddr) -> Proxy {
        Proxy::start_sharing_lost_reply(target, Arc::default()).await
    }

    /// [`start`](Self::start), with the [`lose_next_reply`](Self::lose_next_reply) flag
    /// shared with other proxies: one reply is lost, on whichever proxy carries one first
    /// (the nodes of a cluster, where a test does not know which node a write goes to).
    pub async fn start_sharing_lost_reply(
        target: SocketAddr,
        lose_reply: Arc<AtomicBool>,
    ) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let addr = listener.local_addr().unwrap();
        let faults = Arc::new(Faults {
            lose_reply,
            ..Faults::default()
        });
        let epoch = Instant::now();
        let resets = Arc::new(watch::channel(0u64).0);
        let accept = {
            let (faults, resets) = (Arc::clone(&faults), Arc::clone(&resets));
            tokio::spawn(async move {
                loop {
                    let Ok((client, _)) = listener.accept().await else {
                        continue;
                    };
                    let number = faults.accepted.fetch_add(1, Ordering::Relaxed) + 1;
                    let (faults, reset) = (Arc::clone(&faults), resets.subscribe());
                    tokio::spawn(connection(client, target, faults, epoch, reset, number));
                }
            })
        };
        Proxy {
            addr,
            faults,
            epoch,
            resets,
            accept,
        }
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The port clients connect to.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Every chunk is delivered `latency ± jitter` after it was read (in order).
    pub fn latency(&self, latency: Duration, jitter: Duration) {
        let us = |d: Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.faults.latency_us.store(us(latency), Ordering::Relaxed);
        self.faults.jitter_us.store(us(jitter), Ordering::Relaxed);
    }

    /// Nothing is forwarded for `duration` from now.
    pub fn pause(&self, duration: Duration) {
        let until = self.epoch.elapsed() + duration;
        let until = u64::try_from(until.as_micros()).unwrap_or(u64::MAX);
        self.faults
            .paused_until_us
            .fetch_max(until, Ordering::Relaxed);
    }

    /// Closes every open connection with a TCP RST.
    pub fn reset(&self) {
        self.resets.send_modify(|n| *n += 1);
    }

    /// [`reset`](Self::reset), for a task of its own.
    pub fn resetter(&self) -> impl Fn() + Send + Sync + 'static {
        let resets = Arc::clone(&self.resets);
        move || resets.send_modify(|n| *n += 1)
    }

    /// Connections stay open but nothing is forwarded, until turned off.
    pub fn half_open(&self, on: bool) {
        self.faults.half_open.store(on, Ordering::Relaxed);
    }

    /// The next chunk the server sends (on any connection) is dropped, and that connection
    /// closed with a RST: the request it answered ran, and the client never learns it.
    /// Returns at once; [`reply_lost`](Self::reply_lost) tells whether it happened.
    pub fn lose_next_reply(&self, on: bool) {
        self.faults.lose_reply.store(on, Ordering::Relaxed);
    }

    /// Whether the reply [`lose_next_reply`](Self::lose_next_reply) asked for was lost.
    pub fn reply_lost(&self) -> bool {
        !self.faults.lose_reply.load(Ordering::Relaxed)
    }

    /// Every connection open now forwards nothing from now on (and stays open); the
    /// connections accepted later work.
    pub fn stall_open_connections(&self) {
        let next = self.faults.accepted.load(Ordering::Relaxed) + 1;
        self.faults.stalled_below.fetch_max(next, Ordering::Relaxed);
    }

    /// Chunks forwarded so far, both directions.
    pub fn chunks(&self) -> u64 {
        self.faults.chunks.load(Ordering::Relaxed)
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.faults.accepted.load(Ordering::Relaxed)
    }
}

/// One proxied connection: a reader and a delayed writer per direction, until either side
/// closes or a reset comes (then both sockets close with a RST).
async fn connection(
    client: TcpStream,
    target: SocketAddr,
    faults: Arc<Faults>,
    epoch: Instant,
    mut reset: watch::Receiver<u64>,
    number: u64,
) {
    let Ok(upstream) = TcpStream::connect(target).await else {
        let _ = client.set_zero_linger();
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let _ = client.set_zero_linger();
    let _ = upstream.set_zero_linger();
    let (client_read, client_write) = client.into_split();
    let (upstream_read, upstream_write) = upstream.into_split();
    reset.mark_unchanged();
    let lost = tokio::sync::Notify::new();
    let pumps = async {
        tokio::join!(
            pump(
                client_read,
                upstream_write,
                Arc::clone(&faults),
                epoch,
                number,
                None
            ),
            pump(
                upstream_read,
                client_write,
                Arc::clone(&faults),
                epoch,
                number,
                Some(&lost)
            ),
        )
    };
    tokio::select! {
        _ = pumps => {}
        _ = reset.changed() => {}
        _ = lost.notified() => {}
    }
    // Every half dropped here: with a zero linger, the close is a RST.
}

/// Reads chunks from `from` and writes each to `to` when its delivery time comes.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    faults: Arc<Faults>,
    epoch: Instant,
    number: u64,
    replies: Option<&tokio::sync::Notify>,
) {
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let reader = {
        let faults = Arc::clone(&faults);
        async move {
            let mut buf = vec![0u8; 64 * 1024];
            let mut last = Instant::now();
            loop {
                let n = match from.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                let latency = faults.latency_us.load(Ordering::Relaxed);
                let jitter = faults.jitter_us.load(Ordering::Relaxed);
                let delay = if jitter == 0 {
                    latency
                } else {
                    let spread = fastrand_below(2 * jitter + 1);
                    (latency + spread).saturating_sub(jitter)
                };
                // In order: never before the chunk read before it.
                let at = (Instant::now() + Duration::from_micros(delay)).max(last);
                last = at;
                if tx.send((at, buf[..n].to_vec())).is_err() {
                    return;
                }
            }
        }
    };
    let writer = async move {
        while let Some((at, chunk)) = rx.recv().await {
            tokio::time::sleep_until(at).await;
            loop {
                let paused_until =
                    Duration::from_micros(faults.paused_until_us.load(Ordering::Relaxed));
                let now = epoch.elapsed();
                if faults.half_open.load(Ordering::Relaxed)
                    || number < faults.stalled_below.load(Ordering::Relaxed)
                {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                } else if paused_until > now {
                    tokio::time::sleep(paused_until - now).await;
                } else {
                    break;
                }
            }
            if let Some(lost) = replies
                && faults.lose_reply.swap(false, Ordering::Relaxed)
            {
                lost.notify_one();
                return;
            }
            if to.write_all(&chunk).await.is_err() {
                return;
            }
            faults.chunks.fetch_add(1, Ordering::Relaxed);
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(reader, writer);
}

/// A number in `0..n` from a per-thread xorshift (the proxy needs spread, not secrecy).
fn fastrand_below(n: u64) -> u64 {
    use std::cell::Cell;
    thread_local! {
        static STATE: Cell<u64> = Cell::new(
            session_stores::fresh_version() | 1,
        );
    }
    STATE.with(|state| {
        let mut x = state.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        state.set(x);
        x % n.max(1)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An echo server on loopback; its address.
    async fn echo() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut socket, _) = listener.accept().await.unwrap();
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    loop {
                        match socket.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => {
                                if socket.write_all(&buf[..n]).await.is_err() {
                                    return;
                                }
                            }
                        }
                    }
                });
            }
        });
        addr
    }

    async fn round_trip(stream: &mut TcpStream, bytes: &[u8]) -> Duration {
        let started = Instant::now();
        stream.write_all(bytes).await.unwrap();
        let mut got = vec![0u8; bytes.len()];
        stream.read_exact(&mut got).await.unwrap();
        assert_eq!(got, bytes);
        started.elapsed()
    }

    /// Latency is added each way, jitter spreads it, order is kept; a pause holds traffic;
    /// a reset ends open connections with an error and new ones work; half-open forwards
    /// nothing until turned off.
    #[tokio::test]
    async fn the_proxy_delays_pauses_resets_and_holds() {
        let proxy = Proxy::start(echo().await).await;
        let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
        assert!(round_trip(&mut stream, b"hello").await < Duration::from_millis(20));

        proxy.latency(Duration::from_millis(20), Duration::from_millis(10));
        let took = round_trip(&mut stream, b"slow").await;
        assert!(took >= Duration::from_millis(20), "{took:?}");
        // Many chunks in a row stay in order (checked by round_trip's comparison).
        let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        round_trip(&mut stream, &big).await;
        proxy.latency(Duration::ZERO, Duration::ZERO);

        proxy.pause(Duration::from_millis(150));
        let took = round_trip(&mut stream, b"paused").await;
        assert!(took >= Duration::from_millis(100), "{took:?}");

        proxy.reset();
        let mut buf = [0u8; 8];
        stream.write_all(b"after reset").await.ok();
        let read = tokio::time::timeout(Duration::from_secs(2), stream.read(&mut buf)).await;
        assert!(
            matches!(read, Ok(Ok(0)) | Ok(Err(_))),
            "an open connection survived a reset: {read:?}"
        );
        let mut fresh = TcpStream::connect(proxy.addr()).await.unwrap();
        round_trip(&mut fresh, b"fresh").await;

        proxy.half_open(true);
        fresh.write_all(b"held").await.unwrap();
        let held = tokio::time::timeout(Duration::from_millis(200), fresh.read(&mut buf)).await;
        assert!(held.is_err(), "half-open forwarded something");
        proxy.half_open(false);
        let mut got = [0u8; 4];
        fresh.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"held");
        assert!(proxy.accepted() >= 2 && proxy.chunks() > 0);

        // A lost reply: the echo server got the bytes (it sent them back), the client gets
        // a reset instead; the next connection works.
        proxy.lose_next_reply(true);
        assert!(!proxy.reply_lost());
        fresh.write_all(b"lost").await.unwrap();
        let read = tokio::time::timeout(Duration::from_secs(2), fresh.read(&mut buf)).await;
        assert!(
            matches!(read, Ok(Ok(0)) | Ok(Err(_))),
            "a lost reply came through: {read:?}"
        );
        assert!(proxy.reply_lost());
        let mut after = TcpStream::connect(proxy.addr()).await.unwrap();
        round_trip(&mut after, b"after").await;

        // Stalled: the open connection carries nothing more, a new one works.
        proxy.stall_open_connections();
        after.write_all(b"stuck").await.unwrap();
        let stuck = tokio::time::timeout(Duration::from_millis(200), after.read(&mut buf)).await;
        assert!(stuck.is_err(), "a stalled connection forwarded something");
        let mut new = TcpStream::connect(proxy.addr()).await.unwrap();
        round_trip(&mut new, b"new").await;
    }
}
