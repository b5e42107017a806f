//! Tampering with an audit chain is detected, and verify says where:
//! an edited record, a deleted one, two swapped, the tail cut off (caught
//! by a checkpoint kept elsewhere), a forged checkpoint, and retention.

use keyhold_audit::*;
use keyhold_crypto::HmacKey;
use parking_lot::Mutex;
use std::path::{Path, PathBuf};
use std::sync::Arc;

fn key() -> Arc<HmacKey> {
    Arc::new(HmacKey::new(&[42; 32]))
}

fn rec(i: u64) -> Record {
    Record {
        frontend: "xks".into(),
        operation: if i.is_multiple_of(2) {
            "Encrypt"
        } else {
            "Decrypt"
        }
        .into(),
        result: "OK".into(),
        ts_ms: 1_800_000_000_000 + i as i64,
        key: Some(format!("k{}", i % 3)),
        kms_request_id: Some(format!("req-{i}")),
        ..Record::default()
    }
}

/// Writes `n` records in batches of 7 with a checkpoint at the end; returns
/// the checkpoints the sink received.
fn write(cfg: &AuditLogConfig, n: u64) -> Vec<Checkpoint> {
    let got = Arc::new(Mutex::new(Vec::new()));
    let g = got.clone();
    let mut cfg = cfg.clone();
    cfg.sinks = vec![Arc::new(move |c: &Checkpoint| {
        g.lock().push(c.clone());
        Ok(())
    })];
    let mut w = ChainWriter::open(&cfg, "xks", key(), false).unwrap();
    let mut i = 0;
    while i < n {
        let batch: Vec<_> = (i..(i + 7).min(n)).map(rec).collect();
        i += batch.len() as u64;
        w.append(&batch).unwrap();
    }
    w.checkpoint().unwrap();
    let v = got.lock().clone();
    v
}

fn the_file(dir: &Path) -> PathBuf {
    let d = dir.join("xks");
    let mut files: Vec<_> = std::fs::read_dir(&d)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    files.sort();
    files.pop().unwrap()
}

fn edit_lines(p: &Path, f: impl FnOnce(&mut Vec<String>)) {
    let text = std::fs::read_to_string(p).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    f(&mut lines);
    let mut out = lines.join("\n");
    out.push('\n');
    std::fs::write(p, out).unwrap();
}

fn setup(n: u64) -> (tempfile::TempDir, AuditLogConfig, Vec<Checkpoint>) {
    let d = tempfile::tempdir().unwrap();
    let cfg = AuditLogConfig::new(d.path().to_owned());
    let cps = write(&cfg, n);
    (d, cfg, cps)
}

#[test]
fn an_intact_chain_verifies_and_reopens_where_it_stopped() {
    let (d, cfg, cps) = setup(30);
    let r = verify(d.path(), &key(), &cps);
    assert!(r.ok(), "{:?}", r.problems);
    assert_eq!(r.chains, vec![("xks".into(), 30, 1, 30)]);
    assert_eq!(r.checkpoints_checked, 1);
    // Reopening continues the chain.
    let more = write(&cfg, 5);
    let mut all = cps.clone();
    all.extend(more);
    let r = verify(d.path(), &key(), &all);
    assert!(r.ok(), "{:?}", r.problems);
    assert_eq!(r.chains[0].3, 35);
    let q = query(
        d.path(),
        &[],
        &key(),
        &Filter {
            kms_request_id: Some("req-4".into()),
            ..Filter::default()
        },
        100,
    );
    assert_eq!(q.len(), 2, "req-4 was written by both runs");
    assert!(q.iter().all(|(_, authentic)| *authentic));
}

#[test]
fn an_edited_record_is_found() {
    let (d, _, cps) = setup(20);
    edit_lines(&the_file(d.path()), |l| {
        l[4] = l[4].replace("Encrypt", "Decrypt")
    });
    let r = verify(d.path(), &key(), &cps);
    assert!(!r.ok());
    assert!(
        r.problems[0].contains("line 5") && r.problems[0].contains("altered"),
        "{:?}",
        r.problems
    );
}

