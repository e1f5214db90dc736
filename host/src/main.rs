//! The `kefu` command: `kefu gateway` serves; `kefu user add` and `kefu device add` manage
//! accounts offline, in the same data folder; `kefu chat` is the terminal client; `kefu bench`
//! drives a gateway and measures it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use base64::Engine;
use clap::{Args, Parser, Subcommand};
use kefu_host::gateway::config::TlsFiles;
use kefu_host::gateway::context::now_ms;
use kefu_host::gateway::listening::Listening;
use kefu_host::gateway::policy::Policy;
use kefu_host::gateway::{GatewayConfig, auth, names, server};
use kefu_host::store::{NewUser, Role, Store, StoreError};

/// kefu: a reliable-delivery IM stack for customer-service chat.
#[derive(Parser)]
#[command(name = "kefu", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway (WebSocket at /v0/channels, framed TCP, /metrics, /healthz).
    Gateway(GatewayArgs),
    /// Manage user accounts (offline, in the data folder).
    #[command(subcommand)]
    User(UserCommand),
    /// Manage counter-terminal devices (offline, in the data folder).
    #[command(subcommand)]
    Device(DeviceCommand),
    /// Drive a gateway with publisher/subscriber pairs or idle connections and report
    /// throughput, latency, CPU and memory.
    Bench(kefu_host::bench::BenchArgs),
    /// Chat in the terminal: conversations, messages, receipts, agent desk commands. The
    /// password comes from KEFU_PASSWORD or a prompt (not echoed).
    Chat(ChatArgs),
}

#[derive(Args)]
struct ChatArgs {
    /// Login name.
    #[arg(long)]
    user: String,
    /// Gateway URL: ws://, wss:// (TLS) or tcp:// (framed binary).
    #[arg(long, default_value = "ws://127.0.0.1:6060", env = "KEFU_URL")]
    url: String,
    /// PEM file of extra CA certificates to trust for wss://.
    #[arg(long, value_name = "PEM")]
    ca: Option<PathBuf>,
}

#[derive(Args)]
struct DataArg {
    /// The gateway's data folder.
    #[arg(long, default_value = "kefu-data", env = "KEFU_DATA")]
    data: PathBuf,
}

#[derive(Args)]
struct GatewayArgs {
    #[command(flatten)]
    data: DataArg,
    /// HTTP address: WebSocket, /metrics, /healthz.
    #[arg(long, default_value = "127.0.0.1:6060")]
    http: SocketAddr,
    /// Serve the HTTP address over TLS (wss://, https://) with this PEM certificate chain
    /// (leaf first). Needs --tls-key. The TCP address stays plain.
    #[arg(long, requires = "tls_key", value_name = "PEM")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key (PKCS#8, PKCS#1 or SEC1) of --tls-cert.
    #[arg(long, requires = "tls_cert", value_name = "PEM")]
    tls_key: Option<PathBuf>,
    /// TCP address for the framed binary protocol.
    #[arg(long, default_value = "127.0.0.1:6061")]
    tcp: SocketAddr,
    /// Largest message content accepted, bytes.
    #[arg(long, default_value_t = 16 * 1024)]
    max_content: usize,
    /// Requests per second per session (0 = unlimited).
    #[arg(long, default_value_t = 1000)]
    rate: u32,
    /// Burst allowance of the per-session rate limit.
    #[arg(long, default_value_t = 2000)]
    burst: u32,
    /// A file of sensitive words, one per line: messages containing one are refused (422).
    #[arg(long)]
    words: Option<PathBuf>,
    /// Seconds a connection has to log in.
    #[arg(long, default_value_t = 10)]
    handshake_timeout: u64,
    /// Seconds of silence before a connection is closed.
    #[arg(long, default_value_t = 90)]
    idle_timeout: u64,
    /// Refuse online account creation (`acc`); accounts come from `kefu user add`.
    #[arg(long)]
    no_signup: bool,
    /// Consultations one agent gets at most by automatic assignment.
    #[arg(long, default_value_t = 5)]
    max_agent_load: u32,
    /// Log filter (tracing's env-filter syntax), e.g. `info`, `kefu_host=debug`.
    #[arg(long, default_value = "info", env = "KEFU_LOG")]
    log: String,
}

#[derive(Subcommand)]
enum UserCommand {
    /// Create a user.
    Add {
        /// Login name.
        name: String,
        /// Password (or set KEFU_PASSWORD).
        #[arg(long, env = "KEFU_PASSWORD", hide_env_values = true)]
        password: String,
        /// Display name (defaults to the login name).
        #[arg(long)]
        display: Option<String>,
        /// An agent: takes consultations.
        #[arg(long)]
        agent: bool,
        /// A supervisor: an agent who may join and transfer any consultation.
        #[arg(long)]
        supervisor: bool,
        #[command(flatten)]
        data: DataArg,
    },
}

