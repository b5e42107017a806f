//! What one audit record costs the request path: sealing (JSON, HMAC
//! chain) and the write, for batches of 1, 10 and 32 records (what flat
//! combining gives under light and heavy load). `cargo bench -p keyhold-audit`.

use keyhold_audit::{AuditLogConfig, ChainWriter, Record};
use std::sync::Arc;
use std::time::Instant;

fn record(i: u64) -> Record {
    Record {
        ts_ms: 1_795_000_000_000 + i as i64,
        frontend: "xks".into(),
        operation: "Encrypt".into(),
        result: "OK".into(),
        status: Some(200),
        store: Some("/bench".into()),
        key: Some("bench-key".into()),
        key_version: Some(1),
        latency_us: Some(24),
        actor: Some("G3C5EUXFUS4EIOL77RDET4Q2".into()),
        principal: Some("arn:aws:iam::111122223333:role/bench".into()),
        kms_operation: Some("GenerateDataKey".into()),
        kms_request_id: Some(format!("bench-{i}")),
        kms_key_arn: Some("arn:aws:kms:us-east-1:111122223333:key/bench".into()),
        ..Record::default()
    }
}

fn main() {
    let key = Arc::new(keyhold_crypto::HmacKey::new(&[7u8; 32]));
    let total = 200_000u64;
    for batch in [1usize, 10, 32] {
        let dir = tempfile::tempdir().unwrap();
        let cfg = AuditLogConfig::new(dir.path().to_path_buf());
        let mut w = ChainWriter::open(&cfg, "bench", key.clone(), false).unwrap();
        let mut recs: Vec<Record> = Vec::with_capacity(batch);
        let t = Instant::now();
        let mut i = 0;
        while i < total {
            recs.clear();
            recs.extend((0..batch as u64).map(|j| record(i + j)));
            w.append(&mut recs).unwrap();
            i += batch as u64;
        }
        let secs = t.elapsed().as_secs_f64();
        println!(
            "audit append, batches of {batch:2}: {:.2} µs per record ({:.0} records/s)",
            secs * 1e6 / i as f64,
            i as f64 / secs
        );
    }
}
