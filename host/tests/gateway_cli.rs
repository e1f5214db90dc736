//! The `kefu` command's account tools against the real binary: `user add` prints an id that
//! logs in, refuses a taken name; `device add` prints a token that logs in and fails when
//! altered; `--no-signup` closes online account creation.

mod support;

use base64::Engine;
use kefu_core::proto::{AuthScheme, ClientPacket, Code};
use kefu_host::gateway::wire::Params;
use support::{Bin, Raw, add_user, kefu};

#[tokio::test]
async fn a_user_added_offline_logs_in_with_the_printed_id_and_a_taken_name_fails() {
    let dir = tempfile::tempdir().expect("tempdir");
    let id = add_user(dir.path(), "alice", "pw", &["--agent"]);
    assert!(
        !id.is_empty() && !id.contains(char::is_whitespace),
        "one id: {id:?}"
    );

    let data = dir.path().to_str().expect("utf-8");
    let (ok, out, err) = kefu(&[
        "user",
        "add",
        "alice",
        "--password",
        "other",
        "--data",
        data,
    ]);
    assert!(!ok, "a taken name exits non-zero (printed {out:?})");
    assert!(out.is_empty(), "no id printed for a refused user");
    assert!(err.contains("taken"), "a clear message: {err:?}");

    let gw = Bin::start(dir.path(), &[]).await;
    let mut c = Raw::connect(gw.tcp).await;
    c.hi().await;
    let (code, params) = c.login("alice", "pw").await;
    assert_eq!(code, Code::OK);
    assert!(matches!(params, Params::Login { user, .. } if user == id));
    // The first password still holds: the refused add changed nothing.
    let mut wrong = Raw::connect(gw.tcp).await;
    wrong.hi().await;
    let (code, _) = wrong.login("alice", "other").await;
    assert_eq!(code, Code::UNAUTHORIZED);
}

#[tokio::test]
async fn a_device_token_logs_in_and_one_changed_byte_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().to_str().expect("utf-8");
    let (ok, token, err) = kefu(&["device", "add", "desk1", "--data", data]);
    assert!(ok, "device add works: {err}");
    assert!(
        token
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
        "base64url without padding: {token:?}"
    );
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(&token)
        .expect("the token decodes");
    let device_user = err
        .rsplit(' ')
        .next()
        .expect("stderr names the device's user")
        .to_owned();

    let (ok, _, err) = kefu(&["device", "add", "desk1", "--data", data]);
    assert!(
        !ok && err.contains("taken"),
        "a device name is unique: {err}"
    );

    let gw = Bin::start(dir.path(), &[]).await;
    let mut c = Raw::connect(gw.tcp).await;
    c.hi().await;
    let (code, params) = c.login_token(&bytes).await;
    assert_eq!(code, Code::OK);
    assert!(
        matches!(&params, Params::Login { user, .. } if *user == device_user),
        "logged in as the device: {params:?}"
    );

    for i in [0, bytes.len() / 2, bytes.len() - 1] {
        let mut bad = bytes.clone();
        bad[i] ^= 0x01;
        let mut c = Raw::connect(gw.tcp).await;
        c.hi().await;
        let (code, _) = c.login_token(&bad).await;
        assert_eq!(code, Code::UNAUTHORIZED, "byte {i} changed");
    }
    // The device has no password.
    let mut c = Raw::connect(gw.tcp).await;
    c.hi().await;
    let (code, _) = c.login("desk1", "").await;
    assert_ne!(code, Code::OK);
}

#[tokio::test]
async fn no_signup_makes_acc_403_while_offline_accounts_still_log_in() {
    let dir = tempfile::tempdir().expect("tempdir");
    add_user(dir.path(), "bob", "pw", &[]);
    let gw = Bin::start(dir.path(), &["--no-signup"]).await;

    let mut c = Raw::connect(gw.tcp).await;
    c.hi().await;
    let id = c.next_id();
    c.send(ClientPacket::Acc(kefu_core::proto::Acc {
        id,
        scheme: AuthScheme::Basic,
        secret: b"mallory:secret-pass",
        name: "mallory",
        login: true,
    }))
    .await;
    let (code, ..) = c.ctrl(id).await;
    assert_eq!(code, Code::FORBIDDEN);
    let (code, _) = c.login("mallory", "secret-pass").await;
    assert_eq!(code, Code::UNAUTHORIZED, "no account was made");
    let (code, _) = c.login("bob", "pw").await;
    assert_eq!(code, Code::OK);
}

#[tokio::test]
async fn bad_command_lines_fail_with_a_message() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().to_str().expect("utf-8");
    let (ok, _, err) = kefu(&[
        "user",
        "add",
        "bad name",
        "--password",
        "pw",
        "--data",
        data,
    ]);
    assert!(!ok, "a login with a space is refused");
    assert!(!err.is_empty());
    let (ok, _, err) = kefu(&["user", "add", "carol", "--data", data]);
    assert!(
        !ok && err.contains("--password"),
        "the password is required: {err}"
    );
    let (ok, line, _) = kefu(&["--version"]);
    assert!(ok && line.starts_with("kefu "), "{line}");
}
