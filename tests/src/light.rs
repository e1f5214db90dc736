//! A light client: `kefu_core`'s engine driven directly over framed TCP, with small capacities,
//! so thousands fit in one test. It follows one topic, hands every message to a [`Probe`]
//! (seqs in the order handed) and records when it tried to connect and what reconnect delay
//! the engine planned after each disconnect.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kefu_core::engine::{Command, Credentials, Engine, EngineConfig, Event};
use kefu_core::time::Instant as CoreInstant;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;

/// The light engine: 64 messages of up to 512 bytes, 2 topics, 8 unacknowledged sends,
/// 4 KiB frames.
pub type LightEngine = Engine<64, 512, 2, 8, 4096>;

/// What one light client saw, shared with the test.
#[derive(Debug, Default)]
pub struct Probe {
    /// Connection attempts (when the engine asked for one).
    pub attempts: Vec<Instant>,
    /// Whether each attempt connected.
    pub attempt_ok: Vec<bool>,
    /// When each connection was lost.
    pub disconnects: Vec<Instant>,
    /// The reconnect delay the engine planned right after each lost connection.
    pub planned: Vec<Duration>,
    /// Logins (the engine's `Connected`).
    pub logins: usize,
    /// Subscriptions established (once per login).
    pub subscribed: usize,
    /// Seqs handed over, in order.
    pub seqs: Vec<u64>,
}

/// A shared [`Probe`].
pub type SharedProbe = Arc<Mutex<Probe>>;

/// How a light client logs in and what it follows.
#[derive(Clone, Debug)]
pub struct LightConfig {
    /// The gateway's framed-TCP address.
    pub addr: SocketAddr,
    /// Login token.
    pub token: Vec<u8>,
    /// Device id (unique per client: the gateway keeps marks per device).
    pub device: String,
    /// The topic followed.
    pub topic: String,
    /// Engine seed (jitter, ids).
    pub seed: u64,
    /// Reconnect backoff base and cap, ms, and jitter percent.
    pub backoff_ms: (u64, u64, u8),
}

/// Runs a light client until `stop` turns true.
pub async fn run(cfg: LightConfig, probe: SharedProbe, mut stop: watch::Receiver<bool>) {
    let base = Instant::now();
    let now = || CoreInstant::from_micros(base.elapsed().as_micros() as u64);
    let at = |t: CoreInstant| base + Duration::from_micros(t.as_micros());
    let creds = Credentials::token(&cfg.token).expect("token fits");
    let mut ecfg = EngineConfig::new(&cfg.device, creds);
    ecfg.backoff.base = kefu_core::time::Duration::from_millis(cfg.backoff_ms.0);
    ecfg.backoff.cap = kefu_core::time::Duration::from_millis(cfg.backoff_ms.1);
    ecfg.backoff.jitter_percent = cfg.backoff_ms.2;
    ecfg.backoff.stable_after = kefu_core::time::Duration::from_secs(1);
    ecfg.request_timeout = kefu_core::time::Duration::from_secs(30);
    ecfg.wall_ms_at_zero = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let mut e: Box<LightEngine> = Box::new(Engine::new(now(), ecfg, cfg.seed));
    e.subscribe(&cfg.topic).expect("subscribe");
    let mut conn: Option<TcpStream> = None;
    let mut out = vec![0u8; 4096];
    let mut inbuf = vec![0u8; 8192];
    let lost = |e: &mut LightEngine, probe: &SharedProbe| {
        let t = now();
        e.handle_disconnected(t);
        let planned = e
            .poll_timeout()
            .map_or(Duration::ZERO, |w| at(w).saturating_duration_since(at(t)));
        let mut p = probe.lock().expect("probe");
        p.disconnects.push(Instant::now());
        p.planned.push(planned);
    };
    loop {
        while let Some(cmd) = e.poll_command() {
            match cmd {
                Command::Connect => {
                    probe.lock().expect("probe").attempts.push(Instant::now());
                    let c =
                        tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(cfg.addr))
                            .await;
                    let ok = matches!(c, Ok(Ok(_)));
                    probe.lock().expect("probe").attempt_ok.push(ok);
                    match c {
                        Ok(Ok(s)) => {
                            let _ = s.set_nodelay(true);
                            conn = Some(s);
                            e.handle_connected(now());
                        }
                        _ => e.handle_connect_failed(now()),
                    }
                }
                Command::Close => {
                    conn = None;
                    lost(&mut e, &probe);
                }
            }
        }
        if let Some(s) = conn.as_mut() {
            let mut broken = false;
            while let Some(n) = e.poll_transmit(now(), &mut out) {
                if s.write_all(&out[..n]).await.is_err() {
                    broken = true;
                    break;
                }
            }
            if broken {
                conn = None;
                lost(&mut e, &probe);
                continue;
            }
        }
        drain(&mut e, &probe);
        if *stop.borrow() {
            e.close();
            return;
        }
        let wake = e.poll_timeout().map(at);
        let sleep = async {
            match wake {
                Some(w) => tokio::time::sleep_until(w).await,
                None => std::future::pending().await,
            }
        };
        let read = async {
            match conn.as_mut() {
                Some(s) => s.read(&mut inbuf).await.unwrap_or(0),
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = stop.changed() => {}
            _ = sleep => e.handle_timeout(now()),
            n = read => {
                if n == 0 {
                    conn = None;
                    lost(&mut e, &probe);
                } else {
                    let mut off = 0;
                    while off < n {
                        let took = e.handle_bytes(now(), &inbuf[off..n]);
                        off += took;
                        let handed = drain(&mut e, &probe);
                        if took == 0 && handed == 0 {
                            break; // cannot happen: a full queue always has events to drain
                        }
                    }
                }
            }
        }
    }
}

/// Hands the engine's events to the probe; how many there were.
fn drain(e: &mut LightEngine, probe: &SharedProbe) -> usize {
    let mut n = 0;
    while let Some(ev) = e.poll_event() {
        n += 1;
        let mut p = probe.lock().expect("probe");
        match ev {
            Event::Connected => p.logins += 1,
            Event::Subscribed { .. } => p.subscribed += 1,
            Event::MessageAdded {
                seq: Some(seq),
                history: false,
                ..
            } => p.seqs.push(seq),
            _ => {}
        }
    }
    n
}
