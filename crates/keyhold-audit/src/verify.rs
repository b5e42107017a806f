//! Verifying chains against their MACs and checkpoints, and reading
//! records back for queries and exports.

use crate::chain::chain_files;
use crate::{
    genesis, open_line, Checkpoint, CheckpointMac, Record, KIND_CHECKPOINT, KIND_RESERVE,
    KIND_STOP, UNCLEAN_START,
};
use keyhold_crypto::HmacKey;
use std::collections::HashMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};

/// At most this many problems are listed per chain.
const MAX_PROBLEMS: usize = 50;

/// What `keyhold audit verify` found.
#[derive(Debug, Clone, Default)]
pub struct VerifyReport {
    /// Per chain: name, records seen, first and last sequence number.
    pub chains: Vec<(String, u64, u64, u64)>,
    /// Checkpoints compared with the log.
    pub checkpoints_checked: usize,
    /// Everything wrong, each saying where.
    pub problems: Vec<String>,
    /// What the log cannot prove either way: each start after an unclean
    /// stop (a crash, a kill, or records cut from the end), where records
    /// written after the last checkpoint may be missing.
    pub warnings: Vec<String>,
}

impl VerifyReport {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

fn chain_dirs(dir: &Path) -> Vec<(String, PathBuf)> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().is_dir())
        .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
        .collect();
    v.sort();
    v
}

/// Chains read from elsewhere than the audit directory (the copies other
/// nodes shipped to a shared database): name, and its lines in order.
pub type Shipped = [(String, Vec<String>)];

/// Verifies every chain under `dir` with `key`, and compares it with
/// `checkpoints` (from the key database, a checkpoint file…).
pub fn verify(dir: &Path, key: &HmacKey, checkpoints: &[Checkpoint]) -> VerifyReport {
    verify_with(dir, &[], key, checkpoints)
}

/// [`verify`], plus the `shipped` chains that have no directory here
/// (their lines are checked the same way).
pub fn verify_with(
    dir: &Path,
    shipped: &Shipped,
    key: &HmacKey,
    checkpoints: &[Checkpoint],
) -> VerifyReport {
    let mut report = VerifyReport::default();
    let mut by_chain: HashMap<&str, Vec<&Checkpoint>> = HashMap::new();
    for c in checkpoints {
        if c.is_authentic(key) {
            by_chain.entry(c.chain.as_str()).or_default().push(c);
        } else {
            report.problems.push(format!(
                "checkpoint of chain {} at seq {} has a bad MAC: it was forged or altered",
                c.chain, c.seq
            ));
        }
    }
    let dirs = chain_dirs(dir);
    for (chain, cdir) in &dirs {
        let cps = by_chain.remove(chain.as_str()).unwrap_or_default();
        verify_chain(chain, file_lines(cdir), key, &cps, &mut report);
    }
    for (chain, lines) in shipped {
        if dirs.iter().any(|(c, _)| c == chain) {
            continue;
        }
        let cps = by_chain.remove(chain.as_str()).unwrap_or_default();
        let lines = lines
            .iter()
            .enumerate()
            .map(|(i, l)| (format!("{chain} (shipped) record {}", i + 1), Ok(l.clone())));
        verify_chain(chain, lines, key, &cps, &mut report);
    }
    for (chain, cps) in by_chain {
        if cps.iter().any(|c| is_head_checkpoint(c) && c.seq > 0) {
            report.problems.push(format!(
                "chain {chain} has checkpoints but no log files: the whole chain was removed"
            ));
        }
    }
    report
}

/// The lines of a chain directory's files, in order, each with where it is.
fn file_lines(cdir: &Path) -> impl Iterator<Item = (String, std::io::Result<String>)> {
    let chain = cdir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    chain_files(cdir).into_iter().flat_map(move |file| {
        let name = file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let at = format!("{chain}/{name}");
        let lines: Box<dyn Iterator<Item = std::io::Result<String>>> =
            match std::fs::File::open(&file) {
                Ok(f) => Box::new(std::io::BufReader::new(f).lines()),
                Err(e) => Box::new(std::iter::once(Err(e))),
            };
        lines
            .enumerate()
            .map(move |(i, l)| (format!("{at} line {}", i + 1), l))
    })
}

/// Checkpoints that name a chain's head at a record.
fn is_head_checkpoint(c: &Checkpoint) -> bool {
    c.kind == KIND_CHECKPOINT || c.kind == KIND_STOP
}