#[test]
fn a_deleted_record_is_found() {
    let (d, _, cps) = setup(20);
    edit_lines(&the_file(d.path()), |l| {
        l.remove(9);
    });
    let r = verify(d.path(), &key(), &cps);
    assert!(
        r.problems
            .iter()
            .any(|p| p.contains("record 11 where 10 was expected")),
        "{:?}",
        r.problems
    );
}

#[test]
fn swapped_records_are_found() {
    let (d, _, cps) = setup(20);
    edit_lines(&the_file(d.path()), |l| l.swap(3, 4));
    let r = verify(d.path(), &key(), &cps);
    assert!(
        r.problems
            .iter()
            .any(|p| p.contains("line 4") && p.contains("reordered")),
        "{:?}",
        r.problems
    );
}

#[test]
fn a_cut_tail_is_found_by_the_checkpoint() {
    let (d, _, cps) = setup(20);
    edit_lines(&the_file(d.path()), |l| l.truncate(15));
    // The shorter chain is valid on its own...
    assert!(verify(d.path(), &key(), &[]).ok());
    // ...but not against the checkpoint kept in the database.
    let r = verify(d.path(), &key(), &cps);
    assert!(
        r.problems
            .iter()
            .any(|p| p.contains("ends at record 15") && p.contains("newest records were removed")),
        "{:?}",
        r.problems
    );
}

#[test]
fn a_forged_checkpoint_and_a_rewritten_log_are_found() {
    let (d, cfg, mut cps) = setup(10);
    cps[0].seq = 5;
    let r = verify(d.path(), &key(), &cps);
    assert!(
        r.problems.iter().any(|p| p.contains("forged")),
        "{:?}",
        r.problems
    );
    // A whole new chain written over the old one (same length, other
    // records) does not match the old checkpoint.
    let (_, _, good) = (0, 0, {
        let mut c = cps.clone();
        c[0].seq = 10;
        c
    });
    std::fs::remove_dir_all(d.path().join("xks")).unwrap();
    let mut w = ChainWriter::open(&cfg, "xks", key(), false).unwrap();
    let other: Vec<_> = (100..110).map(rec).collect();
    w.append(&other).unwrap();
    drop(w);
    let original = write_fresh_checkpoint(good);
    let r = verify(d.path(), &key(), &original);
    assert!(
        r.problems.iter().any(|p| p.contains("rewritten")),
        "{:?}",
        r.problems
    );
}

/// The test's checkpoints with a recomputed (authentic) MAC.
fn write_fresh_checkpoint(cps: Vec<Checkpoint>) -> Vec<Checkpoint> {
    cps.into_iter()
        .map(|c| Checkpoint::new(&key(), &c.chain, &c.kind, c.seq, &c.head, c.ts_ms))
        .collect()
}

#[test]
fn the_wrong_key_verifies_nothing() {
    let (d, _, cps) = setup(3);
    let r = verify(d.path(), &HmacKey::new(&[1; 32]), &cps);
    assert!(r.problems.len() >= 3);
}

#[test]
fn rotation_and_retention_keep_the_chain_verifiable() {
    let d = tempfile::tempdir().unwrap();
    let mut cfg = AuditLogConfig::new(d.path().to_owned());
    cfg.max_file_bytes = 2_000;
    cfg.max_files = 3;
    let cps = write(&cfg, 200);
    let files = std::fs::read_dir(d.path().join("xks"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "jsonl")
        })
        .count();
    assert_eq!(files, 3, "older files removed");
    assert!(cps.iter().any(|c| c.kind == "retention"));
    let r = verify(d.path(), &key(), &cps);
    assert!(r.ok(), "{:?}", r.problems);
    assert!(r.chains[0].2 > 1 && r.chains[0].3 == 200, "{:?}", r.chains);
    // Without the retention markers the missing start is reported.
    let only: Vec<_> = cps
        .iter()
        .filter(|c| c.kind == "checkpoint")
        .cloned()
        .collect();
    let r = verify(d.path(), &key(), &only);
    assert!(
        r.problems.iter().any(|p| p.contains("were deleted")),
        "{:?}",
        r.problems
    );
}

