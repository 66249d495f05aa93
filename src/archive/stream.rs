//! Moving archive bytes from the blocking thread that writes them to the async task that
//! uploads them, in fixed-size chunks over a bounded channel: memory in flight is at most
//! (channel capacity + 1) × chunk size, whatever the layer size.

use bytes::{Bytes, BytesMut};
use std::io::{self, Write};
use tokio::sync::mpsc::Sender;

/// Size of the chunks sent to the uploader.
pub const CHUNK: usize = 256 * 1024;

/// A blocking `Write` that sends full chunks into a channel. Writing fails with
/// `BrokenPipe` once the receiving side is gone (the upload failed or was abandoned), which
/// stops the archive writer early.
pub struct ChannelWriter {
    tx: Sender<Bytes>,
    buf: BytesMut,
}

impl ChannelWriter {
    pub fn new(tx: Sender<Bytes>) -> Self {
        ChannelWriter { tx, buf: BytesMut::with_capacity(CHUNK) }
    }

    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = self.buf.split().freeze();
        self.buf.reserve(CHUNK);
        self.tx.blocking_send(chunk).map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "layer upload stopped"))
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CHUNK {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_bounded_chunks_and_everything_on_flush() {
        let (tx, mut rx) = tokio::sync::mpsc::channel(64);
        let mut w = ChannelWriter::new(tx);
        let data = vec![7u8; CHUNK * 2 + 10];
        w.write_all(&data).unwrap();
        w.flush().unwrap();
        drop(w);
        let mut sizes = Vec::new();
        while let Ok(c) = rx.try_recv() {
            sizes.push(c.len());
        }
        assert_eq!(sizes, vec![CHUNK, CHUNK, 10]);
    }

    #[test]
    fn fails_when_the_receiver_is_gone() {
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        drop(rx);
        let mut w = ChannelWriter::new(tx);
        let err = w.write_all(&vec![0u8; CHUNK]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
    }
}
