//! How fast one chain writer appends (records/s on one core):
//! `cargo run --release -p keyhold-audit --example append_speed`.
use keyhold_audit::{AuditLogConfig, ChainWriter, Record};
use std::sync::Arc;
use std::time::Instant;

fn main() {
    let d = tempfile::tempdir().unwrap();
    let cfg = AuditLogConfig::new(d.path().to_owned());
    let key = Arc::new(keyhold_crypto::HmacKey::new(&[1; 32]));
    let mut w = ChainWriter::open(&cfg, "xks", key, false).unwrap();
    let proto = Record {
        ts_ms: 1_800_000_000_000,
        frontend: "xks".into(),
        operation: "Encrypt".into(),
        result: "OK".into(),
        status: Some(200),
        store: Some("/bench".into()),
        key: Some("bench-key".into()),
        key_version: Some(1),
        latency_us: Some(120),
        actor: Some("ABCDEFGHIJKLMNOPQRSTUVWX".into()),
        principal: Some("arn:aws:iam::123456789012:role/bench".into()),
        kms_operation: Some("GenerateDataKey".into()),
        kms_request_id: Some("4112f4d6-db54-4af4-ae30-c55a22a8dfae".into()),
        kms_key_arn: Some(
            "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab".into(),
        ),
        ..Record::default()
    };
    for batch in [1usize, 8, 64] {
        let n = 200_000;
        let t = Instant::now();
        let mut done = 0;
        while done < n {
            let b: Vec<Record> = (0..batch).map(|_| proto.clone()).collect();
            w.append(&b).unwrap();
            done += batch;
        }
        let el = t.elapsed();
        println!(
            "batch {batch:>3}: {:.2} µs/record, {:.0} records/s",
            el.as_secs_f64() * 1e6 / n as f64,
            n as f64 / el.as_secs_f64()
        );
    }
}
