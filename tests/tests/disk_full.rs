//! Scenario 4: the data folder fills up, then turns read-only. The gateway runs on a small
//! file system mounted in a private mount namespace (`unshare -m`, so the machine's mounts are
//! not touched; needs root, which CI has): a tmpfs, or an ext4 image on a loop device. When the
//! disk is full a `pub` is answered with a coded 503 ("storage full") and never acknowledged,
//! the gateway says so in its log, and when space returns publishing works again; on a folder
//! that is read-only at start the gateway refuses to serve with a clear error or refuses every
//! `pub` with a coded error; when the folder turns read-only while the gateway runs, every `pub`
//! is refused with a 503 saying so while reads go on. After all of it, every acknowledged
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
        Namespace::holding(
            dir,
            &format!("mount -t tmpfs -o size={size} kefu-e2e {}", dir.display()),
        )
    }

    /// Mounts the ext4 file system in `image` at `dir` (through a loop device) in a new mount
    /// namespace, with `errors=remount-ro`: on an error the kernel turns it read-only.
    fn ext4(dir: &Path, image: &Path) -> Namespace {
        Namespace::holding(dir, &ext4_mount(dir, image))
    }

    /// A process in a new mount namespace that ran `mount` (a shell command), then sleeps.
    fn holding(dir: &Path, mount: &str) -> Namespace {
        let script = format!("{mount} && echo ready && exec sleep 3600");
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
            "the file system is mounted in its namespace"
        );
        Namespace {
            child,
            dir: dir.to_path_buf(),
        }
    }

    /// `path` (inside the mounted file system) as the test sees it, through the holder's root.
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
        let how = if ro { "remount,ro" } else { "remount,rw" };
        let (ok, _, err) = self.sh(&format!("mount -o {how} {}", self.dir.display()));
        assert!(ok, "remount: {err}");
    }

    /// Runs the shell command `script` in the namespace; its exit status, stdout and stderr.
    fn sh(&self, script: &str) -> (bool, String, String) {
        let out = Command::new("nsenter")
            .args(["-t", &self.child.id().to_string(), "-m", "--", "sh", "-c"])
            .arg(script)
            .output()
            .expect("nsenter runs");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).trim().to_owned(),
            String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        )
    }

    /// Has the kernel turn the ext4 file system at `dir` read-only, as it does after an I/O
    /// error (`errors=remount-ro`): the error is raised through ext4's `trigger_fs_error`.
    fn ext4_error(&self) {
        let (ok, dev, err) = self.sh(&format!("findmnt -n -o SOURCE {}", self.dir.display()));
        assert!(ok, "findmnt: {err}");
        let name = dev.rsplit('/').next().expect("a device name");
        std::fs::write(
            format!("/sys/fs/ext4/{name}/trigger_fs_error"),
            "kefu-e2e: the data folder turns read-only",
        )
        .expect("ext4 takes the error");
    }
}

/// The shell command that mounts `image` at `dir` (see [`Namespace::ext4`]).
fn ext4_mount(dir: &Path, image: &Path) -> String {
    format!(
        "mount -o loop,errors=remount-ro {} {}",
        image.display(),
        dir.display()
    )
}

/// Makes a fresh ext4 image file of `mib` MiB at `image`.
fn make_ext4(image: &Path, mib: u64) {
    let f = std::fs::File::create(image).expect("image file");
    f.set_len(mib << 20).expect("image size");
    let out = Command::new("mkfs.ext4")
        .args(["-q", "-F"])
        .arg(image)
        .output()
        .expect("mkfs.ext4 runs");
    assert!(
        out.status.success(),
        "mkfs.ext4: {}",
        String::from_utf8_lossy(&out.stderr)
    );
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

    let (mut w, topic) = writer_in_a_new_group(gw.tcp).await;
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
    assert_intact(&ns, tmp.path());
    let t = ledger.assert_clean("disk-full");
    assert_eq!(t.sent, sent);
    assert_eq!(t.acked + t.failed, sent);
}

/// A new account "writer" on the gateway at `tcp`, in a session, and the group it just created.
async fn writer_in_a_new_group(tcp: std::net::SocketAddr) -> (Raw, String) {
    let mut w = Raw::tcp(tcp).await;
    w.hi().await;
    assert!(matches!(
        w.acc("writer", PASSWORD).await,
        Some(Got::Ctrl {
            code: Code::CREATED,
            ..
        })
    ));
    let topic = w.new_group().await;
    (w, topic)
}

