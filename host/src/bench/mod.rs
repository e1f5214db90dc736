//! `kefu bench`, the load generator: drives a gateway (one it is pointed at, or one it starts)
//! and reports what a user would ask of it.
//!
//! | module | job |
//! |---|---|
//! | `link` | a bare framed-TCP client on the core codec (cheap: no SDK engine) |
//! | [`pairs`] | N publisher/subscriber pairs: throughput end to end, latency percentiles |
//! | [`conns`] | connection scale: idle WebSocket sessions and the gateway's memory per one |
//! | [`latency`] | HDR histograms and percentiles |
//! | [`procstat`] | CPU and memory of a process from `/proc`, the load average |
//! | [`process`] | a `kefu gateway` process with durable defaults in a temporary folder |

pub mod conns;
pub mod latency;
mod link;
pub mod pairs;
pub mod process;
pub mod procstat;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use self::latency::ms;
use self::procstat::mib;

/// Why a benchmark run failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BenchError {
    /// The options make no sense together.
    #[error("{0}")]
    Config(String),
    /// A socket or file failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The gateway closed a connection.
    #[error("the gateway closed a connection")]
    Closed,
    /// The gateway answered a request with an error code.
    #[error("{what} refused with {code}: {text}")]
    Refused {
        /// The request.
        what: &'static str,
        /// Its code.
        code: u16,
        /// Its text.
        text: String,
    },
    /// The gateway sent something that is not the protocol.
    #[error("protocol: {0}")]
    Protocol(String),
    /// An acknowledged message never arrived, or arrived out of order.
    #[error("lost: {0}")]
    Lost(String),
    /// The gateway process to measure does not exist.
    #[error("no process {0} to measure")]
    NoProcess(u32),
}

/// The wall clock, ms since the Unix epoch.
pub(crate) fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Raises this process's open-file soft limit to its hard limit; the limit now in force.
pub fn raise_open_files() -> u64 {
    rlimit::increase_nofile_limit(u64::MAX).unwrap_or(0)
}

