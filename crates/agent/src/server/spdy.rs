//! A minimal SPDY/3.1 framing layer: what a port-forward server needs and nothing more.
//!
//! Frames (all integers big-endian):
//! * control: `1 | version(15) = 3`, `type(16)`, `flags(8)`, `length(24)`, payload;
//! * data: `0 | stream id(31)`, `flags(8)`, `length(24)`, payload.
//!
//! Header blocks (SYN_STREAM, SYN_REPLY, HEADERS) are a count and length-prefixed name/value
//! pairs, zlib-compressed with the SPDY/3 preset dictionary. Each direction of a connection has
//! one compression context that continues from frame to frame, so a [`HeaderCodec`] lives as long
//! as the connection and frames must be encoded in the order they are sent.

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

pub const VERSION: u16 = 3;

pub const SYN_STREAM: u16 = 1;
pub const SYN_REPLY: u16 = 2;
pub const RST_STREAM: u16 = 3;
pub const SETTINGS: u16 = 4;
pub const PING: u16 = 6;
pub const GOAWAY: u16 = 7;
pub const HEADERS: u16 = 8;
pub const WINDOW_UPDATE: u16 = 9;

pub const FLAG_FIN: u8 = 0x01;

/// RST_STREAM status codes used here.
pub const RST_PROTOCOL_ERROR: u32 = 1;
pub const RST_INVALID_STREAM: u32 = 2;
pub const RST_REFUSED_STREAM: u32 = 3;
pub const RST_CANCEL: u32 = 5;

/// The initial flow-control window of a stream and of the session.
pub const INITIAL_WINDOW: u32 = 64 * 1024;

/// The largest frame payload accepted (SPDY lengths are 24 bits).
const MAX_PAYLOAD: usize = 0xff_ffff;

/// Header names of the SPDY/3 dictionary, each preceded by its 4-byte length in the dictionary.
const DICT_WORDS: &[&str] = &[
    "options",
    "head",
    "post",
    "put",
    "delete",
    "trace",
    "accept",
    "accept-charset",
    "accept-encoding",
    "accept-language",
    "accept-ranges",
    "age",
    "allow",
    "authorization",
    "cache-control",
    "connection",
    "content-base",
    "content-encoding",
    "content-language",
    "content-length",
    "content-location",
    "content-md5",
    "content-range",
    "content-type",
    "date",
    "etag",
    "expect",
    "expires",
    "from",
    "host",
    "if-match",
    "if-modified-since",
    "if-none-match",
    "if-range",
    "if-unmodified-since",
    "last-modified",
    "location",
    "max-forwards",
    "pragma",
    "proxy-authenticate",
    "proxy-authorization",
    "range",
    "referer",
    "retry-after",
    "server",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "user-agent",
    "vary",
    "via",
    "warning",
    "www-authenticate",
    "method",
    "get",
    "status",
    "200 OK",
    "version",
    "HTTP/1.1",
    "url",
    "public",
    "set-cookie",
    "keep-alive",
    "origin",
];

/// The raw text that ends the SPDY/3 dictionary (status codes, reason phrases, dates, types).
const DICT_TAIL: &str = concat!(
    "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505",
    "203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request",
    "401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented",
    "503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00",
    " Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,image/jpg,image/gif,",
    "application/xml,application/xhtml+xml,text/plain,text/javascript,publicprivatemax-age=",
    "gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0.",
);

/// The SPDY/3 header-compression dictionary.
pub fn dictionary() -> Vec<u8> {
    let mut d = Vec::with_capacity(1423);
    for w in DICT_WORDS {
        d.extend_from_slice(&(w.len() as u32).to_be_bytes());
        d.extend_from_slice(w.as_bytes());
    }
    d.extend_from_slice(DICT_TAIL.as_bytes());
    d
}

/// Name/value pairs of a header block (names are lower case in SPDY/3).
pub type Headers = Vec<(String, String)>;

