//! CRI container log files: what `kubectl logs` reads.
//!
//! Every record is one line of the file: `<RFC3339Nano time> <stream> <tag> <content>\n`, where
//! `stream` is `stdout` or `stderr` and `tag` is `F` for a full line or `P` for a partial one (a
//! line longer than [`MAX_LINE`] bytes is cut into `P` records and ends with an `F` record). The
//! newline that ended the original line is not part of the content. Output that ends without a
//! newline (at the end of the stream) is written as a last `F` record.
//!
//! [`LineSplitter`] and [`format_record`] are pure; [`pump`] reads one stream of a container and
//! appends its records to the log file.

use std::io::Write;
use std::sync::{Arc, Mutex};

use jiff::Timestamp;
use tokio::io::{AsyncRead, AsyncReadExt};

/// The longest content of one record; longer lines are split into partial records.
pub const MAX_LINE: usize = 16 * 1024;

/// Which output stream a record came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// Cuts a byte stream into log records: full lines, and partial pieces of over-long lines.
#[derive(Debug, Default)]
pub struct LineSplitter {
    pending: Vec<u8>,
}

impl LineSplitter {
    pub fn new() -> Self {
        LineSplitter::default()
    }

    /// Feeds bytes; calls `emit(full, content)` for every complete record (`full` is false for a
    /// partial record).
    pub fn push(&mut self, mut data: &[u8], emit: &mut dyn FnMut(bool, &[u8])) {
        while !data.is_empty() {
            match data.iter().position(|&b| b == b'\n') {
                Some(nl) => {
                    self.pending.extend_from_slice(&data[..nl]);
                    self.flush_long(emit);
                    emit(true, &self.pending);
                    self.pending.clear();
                    data = &data[nl + 1..];
                }
                None => {
                    self.pending.extend_from_slice(data);
                    data = &[];
                    self.flush_long(emit);
                }
            }
        }
    }

    /// Emits whole `MAX_LINE` pieces of the pending line as partial records, keeping the rest
    /// (at least one byte of an over-long line stays pending so the last piece can be full).
    fn flush_long(&mut self, emit: &mut dyn FnMut(bool, &[u8])) {
        if self.pending.len() <= MAX_LINE {
            return;
        }
        let mut start = 0;
        while self.pending.len() - start > MAX_LINE {
            emit(false, &self.pending[start..start + MAX_LINE]);
            start += MAX_LINE;
        }
        self.pending.drain(..start);
    }

    /// The stream ended: emits what is left (without a newline) as a full record.
    pub fn finish(&mut self, emit: &mut dyn FnMut(bool, &[u8])) {
        if !self.pending.is_empty() {
            emit(true, &self.pending);
            self.pending.clear();
        }
    }
}

/// One record as it is written to the file, newline included.
pub fn format_record(at: Timestamp, stream: Stream, full: bool, content: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(content.len() + 48);
    // jiff prints a UTC timestamp with `Z` and only the fractional digits it needs, as Go's
    // RFC3339Nano layout does.
    let _ = write!(
        out,
        "{at} {} {} ",
        stream.as_str(),
        if full { 'F' } else { 'P' }
    );
    out.extend_from_slice(content);
    out.push(b'\n');
    out
}

/// A log file shared by the streams of one container instance.
pub type SharedLog = Arc<Mutex<std::fs::File>>;

/// Reads `reader` until its end (or until `stop` resolves) and appends its records to `log`.
/// Write errors (a full disk, a removed file) drop the output rather than stall the container.
pub async fn pump<R, S>(mut reader: R, stream: Stream, log: SharedLog, stop: S)
where
    R: AsyncRead + Unpin,
    S: std::future::Future<Output = ()>,
{
    let mut splitter = LineSplitter::new();
    let mut buf = vec![0u8; 32 * 1024];
    let write = |records: Vec<Vec<u8>>| {
        if records.is_empty() {
            return;
        }
        let bytes: Vec<u8> = records.concat();
        if let Ok(mut f) = log.lock() {
            let _ = f.write_all(&bytes);
        }
    };
    tokio::pin!(stop);
    loop {
        let n = tokio::select! {
            r = reader.read(&mut buf) => match r {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => 0,
            },
            () = &mut stop => return,
        };
        let now = Timestamp::now();
        let mut records = Vec::new();
        if n == 0 {
            splitter.finish(&mut |full, c| records.push(format_record(now, stream, full, c)));
            write(records);
            return;
        }
        splitter.push(&buf[..n], &mut |full, c| {
            records.push(format_record(now, stream, full, c))
        });
        write(records);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(chunks: &[&[u8]]) -> Vec<(bool, Vec<u8>)> {
        let mut s = LineSplitter::new();
        let mut out = Vec::new();
        for c in chunks {
            s.push(c, &mut |f, b| out.push((f, b.to_vec())));
        }
        s.finish(&mut |f, b| out.push((f, b.to_vec())));
        out
    }

    #[test]
    fn lines_across_chunks() {
        let out = split(&[b"hel", b"lo\nwor", b"ld\n\nend"]);
        assert_eq!(
            out,
            vec![
                (true, b"hello".to_vec()),
                (true, b"world".to_vec()),
                (true, b"".to_vec()),
                (true, b"end".to_vec()),
            ]
        );
    }

    #[test]
    fn long_lines_are_split() {
        let long = vec![b'a'; MAX_LINE * 2 + 5];
        let mut input = long.clone();
        input.push(b'\n');
        let out = split(&[&input[..100], &input[100..]]);
        assert_eq!(out.len(), 3);
        assert_eq!(out[0], (false, vec![b'a'; MAX_LINE]));
        assert_eq!(out[1], (false, vec![b'a'; MAX_LINE]));
        assert_eq!(out[2], (true, vec![b'a'; 5]));
        // Exactly MAX_LINE bytes is one full record.
        let mut exact = vec![b'b'; MAX_LINE];
        exact.push(b'\n');
        assert_eq!(split(&[&exact]), vec![(true, vec![b'b'; MAX_LINE])]);
    }

    #[test]
    fn record_format() {
        let at: Timestamp = "2024-05-01T10:00:00.5Z".parse().unwrap();
        let r = format_record(at, Stream::Stderr, false, b"x y");
        assert_eq!(r, b"2024-05-01T10:00:00.5Z stderr P x y\n");
    }
}
