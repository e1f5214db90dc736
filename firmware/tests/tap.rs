//! The kiosk app over a real TAP device, inside a network namespace the test creates, against
//! the real gateway — including a graceful gateway restart and a crash mid-conversation.
//!
//! The namespace holds a TAP device whose kernel side is 10.77.0.1/24; embassy-net drives the
//! other side through `embassy-net-tuntap` as 10.77.0.2/24. Threads that enter the namespace
//! (`setns`) run the gateway (bound to 10.77.0.1, an address that exists nowhere else) and the
//! terminal with a customer on the real SDK. The namespace is deleted when the test ends, failed
//! or not. Needs root and `ip` (iproute2): without them the test fails, it does not skip.

mod support;

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc;
use std::time::Duration;

use embassy_net::{IpEndpoint, Ipv4Address, Ipv4Cidr, StackResources, StaticConfigV4};
use support::*;

const TAP: &str = "kftap0";
const HOST_IP: [u8; 4] = [10, 77, 0, 1];

/// A network namespace, deleted on drop.
struct Netns {
    name: String,
}

impl Netns {
    fn create() -> Netns {
        let name = format!("kefu-fw-{}", std::process::id());
        let ns = Netns { name };
        // A namespace left by a killed earlier run with the same pid: start clean.
        let _ = Command::new("ip")
            .args(["netns", "del", &ns.name])
            .stderr(std::process::Stdio::null())
            .status();
        ns.host(&["netns", "add", &ns.name]);
        for args in [
            &["link", "set", "lo", "up"][..],
            &["tuntap", "add", "dev", TAP, "mode", "tap"],
            &["addr", "add", "10.77.0.1/24", "dev", TAP],
            &["link", "set", TAP, "up"],
        ] {
            let mut full = vec!["netns", "exec", &ns.name, "ip"];
            full.extend_from_slice(args);
            ns.host(&full);
        }
        ns
    }