/// The value of header `name` (case-insensitive).
pub fn header<'a>(h: &'a Headers, name: &str) -> Option<&'a str> {
    h.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// A decoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Data {
        stream: u32,
        fin: bool,
        data: Vec<u8>,
    },
    SynStream {
        stream: u32,
        associated: u32,
        priority: u8,
        flags: u8,
        headers: Headers,
    },
    SynReply {
        stream: u32,
        fin: bool,
        headers: Headers,
    },
    RstStream {
        stream: u32,
        status: u32,
    },
    Settings {
        entries: Vec<(u8, u32, u32)>,
    },
    Ping {
        id: u32,
    },
    GoAway {
        last_stream: u32,
        status: u32,
    },
    Headers {
        stream: u32,
        fin: bool,
        headers: Headers,
    },
    WindowUpdate {
        stream: u32,
        delta: u32,
    },
    /// A control frame of a type this layer does not know (ignored, as the draft asks).
    Unknown {
        kind: u16,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameError(pub String);

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn err<T>(msg: impl Into<String>) -> Result<T, FrameError> {
    Err(FrameError(msg.into()))
}

/// One direction's zlib context for header blocks, plus the other direction's inflater.
pub struct HeaderCodec {
    deflate: Compress,
    inflate: Decompress,
    dict: Vec<u8>,
}

impl Default for HeaderCodec {
    fn default() -> Self {
        Self::new()
    }
}

impl HeaderCodec {
    pub fn new() -> HeaderCodec {
        let dict = dictionary();
        let mut deflate = Compress::new(Compression::default(), true);
        deflate
            .set_dictionary(&dict)
            .expect("a fresh deflate stream takes a dictionary");
        HeaderCodec {
            deflate,
            inflate: Decompress::new(true),
            dict,
        }
    }

    /// Serialises and compresses a header block (a sync flush ends it, so the peer can inflate
    /// it whole).
    pub fn compress(&mut self, headers: &Headers) -> Vec<u8> {
        let mut raw = Vec::new();
        raw.extend_from_slice(&(headers.len() as u32).to_be_bytes());
        for (k, v) in headers {
            raw.extend_from_slice(&(k.len() as u32).to_be_bytes());
            raw.extend_from_slice(k.as_bytes());
            raw.extend_from_slice(&(v.len() as u32).to_be_bytes());
            raw.extend_from_slice(v.as_bytes());
        }
        let mut out = Vec::with_capacity(raw.len() + 64);
        let mut input = &raw[..];
        loop {
            out.reserve(256);
            let before = self.deflate.total_in();
            self.deflate
                .compress_vec(input, &mut out, FlushCompress::Sync)
                .expect("deflate of an in-memory buffer");
            let used = (self.deflate.total_in() - before) as usize;
            input = &input[used..];
            // Done once all input is taken and the flush fit in the spare room.
            if input.is_empty() && out.len() < out.capacity() {
                return out;
            }
        }
    }

    /// Inflates and parses a header block.
    pub fn decompress(&mut self, block: &[u8]) -> Result<Headers, FrameError> {
        let mut raw = Vec::with_capacity(block.len() * 4 + 64);
        let mut input = block;
        loop {
            if raw.capacity() - raw.len() < 1024 {
                raw.reserve(4096);
            }
            let before = self.inflate.total_in();
            let res = self
                .inflate
                .decompress_vec(input, &mut raw, FlushDecompress::Sync);
            let used = (self.inflate.total_in() - before) as usize;
            input = &input[used..];
            match res {
                Ok(Status::StreamEnd) => break,
                Ok(_) => {
                    if input.is_empty() && raw.len() < raw.capacity() {
                        break;
                    }
                    if used == 0 && raw.len() < raw.capacity() {
                        return err("the header block is truncated");
                    }
                }
                Err(e) if e.needs_dictionary().is_some() => {
                    self.inflate
                        .set_dictionary(&self.dict)
                        .map_err(|e| FrameError(format!("header dictionary: {e}")))?;
                }
                Err(e) => return err(format!("header block: {e}")),
            }
            if raw.len() > MAX_PAYLOAD {
                return err("the header block is too large");
            }
        }
        parse_pairs(&raw)
    }
}

fn parse_pairs(raw: &[u8]) -> Result<Headers, FrameError> {
    let mut r = Reader(raw);
    let n = r.u32()? as usize;
    let mut out = Vec::with_capacity(n.min(64));
    for _ in 0..n {
        let k = r.string()?;
        let v = r.string()?;
        out.push((k.to_ascii_lowercase(), v));
    }
    Ok(out)
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], FrameError> {
        if self.0.len() < n {
            return err("a frame is shorter than its fields");
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }

    fn u32(&mut self) -> Result<u32, FrameError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn string(&mut self) -> Result<String, FrameError> {
        let n = self.u32()? as usize;
        let b = self.take(n)?;
        String::from_utf8(b.to_vec()).map_err(|_| FrameError("a header is not UTF-8".into()))
    }
}

/// Cuts the next whole frame off the front of `buf` and decodes it; `Ok(None)` when more bytes
/// are needed.
pub fn decode(buf: &mut Vec<u8>, codec: &mut HeaderCodec) -> Result<Option<Frame>, FrameError> {
    if buf.len() < 8 {
        return Ok(None);
    }
    let len = u32::from_be_bytes([0, buf[5], buf[6], buf[7]]) as usize;
    if buf.len() < 8 + len {
        return Ok(None);
    }
    let head: [u8; 8] = buf[..8].try_into().expect("8 bytes");
    let payload: Vec<u8> = buf[8..8 + len].to_vec();
    buf.drain(..8 + len);
    let flags = head[4];
    let fin = flags & FLAG_FIN != 0;
    if head[0] & 0x80 == 0 {
        let stream = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) & 0x7fff_ffff;
        return Ok(Some(Frame::Data {
            stream,
            fin,
            data: payload,
        }));
    }
    let version = u16::from_be_bytes([head[0], head[1]]) & 0x7fff;
    if version != VERSION {
        return err(format!("unsupported SPDY version {version}"));
    }
    let kind = u16::from_be_bytes([head[2], head[3]]);
    let mut r = Reader(&payload);
    let id31 = |r: &mut Reader| r.u32().map(|v| v & 0x7fff_ffff);
    let frame = match kind {
        SYN_STREAM => {
            let stream = id31(&mut r)?;
            let associated = id31(&mut r)?;
            let pri = r.take(2)?;
            let priority = pri[0] >> 5;
            let headers = codec.decompress(r.0)?;
            Frame::SynStream {
                stream,
                associated,
                priority,
                flags,
                headers,
            }
        }
        SYN_REPLY => {
            let stream = id31(&mut r)?;
            Frame::SynReply {
                stream,
                fin,
                headers: codec.decompress(r.0)?,
            }
        }
        HEADERS => {
            let stream = id31(&mut r)?;
            Frame::Headers {
                stream,
                fin,
                headers: codec.decompress(r.0)?,
            }
        }
        RST_STREAM => Frame::RstStream {
            stream: id31(&mut r)?,
            status: r.u32()?,
        },
        SETTINGS => {
            let n = r.u32()? as usize;
            let mut entries = Vec::with_capacity(n.min(16));
            for _ in 0..n {
                let e = r.u32()?;
                let value = r.u32()?;
                entries.push(((e >> 24) as u8, e & 0xff_ffff, value));
            }
            Frame::Settings { entries }
        }
        PING => Frame::Ping { id: r.u32()? },
        GOAWAY => Frame::GoAway {
            last_stream: id31(&mut r)?,
            status: if r.0.len() >= 4 { r.u32()? } else { 0 },
        },
        WINDOW_UPDATE => Frame::WindowUpdate {
            stream: id31(&mut r)?,
            delta: id31(&mut r)?,
        },
        kind => Frame::Unknown { kind },
    };
    Ok(Some(frame))
}