fn verify_chain(
    chain: &str,
    lines: impl Iterator<Item = (String, std::io::Result<String>)>,
    key: &HmacKey,
    cps: &[&Checkpoint],
    report: &mut VerifyReport,
) {
    let mut w = Walk::new(chain, cps);
    for (at, line) in lines {
        let Ok(line) = line else {
            w.problems.push(format!("{at}: cannot be read"));
            continue;
        };
        match open_line(key, &line) {
            Ok((rec, mac)) => w.record(&at, &rec, mac),
            Err(e) => {
                w.problems.push(format!("{at}: {e}"));
                continue;
            }
        }
        if w.problems.len() >= MAX_PROBLEMS {
            break;
        }
    }
    w.check_checkpoints(report);
    w.check_closed(cps);
    report.warnings.append(&mut w.warnings);
    report
        .chains
        .push((chain.to_owned(), w.count, w.first, w.last));
    report.problems.append(&mut w.problems);
}

/// Walking one chain's records in order: what was expected next, what
/// was seen, and what is wrong.
struct Walk<'a> {
    chain: &'a str,
    /// Head checkpoints by the record number they signed.
    want: HashMap<u64, Vec<&'a Checkpoint>>,
    retention: Vec<&'a Checkpoint>,
    expect_seq: Option<u64>,
    prev: String,
    first: u64,
    last: u64,
    count: u64,
    /// The MACs of the records a checkpoint signed.
    seen_macs: HashMap<u64, String>,
    problems: Vec<String>,
    warnings: Vec<String>,
}

impl<'a> Walk<'a> {
    fn new(chain: &'a str, cps: &[&'a Checkpoint]) -> Self {
        let mut want: HashMap<u64, Vec<&Checkpoint>> = HashMap::new();
        for c in cps.iter().filter(|c| is_head_checkpoint(c)) {
            want.entry(c.seq).or_default().push(c);
        }
        Self {
            chain,
            want,
            retention: cps
                .iter()
                .copied()
                .filter(|c| c.kind == "retention")
                .collect(),
            expect_seq: None,
            prev: genesis(),
            first: 0,
            last: 0,
            count: 0,
            seen_macs: HashMap::new(),
            problems: Vec::new(),
            warnings: Vec::new(),
        }
    }

    /// One record whose MAC verified, `at` a place in a file.
    fn record(&mut self, at: &str, rec: &Record, mac: String) {
        self.count += 1;
        match self.expect_seq {
            None => self.first_record(at, rec),
            Some(s) => self.next_record(at, rec, s),
        }
        if rec.chain != self.chain {
            self.problems
                .push(format!("{at}: record belongs to chain {}", rec.chain));
        }
        if self.want.contains_key(&rec.seq) {
            self.seen_macs.insert(rec.seq, mac.clone());
        }
        self.last = rec.seq;
        self.expect_seq = Some(rec.seq + 1);
        self.prev = mac;
    }

    /// The chain's first record: record 1, or one that a retention marker
    /// or an unclean start accounts for.
    fn first_record(&mut self, at: &str, rec: &Record) {
        let chain = self.chain;
        self.first = rec.seq;
        if rec.operation == UNCLEAN_START && rec.prev == genesis() {
            self.warnings.push(format!(
                "{at}: chain {chain} starts after an unclean stop before its first record (numbers 1..{} skipped): records written then may have been lost or cut off",
                rec.seq - 1
            ));
        } else if rec.seq != 1 {
            let covered = self
                .retention
                .iter()
                .any(|c| c.seq + 1 == rec.seq && c.head == rec.prev);
            if !covered {
                self.problems.push(format!(
                    "{at}: the chain starts at record {} and no retention marker accounts for the records before it: they were deleted",
                    rec.seq
                ));
            }
        } else if rec.prev != genesis() {
            self.problems
                .push(format!("{at}: the first record does not start the chain"));
        }
    }

    /// A record after the first, where record `s` was expected.
    fn next_record(&mut self, at: &str, rec: &Record, s: u64) {
        let chain = self.chain;
        if rec.operation == UNCLEAN_START && rec.seq >= s && rec.prev == self.prev {
            self.warnings.push(format!(
                "{at}: chain {chain} was not closed cleanly after record {}{}: records written after its last checkpoint before then may have been lost or cut off",
                s - 1,
                if rec.seq > s {
                    format!(" (numbers {s}..{} skipped)", rec.seq - 1)
                } else {
                    String::new()
                }
            ));
        } else if rec.seq != s {
            self.problems.push(format!(
                "{at}: record {} where {s} was expected: records were deleted, inserted or reordered",
                rec.seq
            ));
        } else if rec.prev != self.prev {
            self.problems.push(format!(
                "{at}: record {} does not follow the record before it: records were deleted, inserted or reordered",
                rec.seq
            ));
        }
    }

    /// Every signed head is in the chain as signed.
    fn check_checkpoints(&mut self, report: &mut VerifyReport) {
        let (chain, first, last) = (self.chain, self.first, self.last);
        for (seq, list) in &self.want {
            for c in list {
                report.checkpoints_checked += 1;
                if *seq > last {
                    self.problems.push(format!(
                        "chain {chain} ends at record {last}, but a checkpoint of {} records was signed at {}: the newest records were removed",
                        seq,
                        keyhold_core::time::format_rfc3339(c.ts_ms / 1000)
                    ));
                } else if *seq >= first {
                    match self.seen_macs.get(seq) {
                        Some(m) if *m == c.head => {}
                        _ => self.problems.push(format!(
                            "chain {chain}: record {seq} is not the one the checkpoint of {} signed: the log was rewritten",
                            keyhold_core::time::format_rfc3339(c.ts_ms / 1000)
                        )),
                    }
                }
            }
        }
    }

    /// Reserved after its last clean stop: in use now, or left open by a
    /// crash, a kill or a cut. Nothing proves its newest records complete.
    fn check_closed(&mut self, cps: &[&Checkpoint]) {
        let (chain, last) = (self.chain, self.last);
        let last_reserve = cps
            .iter()
            .filter(|c| c.kind == KIND_RESERVE)
            .map(|c| c.ts_ms)
            .max();
        let Some(r) = last_reserve else {
            return;
        };
        let closed = cps
            .iter()
            .any(|c| c.kind == KIND_STOP && c.ts_ms >= r && c.seq == last);
        if !closed {
            let covered = self.want.keys().copied().filter(|s| *s <= last).max();
            let since = match covered {
                Some(c) => format!("records after record {c} (its newest checkpoint)"),
                None => "its records (it has no checkpoint yet)".to_owned(),
            };
            self.warnings.push(format!(
                "chain {chain} is in use by a running server or was not closed cleanly: {since} cannot be proven complete"
            ));
        }
    }
}