    /// Runs `ip ARGS` and insists on success.
    fn host(&self, args: &[&str]) {
        let out = Command::new("ip").args(args).output().unwrap_or_else(|e| {
            panic!("this test needs `ip` (apt-get install iproute2) and root: {e}")
        });
        assert!(
            out.status.success(),
            "`ip {}` failed (this test needs root): {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.name)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Moves the calling thread into the namespace at `path`.
fn enter(path: &Path) {
    let f = std::fs::File::open(path).expect("namespace file");
    // SAFETY: setns on a namespace file descriptor we own; affects only this thread.
    let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
}

/// How the gateway thread should stop.
enum Stop {
    /// SIGTERM's path: a 503 to every session, commits finish, the store closes.
    Graceful,
    /// Like kill -9 as far as clients can tell: its runtime is dropped with every task in it.
    Crash,
}

/// The real gateway on a thread of its own inside the namespace.
struct Gateway {
    stop: Option<tokio::sync::oneshot::Sender<Stop>>,
    thread: Option<std::thread::JoinHandle<()>>,
    addr: SocketAddr,
}

impl Gateway {
    fn start(ns: PathBuf, dir: PathBuf, addr: SocketAddr) -> Gateway {
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let (ready, bound) = mpsc::channel();
        let thread = std::thread::spawn(move || {
            enter(&ns);
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            let running = rt.block_on(start_gateway(&dir, addr));
            let _ = ready.send(running.tcp_addr);
            match rt.block_on(stopped) {
                Ok(Stop::Crash) => {
                    drop(running);
                    rt.shutdown_background();
                }
                _ => rt.block_on(running.shutdown()),
            }
        });
        let addr = bound.recv_timeout(WAIT).expect("the gateway starts");
        Gateway {
            stop: Some(stop),
            thread: Some(thread),
            addr,
        }
    }

    fn stop(mut self, how: Stop) {
        let _ = self.stop.take().expect("running").send(how);
        self.thread
            .take()
            .expect("running")
            .join()
            .expect("gateway thread");
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(Stop::Crash);
        }
    }
}

#[test]
fn over_a_tap_device_in_a_namespace_the_terminal_serves_across_a_gateway_restart_and_crash() {
    let ns = Netns::create();
    let path = ns.path();
    let scenario = std::thread::spawn(move || {
        enter(&path);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(tokio::task::LocalSet::new().run_until(conversation(path)));
    });
    let result = scenario.join();
    drop(ns);
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

async fn conversation(ns: PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let token = add_device(dir.path(), "counter7").await;
    add_customer(dir.path(), "carol").await;
    let bind = SocketAddr::from((HOST_IP, 0));
    let mut gw = Gateway::start(ns.clone(), dir.path().to_path_buf(), bind);
    let addr = gw.addr;

    // embassy-net on the TAP device, 10.77.0.2.
    let dev = embassy_net_tuntap::TunTapDevice::new(TAP).expect("open the TAP device");
    let cfg = embassy_net::Config::ipv4_static(StaticConfigV4 {
        address: Ipv4Cidr::new(Ipv4Address::new(10, 77, 0, 2), 24),
        gateway: None,
        dns_servers: Default::default(),
    });
    let res = Box::leak(Box::new(StackResources::<4>::new()));
    let (stack, mut runner) = embassy_net::new(dev, cfg, res, 0x7a9);
    tokio::task::spawn_local(async move { runner.run().await });

    let endpoint = IpEndpoint::new(Ipv4Address::from(HOST_IP).into(), addr.port());
    let term = boot(
        stack,
        terminal_config(endpoint, token, &[], 11),
        MemStorage::default(),
    );
    let shown = &term.display;
    until("the terminal goes online at the desk", || {
        shown.count("agent online") >= 1
    })
    .await;

    // A customer opens a consultation; the terminal shows, acknowledges and answers.
    let carol = customer(addr, "carol").await;
    let topic = carol.open_consultation("").await.expect("open");
    let mut talk = carol.subscribe(&topic).expect("subscribe");
    until("assigned", || {
        shown.count(&format!("assigned {topic}")) == 1
    })
    .await;
    carol.publish(&topic, "hello 1").expect("publish");
    until("hello 1 shown", || shown.received().len() == 1).await;
    next(&mut talk, "read receipt", |e| read_up_to(e, 1)).await;
    term.type_line("reply 1");
    next(&mut talk, "reply 1", |e| from_agent(e, "reply 1")).await;

    // The gateway stops in order, then crashes; each time the agent answers and the customer
    // writes while it is away, and it comes back on the same address.
    for (round, how) in [(2, Stop::Graceful), (3, Stop::Crash)] {
        let offline = shown.count("offline");
        let logins = shown.count("online as usr");
        gw.stop(how);
        until("the terminal notices", || shown.count("offline") > offline).await;
        term.type_line(&format!("reply {round}"));
        carol
            .publish(&topic, format!("hello {round}"))
            .expect("publish");
        tokio::time::sleep(Duration::from_millis(500)).await;
        gw = Gateway::start(ns.clone(), dir.path().to_path_buf(), addr);
        until("the terminal logs in again", || {
            shown.count("online as usr") > logins
        })
        .await;
        let hello = format!("hello {round}");
        until("the message sent while away is shown", || {
            shown.texts().contains(&hello)
        })
        .await;
        let reply = format!("reply {round}");
        next(&mut talk, "the reply typed while away", |e| {
            from_agent(e, &reply)
        })
        .await;
    }

    // Exactly once on both sides.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let seen: Vec<(String, bool)> = shown
        .received()
        .into_iter()
        .map(|(_, _, text, replayed)| (text, replayed))
        .collect();
    assert_eq!(
        seen,
        [("hello 1", false), ("hello 2", false), ("hello 3", false)]
            .map(|(t, r)| (t.to_owned(), r))
            .to_vec()
    );
    let answers: Vec<String> = carol
        .messages(&topic)
        .into_iter()
        .filter(|m| !m.outgoing && m.seq().is_some())
        .map(|m| m.text().into_owned())
        .collect();
    assert_eq!(answers, ["reply 1", "reply 2", "reply 3"]);
    gw.stop(Stop::Graceful);
}
