//! Interop with the real Tinode JS client: `tests/tinode/interop.mjs` runs the `tinode-sdk`
//! npm package under Node against a gateway started here on 127.0.0.1. Two clients create
//! accounts, one writes to the other's one-to-one topic, the other receives it, fetches
//! history and marks it read, and the first sees the read receipt.
//!
//! Needs `node` and `npm ci` in `tests/tinode` (`.ci/run` does both).

mod support;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use support::Gw;

#[tokio::test]
async fn two_tinode_js_clients_chat_through_the_gateway() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/tinode");
    assert!(
        dir.join("node_modules/tinode-sdk").is_dir(),
        "tinode-sdk is not installed: run `npm ci` in {} (.ci/run does)",
        dir.display()
    );
    let mut gw = Gw::start().await;
    let child = tokio::process::Command::new("node")
        .arg("interop.mjs")
        .current_dir(&dir)
        .env("KEFU_WS", gw.http.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node runs");
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("the interop script finishes")
        .expect("node ran");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    assert!(
        out.status.success(),
        "the Tinode client failed:\n{stdout}\n{stderr}"
    );
    gw.stop().await;
}
