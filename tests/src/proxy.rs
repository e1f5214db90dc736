//! A fault-injecting TCP proxy that understands the core's framing (`kefu_core::frame`): it
//! reassembles the byte stream into whole frames in each direction and then, by a seeded dice
//! per connection and direction, delays them, stalls, drops whole frames, duplicates them,
//! swaps neighbours, splits one frame over several small writes, and cuts the connection at
//! random moments. The same seed makes the same decisions frame by frame (the timing of the
//! sockets around it is the machine's).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use kefu_core::frame::{self, Deframer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::Dice;

/// How often each fault happens, per frame, in per mille (‰), and how strong it is.
#[derive(Clone, Copy, Debug)]
pub struct Faults {
    /// Frames delayed by up to `delay_ms`.
    pub delay: u32,
    /// Longest delay, ms.
    pub delay_ms: u64,
    /// Stalls: the direction stops for `stall_ms` (the peer sees nothing, then a burst).
    pub stall: u32,
    /// Shortest and longest stall, ms.
    pub stall_ms: (u64, u64),
    /// Whole frames dropped.
    pub drop: u32,
    /// Frames sent twice.
    pub duplicate: u32,
    /// Frames held back and sent after the next one.
    pub reorder: u32,
    /// Frames written in several small pieces.
    pub split: u32,
    /// Connections cut (both ways) at this frame.
    pub cut: u32,
}

impl Faults {
    /// The mix the fault suite uses: every fault, often enough to hit every path in a few
    /// hundred frames, rare enough that conversations still make progress.
    pub fn standard() -> Faults {
        Faults {
            delay: 150,
            delay_ms: 15,
            stall: 3,
            stall_ms: (200, 1200),
            drop: 15,
            duplicate: 20,
            reorder: 20,
            split: 60,
            cut: 4,
        }
    }

    /// No faults at all (a plain relay).
    pub fn none() -> Faults {
        Faults {
            delay: 0,
            delay_ms: 0,
            stall: 0,
            stall_ms: (0, 0),
            drop: 0,
            duplicate: 0,
            reorder: 0,
            split: 0,
            cut: 0,
        }
    }
}

/// What the proxy did, counted.
#[derive(Debug, Default)]
pub struct ProxyStats {
    /// Connections accepted.
    pub connections: AtomicU64,
    /// Frames seen (both directions).
    pub frames: AtomicU64,
    /// Frames delayed.
    pub delayed: AtomicU64,
    /// Stalls.
    pub stalled: AtomicU64,
    /// Frames dropped.
    pub dropped: AtomicU64,
    /// Frames duplicated.
    pub duplicated: AtomicU64,
    /// Frames reordered.
    pub reordered: AtomicU64,
    /// Frames split over several writes.
    pub split: AtomicU64,
    /// Connections cut.
    pub cuts: AtomicU64,
}

impl std::fmt::Display for ProxyStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
        write!(
            f,
            "connections {} frames {} delayed {} stalls {} dropped {} duplicated {} reordered {} split {} cuts {}",
            n(&self.connections),
            n(&self.frames),
            n(&self.delayed),
            n(&self.stalled),
            n(&self.dropped),
            n(&self.duplicated),
            n(&self.reordered),
            n(&self.split),
            n(&self.cuts)
        )
    }
}

/// A running proxy; stops accepting when dropped (connections already open keep going until
/// cut or closed).
pub struct Proxy {
    /// Where clients connect.
    pub addr: SocketAddr,
    /// The counters.
    pub stats: Arc<ProxyStats>,
    calm: Arc<AtomicBool>,
    cut_all: watch::Sender<u64>,
    accept: tokio::task::JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut_all.send_modify(|n| *n += 1);
    }
}

const MAX_BODY: usize = 64 * 1024;

impl Proxy {
    /// Starts a proxy on an ephemeral loopback port in front of `target`.
    pub async fn start(target: SocketAddr, seed: u64, faults: Faults) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("proxy binds");
        let addr = listener.local_addr().expect("proxy address");
        let stats = Arc::new(ProxyStats::default());
        let calm = Arc::new(AtomicBool::new(false));
        let (cut_all, cut_rx) = watch::channel(0u64);
        let accept = tokio::spawn({
            let (stats, calm) = (stats.clone(), calm.clone());
            async move {
                let mut n = 0u64;
                while let Ok((client, _)) = listener.accept().await {
                    n += 1;
                    stats.connections.fetch_add(1, Ordering::Relaxed);
                    let conn = Conn {
                        faults,
                        stats: stats.clone(),
                        calm: calm.clone(),
                    };
                    tokio::spawn(conn.run(client, target, seed, n, cut_rx.clone()));
                }
            }
        });
        Proxy {
            addr,
            stats,
            calm,
            cut_all,
            accept,
        }
    }

    /// Stops (`true`) or resumes (`false`) injecting faults; a calm proxy relays frames as they
    /// come, so a scenario can settle at its end.
    pub fn calm(&self, calm: bool) {
        self.calm.store(calm, Ordering::Relaxed);
    }

    /// Cuts every open connection.
    pub fn cut_all(&self) {
        self.cut_all.send_modify(|n| *n += 1);
    }
}

#[derive(Clone)]
struct Conn {
    faults: Faults,
    stats: Arc<ProxyStats>,
    calm: Arc<AtomicBool>,
}

