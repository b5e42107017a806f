//! Where a command's output and files go: the terminal and the files the
//! user named. Commands run on the admin API are typed operations whose
//! answers the client prints itself, so nothing here is ever captured.

use std::fmt;
use std::io::Write;
use std::path::Path;

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
    match to {
        Stream::Out => line(&mut std::io::stdout().lock()),
        Stream::Err => line(&mut std::io::stderr().lock()),
    }
}

/// `println!` for command output (a closed pipe is not a panic).
macro_rules! outln {
    ($($t:tt)*) => { $crate::cmdio::line_fmt($crate::cmdio::Stream::Out, format_args!($($t)*)) };
}
/// `eprintln!` for command output.
macro_rules! errln {
    ($($t:tt)*) => { $crate::cmdio::line_fmt($crate::cmdio::Stream::Err, format_args!($($t)*)) };
}
pub(crate) use {errln, outln};

/// Reads a file the user named on the command line.
pub(crate) fn read_input(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|err| format!("cannot read {}: {err}", path.display()))
}

/// Writes a new file the user named on the command line (refusing to
/// overwrite one), with `mode`.
pub(crate) fn write_output(path: &Path, data: &[u8], mode: u32) -> Result<(), String> {
    crate::local::write_file(path, data, mode)
}
