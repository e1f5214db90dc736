//! Credentials: argon2id password hashes, `login:password` parsing, and the gateway's signed,
//! expiring login tokens (HMAC-SHA256 over a compact binary body).
//!
//! Token layout (all integers big-endian):
//!
//! | bytes | field |
//! |---|---|
//! | 1 | version, [`TOKEN_VERSION`] |
//! | 4 | token generation (`gen`) |
//! | 8 | expiry, ms since the Unix epoch (0 = never) |
//! | n | user id, UTF-8, at least one byte |
//! | 32 | HMAC-SHA256 tag over everything before it |
//!
//! [`TokenKey::verify`] checks the tag (in constant time) and the expiry only. Whether the
//! generation is still current — i.e. the user has not revoked their tokens by bumping it — is
//! the caller's check against the stored account.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use argon2::Argon2;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The version byte of tokens issued by this build.
pub const TOKEN_VERSION: u8 = 1;
/// Length of a token key in bytes.
pub const KEY_LEN: usize = 32;
/// Longest login accepted by [`parse_basic`], in characters.
pub const MAX_LOGIN: usize = 64;
/// Longest password accepted by [`parse_basic`], in bytes.
pub const MAX_PASSWORD: usize = 256;

const TAG_LEN: usize = 32;
/// Version, gen, expiry.
const HEADER_LEN: usize = 1 + 4 + 8;

/// Why a credential was refused or a key could not be loaded. The gateway answers every
/// credential failure (`Malformed`, `BadSignature`, `Expired`) with 401.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// The token or the Basic secret does not have the expected shape (too short, unknown
    /// version, missing ':', login with forbidden characters, bad lengths, invalid UTF-8).
    #[error("malformed credentials")]
    Malformed,
    /// The token's tag does not match: it was altered, or signed with another key.
    #[error("bad token signature")]
    BadSignature,
    /// The token is genuine but its expiry has passed.
    #[error("token expired")]
    Expired,
    /// The key file exists but does not hold exactly [`KEY_LEN`] bytes.
    #[error("token key file holds {len} bytes, expected {KEY_LEN}")]
    KeyFile {
        /// How many bytes the file holds.
        len: u64,
    },
    /// Reading or creating the key file failed, or the OS random source failed.
    #[error("token key file: {0}")]
    Io(#[from] std::io::Error),
    /// The password hasher failed (e.g. its random salt could not be drawn).
    #[error("password hashing failed: {0}")]
    Hash(argon2::password_hash::Error),
}

/// Hashes a password (argon2id, default params, random salt) into a PHC string. CPU-heavy
/// (tens of ms): callers run it on a blocking thread.
pub fn hash_password(password: &str) -> Result<String, AuthError> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(AuthError::Hash)
}

/// Whether `password` matches the PHC `hash` (constant time; false for a malformed hash).
///
/// The hash's own parameters are used, so `hash` must come from [`hash_password`] (the store),
/// never from a client. CPU-heavy like [`hash_password`].
pub fn verify_password(hash: &str, password: &str) -> bool {
    Argon2::default()
        .verify_password(password.as_bytes(), hash)
        .is_ok()
}

/// Like [`verify_password`], but for a login that may not exist: with `None` it spends the same
/// time verifying against a fixed dummy hash and returns false, so response times do not tell
/// which logins exist.
pub fn verify_password_or_dummy(hash: Option<&str>, password: &str) -> bool {
    match hash {
        Some(hash) => verify_password(hash, password),
        None => {
            static DUMMY: OnceLock<String> = OnceLock::new();
            let dummy = DUMMY.get_or_init(|| hash_password("kefu-dummy").unwrap_or_default());
            // The result is meaningless; the work is the point.
            let _ = verify_password(dummy, password);
            false
        }
    }
}

/// Splits a Basic secret `login:password` (UTF-8; the first ':' splits; login 1..=64 chars of
/// letters, digits, '_', '-', '.', '@'; password 1..=256 bytes).
pub fn parse_basic(secret: &[u8]) -> Result<(&str, &str), AuthError> {
    let text = std::str::from_utf8(secret).map_err(|_| AuthError::Malformed)?;
    let (login, password) = text.split_once(':').ok_or(AuthError::Malformed)?;
    let login_ok = !login.is_empty()
        && login.chars().count() <= MAX_LOGIN
        && login
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.' | '@'));
    let password_ok = !password.is_empty() && password.len() <= MAX_PASSWORD;
    if login_ok && password_ok {
        Ok((login, password))
    } else {
        Err(AuthError::Malformed)
    }
}

/// What a valid token says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenClaims {
    /// The user id the token was issued to.
    pub user: String,
    /// The user's token generation when it was issued; the caller compares it with the stored
    /// one to honour revocation.
    pub r#gen: u32,
    /// Expiry, ms since the Unix epoch; 0 = never expires.
    pub expires_ms: u64,
}

