//! Build script: puts `memory.x` on the linker path (and defmt's `defmt.x` on the link line with
//! the `defmt` feature) and bakes the gateway settings in.
//!
//! Settings come from the environment at build time (cargo rebuilds when they change):
//! - `KEFU_TOKEN`: the device's login token as printed by `kefu device add` (base64url, no
//!   padding). Decoded here; the firmware logs in with `AuthScheme::Token` and these bytes.
//!   Empty or unset: the app has no token and says so (`failed: no device token`).
//! - `KEFU_GATEWAY_PORT`: the TCP port of the gateway; the firmware connects to
//!   10.0.2.100:PORT, which QEMU's `guestfwd` carries to 127.0.0.1:PORT. Default 7700.
//! - `KEFU_DEVICE`: the device id sent in `hi`. Default `mps2-an386`.
//! - `KEFU_BULK_BYTES` / `KEFU_BULK_PORT`: a bulk self-test before the app (default off / 9000):
//!   receive that many bytes from 10.0.2.100:PORT and send as many to 10.0.2.100:PORT+1.

use std::env;
use std::fmt::Write as _;
use std::fs;
use std::path::PathBuf;

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    fs::copy("memory.x", out.join("memory.x")).expect("copy memory.x");
    println!("cargo:rustc-link-search={}", out.display());
    println!("cargo:rerun-if-changed=memory.x");
    if env::var_os("CARGO_FEATURE_DEFMT").is_some() {
        println!("cargo:rustc-link-arg=-Tdefmt.x");
    }
    for var in [
        "KEFU_TOKEN",
        "KEFU_GATEWAY_PORT",
        "KEFU_DEVICE",
        "KEFU_BULK_BYTES",
        "KEFU_BULK_PORT",
    ] {
        println!("cargo:rerun-if-env-changed={var}");
    }

    let token_text = env::var("KEFU_TOKEN").unwrap_or_default();
    let token = decode_base64url(token_text.trim())
        .unwrap_or_else(|e| panic!("KEFU_TOKEN is not base64url: {e}"));
    let port: u16 = env::var("KEFU_GATEWAY_PORT")
        .ok()
        .filter(|p| !p.is_empty())
        .map(|p| p.parse().expect("KEFU_GATEWAY_PORT must be a port number"))
        .unwrap_or(7700);
    let device = env::var("KEFU_DEVICE").unwrap_or_else(|_| "mps2-an386".into());

    let number = |var: &str, default: u64| -> u64 {
        env::var(var)
            .ok()
            .filter(|v| !v.is_empty())
            .map(|v| {
                v.parse()
                    .unwrap_or_else(|_| panic!("{var} must be a number"))
            })
            .unwrap_or(default)
    };
    let bulk_bytes = number("KEFU_BULK_BYTES", 0);
    let bulk_port = u16::try_from(number("KEFU_BULK_PORT", 9000)).expect("KEFU_BULK_PORT");

    let mut src = String::new();
    writeln!(
        src,
        "/// Bulk self-test length, 0 = off (`KEFU_BULK_BYTES`)."
    )
    .unwrap();
    writeln!(src, "pub const BULK_BYTES: usize = {bulk_bytes};").unwrap();
    writeln!(
        src,
        "/// Bulk self-test source port; the sink is the next one (`KEFU_BULK_PORT`)."
    )
    .unwrap();
    writeln!(src, "pub const BULK_PORT: u16 = {bulk_port};").unwrap();
    writeln!(
        src,
        "/// Login token (decoded `KEFU_TOKEN`); empty if none was given."
    )
    .unwrap();
    writeln!(src, "pub const TOKEN: &[u8] = &{token:?};").unwrap();
    writeln!(
        src,
        "/// Gateway port behind 10.0.2.100 (`KEFU_GATEWAY_PORT`)."
    )
    .unwrap();
    writeln!(src, "pub const GATEWAY_PORT: u16 = {port};").unwrap();
    writeln!(src, "/// Device id sent in `hi` (`KEFU_DEVICE`).").unwrap();
    writeln!(src, "pub const DEVICE: &str = {device:?};").unwrap();
    fs::write(out.join("config.rs"), src).expect("write config.rs");
}

/// Decodes base64url without padding (padding is tolerated).
fn decode_base64url(s: &str) -> Result<Vec<u8>, String> {
    let mut bits = 0u32;
    let mut nbits = 0;
    let mut out = Vec::new();
    for c in s.trim_end_matches('=').chars() {
        let v = match c {
            'A'..='Z' => c as u32 - 'A' as u32,
            'a'..='z' => c as u32 - 'a' as u32 + 26,
            '0'..='9' => c as u32 - '0' as u32 + 52,
            '-' => 62,
            '_' => 63,
            _ => return Err(format!("bad character {c:?}")),
        };
        bits = (bits << 6) | v;
        nbits += 6;
        if nbits >= 8 {
            nbits -= 8;
            out.push((bits >> nbits) as u8);
            bits &= (1 << nbits) - 1;
        }
    }
    Ok(out)
}
