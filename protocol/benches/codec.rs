//! PDU codec throughput: decode (frame split + opcode parse) and encode of a Data-In and a
//! Data-Out carrying 256 KiB, and of a SCSI Command header (WRITE(16), no data).
//!
//! `cargo bench -p rewind-protocol --bench codec`

use bytes::{Bytes, BytesMut};
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use rewind_protocol::{decode, encode, DataIn, DataOut, FrameConfig, Pdu, ScsiCommand, TaskAttr};

const DATA_LEN: usize = 256 << 10;

fn data_in() -> Pdu {
    Pdu::DataIn(DataIn {
        final_: true,
        ack: false,
        overflow: false,
        underflow: false,
        status: Some(0),
        lun: 0,
        itt: 0x1234,
        ttt: 0xffff_ffff,
        stat_sn: 7,
        exp_cmd_sn: 8,
        max_cmd_sn: 40,
        data_sn: 0,
        buffer_offset: 0,
        residual: 0,
        data: Bytes::from(vec![0xa5u8; DATA_LEN]),
    })
}

fn data_out() -> Pdu {
    Pdu::DataOut(DataOut {
        final_: true,
        lun: 0,
        itt: 0x1234,
        ttt: 0x10,
        exp_stat_sn: 7,
        data_sn: 0,
        buffer_offset: 0,
        data: Bytes::from(vec![0x5au8; DATA_LEN]),
    })
}

fn scsi_command() -> Pdu {
    let mut cdb = [0u8; 16];
    cdb[0] = 0x8a; // WRITE(16)
    cdb[2..10].copy_from_slice(&4096u64.to_be_bytes());
    cdb[10..14].copy_from_slice(&8u32.to_be_bytes());
    Pdu::ScsiCommand(ScsiCommand {
        immediate: false,
        final_: true,
        read: false,
        write: true,
        attr: TaskAttr::SIMPLE,
        lun: 0,
        itt: 0x1234,
        expected_data_len: 4096,
        cmd_sn: 8,
        exp_stat_sn: 7,
        cdb: Bytes::copy_from_slice(&cdb),
        bidi_read_len: None,
        data: Bytes::new(),
    })
}

fn bench_pdu(c: &mut Criterion, name: &str, pdu: &Pdu, cfg: &FrameConfig) {
    let wire = {
        let mut b = BytesMut::new();
        encode(pdu, cfg, &mut b);
        b.freeze()
    };
    let mut g = c.benchmark_group(name);
    g.throughput(Throughput::Bytes(wire.len() as u64));
    g.bench_function("encode", |b| {
        let mut out = BytesMut::with_capacity(wire.len());
        b.iter(|| {
            out.clear();
            encode(black_box(pdu), cfg, &mut out);
            black_box(out.len())
        })
    });
    g.bench_function("decode", |b| {
        b.iter(|| {
            // What the reader does: the frame arrives in its receive buffer, is split off and
            // parsed (the copy into the buffer stands for the socket read).
            let mut buf = BytesMut::from(&wire[..]);
            let pdu = decode(&mut buf, cfg).expect("valid").expect("whole PDU");
            black_box(pdu)
        })
    });
    g.bench_function("decode_only", |b| {
        b.iter_batched(
            || BytesMut::from(&wire[..]),
            |mut buf| black_box(decode(&mut buf, cfg).expect("valid").expect("whole PDU")),
            criterion::BatchSize::LargeInput,
        )
    });
    g.finish();
}

fn codec(c: &mut Criterion) {
    let plain = FrameConfig {
        header_digest: false,
        data_digest: false,
        max_recv_data_segment: DATA_LEN as u32,
    };
    let digests = FrameConfig {
        header_digest: true,
        data_digest: true,
        ..plain
    };
    bench_pdu(c, "data_in_256k", &data_in(), &plain);
    bench_pdu(c, "data_out_256k", &data_out(), &plain);
    bench_pdu(c, "data_out_256k_crc32c", &data_out(), &digests);
    bench_pdu(c, "scsi_command", &scsi_command(), &plain);
}

criterion_group!(benches, codec);
criterion_main!(benches);
