//! Where a command's output and files go. Run locally, a command prints to
//! the terminal and reads and writes files itself. Run by the server for an
//! admin API request, the same command's output is captured for the
//! response, the files it reads are the ones the client sent, and the
//! files it writes go back to the client (which writes only the paths it
//! named).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;
use std::path::Path;

/// What one command did, when captured.
#[derive(Debug, Default)]
pub(crate) struct Captured {
    pub stdout: String,
    pub stderr: String,
    /// Path as the client named it → (bytes, Unix mode).
    pub outputs: BTreeMap<String, (Vec<u8>, u32)>,
}

struct Session {
    inputs: BTreeMap<String, Vec<u8>>,
    /// Bytes, not text, until the command ends: a writer may cut a
    /// character in two between writes.
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    outputs: BTreeMap<String, (Vec<u8>, u32)>,
}

thread_local! {
    static SESSION: RefCell<Option<Session>> = const { RefCell::new(None) };
}

/// Runs `f` with its output captured and `inputs` as the only readable files.
pub(crate) fn capture<R>(
    inputs: BTreeMap<String, Vec<u8>>,
    f: impl FnOnce() -> R,
) -> (R, Captured) {
    SESSION.with(|s| {
        *s.borrow_mut() = Some(Session {
            inputs,
            stdout: Vec::new(),
            stderr: Vec::new(),
            outputs: BTreeMap::new(),
        })
    });
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            SESSION.with(|s| s.borrow_mut().take());
        }
    }
    let reset = Reset;
    let r = f();
    let captured = SESSION
        .with(|s| s.borrow_mut().take())
        .map(|s| Captured {
            stdout: String::from_utf8_lossy(&s.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&s.stderr).into_owned(),
            outputs: s.outputs,
        })
        .unwrap_or_default();
    drop(reset);
    (r, captured)
}

/// Whether this thread runs a command for the admin API.
pub(crate) fn is_remote() -> bool {
    SESSION.with(|s| s.borrow().is_some())
}

fn with_session<R>(f: impl FnOnce(&mut Session) -> R) -> Option<R> {
    SESSION.with(|s| s.borrow_mut().as_mut().map(f))
}

/// Which stream a line goes to.
#[derive(Clone, Copy)]
pub(crate) enum Stream {
    Out,
    Err,
}

pub(crate) fn line_fmt(to: Stream, args: fmt::Arguments) {
    let line = |o: &mut dyn Write| {
        let _ = o.write_fmt(args);
        let _ = o.write_all(b"\n");
    };
    let captured = with_session(|s| match to {
        Stream::Out => line(&mut s.stdout),
        Stream::Err => line(&mut s.stderr),
    });
    if captured.is_none() {
        match to {
            Stream::Out => line(&mut std::io::stdout().lock()),
            Stream::Err => line(&mut std::io::stderr().lock()),
        }
    }
}

/// `println!` for command output.
macro_rules! outln {
    ($($t:tt)*) => { $crate::cmdio::line_fmt($crate::cmdio::Stream::Out, format_args!($($t)*)) };
}
/// `eprintln!` for command output.
macro_rules! errln {
    ($($t:tt)*) => { $crate::cmdio::line_fmt($crate::cmdio::Stream::Err, format_args!($($t)*)) };
}
pub(crate) use {errln, outln};

/// Standard output as a writer (captured for the admin API).
pub(crate) struct Stdout;

impl Write for Stdout {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match with_session(|s| s.stdout.extend_from_slice(buf)) {
            Some(()) => Ok(buf.len()),
            None => std::io::stdout().lock().write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match with_session(|_| ()) {
            Some(()) => Ok(()),
            None => std::io::stdout().lock().flush(),
        }
    }
}

/// Reads a file the user named on the command line.
pub(crate) fn read_input(path: &Path) -> Result<Vec<u8>, String> {
    let name = path.to_string_lossy().into_owned();
    match with_session(|s| s.inputs.get(&name).cloned()) {
        Some(Some(bytes)) => Ok(bytes),
        Some(None) => Err(format!("{name}: the client did not send this file")),
        None => std::fs::read(path).map_err(|err| format!("cannot read {name}: {err}")),
    }
}

/// Writes a new file the user named on the command line (refusing to
/// overwrite one), with `mode`.
pub(crate) fn write_output(path: &Path, data: &[u8], mode: u32) -> Result<(), String> {
    let name = path.to_string_lossy().into_owned();
    if with_session(|s| s.outputs.insert(name, (data.to_vec(), mode))).is_some() {
        return Ok(());
    }
    crate::admin::write_file(path, data, mode)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captured_output_keeps_characters_cut_between_writes() {
        let e = "é".as_bytes();
        let ((), c) = capture(BTreeMap::new(), || {
            let mut o = Stdout;
            o.write_all(&e[..1]).unwrap();
            o.write_all(&e[1..]).unwrap();
            line_fmt(Stream::Out, format_args!(" {}", 1));
            line_fmt(Stream::Err, format_args!("warn"));
        });
        assert_eq!(c.stdout, "é 1\n");
        assert_eq!(c.stderr, "warn\n");
        assert!(!is_remote(), "the capture ends with the command");
    }
}
