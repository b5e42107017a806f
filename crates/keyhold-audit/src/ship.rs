//! Reading what a chain appended since last time, so that a node can copy
//! its chains to a database the other nodes share (where `keyhold audit`
//! on any node finds them). The copies are the sealed lines themselves:
//! they verify with the same key and checkpoints as the files.

use crate::chain::chain_files;
use crate::Record;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;

/// A reader that follows one chain directory's files.
pub struct ChainTail {
    dir: PathBuf,
    file: Option<PathBuf>,
    offset: u64,
    last_seq: u64,
}

impl ChainTail {
    /// Follows the chain in `dir`, from the record after `after_seq`.
    pub fn new(dir: PathBuf, after_seq: u64) -> Self {
        Self {
            dir,
            file: None,
            offset: 0,
            last_seq: after_seq,
        }
    }

    /// The last record returned so far.
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// Up to `max` complete records appended since the last call, in order,
    /// as (sequence number, sealed line). A line still being written is left
    /// for the next call.
    pub fn next_batch(&mut self, max: usize) -> Vec<(u64, String)> {
        let files = chain_files(&self.dir);
        // Continue in the current file; if retention removed it, start over
        // (records already returned are skipped by their numbers).
        let start = match &self.file {
            Some(f) => match files.iter().position(|x| x == f) {
                Some(i) => i,
                None => {
                    self.offset = 0;
                    0
                }
            },
            None => 0,
        };
        let mut out = Vec::new();
        for file in &files[start..] {
            if self.file.as_ref() != Some(file) {
                self.file = Some(file.clone());
                self.offset = 0;
            }
            let mut buf = Vec::new();
            let read = std::fs::File::open(file).and_then(|mut f| {
                f.seek(SeekFrom::Start(self.offset))?;
                f.read_to_end(&mut buf)
            });
            if read.is_err() {
                return out;
            }
            let mut used = 0;
            while let Some(n) = buf[used..].iter().position(|b| *b == b'\n') {
                let line = &buf[used..used + n];
                used += n + 1;
                let Ok(text) = std::str::from_utf8(line) else {
                    continue;
                };
                let Ok(r) = serde_json::from_str::<Record>(text) else {
                    continue;
                };
                if r.seq > self.last_seq {
                    self.last_seq = r.seq;
                    out.push((r.seq, text.to_owned()));
                    if out.len() >= max {
                        break;
                    }
                }
            }
            self.offset += used as u64;
            if out.len() >= max {
                return out;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AuditLogConfig, ChainWriter};
    use keyhold_crypto::HmacKey;
    use std::sync::Arc;

    fn rec(op: &str) -> Record {
        Record {
            operation: op.into(),
            frontend: "xks".into(),
            result: "OK".into(),
            ..Record::default()
        }
    }

    #[test]
    fn follows_appends_and_file_rotation() {
        let d = tempfile::tempdir().unwrap();
        let mut cfg = AuditLogConfig::new(d.path().to_owned());
        cfg.max_file_bytes = 600;
        let key = Arc::new(HmacKey::new(b"k"));
        let mut w = ChainWriter::open(&cfg, "xks@n1", key, false).unwrap();
        let mut tail = ChainTail::new(d.path().join("xks@n1"), 0);
        assert!(tail.next_batch(10).is_empty());
        for i in 0..3 {
            w.append(&[rec(&format!("op{i}"))]).unwrap();
        }
        let b = tail.next_batch(2);
        assert_eq!(b.iter().map(|x| x.0).collect::<Vec<_>>(), [1, 2]);
        for i in 3..20 {
            w.append(&[rec(&format!("op{i}"))]).unwrap();
        }
        assert!(chain_files(&d.path().join("xks@n1")).len() > 1, "rotated");
        let mut seqs = vec![3];
        while let Some(x) = tail.next_batch(4).last().map(|x| x.0) {
            seqs.push(x);
        }
        assert_eq!(*seqs.last().unwrap(), 20);
        assert_eq!(tail.last_seq(), 20);
        // A new tail that starts after record 15 sees only the rest.
        let mut t2 = ChainTail::new(d.path().join("xks@n1"), 15);
        assert_eq!(t2.next_batch(100).len(), 5);
    }
}