/// The gateway's token signing key (32 random bytes).
#[derive(Clone)]
pub struct TokenKey {
    bytes: [u8; KEY_LEN],
}

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKey(..)")
    }
}

impl TokenKey {
    /// Reads the key file, or creates it (mode 0600, random bytes) if missing.
    ///
    /// Creation is atomic: the key is written and synced to a temporary file that is then
    /// linked into place, so a crash never leaves a short key behind, and if two processes race
    /// both end up with the same key.
    pub fn load_or_create(path: &Path) -> Result<TokenKey, AuthError> {
        match Self::load(path) {
            Err(AuthError::Io(e)) if e.kind() == ErrorKind::NotFound => Self::create(path),
            other => other,
        }
    }

    /// A key from its bytes.
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> TokenKey {
        TokenKey { bytes }
    }

    /// A fresh key from the OS random source.
    pub fn generate() -> Result<TokenKey, AuthError> {
        let mut bytes = [0u8; KEY_LEN];
        getrandom::fill(&mut bytes).map_err(|e| AuthError::Io(std::io::Error::other(e)))?;
        Ok(TokenKey { bytes })
    }

    /// The key bytes (to persist or share between gateways).
    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.bytes
    }

    /// A token for `user` at token generation `gen`, valid until `expires_ms` (ms since the
    /// Unix epoch; 0 = never expires). Compact binary: version byte, gen, expiry, user id,
    /// HMAC-SHA256 tag (see the module docs).
    pub fn issue(&self, user: &str, r#gen: u32, expires_ms: u64) -> Vec<u8> {
        let mut token = Vec::with_capacity(HEADER_LEN + user.len() + TAG_LEN);
        token.push(TOKEN_VERSION);
        token.extend_from_slice(&r#gen.to_be_bytes());
        token.extend_from_slice(&expires_ms.to_be_bytes());
        token.extend_from_slice(user.as_bytes());
        let tag = self.mac(&token).finalize().into_bytes();
        token.extend_from_slice(&tag);
        token
    }

    /// Checks signature and expiry against `now_ms`; returns the claims. A token is valid while
    /// `now_ms < expires_ms` (or forever if `expires_ms` is 0). Never panics, whatever the bytes.
    ///
    /// Revocation is not checked here: compare [`TokenClaims::r#gen`] with the user's stored
    /// generation.
    pub fn verify(&self, token: &[u8], now_ms: u64) -> Result<TokenClaims, AuthError> {
        if token.len() < HEADER_LEN + 1 + TAG_LEN {
            return Err(AuthError::Malformed);
        }
        let (body, tag) = token.split_at(token.len() - TAG_LEN);
        self.mac(body)
            .verify_slice(tag)
            .map_err(|_| AuthError::BadSignature)?;
        // Only signed bytes are parsed from here on.
        let (header, user) = body.split_at(HEADER_LEN);
        let (version, rest) = header.split_at(1);
        let (gen_bytes, expiry) = rest.split_at(4);
        if version != [TOKEN_VERSION] {
            return Err(AuthError::Malformed);
        }
        let r#gen = u32::from_be_bytes(gen_bytes.try_into().map_err(|_| AuthError::Malformed)?);
        let expires_ms = u64::from_be_bytes(expiry.try_into().map_err(|_| AuthError::Malformed)?);
        let user = std::str::from_utf8(user).map_err(|_| AuthError::Malformed)?;
        if expires_ms != 0 && now_ms >= expires_ms {
            return Err(AuthError::Expired);
        }
        Ok(TokenClaims {
            user: user.to_owned(),
            r#gen,
            expires_ms,
        })
    }

    fn mac(&self, body: &[u8]) -> HmacSha256 {
        let mut mac = <HmacSha256 as KeyInit>::new_from_slice(&self.bytes)
            .expect("HMAC takes keys of any length");
        mac.update(body);
        mac
    }

    fn load(path: &Path) -> Result<TokenKey, AuthError> {
        let mut file = File::open(path)?;
        let len = file.metadata()?.len();
        if len != KEY_LEN as u64 {
            return Err(AuthError::KeyFile { len });
        }
        warn_if_open(&file, path);
        let mut bytes = [0u8; KEY_LEN];
        file.read_exact(&mut bytes)?;
        Ok(TokenKey { bytes })
    }

    fn create(path: &Path) -> Result<TokenKey, AuthError> {
        let key = Self::generate()?;
        let tmp = temp_path(path)?;
        let result = write_private(&tmp, &key.bytes).and_then(|()| fs::hard_link(&tmp, path));
        let _ = fs::remove_file(&tmp);
        match result {
            Ok(()) => {
                sync_dir(path);
                tracing::info!(path = %path.display(), "created a new token key");
                Ok(key)
            }
            // Another process created it first: use theirs.
            Err(e) if e.kind() == ErrorKind::AlreadyExists => Self::load(path),
            Err(e) => Err(e.into()),
        }
    }
}

