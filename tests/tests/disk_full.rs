//! Scenario 4: the data folder fills up, then turns read-only. The gateway runs on a small
//! tmpfs mounted in a private mount namespace (`unshare -m`, so the machine's mounts are not
//! touched; needs root, which CI has). When the disk is full a `pub` is answered with a coded
//! 503 ("storage full") and never acknowledged, the gateway says so in its log, and when space
//! returns publishing works again; on a read-only folder the gateway refuses to serve with a
//! clear error or refuses every `pub` with a coded error. After all of it, every acknowledged
//! message is in the history at its seq, nothing refused was stored, and SQLite's integrity
//! check passes.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use kefu_core::id::MsgId;
use kefu_core::proto::Code;
use kefu_tests::gateway::{Gateway, Options};
use kefu_tests::ledger::Ledger;
use kefu_tests::raw::{Got, Raw};
use kefu_tests::sdk::{self, Plan, Side};
use kefu_tests::{Dice, WAIT, seed};
use tokio::sync::watch;

const PASSWORD: &str = "e2e-secret-pass";

/// A process holding a private mount namespace with a tmpfs at `dir`.
struct Namespace {
    child: Child,
    dir: PathBuf,
}

impl Namespace {
    /// Mounts a tmpfs of `size` (e.g. `6m`) at `dir` in a new mount namespace.
    fn tmpfs(dir: &Path, size: &str) -> Namespace {
        let script = format!(
            "mount -t tmpfs -o size={size} kefu-e2e {} && echo ready && exec sleep 3600",
            dir.display()
        );
        let mut child = Command::new("unshare")
            .args(["-m", "--propagation", "private", "sh", "-c", &script])
            .stdout(Stdio::piped())
            .spawn()
            .expect("unshare runs (root needed)");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().expect("piped"))
            .read_line(&mut line)
            .expect("read");
        assert_eq!(
            line.trim(),
            "ready",
            "the tmpfs is mounted in its namespace"
        );
        Namespace {
            child,
            dir: dir.to_path_buf(),
        }
    }

    /// `path` (inside the tmpfs) as the test sees it, through the holder's root.
    fn path(&self, rel: &str) -> PathBuf {
        let inside = self.dir.join(rel);
        PathBuf::from(format!(
            "/proc/{}/root{}",
            self.child.id(),
            inside.display()
        ))
    }

    /// The prefix that runs a command in the namespace.
    fn enter(&self) -> Vec<String> {
        ["nsenter", "-t", &self.child.id().to_string(), "-m", "--"]
            .map(String::from)
            .to_vec()
    }

    /// Remounts the tmpfs read-only (`true`) or read-write.
    fn remount(&self, ro: bool) {
        let mut cmd = Command::new("nsenter");
        cmd.args([
            "-t",
            &self.child.id().to_string(),
            "-m",
            "--",
            "mount",
            "-o",
        ])
        .arg(if ro { "remount,ro" } else { "remount,rw" })
        .arg(&self.dir);
        assert!(cmd.status().expect("mount runs").success(), "remount");
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Fills the file system holding `path` with a file there; the bytes written.
fn fill(path: &Path) -> u64 {
    let mut f = std::fs::File::create(path).expect("filler");
    let mut n = 0u64;
    for chunk in [1 << 20, 64 << 10, 4 << 10, 512] {
        let buf = vec![0x5Au8; chunk];
        while f.write_all(&buf).is_ok() && f.sync_all().is_ok() {
            n += chunk as u64;
        }
    }
    n
}

fn new_id(dice: &mut Dice) -> MsgId {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&dice.word().to_le_bytes());
    b[8..].copy_from_slice(&dice.word().to_le_bytes());
    MsgId::from_bytes(b)
}

