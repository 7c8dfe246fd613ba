//! The end of a chunked body (RFC 9112 §7.1). The relay passes chunked bodies on as they are
//! (or, for an HTTP/1.0 client, only their data); this finds where the body ends, so that the
//! next message on the connection starts in the right place, and rejects malformed framing.

/// Longest chunk-size line (size and extensions) and trailer section accepted.
const MAX_LINE: usize = 4096;
const MAX_TRAILERS: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// In the chunk-size line: its value so far, digits seen, in extensions.
    Size {
        value: u64,
        digits: u8,
        ext: bool,
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
    /// In the trailer section: bytes on the current line.
    Trailer {
        line: usize,
    },
    /// Expecting the LF of a trailer line (`line` bytes before the CR).
    TrailerLf {
        line: usize,
    },
    /// The body has ended.
    Done,
}

/// Where a chunked body is.
#[derive(Debug, Clone)]
pub struct Chunked {
    state: State,
    line: usize,
    trailers: usize,
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
                ext: false,
            },
            line: 0,
            trailers: 0,
        }
    }

    /// The body has ended.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Goes through `input`, calling `data` with each run of chunk data; returns how many
    /// bytes belong to the body (fewer than `input.len()` once it ends: the rest is the next
    /// message's).
    pub fn feed(
        &mut self,
        input: &[u8],
        mut data: impl FnMut(&[u8]),
    ) -> Result<usize, &'static str> {
        let mut i = 0;
        while i < input.len() {
            let b = input[i];
            match self.state {
                State::Done => break,
                State::Data(left) => {
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
                State::Size { value, digits, ext } => {
                    self.line += 1;
                    if self.line > MAX_LINE {
                        return Err("chunk size line too long");
                    }
                    match (b, ext) {
                        (b'\r', _) if digits > 0 => self.state = State::SizeLf { value },
                        (b'\n', _) if digits > 0 => self.end_size(value),
                        (_, true) => {}
                        (b';' | b' ' | b'\t', false) if digits > 0 => {
                            self.state = State::Size {
                                value,
                                digits,
                                ext: true,
                            }
                        }
                        (_, false) => {
                            let d = (b as char).to_digit(16).ok_or("invalid chunk size")?;
                            if digits >= 15 {
                                return Err("chunk size too large");
                            }
                            self.state = State::Size {
                                value: value * 16 + u64::from(d),
                                digits: digits + 1,
                                ext: false,
                            };
                        }
                    }
                }
                State::SizeLf { value } => {
                    if b != b'\n' {
                        return Err("invalid chunk size line");
                    }
                    self.end_size(value);
                }
                State::DataCr => {
                    self.state = match b {
                        b'\r' => State::DataLf,
                        b'\n' => self.next_size(),
                        _ => return Err("chunk data longer than its size"),
                    }
                }
                State::DataLf => {
                    if b != b'\n' {
                        return Err("chunk data longer than its size");
                    }
                    self.state = self.next_size();
                }
                State::Trailer { line } => {
                    self.trailers += 1;
                    if self.trailers > MAX_TRAILERS {
                        return Err("trailer section too large");
                    }
                    self.state = match b {
                        b'\r' => State::TrailerLf { line },
                        b'\n' if line == 0 => State::Done,
                        b'\n' => State::Trailer { line: 0 },
                        _ => State::Trailer { line: line + 1 },
                    };
                }
                State::TrailerLf { line } => {
                    if b != b'\n' {
                        return Err("invalid trailer line");
                    }
                    self.state = if line == 0 {
                        State::Done
                    } else {
                        State::Trailer { line: 0 }
                    };
                }
            }
            i += 1;
        }
        Ok(i)
    }

    fn end_size(&mut self, value: u64) {
        self.line = 0;
        self.state = if value == 0 {
            State::Trailer { line: 0 }
        } else {
            State::Data(value)
        };
    }

    fn next_size(&mut self) -> State {
        self.line = 0;
        State::Size {
            value: 0,
            digits: 0,
            ext: false,
        }
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
        let body = b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-T: 1\r\n\r\nGET / HTTP/1.1\r\n";
        let end = body.len() - b"GET / HTTP/1.1\r\n".len();
        for piece in 1..body.len() {
            let (used, data, done) = run(body, piece).unwrap();
            assert!(done, "piece {piece}");
            assert_eq!(used, end, "piece {piece}");
            assert_eq!(data, b"hello world");
        }
    }

    #[test]
    fn empty_body_and_bare_lf() {
        assert_eq!(run(b"0\r\n\r\n", 100).unwrap(), (5, Vec::new(), true));
        assert_eq!(run(b"1\na\n0\n\n", 100).unwrap(), (7, b"a".to_vec(), true));
        assert!(!run(b"3\r\nab", 100).unwrap().2);
    }

    #[test]
    fn rejects_malformed_framing() {
        for bad in [
            &b"x\r\n"[..],
            b"\r\n",
            b"3\r\nabcd\r\n",
            b"10000000000000000\r\n",
            b"3\rx",
        ] {
            assert!(run(bad, 100).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        let long = [b'1'; 1]
            .iter()
            .chain([b';'; 5000].iter())
            .copied()
            .collect::<Vec<_>>();
        assert!(run(&long, 100).is_err());
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
            body.extend_from_slice(b"0\r\nTrailer: t\r\n\r\n");
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