/// SQLite's integrity check passes on a copy (in `scratch`) of the stopped gateway's database,
/// read outside the namespace.
fn assert_intact(ns: &Namespace, scratch: &Path) {
    let copy = scratch.join("copy");
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
}

/// Publishes `ids` one after another on `w` while the data folder is read-only: each must be
/// refused with a coded 503 that says so, never acknowledged. Recorded as failed in `ledger`.
async fn refused_while_read_only(w: &mut Raw, topic: &str, ids: Vec<MsgId>, ledger: &Ledger) {
    for id in ids {
        ledger.sent(id, "grp", "history");
        let (code, seq, text) = publish(w, topic, id, b"written into a read-only folder").await;
        assert_eq!(
            (code, seq),
            (Code::UNAVAILABLE, None),
            "a pub into a read-only folder: {text}"
        );
        assert!(
            text.contains("read-only"),
            "the refusal says the storage is read-only: {text}"
        );
        ledger.failed(id);
    }
}

/// `GET path` on the gateway's HTTP port; (status, body).
async fn http_get(http: std::net::SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(http).await.expect("connect");
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: kefu\r\n\r\n").as_bytes())
        .await
        .expect("request");
    let mut answer = String::new();
    s.read_to_string(&mut answer).await.expect("answer");
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("an HTTP answer: {answer:?}"));
    let body = answer
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .to_owned();
    (status, body)
}