impl Conn {
    async fn run(
        self,
        client: TcpStream,
        target: SocketAddr,
        seed: u64,
        n: u64,
        mut cut_all: watch::Receiver<u64>,
    ) {
        let Ok(server) = TcpStream::connect(target).await else {
            return; // the gateway is down: the client sees its connection closed
        };
        let _ = client.set_nodelay(true);
        let _ = server.set_nodelay(true);
        let (cr, cw) = client.into_split();
        let (sr, sw) = server.into_split();
        let (cut_tx, cut_rx) = watch::channel(false);
        let up = tokio::spawn(self.clone().pump(
            cr,
            sw,
            Dice::new(seed, n * 2),
            cut_tx.clone(),
            cut_rx.clone(),
        ));
        let down = tokio::spawn(self.clone().pump(
            sr,
            cw,
            Dice::new(seed, n * 2 + 1),
            cut_tx.clone(),
            cut_rx,
        ));
        cut_all.borrow_and_update();
        tokio::select! {
            _ = cut_all.changed() => { let _ = cut_tx.send(true); }
            _ = async { let _ = up.await; let _ = down.await; } => {}
        }
    }

    /// Moves frames from `from` to `to` through the dice until either side closes or the
    /// connection is cut.
    async fn pump(
        self,
        mut from: OwnedReadHalf,
        mut to: OwnedWriteHalf,
        mut dice: Dice,
        cut_tx: watch::Sender<bool>,
        mut cut: watch::Receiver<bool>,
    ) {
        let mut deframer: Box<Deframer<{ MAX_BODY + frame::OVERHEAD }>> = Box::new(Deframer::new());
        let mut held: Option<Vec<u8>> = None;
        let mut out = vec![0u8; MAX_BODY + frame::OVERHEAD];
        loop {
            // Whole frames first.
            while let Some(next) = deframer.next_frame() {
                let Ok(body) = next else { continue };
                let n = frame::encode_frame(body, &mut out).expect("a frame fits");
                let f = out[..n].to_vec();
                self.stats.frames.fetch_add(1, Ordering::Relaxed);
                match self.one(&mut to, &mut dice, f, &mut held).await {
                    Ok(true) => {}
                    Ok(false) => {
                        self.stats.cuts.fetch_add(1, Ordering::Relaxed);
                        let _ = cut_tx.send(true);
                        return;
                    }
                    Err(_) => {
                        let _ = cut_tx.send(true);
                        return;
                    }
                }
            }
            // A frame held back for reordering goes out if nothing overtakes it soon.
            let wait = if held.is_some() {
                Duration::from_millis(30)
            } else {
                Duration::from_secs(3600)
            };
            let spare = deframer.spare_capacity();
            tokio::select! {
                _ = cut.changed() => return,
                r = tokio::time::timeout(wait, from.read(spare)) => match r {
                    Err(_) => {
                        if let Some(h) = held.take()
                            && to.write_all(&h).await.is_err()
                        {
                            let _ = cut_tx.send(true);
                            return;
                        }
                    }
                    Ok(Ok(0)) | Ok(Err(_)) => {
                        if let Some(h) = held.take() {
                            let _ = to.write_all(&h).await;
                        }
                        let _ = to.shutdown().await;
                        // The other direction keeps going until its side closes.
                        return;
                    }
                    Ok(Ok(n)) => deframer.commit(n),
                },
            }
        }
    }

    /// Applies the dice to one frame; `Ok(false)` = cut the connection here.
    async fn one(
        &self,
        to: &mut OwnedWriteHalf,
        dice: &mut Dice,
        f: Vec<u8>,
        held: &mut Option<Vec<u8>>,
    ) -> std::io::Result<bool> {
        let x = self.faults;
        // Roll every die each frame, calm or not, so a seed's decisions do not shift.
        let rolls = [
            dice.chance(x.cut),
            dice.chance(x.stall),
            dice.chance(x.delay),
            dice.chance(x.drop),
            dice.chance(x.duplicate),
            dice.chance(x.reorder),
            dice.chance(x.split),
        ];
        let stall_ms = dice.range(x.stall_ms.0, x.stall_ms.1.max(x.stall_ms.0));
        let delay_ms = dice.range(0, x.delay_ms);
        let pieces = dice.range(2, 6) as usize;
        if self.calm.load(Ordering::Relaxed) {
            if let Some(h) = held.take() {
                to.write_all(&h).await?;
            }
            to.write_all(&f).await?;
            return Ok(true);
        }
        let [cut, stall, delay, drop, duplicate, reorder, split] = rolls;
        if cut {
            return Ok(false);
        }
        if stall {
            self.stats.stalled.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(stall_ms)).await;
        }
        if delay {
            self.stats.delayed.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        }
        if drop {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            return Ok(true);
        }
        if reorder && held.is_none() {
            self.stats.reordered.fetch_add(1, Ordering::Relaxed);
            *held = Some(f);
            return Ok(true);
        }
        let copies = if duplicate {
            self.stats.duplicated.fetch_add(1, Ordering::Relaxed);
            2
        } else {
            1
        };
        for _ in 0..copies {
            if split && f.len() > 1 {
                self.stats.split.fetch_add(1, Ordering::Relaxed);
                let step = f.len().div_ceil(pieces).max(1);
                for piece in f.chunks(step) {
                    to.write_all(piece).await?;
                    to.flush().await?;
                    tokio::task::yield_now().await;
                }
            } else {
                to.write_all(&f).await?;
            }
        }
        if let Some(h) = held.take() {
            to.write_all(&h).await?;
        }
        Ok(true)
    }
}
