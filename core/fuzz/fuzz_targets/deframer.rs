//! Feeds arbitrary bytes, in chunk sizes chosen by the input, to a `Deframer<4096>` and checks
//! that it never panics, never wedges, and yields only bodies that round-trip.
#![no_main]

use kefu_core::frame::{Deframer, OVERHEAD, decode_frame, encode_frame};
use libfuzzer_sys::fuzz_target;

const N: usize = 4096;

fuzz_target!(|input: &[u8]| {
    // The first byte chooses the max body and seeds the chunk sizes; the rest is the stream.
    let Some((&seed, mut data)) = input.split_first() else { return };
    let mut d = Deframer::<N>::with_max_body(if seed & 1 == 0 { usize::MAX } else { 64 });
    let max = d.max_body();
    let mut state = u32::from(seed) | 1;
    let mut out = [0u8; N];
    while !data.is_empty() {
        state = state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        let chunk = 1 + (state >> 16) as usize % 300;
        let took = d.write(&data[..chunk.min(data.len())]);
        assert!(took >= 1, "a drained deframer refused input");
        assert!(d.buffered() <= N);
        data = &data[took..];
        let mut guard = 0usize;
        while let Some(r) = d.next_frame() {
            guard += 1;
            assert!(guard <= N + 1, "next_frame does not make progress");
            if let Ok(body) = r {
                assert!(body.len() <= max);
                let n = encode_frame(body, &mut out).expect("a yielded body fits a frame");
                assert_eq!(n, body.len() + OVERHEAD);
                let (again, len) = decode_frame(&out[..n], max).expect("re-encoded frame decodes");
                assert_eq!(again, body);
                assert_eq!(len, n);
            }
        }
        assert!(d.buffered() < N, "drained deframer is full");
    }
});
