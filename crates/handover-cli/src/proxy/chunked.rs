//! Chunked bodies (RFC 9112 §7.1), parsed strictly: the relay must know exactly where a body
//! ends, the same way as any strict recipient after it, so that the next message on the
//! connection starts in the right place.
//!
//! Accepted: hex digits only in a chunk size (at most 15, no sign, `0x` or whitespace);
//! extensions by the RFC's grammar (`;` name [`=` token or quoted-string], optional whitespace
//! before `;` and around `=`), at most 4 KiB per size line and 16 KiB per body; CRLF only,
//! never a bare LF or CR, after the size line, the data, each trailer field and the last
//! chunk; trailer fields as `httparse` accepts header fields (no obs-fold), at most 16 KiB.
//! Request bodies are written on re-framed by [`Reframer`] (data in chunks of the proxy's own,
//! no extensions, trailers without framing fields); response bodies pass as they are, checked
//! byte by byte before they are passed.

use super::policy;

/// Longest chunk-size line (size and extensions).
const MAX_LINE: usize = 4096;
/// Most extension bytes in one body (hyper refuses more, and so must the proxy before it).
const MAX_EXTENSIONS: usize = 16 * 1024;
/// Largest trailer section (hyper's limit too).
pub const MAX_TRAILERS: usize = 16 * 1024;
/// Most trailer fields.
const MAX_TRAILER_FIELDS: usize = 64;
/// Most hex digits in a chunk size (2^60 bytes: no overflow, no leading-zero games).
const MAX_DIGITS: u8 = 15;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// In the chunk size: its value so far and digits seen.
    Size {
        value: u64,
        digits: u8,
    },
    /// Whitespace after the size or an extension: only `;` (or more whitespace) may follow.
    WsBeforeSemi {
        value: u64,
    },
    /// After `;`: whitespace, then an extension name.
    ExtStart {
        value: u64,
    },
    /// In an extension name.
    ExtName {
        value: u64,
    },
    /// Whitespace after an extension name: `=`, `;` (or more whitespace) may follow.
    WsAfterName {
        value: u64,
    },
    /// After `=`: whitespace, then a token or a quoted string.
    ExtValueStart {
        value: u64,
    },
    /// In a token value.
    ExtToken {
        value: u64,
    },
    /// In a quoted-string value (`escaped`: after a backslash).
    ExtQuoted {
        value: u64,
        escaped: bool,
    },
    /// Just after a quoted string's closing quote.
    ExtQuoteEnd {
        value: u64,
    },
    /// Expecting the LF ending the size line.
    SizeLf {
        value: u64,
    },
    /// In chunk data: bytes left.
    Data(u64),
    /// Expecting CR LF after chunk data.
    DataCr,
    DataLf,
    /// At the start of a trailer line (or of the empty line ending the body).
    TrailerStart,
    /// In a trailer field line.
    TrailerLine,
    /// Expecting the LF of a trailer field line.
    TrailerLf,
    /// Expecting the LF of the empty line that ends the body.
    LastLf,
    /// The body has ended.
    Done,
}

/// Where a chunked body is, and its trailer section so far.
#[derive(Debug, Clone)]
pub struct Chunked {
    state: State,
    line: usize,
    extensions: usize,
    /// The trailer field lines, each ending in CRLF.
    trailers: Vec<u8>,
}

impl Default for Chunked {
    fn default() -> Self {
        Chunked::new()
    }
}

impl Chunked {
    /// At the start of a body.
    pub fn new() -> Chunked {
        Chunked {
            state: State::Size {
                value: 0,
                digits: 0,
            },
            line: 0,
            extensions: 0,
            trailers: Vec::new(),
        }
    }

    /// The body has ended.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// The trailer section (field lines, each ending in CRLF; checked), once done.
    pub fn trailers(&self) -> &[u8] {
        &self.trailers
    }

