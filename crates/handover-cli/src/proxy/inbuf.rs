//! A read buffer for one connection: bytes read but not yet used stay for the next message
//! (pipelined requests, a response read together with its body). Its capacity is kept across
//! messages, so a keep-alive connection allocates once.

use tokio::io::{AsyncRead, AsyncReadExt};

/// Grows by this much when full.
const CHUNK: usize = 16 * 1024;

/// Bytes read from a connection, of which `unread()` are still to be used.
#[derive(Debug, Default)]
pub struct Inbuf {
    data: Vec<u8>,
    pos: usize,
}

impl Inbuf {
    /// An empty buffer.
    pub fn new() -> Inbuf {
        Inbuf {
            data: Vec::with_capacity(CHUNK),
            pos: 0,
        }
    }

    /// The bytes not used yet.
    #[inline]
    pub fn unread(&self) -> &[u8] {
        &self.data[self.pos..]
    }

    /// Marks `n` more bytes as used.
    #[inline]
    pub fn consume(&mut self, n: usize) {
        self.pos += n;
        debug_assert!(self.pos <= self.data.len());
        if self.pos == self.data.len() {
            self.data.clear();
            self.pos = 0;
        }
    }

    /// Whether nothing is left to use.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.pos == self.data.len()
    }

    /// Reads once more from `r` (appending); returns the byte count, 0 at end of stream.
    pub async fn fill<R: AsyncRead + Unpin>(&mut self, r: &mut R) -> std::io::Result<usize> {
        if self.data.capacity() - self.data.len() < CHUNK / 4 {
            if self.pos > 0 {
                // Move what is left to the front rather than growing.
                self.data.drain(..self.pos);
                self.pos = 0;
            }
            if self.data.capacity() - self.data.len() < CHUNK / 4 {
                self.data.reserve(CHUNK);
            }
        }
        r.read_buf(&mut self.data).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn keeps_unread_bytes_across_fills() {
        let mut b = Inbuf::new();
        let mut src: &[u8] = b"hello world";
        assert_eq!(b.fill(&mut src).await.unwrap(), 11);
        b.consume(6);
        assert_eq!(b.unread(), b"world");
        let mut more: &[u8] = b"!";
        b.fill(&mut more).await.unwrap();
        assert_eq!(b.unread(), b"world!");
        b.consume(6);
        assert!(b.is_empty());
        let mut end: &[u8] = b"";
        assert_eq!(b.fill(&mut end).await.unwrap(), 0);
    }
}