#[test]
fn a_partial_last_line_from_a_crash_is_cut_on_reopen() {
    let (d, cfg, cps) = setup(5);
    let f = the_file(d.path());
    let mut text = std::fs::read_to_string(&f).unwrap();
    text.push_str("{\"seq\":6,\"ts_ms\":1,\"cha");
    std::fs::write(&f, text).unwrap();
    let more = write(&cfg, 2);
    let mut all = cps;
    all.extend(more);
    let r = verify(d.path(), &key(), &all);
    assert!(r.ok(), "{:?}", r.problems);
    assert_eq!(r.chains[0].3, 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_thread_acknowledges_each_record() {
    let d = tempfile::tempdir().unwrap();
    let cfg = AuditLogConfig::new(d.path().to_owned());
    let w = ChainWriter::open(&cfg, "xks", key(), false).unwrap();
    // A second writer of the same chain is refused.
    assert!(ChainWriter::open(&cfg, "xks", key(), false).is_err());
    let log = Arc::new(AuditLog::start(w));
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let log = log.clone();
            tokio::spawn(async move { log.record(&rec(i).event()).await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(log.status().records, 200);
    assert!(log.status().failing.is_none());
    let r = verify(d.path(), &key(), &[]);
    assert!(r.ok(), "{:?}", r.problems);
    assert_eq!(r.chains[0].1, 200);
}

/// A chain copied elsewhere (another node's, shipped to a shared database)
/// verifies from its lines alone, and the same tampering is found there.
#[test]
fn shipped_copies_verify_like_the_files() {
    let d = tempfile::tempdir().unwrap();
    let cps = write(&AuditLogConfig::new(d.path().to_owned()), 20);
    let mut tail = ChainTail::new(d.path().join("xks"), 0);
    let lines: Vec<String> = tail.next_batch(100).into_iter().map(|(_, l)| l).collect();
    assert_eq!(lines.len(), 20);
    let empty = tempfile::tempdir().unwrap();
    let ok = verify_with(empty.path(), &[("xks".into(), lines.clone())], &key(), &cps);
    assert!(ok.ok(), "{:?}", ok.problems);
    assert_eq!(ok.chains[0].1, 20);

    let mut cut = lines.clone();
    cut.remove(7);
    let r = verify_with(empty.path(), &[("xks".into(), cut)], &key(), &cps);
    assert!(
        r.problems.iter().any(|p| p.contains("shipped")),
        "{:?}",
        r.problems
    );
    let mut short = lines;
    short.truncate(15);
    let r = verify_with(empty.path(), &[("xks".into(), short)], &key(), &cps);
    assert!(!r.ok(), "the checkpoint catches a cut tail");
}

/// Many async requests at once, with the checkpoint thread taking the
/// chain's lock every millisecond: every record is written, each in its own
/// place in the chain. (The timeout is generous: a loaded machine's slow
/// fsync must not fail a test of ordering.)
#[test]
fn concurrent_async_records_all_land_while_checkpoints_run() {
    let d = tempfile::tempdir().unwrap();
    let mut cfg = AuditLogConfig::new(d.path().to_owned());
    cfg.checkpoint_interval = std::time::Duration::from_millis(1);
    cfg.timeout = std::time::Duration::from_secs(30);
    let log = Arc::new(AuditLog::start(
        ChainWriter::open(&cfg, "xks", key(), false).unwrap(),
    ));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let tasks: Vec<_> = (0..64u64)
            .map(|t| {
                let log = log.clone();
                tokio::spawn(async move {
                    for i in 0..100 {
                        log.record(&rec(t * 1000 + i).event()).await.unwrap();
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
    });
    drop(log);
    let r = verify(d.path(), &key(), &[]);
    assert!(r.ok(), "{:?}", r.problems);
    assert_eq!(r.chains[0].1, 6_400);
}
