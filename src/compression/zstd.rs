//! zstd on every core, with bytes that depend only on the input.
//!
//! libzstd's own multi-threaded mode does what [`super::gzip`] does by hand: it cuts the
//! input into jobs at fixed offsets, primes each with the end of the one before, and joins
//! the results into one frame. Its output does not depend on the number of workers, as long
//! as there is at least one: with zero, libzstd compresses on the caller's thread in a
//! different (single-job) way and the bytes differ. So the worker count is a `NonZeroUsize`,
//! and the tests compare 1, 2 and 8 workers byte for byte.
//!
//! The threads are libzstd's, one set per stream (it has no public way to share a pool), so
//! a zstd layer does not use the shared [`Workers`](super::Workers); their count is the same.
//! The frame carries a content checksum (as the `zstd` command writes by default), so a
//! client detects a damaged blob. `flush` passes on what is already compressed but never
//! flushes the compressor: a flush there would cut a block and make the bytes depend on when
//! the caller flushed.

use std::io::{self, Write};
use std::num::NonZeroUsize;

/// A `Write` that writes one zstd frame of what it is given to the writer it wraps.
/// [`finish`](Self::finish) ends the frame and returns that writer.
pub struct ParallelZstd<W: Write> {
    encoder: zstd::stream::write::Encoder<'static, W>,
}

impl<W: Write> ParallelZstd<W> {
    /// The level layers use: the `zstd` command's default, faster than gzip -6 and smaller.
    pub const LEVEL: i32 = 3;

    pub fn new(out: W, level: i32, workers: NonZeroUsize) -> io::Result<Self> {
        let mut encoder = zstd::stream::write::Encoder::new(out, level)?;
        let workers = u32::try_from(workers.get()).unwrap_or(u32::MAX);
        encoder.multithread(workers)?;
        encoder.include_checksum(true)?;
        Ok(ParallelZstd { encoder })
    }

    /// Ends the frame and returns the inner writer (not flushed).
    pub fn finish(self) -> io::Result<W> {
        self.encoder.finish()
    }
}

impl<W: Write> Write for ParallelZstd<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.encoder.write(data)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.encoder.get_mut().flush()
    }
}
