//! Decodes arbitrary bytes as client and server packets: never panics, and whatever decodes
//! re-encodes to a body that decodes to the same packet (the codec is a bijection on what it
//! accepts, up to padded varints).
#![no_main]

use kefu_core::proto::{
    decode_client, decode_server, encode_client_body, encode_server_body,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    let mut out = [0u8; 8192];
    if let Ok(p) = decode_client(body) {
        let n = encode_client_body(&p, &mut out).expect("a decoded packet re-encodes");
        assert!(n <= body.len(), "canonical encoding is never longer");
        assert_eq!(decode_client(&out[..n]), Ok(p));
    }
    if let Ok(p) = decode_server(body) {
        let n = encode_server_body(&p, &mut out).expect("a decoded packet re-encodes");
        assert!(n <= body.len(), "canonical encoding is never longer");
        assert_eq!(decode_server(&out[..n]), Ok(p));
    }
});
