//! The real `kefu gateway` process: started on ephemeral loopback ports in a data folder,
//! killed with SIGKILL or stopped with SIGTERM, restarted on the same folder and the same ports
//! (so clients with a fixed address find it again). Accounts are made beforehand with
//! `kefu user add`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use kefu_host::gateway::listening::Listening;
use tokio::process::{Child, Command};

/// The `kefu` binary: `$KEFU_BIN`, else `kefu` in the target folder this test runs from
/// (`target/release/deps/suite-…` → `target/release/kefu`), which `cargo test --workspace`
/// builds (or `cargo build --release -p kefu-host --bin kefu`).
pub fn kefu_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("KEFU_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("the test knows where it runs from");
    let mut dir = exe
        .parent()
        .expect("the test executable has a folder")
        .to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let bin = dir.join("kefu");
    assert!(
        bin.exists(),
        "{} is missing: build it with `cargo build --release -p kefu-host --bin kefu` \
         (or point KEFU_BIN at a kefu binary)",
        bin.display()
    );
    bin
}

/// Runs `kefu ARGS`; stdout if it succeeded, else panics with stderr.
pub fn kefu(args: &[&str]) -> String {
    let out = std::process::Command::new(kefu_bin())
        .args(args)
        .env_remove("KEFU_DATA")
        .env_remove("KEFU_PASSWORD")
        .env_remove("KEFU_LOG")
        .output()
        .expect("kefu runs");
    assert!(
        out.status.success(),
        "kefu {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// An account to create with `kefu user add`.
#[derive(Clone, Debug)]
pub struct NewAccount {
    /// Login name.
    pub login: String,
    /// Password.
    pub password: String,
    /// An agent (`--agent`).
    pub agent: bool,
}

/// Creates `accounts` in `data`, one `kefu user add` at a time; their user ids, in order.
pub fn add_users(data: &Path, accounts: &[NewAccount]) -> Vec<String> {
    let data = data.to_str().expect("utf-8 data path");
    accounts
        .iter()
        .map(|a| {
            let mut args = vec!["user", "add", &a.login, "--password", &a.password];
            if a.agent {
                args.push("--agent");
            }
            args.extend(["--data", data]);
            kefu(&args)
        })
        .collect()
}

/// How to start a gateway.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Extra `kefu gateway` flags.
    pub flags: Vec<String>,
    /// A command the gateway runs under (e.g. `nsenter -t PID -m --`), empty for none.
    pub prefix: Vec<String>,
    /// Log filter (`--log`), default `error`.
    pub log: Option<String>,
}

/// A running (or killed) `kefu gateway` process. Killed when dropped.
pub struct Gateway {
    /// The data folder.
    pub data: PathBuf,
    /// The HTTP (WebSocket) address.
    pub http: SocketAddr,
    /// The framed-TCP address.
    pub tcp: SocketAddr,
    opts: Options,
    child: Option<Child>,
    starts: u32,
    logs: PathBuf,
}

impl Gateway {
    /// Starts a gateway on ephemeral ports in `data`; its output goes to files in `logs`.
    pub async fn start(data: &Path, logs: &Path, opts: Options) -> Gateway {
        match Gateway::try_start(data, logs, opts).await {
            Ok(gw) => gw,
            Err(why) => panic!("kefu gateway did not start: {why}"),
        }
    }

    /// [`Gateway::start`], or why the gateway did not start (its exit status and stderr).
    pub async fn try_start(data: &Path, logs: &Path, opts: Options) -> Result<Gateway, String> {
        let mut gw = Gateway {
            data: data.to_path_buf(),
            http: "127.0.0.1:0".parse().expect("addr"),
            tcp: "127.0.0.1:0".parse().expect("addr"),
            opts,
            child: None,
            starts: 0,
            logs: logs.to_path_buf(),
        };
        gw.launch().await?;
        Ok(gw)
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(|c| c.id())
    }

    /// `ws://HTTP/v0/channels`.
    pub fn ws_url(&self) -> String {
        format!("ws://{}/v0/channels", self.http)
    }

    /// `tcp://TCP`.
    pub fn tcp_url(&self) -> String {
        format!("tcp://{}", self.tcp)
    }

    /// Everything the gateway wrote to stderr (its log) so far, across restarts.
    pub fn log(&self) -> String {
        (1..=self.starts)
            .map(|n| {
                std::fs::read_to_string(self.logs.join(format!("gateway-{n}.err")))
                    .unwrap_or_default()
            })
            .collect()
    }

    /// SIGKILL, then reaps the process.
    pub async fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.start_kill();
            let status = c.wait().await.expect("reaped");
            assert!(!status.success(), "a killed gateway does not exit 0");
        }
    }

    /// SIGTERM, then waits for the exit (killing it after `WAIT`); whether it exited 0.
    pub async fn stop(&mut self) -> bool {
        let Some(mut c) = self.child.take() else {
            return true;
        };
        if let Some(pid) = c.id() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
        match tokio::time::timeout(crate::WAIT, c.wait()).await {
            Ok(Ok(s)) => s.success(),
            _ => {
                let _ = c.start_kill();
                let _ = c.wait().await;
                false
            }
        }
    }

    /// Starts the gateway again on the same data folder and the same ports.
    pub async fn restart(&mut self) {
        if let Err(why) = self.try_restart().await {
            panic!("kefu gateway did not start again: {why}");
        }
    }

    /// [`Gateway::restart`], or why the gateway did not start.
    pub async fn try_restart(&mut self) -> Result<(), String> {
        assert!(self.child.is_none(), "stop or kill the gateway first");
        self.launch().await
    }

    async fn launch(&mut self) -> Result<(), String> {
        // The ports of the first start are kept; binding them again may fail for a moment
        // while the kernel lets go of them, so try for a while.
        let deadline = tokio::time::Instant::now() + crate::WAIT;
        loop {
            match self.try_launch().await {
                Ok(()) => return Ok(()),
                Err(why)
                    if tokio::time::Instant::now() < deadline
                        && self.http.port() != 0
                        && why.contains("in use") =>
                {
                    eprintln!("gateway start failed ({why}); trying again");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(why) => return Err(why),
            }
        }
    }

    async fn try_launch(&mut self) -> Result<(), String> {
        self.starts += 1;
        let out_path = self.logs.join(format!("gateway-{}.out", self.starts));
        let err_path = self.logs.join(format!("gateway-{}.err", self.starts));
        let out = std::fs::File::create(&out_path).map_err(|e| e.to_string())?;
        let err = std::fs::File::create(&err_path).map_err(|e| e.to_string())?;
        let bin = kefu_bin();
        let (program, pre) = match self.opts.prefix.split_first() {
            Some((p, rest)) => (PathBuf::from(p), rest.to_vec()),
            None => (bin.clone(), Vec::new()),
        };
        let mut cmd = Command::new(program);
        cmd.args(pre);
        if !self.opts.prefix.is_empty() {
            cmd.arg(&bin);
        }
        cmd.arg("gateway")
            .arg("--data")
            .arg(&self.data)
            .args([
                "--http",
                &self.http.to_string(),
                "--tcp",
                &self.tcp.to_string(),
            ])
            .args(["--log", self.opts.log.as_deref().unwrap_or("error")])
            .args(&self.opts.flags)
            .env_remove("KEFU_LOG")
            .env_remove("KEFU_DATA")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .kill_on_drop(true);
        let mut child = cmd.spawn().map_err(|e| format!("spawn: {e}"))?;
        let deadline = tokio::time::Instant::now() + crate::WAIT;
        loop {
            let text = std::fs::read_to_string(&out_path).unwrap_or_default();
            if let Some(Listening { http, tcp, .. }) = text.lines().find_map(Listening::parse) {
                self.http = http;
                self.tcp = tcp;
                self.child = Some(child);
                return Ok(());
            }
            if let Ok(Some(status)) = child.try_wait() {
                let err = std::fs::read_to_string(&err_path).unwrap_or_default();
                return Err(format!("exited {status}: {}", err.trim()));
            }
            if tokio::time::Instant::now() > deadline {
                let _ = child.start_kill();
                return Err("no listening line in time".into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
