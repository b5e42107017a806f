//! What sealed rows cost where they are checked: on a cache miss, a key
//! lookup reads the key's row and its current version's row from storage
//! and verifies both seals (HMAC-SHA256). Measured on one SQLite file
//! read through two handles, one without the sealer (no checks) and one
//! with the key service's (every row checked), interleaved.
//! `cargo bench -p keyhold-service --bench sealed_rows`.

use keyhold_core::{KeyId, StorePrefix, Usage};
use keyhold_root::SoftwareRoot;
use keyhold_service::integrity::RowKey;
use keyhold_service::KeyService;
use keyhold_storage::prelude::*;
use keyhold_storage::SqliteStorage;
use std::sync::Arc;
use std::time::Instant;

const KEYS: usize = 2_000;
const ROUNDS: usize = 7;

fn lookups(s: &dyn Storage, p: &StorePrefix, ids: &[KeyId]) -> f64 {
    let t = Instant::now();
    for id in ids {
        let k = s.get_key(p, id).unwrap().unwrap();
        s.get_key_version(p, id, k.current_version)
            .unwrap()
            .unwrap();
    }
    t.elapsed().as_nanos() as f64 / ids.len() as f64
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("k.db");
    let root = SoftwareRoot::create(&dir.path().join("root.key"), None).unwrap();
    let svc =
        KeyService::open(Arc::new(SqliteStorage::open(&db).unwrap()), Arc::new(root)).unwrap();
    let p = StorePrefix::parse("/bench").unwrap();
    svc.create_store(&p, "").unwrap();
    let ids: Vec<KeyId> = (0..KEYS)
        .map(|i| KeyId::parse(&format!("k{i:05}")).unwrap())
        .collect();
    for id in &ids {
        svc.create_key(&p, id, Usage::BOTH).unwrap();
    }
    let plain = SqliteStorage::open(&db).unwrap();
    let checked = SqliteStorage::open(&db).unwrap();
    checked.set_row_sealer(Arc::new(RowKey::derive(
        &svc.audit_key().unwrap(),
        Arc::default(),
    )));
    // Warm both (page cache, prepared statements).
    lookups(&plain, &p, &ids);
    lookups(&checked, &p, &ids);
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        a.push(lookups(&plain, &p, &ids));
        b.push(lookups(&checked, &p, &ids));
    }
    a.sort_by(f64::total_cmp);
    b.sort_by(f64::total_cmp);
    let (ma, mb) = (a[ROUNDS / 2], b[ROUNDS / 2]);
    println!(
        "key lookup on a cache miss (key row + version row), median of {ROUNDS} x {KEYS}: \
         unchecked {ma:.0} ns, sealed and checked {mb:.0} ns ({:+.1}%, {:+.0} ns)",
        100.0 * (mb / ma - 1.0),
        mb - ma
    );
}
