//! A gateway for the benchmark to drive: the `kefu gateway` process started in a temporary data
//! folder with durable defaults (every commit synced) and no per-session rate limit, stopped
//! and removed when dropped.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use super::BenchError;
use crate::gateway::listening::Listening;

/// A running gateway process.
pub struct GatewayProcess {
    child: Child,
    dir: PathBuf,
    /// Its HTTP / WebSocket address.
    pub http: SocketAddr,
    /// Its framed-TCP address.
    pub tcp: SocketAddr,
}

impl GatewayProcess {
    /// Starts `kefu gateway` from the binary `kefu` with its data in a fresh folder inside
    /// `parent`, on ephemeral loopback ports; waits for its "listening" line.
    pub fn start(kefu: &Path, parent: &Path) -> Result<GatewayProcess, BenchError> {
        let dir = parent.join(format!(
            "kefu-bench-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir)?;
        let mut child = Command::new(kefu)
            .arg("gateway")
            .arg("--data")
            .arg(&dir)
            .args(["--http", "127.0.0.1:0", "--tcp", "127.0.0.1:0"])
            .args(["--rate", "0", "--log", "warn"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdout = child.stdout.take().ok_or(BenchError::Closed)?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        match Listening::parse(&line) {
            Some(Listening { http, tcp, .. }) => Ok(GatewayProcess {
                child,
                dir,
                http,
                tcp,
            }),
            None => {
                let _ = child.kill();
                let _ = child.wait();
                let _ = std::fs::remove_dir_all(&dir);
                Err(BenchError::Protocol(format!(
                    "the gateway did not start (it printed {line:?})"
                )))
            }
        }
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