#[derive(Subcommand)]
enum DeviceCommand {
    /// Create a device account (an agent that logs in with a token) and print its token.
    Add {
        /// Device name (its login name).
        name: String,
        /// Days the token stays valid (0 = never expires).
        #[arg(long, default_value_t = 0)]
        days: u64,
        #[command(flatten)]
        data: DataArg,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    return_large_blocks_to_the_system();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("kefu: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Gateway(args) => gateway(args).await,
            Command::User(UserCommand::Add {
                name,
                password,
                display,
                agent,
                supervisor,
                data,
            }) => {
                let role = if supervisor {
                    Role::Supervisor
                } else if agent {
                    Role::Agent
                } else {
                    Role::Customer
                };
                user_add(&data.data, name, &password, display, role).await
            }
            Command::Device(DeviceCommand::Add { name, days, data }) => {
                device_add(&data.data, name, days).await
            }
            Command::Chat(args) => chat(args).await,
            Command::Bench(args) => kefu_host::bench::main(args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kefu: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Makes the allocator hand every block of 1 MiB or more straight back to the system when it is
/// freed. glibc otherwise raises that threshold to the largest block freed so far, so each
/// password hash's 19 MiB (argon2) stayed in the heap of whichever thread ran it: the gateway's
/// resident memory grew by about 280 MiB per hundred logins and never came down.
fn return_large_blocks_to_the_system() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes a setting of the allocator; it is called before any other
    // thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
}

async fn gateway(args: GatewayArgs) -> Result<(), String> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&args.log)
                .map_err(|e| format!("bad --log filter: {e}"))?,
        )
        .with_writer(std::io::stderr)
        .init();
    // One file per connection: allow as many as the hard limit does.
    kefu_host::bench::raise_open_files();
    let words = match &args.words {
        Some(path) => Policy::load_words(path).map_err(|e| format!("{}: {e}", path.display()))?,
        None => Vec::new(),
    };
    let cfg = GatewayConfig {
        http_addr: args.http,
        tls: args
            .tls_cert
            .zip(args.tls_key)
            .map(|(cert, key)| TlsFiles { cert, key }),
        tcp_addr: args.tcp,
        data_dir: args.data.data,
        max_content: args.max_content,
        rate_per_sec: args.rate,
        rate_burst: args.burst,
        words,
        handshake_timeout: Duration::from_secs(args.handshake_timeout),
        idle_timeout: Duration::from_secs(args.idle_timeout),
        open_signup: !args.no_signup,
        max_agent_load: args.max_agent_load,
        ..GatewayConfig::default()
    };
    let running = server::start(cfg).await.map_err(|e| e.to_string())?;
    // One line on stdout for scripts and tests (ports may have been chosen by the OS).
    let listening = Listening {
        http: running.http_addr,
        tcp: running.tcp_addr,
        tls: running.tls,
    };
    println!("{listening}");
    let stopper = running.stopper();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("signal received: shutting down");
        let _ = stopper.send(true);
    });
    running.wait().await;
    Ok(())
}

/// `kefu chat`: the password comes from `KEFU_PASSWORD` or a prompt without echo.
async fn chat(args: ChatArgs) -> Result<(), String> {
    let password = match std::env::var("KEFU_PASSWORD") {
        Ok(p) => p,
        Err(_) => kefu_host::chat::prompt_password(&args.user)?,
    };
    kefu_host::chat::run(kefu_host::chat::ChatOptions {
        url: args.url,
        user: args.user,
        password,
        ca: args.ca,
    })
    .await
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

async fn user_add(
    data: &Path,
    login: String,
    password: &str,
    display: Option<String>,
    role: Role,
) -> Result<(), String> {
    auth::parse_basic(format!("{login}:{password}").as_bytes()).map_err(|e| e.to_string())?;
    let hash = auth::hash_password(password).map_err(|e| e.to_string())?;
    let store = server::open_store(data, true).map_err(|e| e.to_string())?;
    let user = store
        .add_user(NewUser {
            id: names::new_user_id(),
            name: display.unwrap_or_else(|| login.clone()),
            login,
            pass_hash: Some(hash),
            role,
        })
        .await
        .map_err(taken)?;
    store.close().await;
    println!("{}", user.id);
    Ok(())
}

async fn device_add(data: &Path, name: String, days: u64) -> Result<(), String> {
    auth::parse_basic(format!("{name}:x").as_bytes()).map_err(|e| e.to_string())?;
    let key = server::open_key(data).map_err(|e| e.to_string())?;
    let store = server::open_store(data, true).map_err(|e| e.to_string())?;
    let user = store
        .add_user(NewUser {
            id: names::new_user_id(),
            login: name.clone(),
            name,
            pass_hash: None,
            role: Role::Agent,
        })
        .await
        .map_err(taken)?;
    store.close().await;
    let expires_ms = if days == 0 {
        0
    } else {
        now_ms().saturating_add(days.saturating_mul(24 * 3600 * 1000))
    };
    let token = key.issue(&user.id, user.token_gen, expires_ms);
    eprintln!("device {} is user {}", user.login, user.id);
    println!(
        "{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(token)
    );
    Ok(())
}

fn taken(e: StoreError) -> String {
    match e {
        StoreError::Conflict(_) => "that name is taken".to_owned(),
        e => e.to_string(),
    }
}
