//! `e2e-peer`: one side of a conversation in a process of its own, for the suite that kills
//! clients (`tests/client_kill.rs`). It runs `kefu_tests::sdk::drive` on a current-thread
//! runtime (so nothing leaves before its `sent` line is printed) and prints its ledger as
//! `E2E ...` lines; it stops when stdin closes.

use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use kefu_tests::ledger::Ledger;
use kefu_tests::sdk::{self, Plan, Side};
use tokio::io::AsyncReadExt;
use tokio::sync::watch;

/// One peer of a one-to-one conversation.
#[derive(Parser)]
struct Args {
    /// Gateway URL (tcp:// or ws://).
    #[arg(long)]
    url: String,
    /// Login name.
    #[arg(long)]
    login: String,
    /// Password.
    #[arg(long)]
    password: String,
    /// Own user id.
    #[arg(long)]
    user: String,
    /// The topic (the peer's user id).
    #[arg(long)]
    topic: String,
    /// The peer's login.
    #[arg(long)]
    peer: String,
    /// Conversation label.
    #[arg(long)]
    conv: String,
    /// Resume after this seq (0: from now on).
    #[arg(long, default_value_t = 0)]
    mark: u64,
    /// Messages to publish.
    #[arg(long)]
    sends: usize,
    /// Unanswered messages at most.
    #[arg(long, default_value_t = 8)]
    window: usize,
    /// Pause between publishes, ms.
    #[arg(long, default_value_t = 20)]
    pace_ms: u64,
}

fn main() {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let (stop_tx, stop) = watch::channel(false);
        tokio::spawn(async move {
            let mut buf = [0u8; 64];
            let mut stdin = tokio::io::stdin();
            while let Ok(n) = stdin.read(&mut buf).await {
                if n == 0 {
                    break;
                }
            }
            let _ = stop_tx.send(true);
        });
        let side = Side {
            login: args.login,
            password: args.password,
            user: args.user,
            topic: args.topic,
            peer: args.peer,
            conv: args.conv,
        };
        let plan = Plan {
            sends: args.sends,
            window: args.window,
            pace: Duration::from_millis(args.pace_ms),
        };
        let ledger = Arc::new(Ledger::echoing());
        let out = sdk::run_peer(args.url, side, args.mark, plan, ledger, stop).await;
        println!(
            "E2E done {} {} {} {}",
            out.made, out.acked, out.failed, out.received
        );
    });
}