    /// Goes through `input`, calling `data` with each run of chunk data; returns how many
    /// bytes belong to the body (fewer than `input.len()` once it ends: the rest is the next
    /// message's). An error is final: the body cannot be delimited.
    pub fn feed(
        &mut self,
        input: &[u8],
        mut data: impl FnMut(&[u8]),
    ) -> Result<usize, &'static str> {
        let mut i = 0;
        while i < input.len() {
            if let State::Data(left) = self.state {
                let n = (input.len() - i).min(usize::try_from(left).unwrap_or(usize::MAX));
                data(&input[i..i + n]);
                i += n;
                let left = left - n as u64;
                self.state = if left == 0 {
                    State::DataCr
                } else {
                    State::Data(left)
                };
                continue;
            }
            if self.state == State::Done {
                break;
            }
            self.step(input[i])?;
            i += 1;
        }
        Ok(i)
    }

    /// One byte outside chunk data.
    fn step(&mut self, b: u8) -> Result<(), &'static str> {
        use State::*;
        let ws = b == b' ' || b == b'\t';
        if matches!(
            self.state,
            Size { .. }
                | WsBeforeSemi { .. }
                | ExtStart { .. }
                | ExtName { .. }
                | WsAfterName { .. }
                | ExtValueStart { .. }
                | ExtToken { .. }
                | ExtQuoted { .. }
                | ExtQuoteEnd { .. }
        ) {
            self.line += 1;
            if self.line > MAX_LINE {
                return Err("chunk size line too long");
            }
            if !matches!(self.state, Size { .. }) {
                self.extensions += 1;
                if self.extensions > MAX_EXTENSIONS {
                    return Err("chunk extensions too long");
                }
            }
        }
        self.state = match self.state {
            Size { value, digits } => match b {
                b'\r' if digits > 0 => SizeLf { value },
                b';' if digits > 0 => ExtStart { value },
                _ if ws && digits > 0 => WsBeforeSemi { value },
                _ => {
                    let d = (b as char).to_digit(16).ok_or("invalid chunk size")?;
                    if digits >= MAX_DIGITS {
                        return Err("chunk size too large");
                    }
                    Size {
                        value: value * 16 + u64::from(d),
                        digits: digits + 1,
                    }
                }
            },
            WsBeforeSemi { value } => match b {
                b';' => ExtStart { value },
                _ if ws => WsBeforeSemi { value },
                _ => return Err("invalid chunk size line"),
            },
            ExtStart { value } => match b {
                _ if ws => ExtStart { value },
                _ if policy::is_tchar(b) => ExtName { value },
                _ => return Err("invalid chunk extension"),
            },
            ExtName { value } => match b {
                b'\r' => SizeLf { value },
                b';' => ExtStart { value },
                b'=' => ExtValueStart { value },
                _ if ws => WsAfterName { value },
                _ if policy::is_tchar(b) => ExtName { value },
                _ => return Err("invalid chunk extension"),
            },
            WsAfterName { value } => match b {
                b';' => ExtStart { value },
                b'=' => ExtValueStart { value },
                _ if ws => WsAfterName { value },
                _ => return Err("invalid chunk extension"),
            },
            ExtValueStart { value } => match b {
                b'"' => ExtQuoted {
                    value,
                    escaped: false,
                },
                _ if ws => ExtValueStart { value },
                _ if policy::is_tchar(b) => ExtToken { value },
                _ => return Err("invalid chunk extension"),
            },
            ExtToken { value } => match b {
                b'\r' => SizeLf { value },
                b';' => ExtStart { value },
                _ if ws => WsBeforeSemi { value },
                _ if policy::is_tchar(b) => ExtToken { value },
                _ => return Err("invalid chunk extension"),
            },
            ExtQuoted {
                value,
                escaped: true,
            } => match b {
                b'\t' | b' ' | 0x21..=0x7e | 0x80..=0xff => ExtQuoted {
                    value,
                    escaped: false,
                },
                _ => return Err("invalid chunk extension"),
            },
            ExtQuoted {
                value,
                escaped: false,
            } => match b {
                b'"' => ExtQuoteEnd { value },
                b'\\' => ExtQuoted {
                    value,
                    escaped: true,
                },
                b'\t' | b' ' | 0x21 | 0x23..=0x5b | 0x5d..=0x7e | 0x80..=0xff => ExtQuoted {
                    value,
                    escaped: false,
                },
                _ => return Err("invalid chunk extension"),
            },
            ExtQuoteEnd { value } => match b {
                b'\r' => SizeLf { value },
                b';' => ExtStart { value },
                _ if ws => WsBeforeSemi { value },
                _ => return Err("invalid chunk extension"),
            },
            SizeLf { value } => {
                if b != b'\n' {
                    return Err("chunk size line not ended by CRLF");
                }
                self.line = 0;
                if value == 0 {
                    TrailerStart
                } else {
                    Data(value)
                }
            }
            DataCr if b == b'\r' => DataLf,
            DataLf if b == b'\n' => Size {
                value: 0,
                digits: 0,
            },
            DataCr | DataLf => return Err("chunk data not followed by CRLF"),
            TrailerStart => match b {
                b'\r' => LastLf,
                b'\n' => return Err("bare LF in the trailer section"),
                // A line starting with whitespace would continue the previous one (obs-fold).
                _ if ws => return Err("obsolete line folding in the trailer section"),
                _ => self.trailer_byte(b, TrailerLine)?,
            },
            TrailerLine => match b {
                b'\r' => TrailerLf,
                b'\n' => return Err("bare LF in the trailer section"),
                _ => self.trailer_byte(b, TrailerLine)?,
            },
            TrailerLf => {
                if b != b'\n' {
                    return Err("bare CR in the trailer section");
                }
                self.trailers.extend_from_slice(b"\r\n");
                TrailerStart
            }
            LastLf => {
                if b != b'\n' {
                    return Err("last chunk not ended by CRLF");
                }
                self.check_trailers()?;
                Done
            }
            Data(_) | Done => unreachable!("handled in feed"),
        };
        Ok(())
    }

    fn trailer_byte(&mut self, b: u8, next: State) -> Result<State, &'static str> {
        if self.trailers.len() >= MAX_TRAILERS {
            return Err("trailer section too large");
        }
        self.trailers.push(b);
        Ok(next)
    }

    /// The trailer fields must be valid header fields.
    fn check_trailers(&self) -> Result<(), &'static str> {
        if self.trailers.is_empty() {
            return Ok(());
        }
        let mut section = Vec::with_capacity(self.trailers.len() + 2);
        section.extend_from_slice(&self.trailers);
        section.extend_from_slice(b"\r\n");
        let mut fields = [httparse::EMPTY_HEADER; MAX_TRAILER_FIELDS];
        match httparse::parse_headers(&section, &mut fields) {
            Ok(httparse::Status::Complete((n, _))) if n == section.len() => Ok(()),
            Err(httparse::Error::TooManyHeaders) => Err("too many trailer fields"),
            _ => Err("invalid trailer field"),
        }
    }
}