/// Which records a query selects.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub store: Option<String>,
    pub key: Option<String>,
    pub principal: Option<String>,
    pub operation: Option<String>,
    /// `OK`, an error name, or `error` for every failure.
    pub result: Option<String>,
    pub kms_request_id: Option<String>,
    pub frontend: Option<String>,
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
}

impl Filter {
    pub fn matches(&self, r: &Record) -> bool {
        let eq = |want: &Option<String>, got: Option<&str>| {
            want.as_deref().is_none_or(|w| got == Some(w))
        };
        eq(&self.store, r.store.as_deref())
            && eq(&self.key, r.key.as_deref())
            && self.principal.as_deref().is_none_or(|p| {
                // Who made the call: the AWS principal of an XKS call, the
                // client identity (its certificate) of a KMIP one.
                r.principal.as_deref() == Some(p)
                    || (r.frontend == "kmip" && r.actor.as_deref() == Some(p))
            })
            && self
                .operation
                .as_deref()
                .is_none_or(|o| r.operation.eq_ignore_ascii_case(o))
            && self.result.as_deref().is_none_or(|w| match w {
                "error" | "ERROR" => r.result != "OK",
                w => r.result == w,
            })
            && eq(&self.kms_request_id, r.kms_request_id.as_deref())
            && eq(&self.frontend, Some(r.frontend.as_str()))
            && self.since_ms.is_none_or(|t| r.ts_ms >= t)
            && self.until_ms.is_none_or(|t| r.ts_ms < t)
    }
}

/// Calls `f` with every readable record under `dir` (all chains, each in
/// order), as written, then with those of the `shipped` chains that have no
/// directory here, and whether the record's own MAC holds under `key`
/// (false: the line was altered or forged; `verify` says more). Lines that
/// do not parse are skipped (verify reports them).
pub fn read_all(
    dir: &Path,
    shipped: &Shipped,
    key: &HmacKey,
    mut f: impl FnMut(&Record, &str, bool),
) {
    let dirs = chain_dirs(dir);
    let mut each = |line: &str| match open_line(key, line) {
        Ok((r, _)) => f(&r, line, true),
        Err(_) => {
            if let Ok(r) = serde_json::from_str::<Record>(line) {
                f(&r, line, false);
            }
        }
    };
    for (_, cdir) in &dirs {
        for (_, line) in file_lines(cdir) {
            match line {
                Ok(l) => each(&l),
                Err(_) => break,
            }
        }
    }
    for (chain, lines) in shipped {
        if !dirs.iter().any(|(c, _)| c == chain) {
            lines.iter().for_each(|l| each(l));
        }
    }
}

/// Records under `dir` (and the `shipped` chains) matching `filter`,
/// oldest first, at most `limit` (the newest `limit` when there are more),
/// each with whether its MAC holds under `key`.
pub fn query(
    dir: &Path,
    shipped: &Shipped,
    key: &HmacKey,
    filter: &Filter,
    limit: usize,
) -> Vec<(Record, bool)> {
    let mut out = std::collections::VecDeque::new();
    read_all(dir, shipped, key, |r, _, authentic| {
        if filter.matches(r) {
            if out.len() == limit {
                out.pop_front();
            }
            out.push_back((r.clone(), authentic));
        }
    });
    let mut v: Vec<(Record, bool)> = out.into();
    v.sort_by_key(|(r, _)| (r.ts_ms, r.chain.clone(), r.seq));
    v
}