fn control(kind: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + payload.len());
    out.extend_from_slice(&(0x8000 | VERSION).to_be_bytes());
    out.extend_from_slice(&kind.to_be_bytes());
    out.push(flags);
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
    out.extend_from_slice(payload);
    out
}

/// Encodes a frame; header blocks go through `codec` (so call this in sending order).
pub fn encode(frame: &Frame, codec: &mut HeaderCodec) -> Vec<u8> {
    let fin_flag = |fin: bool| if fin { FLAG_FIN } else { 0 };
    match frame {
        Frame::Data { stream, fin, data } => {
            let mut out = Vec::with_capacity(8 + data.len());
            out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
            out.push(fin_flag(*fin));
            out.extend_from_slice(&(data.len() as u32).to_be_bytes()[1..]);
            out.extend_from_slice(data);
            out
        }
        Frame::SynStream {
            stream,
            associated,
            priority,
            flags,
            headers,
        } => {
            let mut p = Vec::new();
            p.extend_from_slice(&stream.to_be_bytes());
            p.extend_from_slice(&associated.to_be_bytes());
            p.push(priority << 5);
            p.push(0);
            p.extend_from_slice(&codec.compress(headers));
            control(SYN_STREAM, *flags, &p)
        }
        Frame::SynReply {
            stream,
            fin,
            headers,
        } => {
            let mut p = stream.to_be_bytes().to_vec();
            p.extend_from_slice(&codec.compress(headers));
            control(SYN_REPLY, fin_flag(*fin), &p)
        }
        Frame::Headers {
            stream,
            fin,
            headers,
        } => {
            let mut p = stream.to_be_bytes().to_vec();
            p.extend_from_slice(&codec.compress(headers));
            control(HEADERS, fin_flag(*fin), &p)
        }
        Frame::RstStream { stream, status } => {
            let mut p = stream.to_be_bytes().to_vec();
            p.extend_from_slice(&status.to_be_bytes());
            control(RST_STREAM, 0, &p)
        }
        Frame::Settings { entries } => {
            let mut p = (entries.len() as u32).to_be_bytes().to_vec();
            for (flags, id, value) in entries {
                p.extend_from_slice(&((u32::from(*flags) << 24) | (id & 0xff_ffff)).to_be_bytes());
                p.extend_from_slice(&value.to_be_bytes());
            }
            control(SETTINGS, 0, &p)
        }
        Frame::Ping { id } => control(PING, 0, &id.to_be_bytes()),
        Frame::GoAway {
            last_stream,
            status,
        } => {
            let mut p = last_stream.to_be_bytes().to_vec();
            p.extend_from_slice(&status.to_be_bytes());
            control(GOAWAY, 0, &p)
        }
        Frame::WindowUpdate { stream, delta } => {
            let mut p = stream.to_be_bytes().to_vec();
            p.extend_from_slice(&(delta & 0x7fff_ffff).to_be_bytes());
            control(WINDOW_UPDATE, 0, &p)
        }
        Frame::Unknown { kind } => control(*kind, 0, &[]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hdrs(pairs: &[(&str, &str)]) -> Headers {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_dictionary_has_the_drafts_shape() {
        let d = dictionary();
        assert_eq!(d.len(), 1423);
        assert_eq!(&d[..11], b"\0\0\0\x07options");
        assert!(d.ends_with(b",*,enq=0."));
        // zlib's id of the dictionary (its Adler-32), as SPDY/3 peers put in the stream header.
        let mut c = Compress::new(Compression::default(), true);
        let id = c.set_dictionary(&d).unwrap();
        assert_eq!(id, adler32(&d));
    }

    fn adler32(d: &[u8]) -> u32 {
        let (mut a, mut b) = (1u32, 0u32);
        for &x in d {
            a = (a + u32::from(x)) % 65521;
            b = (b + a) % 65521;
        }
        (b << 16) | a
    }

    #[test]
    fn header_blocks_round_trip_across_frames() {
        let mut tx = HeaderCodec::new();
        let mut rx = HeaderCodec::new();
        for i in 0..20 {
            let h = hdrs(&[
                ("streamtype", if i % 2 == 0 { "error" } else { "data" }),
                ("port", "8080"),
                ("requestid", &i.to_string()),
            ]);
            let block = tx.compress(&h);
            assert_eq!(rx.decompress(&block).unwrap(), h);
        }
        // The context continues: later blocks are smaller than the first.
        let mut fresh = HeaderCodec::new();
        let h = hdrs(&[("streamtype", "data"), ("port", "8080"), ("requestid", "1")]);
        let first = fresh.compress(&h).len();
        let again = fresh.compress(&h).len();
        assert!(again < first, "{again} < {first}");
    }

    #[test]
    fn frames_round_trip() {
        let mut tx = HeaderCodec::new();
        let mut rx = HeaderCodec::new();
        let frames = vec![
            Frame::SynStream {
                stream: 1,
                associated: 0,
                priority: 2,
                flags: FLAG_FIN,
                headers: hdrs(&[("streamtype", "error"), ("port", "80")]),
            },
            Frame::SynReply {
                stream: 1,
                fin: false,
                headers: Vec::new(),
            },
            Frame::Data {
                stream: 3,
                fin: true,
                data: b"hello".to_vec(),
            },
            Frame::Data {
                stream: 5,
                fin: false,
                data: vec![7; 70_000],
            },
            Frame::RstStream {
                stream: 3,
                status: RST_CANCEL,
            },
            Frame::Settings {
                entries: vec![(0, 7, INITIAL_WINDOW), (1, 4, 100)],
            },
            Frame::Ping { id: 42 },
            Frame::GoAway {
                last_stream: 9,
                status: 0,
            },
            Frame::Headers {
                stream: 7,
                fin: true,
                headers: hdrs(&[("a", "b")]),
            },
            Frame::WindowUpdate {
                stream: 0,
                delta: 1234,
            },
        ];
        let mut wire = Vec::new();
        for f in &frames {
            wire.extend(encode(f, &mut tx));
        }
        // Delivered in odd-sized pieces, as WebSocket messages may cut the stream.
        let mut buf = Vec::new();
        let mut got = Vec::new();
        for piece in wire.chunks(7) {
            buf.extend_from_slice(piece);
            while let Some(f) = decode(&mut buf, &mut rx).unwrap() {
                got.push(f);
            }
        }
        assert!(buf.is_empty());
        assert_eq!(got, frames);
    }

    #[test]
    fn known_bytes() {
        let mut c = HeaderCodec::new();
        assert_eq!(
            encode(&Frame::Ping { id: 1 }, &mut c),
            [0x80, 3, 0, 6, 0, 0, 0, 4, 0, 0, 0, 1]
        );
        assert_eq!(
            encode(
                &Frame::Data {
                    stream: 1,
                    fin: true,
                    data: b"ab".to_vec()
                },
                &mut c
            ),
            [0, 0, 0, 1, 1, 0, 0, 2, b'a', b'b']
        );
        assert_eq!(
            encode(
                &Frame::WindowUpdate {
                    stream: 3,
                    delta: 0x10000
                },
                &mut c
            ),
            [0x80, 3, 0, 9, 0, 0, 0, 8, 0, 0, 0, 3, 0, 1, 0, 0]
        );
        let mut buf = vec![0x80, 2, 0, 6, 0, 0, 0, 4, 0, 0, 0, 1];
        assert!(decode(&mut buf, &mut c).is_err());
        let mut short = vec![0x80, 3, 0, 6, 0, 0, 0, 4, 0, 0];
        assert_eq!(decode(&mut short, &mut c), Ok(None));
    }
}