/// Scenario 4b: the data folder turns read-only while the gateway runs, with clients connected
/// and publishing. `mount -o remount,ro` is refused by the kernel while SQLite holds the files
/// open for writing ("mount point is busy"), so what really happens to a running gateway is the
/// kernel turning the file system read-only after an error: here an ext4 image mounted with
/// `errors=remount-ro` through a loop device, in a private mount namespace, and ext4's own
/// `trigger_fs_error`. From then on every `pub` (and `acc`) is refused with a 503 saying
/// "read-only", never acknowledged; history reads, logins and the connections go on; the log
/// and `/healthz` say what is wrong. ext4 keeps such a file system read-only until it is
/// unmounted (a remount read-write is refused), so recovery is: stop the gateway, repair and
/// mount the file system again, start the gateway; then publishing works again, every
/// acknowledged message is in the history at its seq, nothing refused was stored, and SQLite's
/// integrity check passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_folder_turning_read_only_mid_run_refuses_pubs_keeps_serving_and_loses_nothing() {
    let seed = seed("read-only-mid-run");
    let mut dice = Dice::new(seed, 1);
    let tmp = tempfile::tempdir().expect("tempdir");
    let mnt = tmp.path().join("mnt");
    std::fs::create_dir(&mnt).expect("mount point");
    let image = tmp.path().join("ext4.img");
    make_ext4(&image, 64);
    let ns = Namespace::ext4(&mnt, &image);
    std::fs::create_dir(ns.path("data")).expect("data folder");
    let opts = Options {
        prefix: ns.enter(),
        log: Some("warn".into()),
        ..Options::default()
    };
    let mut gw = Gateway::start(&mnt.join("data"), tmp.path(), opts).await;
    let ledger = Ledger::new();
    let conv = "grp";

    // Two sessions publish into one group; a third reads.
    let (mut w, topic) = writer_in_a_new_group(gw.tcp).await;
    let mut w2 = Raw::tcp(gw.tcp).await;
    w2.session("writer", PASSWORD).await;
    let mut r = Raw::tcp(gw.tcp).await;
    r.session("writer", PASSWORD).await;
    for i in 0..20 {
        let id = new_id(&mut dice);
        ledger.sent(id, conv, "history");
        let c = if i % 2 == 0 { &mut w } else { &mut w2 };
        let (code, seq, text) = publish(c, &topic, id, b"before").await;
        assert_eq!(code, Code::ACCEPTED, "{text}");
        ledger.acked(id, seq.expect("seq"));
    }

    // The kernel turns the file system read-only under the running gateway.
    ns.ext4_error();
    let ids: Vec<MsgId> = (0..40).map(|_| new_id(&mut dice)).collect();
    let (first, second) = ids.split_at(20);
    tokio::join!(
        refused_while_read_only(&mut w, &topic, first.to_vec(), &ledger),
        refused_while_read_only(&mut w2, &topic, second.to_vec(), &ledger),
    );
    let mut newcomer = Raw::tcp(gw.tcp).await;
    newcomer.hi().await;
    match newcomer.acc("newcomer", PASSWORD).await {
        Some(Got::Ctrl {
            code: Code::UNAVAILABLE,
            text,
            ..
        }) => assert!(text.contains("read-only"), "acc: {text}"),
        other => panic!("acc into a read-only folder: {other:?}"),
    }
    // Reads are served from what is stored, to every connection; logins work.
    assert_eq!(r.latest(&topic).await, 20, "the latest seq is still 20");
    let history = r.history(&topic, 20).await;
    ledger.check_history(conv, &history, 20);
    assert_eq!(
        w.latest(&topic).await,
        20,
        "the refused publisher is served"
    );
    assert_eq!(w2.latest(&topic).await, 20, "so is the other one");
    let mut late = Raw::tcp(gw.tcp).await;
    late.session("writer", PASSWORD).await;
    assert_eq!(late.history(&topic, 20).await, history);
    // The gateway says what is wrong, once in its log and in /healthz.
    let (status, body) = http_get(gw.http, "/healthz").await;
    assert_eq!(status, 503, "unhealthy while read-only: {body}");
    assert!(body.contains("read-only"), "/healthz says why: {body}");
    let log = gw.log();
    assert!(
        log.contains("storage is read-only"),
        "the gateway logs the read-only folder:\n{log}"
    );
    // Forty refusals in a few seconds: their warning is logged once, not forty times.
    let warned = log.matches("append failed").count();
    assert!(
        (1..=2).contains(&warned),
        "refused appends are logged at most every 10 s ({warned} lines):\n{log}"
    );
    println!(
        "[read-only-mid-run] 40 pubs and an acc refused with 503; reads served; /healthz: {}",
        body.trim()
    );

    // Recovery: the gateway stops cleanly; the file system is checked and mounted again.
    drop((w, w2, r, late, newcomer));
    assert!(
        gw.stop().await,
        "the gateway stops cleanly on a read-only folder"
    );
    let dir = mnt.display();
    let (ok, _, err) = ns.sh(&format!("umount {dir}"));
    assert!(ok, "umount: {err}");
    let fsck = Command::new("e2fsck")
        .arg("-fy")
        .arg(&image)
        .output()
        .expect("e2fsck runs");
    // 0: clean; 1: errors corrected (the error ext4 was told about marks it for a check).
    assert!(
        matches!(fsck.status.code(), Some(0 | 1)),
        "e2fsck: {}",
        String::from_utf8_lossy(&fsck.stdout)
    );
    let (ok, _, err) = ns.sh(&ext4_mount(&mnt, &image));
    assert!(ok, "mount again: {err}");
    gw.restart().await;
    let mut w = Raw::tcp(gw.tcp).await;
    w.session("writer", PASSWORD).await;
    for _ in 0..20 {
        let id = new_id(&mut dice);
        ledger.sent(id, conv, "history");
        let (code, seq, text) = publish(&mut w, &topic, id, b"after").await;
        assert_eq!(code, Code::ACCEPTED, "publishing works again: {text}");
        ledger.acked(id, seq.expect("seq"));
    }
    let (status, body) = http_get(gw.http, "/healthz").await;
    assert_eq!(status, 200, "healthy again: {body}");

    // Everything acknowledged is there, at its seq, once; nothing refused was stored.
    let latest = w.latest(&topic).await;
    assert_eq!(latest, 40, "the refused pubs took no seq");
    let history = w.history(&topic, latest).await;
    ledger.check_history(conv, &history, latest);
    for (id, seq) in &history {
        ledger.delivered("history", *id, *seq);
    }
    assert!(
        ids.iter().all(|id| history.iter().all(|(h, _)| h != id)),
        "refused pubs are not stored"
    );
    drop(w);
    assert!(gw.stop().await, "the gateway stops cleanly");
    assert_intact(&ns, tmp.path());
    let t = ledger.assert_clean("read-only-mid-run");
    assert_eq!((t.sent, t.acked, t.failed), (80, 40, 40));
}
