//! `compare`: the same publisher/subscriber pattern against kefu, mosquitto (MQTT QoS 1) and
//! NATS JetStream (file storage), all already running on this machine, printed as one table
//! with the ratios. `tests/bench/compare.sh` starts the three servers and runs this.
//!
//! | module | job |
//! |---|---|
//! | `common` | the run's clock, payload stamps, per-task results, measuring a run |
//! | `mqtt` | the pattern over MQTT QoS 1 (rumqttc) |
//! | `nats` | the pattern over JetStream with publish acks (async-nats) |
//!
//! kefu runs through `kefu_host::bench::pairs`, the load generator of `kefu bench`.

mod common;
mod mqtt;
mod nats;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use kefu_host::bench::latency::ms;
use kefu_host::bench::pairs::{self, PairsConfig};

use common::{Measured, Pattern};

/// Runs one pattern on kefu, mosquitto and JetStream and prints one table.
#[derive(Parser)]
struct Args {
    /// kefu's framed-TCP address.
    #[arg(long)]
    kefu: SocketAddr,
    /// kefu's gateway process.
    #[arg(long)]
    kefu_pid: Option<u32>,
    /// mosquitto's MQTT address.
    #[arg(long)]
    mqtt: SocketAddr,
    /// mosquitto's process.
    #[arg(long)]
    mqtt_pid: Option<u32>,
    /// nats-server's address (JetStream enabled).
    #[arg(long)]
    nats: SocketAddr,
    /// nats-server's process.
    #[arg(long)]
    nats_pid: Option<u32>,
    /// Seconds measured per run.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds of load before each measurement.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Payload bytes.
    #[arg(long, default_value_t = 100)]
    size: usize,
    /// Pairs of the many-pairs row.
    #[arg(long, default_value_t = 100)]
    many: usize,
    /// Window of each publisher in the many-pairs row.
    #[arg(long, default_value_t = 1)]
    many_window: usize,
}

/// One row: a pattern and what each system did with it.
struct Row {
    pattern: Pattern,
    kefu: Result<Measured, String>,
    mqtt: Result<Measured, String>,
    nats: Result<Measured, String>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    kefu_host::bench::raise_open_files();
    let base = Pattern {
        pairs: 1,
        window: 1,
        size: args.size,
        warmup: Duration::from_secs_f64(args.warmup),
        duration: Duration::from_secs_f64(args.duration),
    };
    let patterns = [
        base,
        Pattern { window: 64, ..base },
        Pattern {
            pairs: args.many,
            window: args.many_window,
            ..base
        },
    ];
    let mut rows = Vec::new();
    for pattern in patterns {
        eprintln!(
            "running {} pairs, window {}, {} bytes ...",
            pattern.pairs, pattern.window, pattern.size
        );
        let kefu = kefu(&args, &pattern, None).await;
        let mqtt = mqtt::run(args.mqtt, args.mqtt_pid, &pattern).await;
        let nats = nats::run(args.nats, args.nats_pid, &pattern).await;
        rows.push(Row {
            pattern,
            kefu,
            mqtt,
            nats,
        });
    }
    // kefu again at half the load it carried in the last row: the latency goal's point.
    let half = rows
        .last()
        .and_then(|r| r.kefu.as_ref().ok())
        .map(|m| m.rate / 2.0);
    let half_run = match half {
        Some(rate) => {
            eprintln!("running kefu at {rate:.0} msg/s ...");
            Some((rate, kefu(&args, &patterns[2], Some(rate)).await))
        }
        None => None,
    };
    print(&rows, half_run.as_ref());
    let failed = rows
        .iter()
        .any(|r| r.kefu.is_err() || r.mqtt.is_err() || r.nats.is_err())
        || half_run.as_ref().is_some_and(|(_, r)| r.is_err());
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// Runs `pattern` on kefu, paced to `rate` messages/s when given.
async fn kefu(args: &Args, pattern: &Pattern, rate: Option<f64>) -> Result<Measured, String> {
    let cfg = PairsConfig {
        tcp: args.kefu,
        pairs: pattern.pairs,
        window: pattern.window,
        size: pattern.size,
        warmup: pattern.warmup,
        duration: pattern.duration,
        rate,
        gateway_pid: args.kefu_pid,
    };
    let r = pairs::run(&cfg).await.map_err(|e| e.to_string())?;
    Ok(Measured {
        rate: r.rate(),
        latency: r.latency,
        server: r.gateway,
        load: r.load,
    })
}

fn cell(m: &Result<Measured, String>) -> String {
    match m {
        Ok(m) => format!(
            "{:>7.0}  p50 {:>6} p99 {:>6}  cpu {:>4}",
            m.rate,
            ms(m.latency.p50),
            ms(m.latency.p99),
            m.server.map_or("-".into(), |u| format!("{:.2}", u.cores))
        ),
        Err(_) => format!("{:>44}", "FAILED"),
    }
}

fn ratio(a: &Result<Measured, String>, b: &Result<Measured, String>) -> String {
    match (a, b) {
        (Ok(a), Ok(b)) if b.rate > 0.0 => format!("{:.2}", a.rate / b.rate),
        _ => "-".into(),
    }
}

fn print(rows: &[Row], half: Option<&(f64, Result<Measured, String>)>) {
    println!(
        "messages/s delivered end to end ({}-byte payloads; latency in ms, publish to arrival; cpu = server cores)",
        rows.first().map_or(0, |r| r.pattern.size)
    );
    println!(
        "| pairs x window | kefu (durable, fsync) | mosquitto QoS 1 | JetStream file | kefu/mosquitto | kefu/JetStream | load |"
    );
    println!("|---|---|---|---|---|---|---|");
    for r in rows {
        let load = r.kefu.as_ref().map_or(0.0, |m| m.load[0]);
        println!(
            "| {} x {} | {} | {} | {} | {} | {} | {:.2} |",
            r.pattern.pairs,
            r.pattern.window,
            cell(&r.kefu),
            cell(&r.mqtt),
            cell(&r.nats),
            ratio(&r.kefu, &r.mqtt),
            ratio(&r.kefu, &r.nats),
            load
        );
    }
    if let Some((rate, m)) = half {
        match m {
            Ok(m) => println!(
                "kefu at half its load ({rate:.0} msg/s offered): {:.0} delivered, p50 {} ms, p90 {} ms, p99 {} ms, p99.9 {} ms",
                m.rate,
                ms(m.latency.p50),
                ms(m.latency.p90),
                ms(m.latency.p99),
                ms(m.latency.p999)
            ),
            Err(e) => println!("kefu at half its load ({rate:.0} msg/s offered): FAILED: {e}"),
        }
    }
    for r in rows {
        for (name, m) in [
            ("kefu", &r.kefu),
            ("mosquitto", &r.mqtt),
            ("JetStream", &r.nats),
        ] {
            if let Err(e) = m {
                println!(
                    "{name}, {} x {}: FAILED: {e}",
                    r.pattern.pairs, r.pattern.window
                );
            }
        }
    }
}