/// Writes a request body chunked in the proxy's own framing: each run of data becomes one
/// chunk, without extensions; the trailer section loses what [`policy::trailer_allowed`]
/// refuses.
#[derive(Debug, Default)]
pub struct Reframer;

impl Reframer {
    /// One chunk holding `data` (nothing for no data: a zero size would end the body).
    pub fn data(out: &mut Vec<u8>, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        out.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
        out.extend_from_slice(data);
        out.extend_from_slice(b"\r\n");
    }

    /// The last chunk and the trailer section of a finished body (`trailers` from
    /// [`Chunked::trailers`]).
    pub fn end(out: &mut Vec<u8>, trailers: &[u8]) {
        out.extend_from_slice(b"0\r\n");
        if !trailers.is_empty() {
            let mut section = trailers.to_vec();
            section.extend_from_slice(b"\r\n");
            let mut fields = [httparse::EMPTY_HEADER; MAX_TRAILER_FIELDS];
            if let Ok(httparse::Status::Complete((_, fields))) =
                httparse::parse_headers(&section, &mut fields)
            {
                for f in fields {
                    if policy::trailer_allowed(f.name.as_bytes()) {
                        out.extend_from_slice(f.name.as_bytes());
                        out.extend_from_slice(b": ");
                        out.extend_from_slice(f.value);
                        out.extend_from_slice(b"\r\n");
                    }
                }
            }
        }
        out.extend_from_slice(b"\r\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(input: &[u8], piece: usize) -> Result<(usize, Vec<u8>, bool), &'static str> {
        let mut c = Chunked::new();
        let mut out = Vec::new();
        let mut used = 0;
        for part in input.chunks(piece) {
            let n = c.feed(part, |d| out.extend_from_slice(d))?;
            used += n;
            if c.is_done() {
                break;
            }
        }
        Ok((used, out, c.is_done()))
    }

    #[test]
    fn finds_the_end_in_any_split() {
        let body = b"5\r\nhello\r\n6;ext=1;q=\"a\\\"b\" ; x\r\n world\r\n0\r\nX-T: 1\r\n\r\nGET / HTTP/1.1\r\n";
        let end = body.len() - b"GET / HTTP/1.1\r\n".len();
        for piece in 1..body.len() {
            let (used, data, done) = run(body, piece).unwrap();
            assert!(done, "piece {piece}");
            assert_eq!(used, end, "piece {piece}");
            assert_eq!(data, b"hello world");
        }
    }

    #[test]
    fn empty_body() {
        assert_eq!(run(b"0\r\n\r\n", 100).unwrap(), (5, Vec::new(), true));
        assert!(!run(b"3\r\nab", 100).unwrap().2);
    }

    #[test]
    fn rejects_malformed_framing() {
        for bad in [
            &b"x\r\n"[..],
            b"\r\n",
            b"3\r\nabcd\r\n",
            b"10000000000000000\r\n",
            b"0000000000000005\r\n",
            b"3\rx",
            // Bare LF anywhere.
            b"1\na\r\n0\r\n\r\n",
            b"1\r\na\n0\r\n\r\n",
            b"1\r\na\r\n0\n\r\n",
            b"1\r\na\r\n0\r\n\n",
            b"0\r\nX: 1\n\r\n",
            // Signs, prefixes, whitespace in or after the size.
            b"+5\r\n",
            b"-5\r\n",
            b"0x5\r\n",
            b" 5\r\n",
            b"5 \r\n",
            b"5\t\r\n",
            // Extensions off the grammar.
            b"5;\r\n",
            b"5; \r\n",
            b"5;a=\r\n",
            b"5;a b\r\n",
            b"5;a=b c\r\n",
            b"5;a=\"b\r\n",
            b"5;a=\"b\"c\r\n",
            b"5;a=b \r\n",
            b"5;a=\x01\r\n",
            b"5;=b\r\n",
            // Trailers: obs-fold, no colon, space before the colon, bare CR.
            b"0\r\nX: 1\r\n continued\r\n\r\n",
            b"0\r\nnot a field\r\n\r\n",
            b"0\r\nX : 1\r\n\r\n",
            b"0\r\nX: a\rb\r\n\r\n",
        ] {
            assert!(run(bad, 100).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        let long: Vec<u8> = b"1;a=".iter().chain([b'b'; 5000].iter()).copied().collect();
        assert!(run(&long, 100).is_err());
    }

    #[test]
    fn extensions_are_bounded_per_body() {
        let mut body = Vec::new();
        for _ in 0..10 {
            body.extend_from_slice(format!("1;n={}\r\na\r\n", "v".repeat(2000)).as_bytes());
        }
        body.extend_from_slice(b"0\r\n\r\n");
        assert_eq!(run(&body, 1000), Err("chunk extensions too long"));
    }

    #[test]
    fn reframes_without_extensions_or_framing_trailers() {
        let body = b"5;ext=1\r\nhello\r\n0\r\nX-Sum: 1\r\nContent-Length: 9\r\nHost: e\r\n\r\n";
        let mut c = Chunked::new();
        let mut out = Vec::new();
        let n = c
            .feed(body, |d| Reframer::data(&mut out, d))
            .expect("valid");
        assert!(c.is_done() && n == body.len());
        Reframer::end(&mut out, c.trailers());
        assert_eq!(out, b"5\r\nhello\r\n0\r\nX-Sum: 1\r\n\r\n");
    }

    /// Random chunked bodies cut at random places give back their data and end exactly; random
    /// bytes never panic.
    #[test]
    fn random_bodies_and_garbage() {
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = move |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        for _ in 0..2_000 {
            let mut body = Vec::new();
            let mut data = Vec::new();
            for _ in 0..next(5) {
                let len = next(300) as usize + 1;
                let chunk: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
                body.extend_from_slice(format!("{len:x}").as_bytes());
                if next(2) == 0 {
                    body.extend_from_slice(b";name=value");
                }
                body.extend_from_slice(b"\r\n");
                body.extend_from_slice(&chunk);
                body.extend_from_slice(b"\r\n");
                data.extend_from_slice(&chunk);
            }
            body.extend_from_slice(b"0\r\nTrailer-Field: t\r\n\r\n");
            let end = body.len();
            body.extend_from_slice(b"NEXT");
            let (used, got, done) = run(&body, next(64) as usize + 1).unwrap();
            assert!(done);
            assert_eq!((used, got), (end, data));
            let garbage: Vec<u8> = (0..next(64)).map(|_| next(256) as u8).collect();
            let _ = run(&garbage, next(8) as usize + 1);
        }
    }
}