/// `kefu bench` options.
#[derive(Clone, Debug, clap::Args)]
pub struct BenchArgs {
    /// Drive the gateway whose framed-TCP listener is here (default: start one).
    #[arg(long)]
    pub tcp: Option<SocketAddr>,
    /// The HTTP address of that gateway (for `--connections`).
    #[arg(long)]
    pub http: Option<SocketAddr>,
    /// The process id of that gateway (for its CPU and memory).
    #[arg(long)]
    pub pid: Option<u32>,
    /// Where a started gateway keeps its data (a fresh folder inside it, removed afterwards).
    #[arg(long, default_value_os_t = std::env::temp_dir())]
    pub data_parent: PathBuf,
    /// Publisher/subscriber pairs.
    #[arg(long, default_value_t = 1)]
    pub pairs: usize,
    /// `pub`s each publisher keeps unanswered.
    #[arg(long, default_value_t = 1)]
    pub window: usize,
    /// Content bytes per message (at least 8).
    #[arg(long, default_value_t = 100)]
    pub size: usize,
    /// Seconds measured.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Seconds of load before the measurement starts.
    #[arg(long, default_value_t = 2.0)]
    pub warmup: f64,
    /// Messages per second, all publishers together (default: as fast as the windows allow).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Instead of pairs: open this many idle WebSocket sessions (hi + token login) and report
    /// the gateway's memory per connection.
    #[arg(long)]
    pub connections: Option<usize>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Runs `kefu bench`: prints the report on stdout.
pub async fn main(args: BenchArgs) -> Result<(), String> {
    let limit = raise_open_files();
    let started = match args.tcp {
        Some(_) => None,
        None => {
            let exe = std::env::current_exe().map_err(|e| format!("own binary: {e}"))?;
            Some(
                process::GatewayProcess::start(&exe, &args.data_parent)
                    .map_err(|e| e.to_string())?,
            )
        }
    };
    let tcp = args.tcp.or(started.as_ref().map(|g| g.tcp));
    let http = args.http.or(started.as_ref().map(|g| g.http));
    let pid = args
        .pid
        .or(started.as_ref().map(process::GatewayProcess::pid));
    let tcp = tcp.ok_or("no gateway address")?;
    if let Some(n) = args.connections {
        let http = http.ok_or("--connections needs the gateway's --http address")?;
        let pid = pid.ok_or("--connections needs the gateway's --pid")?;
        // Each connection takes a file here; leave some for everything else.
        let most = usize::try_from(limit.saturating_sub(64)).unwrap_or(usize::MAX);
        if n > most {
            return Err(format!(
                "{n} connections need more files than this process may open ({limit}); at most {most}"
            ));
        }
        let cfg = conns::ConnsConfig {
            http,
            tcp,
            connections: n,
            gateway_pid: pid,
        };
        let report = conns::run(&cfg).await.map_err(|e| e.to_string())?;
        print_conns(&report, args.json);
        return Ok(());
    }
    let cfg = pairs::PairsConfig {
        tcp,
        pairs: args.pairs,
        window: args.window,
        size: args.size,
        warmup: Duration::from_secs_f64(args.warmup),
        duration: Duration::from_secs_f64(args.duration),
        rate: args.rate,
        gateway_pid: pid,
    };
    let report = pairs::run(&cfg).await.map_err(|e| e.to_string())?;
    print_pairs(&cfg, &report, args.json);
    drop(started);
    Ok(())
}

fn print_pairs(cfg: &pairs::PairsConfig, r: &pairs::PairsReport, json: bool) {
    let l = &r.latency;
    if json {
        let usage = |u: Option<procstat::Usage>| {
            u.map(|u| serde_json::json!({"cores": u.cores, "rss": u.rss, "hwm": u.hwm}))
        };
        let v = serde_json::json!({
            "system": "kefu",
            "pairs": cfg.pairs,
            "window": cfg.window,
            "size": cfg.size,
            "duration_s": r.elapsed.as_secs_f64(),
            "rate": cfg.rate,
            "delivered": r.delivered,
            "acknowledged": r.acknowledged,
            "msgs_per_s": r.rate(),
            "total": r.total,
            "redelivered": r.redelivered,
            "latency_ms": {
                "p50": l.p50.as_secs_f64() * 1e3,
                "p90": l.p90.as_secs_f64() * 1e3,
                "p99": l.p99.as_secs_f64() * 1e3,
                "p999": l.p999.as_secs_f64() * 1e3,
                "max": l.max.as_secs_f64() * 1e3,
            },
            "gateway": usage(r.gateway),
            "generator": usage(r.generator),
            "load": r.load,
        });
        println!("{v}");
        return;
    }
    let rate = cfg.rate.map_or_else(
        || "as fast as the windows allow".to_owned(),
        |r| format!("{r:.0} msg/s offered"),
    );
    println!(
        "kefu bench: {} pairs, window {}, {}-byte messages, {:.1} s measured, {rate}",
        cfg.pairs,
        cfg.window,
        cfg.size,
        r.elapsed.as_secs_f64()
    );
    println!(
        "load average at start: {:.2} {:.2} {:.2}",
        r.load[0], r.load[1], r.load[2]
    );
    println!(
        "delivered   {:.0} msg/s end to end ({} messages; {} acknowledged in the interval)",
        r.rate(),
        r.delivered,
        r.acknowledged
    );
    println!(
        "latency     p50 {} ms, p90 {} ms, p99 {} ms, p99.9 {} ms, max {} ms",
        ms(l.p50),
        ms(l.p90),
        ms(l.p99),
        ms(l.p999),
        ms(l.max)
    );
    println!(
        "checked     all {} acknowledged messages arrived once, in order ({} re-pushed after a timeout)",
        r.total, r.redelivered
    );
    if let Some(g) = r.gateway {
        println!(
            "gateway     CPU {:.2} cores, RSS {} MiB (peak {} MiB)",
            g.cores,
            mib(g.rss),
            mib(g.hwm)
        );
    }
    if let Some(g) = r.generator {
        println!(
            "generator   CPU {:.2} cores, RSS {} MiB",
            g.cores,
            mib(g.rss)
        );
    }
}

fn print_conns(r: &conns::ConnsReport, json: bool) {
    if json {
        let v = serde_json::json!({
            "connections": r.connections,
            "open_s": r.elapsed.as_secs_f64(),
            "rss_before": r.before.rss,
            "rss_after": r.after.rss,
            "hwm_after": r.after.hwm,
            "bytes_per_connection": r.per_connection(),
            "load": r.load,
        });
        println!("{v}");
        return;
    }
    println!(
        "kefu bench: {} idle WebSocket sessions (upgrade + hi + token login), opened in {:.1} s",
        r.connections,
        r.elapsed.as_secs_f64()
    );
    println!(
        "load average at start: {:.2} {:.2} {:.2}",
        r.load[0], r.load[1], r.load[2]
    );
    println!(
        "gateway RSS {} MiB before, {} MiB after (peak {} MiB): {:.2} KiB per connection",
        mib(r.before.rss),
        mib(r.after.rss),
        mib(r.after.hwm),
        r.per_connection() / 1024.0
    );
}