/// Publishes once; (code, seq, text), or panics if the connection closed.
async fn publish(
    w: &mut Raw,
    topic: &str,
    id: MsgId,
    content: &[u8],
) -> (Code, Option<u64>, String) {
    match w.publish(topic, id, content).await {
        Some(Got::Ctrl {
            code, seq, text, ..
        }) => (code, seq, text),
        other => panic!("pub answered {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_or_read_only_disk_refuses_with_a_code_and_loses_nothing() {
    let seed = seed("disk-full");
    let mut dice = Dice::new(seed, 0);
    let tmp = tempfile::tempdir().expect("tempdir");
    let mnt = tmp.path().join("mnt");
    std::fs::create_dir(&mnt).expect("mount point");
    let ns = Namespace::tmpfs(&mnt, "6m");
    std::fs::create_dir(ns.path("data")).expect("data folder");
    let opts = Options {
        prefix: ns.enter(),
        log: Some("warn".into()),
        ..Options::default()
    };
    let mut gw = Gateway::start(&mnt.join("data"), tmp.path(), opts.clone()).await;
    let ledger = Ledger::new();
    let conv = "grp";

    let mut w = Raw::tcp(gw.tcp).await;
    w.hi().await;
    assert!(matches!(
        w.acc("writer", PASSWORD).await,
        Some(Got::Ctrl {
            code: Code::CREATED,
            ..
        })
    ));
    let topic = w.new_group().await;
    let content = vec![b'k'; 2048];
    let mut refused = Vec::new();
    let mut sent = 0u64;

    // Room to spare: everything is acknowledged.
    for _ in 0..40 {
        let id = new_id(&mut dice);
        ledger.sent(id, conv, "history");
        sent += 1;
        let (code, seq, _) = publish(&mut w, &topic, id, &content).await;
        assert_eq!(code, Code::ACCEPTED);
        ledger.acked(id, seq.expect("seq"));
    }

    // The disk fills up: pubs are acknowledged while SQLite still has room in its files,
    // then refused with 503, never anything else.
    let filled = fill(&ns.path("filler"));
    let (mut accepted_full, mut texts) = (0u64, Vec::new());
    for _ in 0..3000 {
        let id = new_id(&mut dice);
        ledger.sent(id, conv, "history");
        sent += 1;
        match publish(&mut w, &topic, id, &content).await {
            (Code::ACCEPTED, Some(seq), _) => {
                accepted_full += 1;
                ledger.acked(id, seq);
            }
            (Code::UNAVAILABLE, _, text) => {
                ledger.failed(id);
                refused.push(id);
                texts.push(text);
                if refused.len() >= 20 {
                    break;
                }
            }
            other => panic!("a pub on a full disk answered {other:?}"),
        }
    }
    println!(
        "[disk-full] filled {filled} bytes; then {accepted_full} acknowledged, {} refused: {:?}",
        refused.len(),
        texts.first()
    );
    assert!(!refused.is_empty(), "a full disk refuses pubs");
    assert!(
        texts.iter().all(|t| t.contains("full")),
        "the refusal says the storage is full: {texts:?}"
    );
    // Other requests still work, and the log says what is wrong.
    assert!(w.latest(&topic).await >= 40);
    let log = gw.log();
    assert!(
        log.contains("storage full"),
        "the gateway logs the full disk:\n{log}"
    );

    // An SDK client publishes into the full disk: the 503s leave its messages to be sent
    // again (same ids), and they are stored once space returns.
    let ledger = Arc::new(ledger);
    let writer_id = match Raw::tcp(gw.tcp).await.session("writer", PASSWORD).await {
        Got::Ctrl { user, .. } => user,
        other => panic!("login: {other:?}"),
    };
    let side = Side {
        login: "writer".into(),
        password: PASSWORD.into(),
        user: writer_id,
        topic: topic.clone(),
        peer: "history".into(),
        conv: conv.into(),
    };
    let plan = Plan {
        sends: 10,
        window: 10,
        pace: Duration::ZERO,
    };
    let (stop_tx, stop) = watch::channel(false);
    let sdk_peer = tokio::spawn(sdk::run_peer(
        gw.tcp_url(),
        side,
        0,
        plan,
        ledger.clone(),
        stop,
    ));
    let made = tokio::time::Instant::now() + WAIT;
    while ledger.check().sent < sent + 10 && tokio::time::Instant::now() < made {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    sent += 10;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        ledger.check().acked,
        40 + accepted_full,
        "nothing is acknowledged on a full disk"
    );

    // Space returns: publishing works again.
    std::fs::remove_file(ns.path("filler")).expect("filler removed");
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut after = 0;
    while after < 40 {
        let id = new_id(&mut dice);
        ledger.sent(id, conv, "history");
        sent += 1;
        match publish(&mut w, &topic, id, &content).await {
            (Code::ACCEPTED, Some(seq), _) => {
                ledger.acked(id, seq);
                after += 1;
            }
            (Code::UNAVAILABLE, ..) if tokio::time::Instant::now() < deadline => {
                ledger.failed(id);
                refused.push(id);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => panic!("after space returned a pub answered {other:?}"),
        }
    }

    assert!(
        sdk::answered(&ledger, sent, WAIT * 2).await,
        "the SDK's messages are stored once space returns"
    );
    stop_tx.send(true).expect("peer listens");
    let out = tokio::time::timeout(WAIT, sdk_peer)
        .await
        .expect("peer ends")
        .expect("peer ran");
    assert_eq!(
        (out.acked, out.failed),
        (10, 0),
        "the SDK client retried through the full disk"
    );

    // A crash, then a read-only folder.
    drop(w);
    gw.kill9().await;
    ns.remount(true);
    match gw.try_restart().await {
        Err(why) => {
            println!("[disk-full] read-only folder: the gateway refuses to start: {why}");
            assert!(
                why.contains("read-only") || why.contains("readonly") || why.contains("Read-only"),
                "a clear error about the read-only folder: {why}"
            );
        }
        Ok(()) => {
            let mut w = Raw::tcp(gw.tcp).await;
            w.session("writer", PASSWORD).await;
            for _ in 0..5 {
                let id = new_id(&mut dice);
                ledger.sent(id, conv, "history");
                sent += 1;
                let (code, _, text) = publish(&mut w, &topic, id, &content).await;
                assert_eq!(code, Code::UNAVAILABLE, "read-only: {text}");
                assert!(text.contains("read-only"), "read-only: {text}");
                ledger.failed(id);
                refused.push(id);
            }
            println!("[disk-full] read-only folder: pubs refused with 503");
            gw.kill9().await;
        }
    }
    ns.remount(false);
    gw.restart().await;

    // Everything acknowledged is there, at its seq, once; nothing refused was stored.
    let mut r = Raw::tcp(gw.tcp).await;
    r.session("writer", PASSWORD).await;
    let latest = r.latest(&topic).await;
    let history = r.history(&topic, latest).await;
    ledger.check_history(conv, &history, latest);
    for (id, seq) in &history {
        ledger.delivered("history", *id, *seq);
    }
    let stored_refused = refused
        .iter()
        .filter(|id| history.iter().any(|(h, _)| h == *id))
        .count();
    assert_eq!(stored_refused, 0, "refused pubs are not stored");
    drop(r);
    assert!(gw.stop().await, "the gateway stops cleanly");
    // A copy of the stopped gateway's files, read outside the namespace.
    let copy = tmp.path().join("copy");
    std::fs::create_dir(&copy).expect("copy folder");
    for f in ["kefu.db", "kefu.db-wal"] {
        if ns.path(&format!("data/{f}")).exists() {
            std::fs::copy(ns.path(&format!("data/{f}")), copy.join(f)).expect("copy");
        }
    }
    let db = rusqlite::Connection::open(copy.join("kefu.db")).expect("open the database");
    let check: String = db
        .query_row("PRAGMA integrity_check", [], |row| row.get(0))
        .expect("integrity check");
    assert_eq!(check, "ok", "the database is intact");
    let t = ledger.assert_clean("disk-full");
    assert_eq!(t.sent, sent);
    assert_eq!(t.acked + t.failed, sent);
}
