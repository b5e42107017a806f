//! Any bytes sent to the KMIP listener get a well-formed response and never
//! a panic: the TTLV decoder, the message parser and every operation run
//! against a real (in-memory) key service.
#![no_main]
use keyhold_kmip::ttlv::{Limits, Ttlv};
use keyhold_kmip::{Client, Kmip};
use libfuzzer_sys::fuzz_target;
use std::sync::{Arc, OnceLock};

fn kmip() -> &'static Kmip {
    static K: OnceLock<Kmip> = OnceLock::new();
    K.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("keyhold-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let root = keyhold_root::SoftwareRoot::create(&dir.join("root.key"), None)
            .or_else(|_| keyhold_root::SoftwareRoot::load(&dir.join("root.key"), None))
            .unwrap();
        let storage = keyhold_storage::SqliteStorage::open_in_memory().unwrap();
        let service = keyhold_service::KeyService::open(Arc::new(storage), Arc::new(root)).unwrap();
        Kmip::new(Arc::new(service))
    })
}

fuzz_target!(|data: &[u8]| {
    let client = Client {
        identity: "fuzz".into(),
        peer: None,
    };
    let out = kmip().handle_bytes(&client, data);
    Ttlv::decode(&out, &Limits::default()).expect("the response is well-formed TTLV");
    // Reach the operations: the first byte picks one, the second a
    // version, and what follows (if it decodes) is the payload.
    if data.len() >= 2 {
        let versions = [(1, 0), (1, 2), (1, 4), (2, 0), (2, 1)];
        let (major, minor) = versions[data[1] as usize % versions.len()];
        let payload = match Ttlv::decode(&data[2..], &Limits::default()) {
            Ok(p) if !p.items().is_empty() => p.items().to_vec(),
            _ => vec![],
        };
        let req = keyhold_kmip::message::request(
            keyhold_kmip::message::Version::new(major, minor),
            vec![(u32::from(data[0] % 0x36), payload)],
        );
        let out = kmip().handle(&client, &req);
        assert_eq!(out.encode().len(), out.encoded_len());
    }
});