fn temp_path(path: &Path) -> Result<PathBuf, AuthError> {
    let mut suffix = [0u8; 8];
    getrandom::fill(&mut suffix).map_err(|e| AuthError::Io(std::io::Error::other(e)))?;
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp-{:016x}", u64::from_le_bytes(suffix)));
    Ok(path.with_file_name(name))
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

fn sync_dir(path: &Path) {
    #[cfg(unix)]
    if let Some(dir) = path.parent() {
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        if let Err(e) = File::open(dir).and_then(|d| d.sync_all()) {
            tracing::warn!(dir = %dir.display(), error = %e, "could not sync the key's folder");
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}

fn warn_if_open(file: &File, path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = file.metadata() {
            let mode = meta.permissions().mode();
            if mode & 0o077 != 0 {
                tracing::warn!(
                    path = %path.display(),
                    mode = format_args!("{:o}", mode & 0o777),
                    "token key file is readable by others; chmod 600 it"
                );
            }
        }
    }
    #[cfg(not(unix))]
    let _ = (file, path);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key(b: u8) -> TokenKey {
        TokenKey::from_bytes([b; KEY_LEN])
    }

    #[test]
    fn a_hashed_password_verifies_and_a_wrong_one_does_not() {
        let hash = hash_password("correct horse").unwrap();
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        assert!(verify_password(&hash, "correct horse"));
        assert!(!verify_password(&hash, "correct hors"));
        assert!(!verify_password(&hash, ""));
    }

    #[test]
    fn the_same_password_hashes_differently_each_time() {
        let a = hash_password("pw").unwrap();
        let b = hash_password("pw").unwrap();
        assert_ne!(a, b, "salts must be random");
        assert!(verify_password(&a, "pw") && verify_password(&b, "pw"));
    }

    #[test]
    fn a_malformed_hash_never_verifies() {
        for bad in [
            "",
            "plain",
            "$argon2id$",
            "$argon2id$v=19$m=1,t=1,p=1$$",
            "$md5$x$y",
        ] {
            assert!(!verify_password(bad, "pw"), "{bad:?}");
        }
    }

    #[test]
    fn an_unknown_login_is_refused_after_a_dummy_verification() {
        assert!(!verify_password_or_dummy(None, "pw"));
        let hash = hash_password("pw").unwrap();
        assert!(verify_password_or_dummy(Some(&hash), "pw"));
    }

    #[test]
    fn basic_splits_at_the_first_colon() {
        assert_eq!(parse_basic(b"alice:pa:ss").unwrap(), ("alice", "pa:ss"));
        assert_eq!(
            parse_basic(b"a.b-c_d@x.io:p").unwrap(),
            ("a.b-c_d@x.io", "p")
        );
        assert_eq!(
            parse_basic("客服1:密码".as_bytes()).unwrap(),
            ("客服1", "密码")
        );
    }

    #[test]
    fn basic_refuses_bad_shapes() {
        let long_login = format!("{}:pw", "a".repeat(MAX_LOGIN + 1));
        let long_pw = format!("a:{}", "p".repeat(MAX_PASSWORD + 1));
        let cases: Vec<&[u8]> = vec![
            b"",
            b"alice",
            b":pw",
            b"alice:",
            b"al ice:pw",
            b"al/ice:pw",
            b"\xff\xfe:pw",
            b"alice:\xff",
            long_login.as_bytes(),
            long_pw.as_bytes(),
        ];
        for case in cases {
            assert!(
                matches!(parse_basic(case), Err(AuthError::Malformed)),
                "{:?}",
                String::from_utf8_lossy(case)
            );
        }
    }

    #[test]
    fn basic_accepts_the_longest_login_and_password() {
        let max = format!("{}:{}", "é".repeat(MAX_LOGIN), "p".repeat(MAX_PASSWORD));
        let (login, pw) = parse_basic(max.as_bytes()).unwrap();
        assert_eq!(login.chars().count(), MAX_LOGIN);
        assert_eq!(pw.len(), MAX_PASSWORD);
    }

    #[test]
    fn a_token_round_trips_its_claims() {
        let k = key(7);
        let t = k.issue("usr42", 3, 10_000);
        assert_eq!(t.len(), HEADER_LEN + 5 + TAG_LEN);
        assert_eq!(
            k.verify(&t, 9_999).unwrap(),
            TokenClaims {
                user: "usr42".into(),
                r#gen: 3,
                expires_ms: 10_000
            }
        );
    }

    #[test]
    fn a_token_expires_exactly_at_its_expiry() {
        let k = key(7);
        let t = k.issue("u", 0, 10_000);
        assert!(k.verify(&t, 9_999).is_ok());
        assert!(matches!(k.verify(&t, 10_000), Err(AuthError::Expired)));
        assert!(matches!(k.verify(&t, u64::MAX), Err(AuthError::Expired)));
    }

    #[test]
    fn a_token_with_zero_expiry_never_expires() {
        let k = key(7);
        let t = k.issue("u", 1, 0);
        assert_eq!(k.verify(&t, u64::MAX).unwrap().expires_ms, 0);
    }

    #[test]
    fn another_key_rejects_the_token() {
        let t = key(1).issue("u", 0, 0);
        assert!(matches!(key(2).verify(&t, 0), Err(AuthError::BadSignature)));
    }

    #[test]
    fn a_revoked_generation_still_verifies_here_and_the_caller_compares_it() {
        let k = key(1);
        let old = k.verify(&k.issue("u", 4, 0), 0).unwrap();
        let stored_gen = 5;
        assert_ne!(
            old.r#gen, stored_gen,
            "the caller refuses gen 4 after a bump to 5"
        );
    }

    #[test]
    fn short_or_empty_tokens_are_malformed() {
        let k = key(1);
        for len in [0, 1, HEADER_LEN, HEADER_LEN + TAG_LEN] {
            assert!(
                matches!(k.verify(&vec![1; len], 0), Err(AuthError::Malformed)),
                "{len}"
            );
        }
        // A signed token with an empty user is malformed too.
        let t = k.issue("", 0, 0);
        assert!(matches!(k.verify(&t, 0), Err(AuthError::Malformed)));
    }

    #[test]
    fn a_token_signed_with_an_unknown_version_is_malformed() {
        let k = key(1);
        let mut body = k.issue("u", 0, 0);
        body.truncate(body.len() - TAG_LEN);
        body[0] = 2;
        let tag = k.mac(&body).finalize().into_bytes();
        body.extend_from_slice(&tag);
        assert!(matches!(k.verify(&body, 0), Err(AuthError::Malformed)));
    }

    #[test]
    fn the_key_file_is_created_private_and_reloads_identically() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token.key");
        let a = TokenKey::load_or_create(&path).unwrap();
        assert_eq!(fs::read(&path).unwrap(), a.as_bytes());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let b = TokenKey::load_or_create(&path).unwrap();
        assert_eq!(a.as_bytes(), b.as_bytes());
        let t = a.issue("u", 0, 0);
        assert!(b.verify(&t, 0).is_ok());
        // No temporary files are left behind.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn two_created_keys_differ() {
        let dir = tempfile::tempdir().unwrap();
        let a = TokenKey::load_or_create(&dir.path().join("a")).unwrap();
        let b = TokenKey::load_or_create(&dir.path().join("b")).unwrap();
        assert_ne!(a.as_bytes(), b.as_bytes());
    }

    #[test]
    fn a_key_file_of_the_wrong_length_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token.key");
        fs::write(&path, [0u8; 31]).unwrap();
        assert!(matches!(
            TokenKey::load_or_create(&path),
            Err(AuthError::KeyFile { len: 31 })
        ));
        assert_eq!(fs::read(&path).unwrap().len(), 31, "never overwritten");
    }

    #[test]
    fn a_key_file_in_a_missing_folder_is_an_io_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nope").join("token.key");
        assert!(matches!(
            TokenKey::load_or_create(&path),
            Err(AuthError::Io(_))
        ));
    }

    #[test]
    fn the_key_never_shows_in_debug_output() {
        assert_eq!(format!("{:?}", key(0xab)), "TokenKey(..)");
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_verify(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            prop_assert!(key(9).verify(&bytes, 0).is_err());
        }

        #[test]
        fn any_flipped_bit_breaks_the_token(
            user in "[a-z0-9]{1,20}",
            generation in any::<u32>(),
            exp in any::<u64>(),
            bit in any::<proptest::sample::Index>(),
        ) {
            let k = key(9);
            let mut t = k.issue(&user, generation, exp);
            let i = bit.index(t.len() * 8);
            t[i / 8] ^= 1 << (i % 8);
            prop_assert!(k.verify(&t, 0).is_err());
        }

        #[test]
        fn any_issued_token_round_trips(user in "\\PC{1,40}", generation in any::<u32>(), exp in any::<u64>()) {
            let k = key(3);
            let t = k.issue(&user, generation, exp);
            let now = exp.saturating_sub(1);
            let c = k.verify(&t, now).unwrap();
            prop_assert_eq!(c, TokenClaims { user, r#gen: generation, expires_ms: exp });
        }
    }
}
