//! Reads JSONL files line by line without ever holding an over-long line in memory.

use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::path::{Path, PathBuf};

use super::example::{parse_line_format, BadReason, Example};
use super::format::ExampleFormat;
use super::DataError;

/// A validated line and its layout, or why it was rejected.
pub(crate) type ParsedLine = Result<(Example, ExampleFormat), BadReason>;

/// What one file held at the moment it was read.
#[derive(Debug, Default)]
pub(crate) struct ScannedFile {
    /// `(line number, example or reason)` for every non-blank complete line.
    pub lines: Vec<(usize, ParsedLine)>,
    pub blank_lines: usize,
    /// A last line without newline that is not (yet) a valid example: being written, left for
    /// the next read.
    pub pending_line: Option<usize>,
}

/// The JSONL files of a source: the file itself, or the `*.jsonl` files of a directory in name
/// order (hidden files skipped, no recursion).
pub(crate) fn list_files(source: &Path) -> Result<Vec<PathBuf>, DataError> {
    let io_err = |source_err| DataError::Io {
        path: source.to_path_buf(),
        source: source_err,
    };
    let meta = std::fs::metadata(source).map_err(io_err)?;
    if meta.is_file() {
        return Ok(vec![source.to_path_buf()]);
    }
    if !meta.is_dir() {
        return Err(DataError::NotFileOrDir(source.to_path_buf()));
    }
    let mut files = Vec::new();
    for entry in std::fs::read_dir(source).map_err(io_err)? {
        let path = entry.map_err(io_err)?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if !name.starts_with('.') && name.ends_with(".jsonl") && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

pub(crate) fn scan_file(path: &Path, max_line_bytes: usize) -> Result<ScannedFile, DataError> {
    let file = File::open(path).map_err(|e| DataError::Io {
        path: path.to_path_buf(),
        source: e,
    })?;
    scan_reader(BufReader::with_capacity(1 << 16, file), max_line_bytes).map_err(|e| {
        DataError::Io {
            path: path.to_path_buf(),
            source: e,
        }
    })
}

pub(crate) fn scan_reader<R: BufRead>(
    mut reader: R,
    max_line_bytes: usize,
) -> io::Result<ScannedFile> {
    let mut out = ScannedFile::default();
    let mut line = Vec::new();
    let mut len: u64 = 0; // full length of the current line, even past what `line` keeps
    let mut number = 0;
    loop {
        let buf = reader.fill_buf()?;
        if buf.is_empty() {
            if len > 0 {
                number += 1;
                finish_last_line(&mut out, number, &line, len, max_line_bytes);
            }
            return Ok(out);
        }
        let (chunk, complete) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (&buf[..i], true),
            None => (buf, false),
        };
        let keep = (max_line_bytes as u64 + 1)
            .saturating_sub(len)
            .min(chunk.len() as u64) as usize;
        line.extend_from_slice(&chunk[..keep]);
        len += chunk.len() as u64;
        let consumed = chunk.len() + usize::from(complete);
        reader.consume(consumed);
        if complete {
            number += 1;
            finish_line(&mut out, number, &line, len, max_line_bytes);
            line.clear();
            len = 0;
        }
    }
}

fn strip_cr(line: &[u8], len: u64) -> (&[u8], u64) {
    match line.strip_suffix(b"\r") {
        Some(l) if line.len() as u64 == len => (l, len - 1),
        _ => (line, len),
    }
}

fn finish_line(out: &mut ScannedFile, number: usize, line: &[u8], len: u64, max: usize) {
    let (line, len) = strip_cr(line, len);
    if len > max as u64 {
        out.lines.push((
            number,
            Err(BadReason::LineTooLong {
                bytes: len,
                limit: max,
            }),
        ));
    } else if line.iter().all(u8::is_ascii_whitespace) {
        out.blank_lines += 1;
    } else {
        out.lines.push((number, parse_line_format(line, max)));
    }
}

/// A last line without newline is kept only when it is already a whole valid example (a file
/// written without a final newline); anything else may still be growing.
fn finish_last_line(out: &mut ScannedFile, number: usize, line: &[u8], len: u64, max: usize) {
    let (line, len) = strip_cr(line, len);
    if len <= max as u64 {
        if line.iter().all(u8::is_ascii_whitespace) {
            return;
        }
        if let Ok(parsed) = parse_line_format(line, max) {
            out.lines.push((number, Ok(parsed)));
            return;
        }
    }
    out.pending_line = Some(number);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(bytes: &[u8], max: usize) -> ScannedFile {
        // A tiny buffer exercises lines that span many reads.
        scan_reader(BufReader::with_capacity(7, bytes), max).unwrap()
    }

    const OK: &str = r#"{"context":"q","response":"r"}"#;

    #[test]
    fn line_numbers_blank_lines_and_crlf() {
        let text = format!("{OK}\n\n  \r\n{OK}\r\nnot json\n");
        let s = scan(text.as_bytes(), 1000);
        let numbers: Vec<_> = s.lines.iter().map(|(n, r)| (*n, r.is_ok())).collect();
        assert_eq!(numbers, [(1, true), (4, true), (5, false)]);
        assert_eq!(s.blank_lines, 2);
        assert_eq!(s.pending_line, None);
    }

    #[test]
    fn over_long_lines_are_reported_with_their_full_length() {
        let long = format!("{{\"context\":\"{}\",\"response\":\"r\"}}", "x".repeat(500));
        let text = format!("{OK}\n{long}\n{OK}\n");
        let s = scan(text.as_bytes(), 100);
        assert_eq!(s.lines.len(), 3);
        assert_eq!(
            s.lines[1].1,
            Err(BadReason::LineTooLong {
                bytes: long.len() as u64,
                limit: 100
            })
        );
        assert!(s.lines[2].1.is_ok());
    }

    #[test]
    fn partial_last_line_is_pending_but_a_whole_last_example_counts() {
        let s = scan(format!("{OK}\n{{\"context\":\"q\",\"resp").as_bytes(), 1000);
        assert_eq!(s.lines.len(), 1);
        assert_eq!(s.pending_line, Some(2));
        let s = scan(format!("{OK}\n{OK}").as_bytes(), 1000);
        assert_eq!(s.lines.len(), 2);
        assert_eq!(s.pending_line, None);
        let s = scan(format!("{OK}\n{}", "y".repeat(300)).as_bytes(), 100);
        assert_eq!(s.pending_line, Some(2));
    }
}
