//! Encode and decode of a `pub` carrying 100 bytes of content, framed (header, postcard body,
//! CRCs), and of the `data` the gateway pushes for it.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;

use kefu_core::frame::decode_frame;
use kefu_core::id::MsgId;
use kefu_core::proto::{
    ClientPacket, Data, Head, Pub, ServerPacket, decode_client, decode_server, encode_client,
    encode_server,
};

fn codec(c: &mut Criterion) {
    let content = [b'x'; 100];
    let packet = ClientPacket::Pub(Pub {
        id: 4711,
        topic: "cns0042",
        msg_id: MsgId::from_bytes([0x5a; 16]),
        head: Head {
            mime: "",
            reply_to: None,
        },
        content: &content,
    });
    let mut buf = [0u8; 512];
    let mut g = c.benchmark_group("codec");
    g.throughput(Throughput::Elements(1));
    g.bench_function("encode_pub_100b", |b| {
        b.iter(|| encode_client(black_box(&packet), black_box(&mut buf)).unwrap())
    });
    let n = encode_client(&packet, &mut buf).unwrap();
    let frame = buf[..n].to_vec();
    g.bench_function("deframe_pub_100b_checks_only", |b| {
        b.iter(|| black_box(decode_frame(black_box(&frame), 4096).unwrap()))
    });
    g.bench_function("decode_pub_100b", |b| {
        b.iter(|| {
            let (body, _) = decode_frame(black_box(&frame), 4096).unwrap();
            let p = decode_client(body).unwrap();
            black_box(p);
        })
    });

    let data = ServerPacket::Data(Data {
        topic: "cns0042",
        seq: 123_456,
        msg_id: MsgId::from_bytes([0x5a; 16]),
        from: "usr7",
        ts: 1_800_000_000_000,
        head: Head::default(),
        content: &content,
    });
    g.bench_function("encode_data_100b", |b| {
        b.iter(|| encode_server(black_box(&data), black_box(&mut buf)).unwrap())
    });
    let n = encode_server(&data, &mut buf).unwrap();
    let frame = buf[..n].to_vec();
    g.bench_function("decode_data_100b", |b| {
        b.iter(|| {
            let (body, _) = decode_frame(black_box(&frame), 4096).unwrap();
            black_box(decode_server(body).unwrap());
        })
    });
    g.finish();
}

criterion_group!(benches, codec);
criterion_main!(benches);
