//! zstd on every core, with bytes that depend only on the input.
//!
//! libzstd's own multi-threaded mode does what [`super::gzip`] does by hand: it cuts the
//! input into jobs at fixed offsets, primes each with the end of the one before, and joins
//! the results into one frame. Its output does not depend on the number of workers, as long
//! as there is at least one: with zero, libzstd compresses on the caller's thread in a
//! different (single-job) way and the bytes differ. So the worker count is a `NonZeroUsize`,
//! and the tests compare 1, 2 and 8 workers byte for byte.
//!
//! One more source of difference is closed in [`ParallelZstd::finish`]: how libzstd ends a
//! frame whose input fills its last job exactly depends on timing, unless it is flushed
//! first.
//!
//! The threads are libzstd's, one set per stream (libzstd shares a pool between streams only
//! in its experimental API), so a zstd layer does not use the shared
//! [`Workers`](super::Workers); their count is the same. The frame carries a content
//! checksum (as the `zstd` command writes by default), so a client detects a damaged blob.
//! `flush` flushes the inner writer, never the compressor: a flush there would cut a block
//! and make the bytes depend on when the caller flushed.

use std::io::{self, Write};
use std::num::NonZeroUsize;

/// What decides the bytes of a zstd stream, besides the input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ZstdParams {
    /// zstd level, 1–19.
    pub level: i32,
    /// Input bytes per job (libzstd's minimum is 512 KiB).
    pub job_size: u32,
}

impl ZstdParams {
    /// The level layers use: the `zstd` command's default, faster than gzip -6 and smaller.
    pub const LEVEL: i32 = 3;
    /// Job size of layers. libzstd's default at level 3 is 8 MiB, and it keeps several
    /// jobs in memory, input and output: 47 MB peak RSS at 2 workers on binaries, 72 MB on
    /// random data, per layer. 2 MiB jobs take 20 and 32 MB for 1.2 % more output
    /// (benches/compression.rs measures both).
    pub const JOB_SIZE: u32 = 2 << 20;
}

impl Default for ZstdParams {
    fn default() -> Self {
        ZstdParams { level: Self::LEVEL, job_size: Self::JOB_SIZE }
    }
}

/// A `Write` that writes one zstd frame of what it is given to the writer it wraps.
/// [`finish`](Self::finish) ends the frame and returns that writer.
pub struct ParallelZstd<W: Write> {
    encoder: zstd::stream::write::Encoder<'static, W>,
}

impl<W: Write> ParallelZstd<W> {
    pub fn new(out: W, params: ZstdParams, workers: NonZeroUsize) -> io::Result<Self> {
        let mut encoder = zstd::stream::write::Encoder::new(out, params.level)?;
        let workers = u32::try_from(workers.get()).unwrap_or(u32::MAX);
        encoder.multithread(workers)?;
        encoder.set_parameter(zstd::zstd_safe::CParameter::JobSize(params.job_size))?;
        encoder.include_checksum(true)?;
        Ok(ParallelZstd { encoder })
    }

    /// Ends the frame and returns the inner writer (flushed).
    ///
    /// libzstd (1.5.7) does not end a frame the same way every time: when the input fills
    /// its last job exactly, that job is either handed out while writing (if the workers
    /// keep up), and the frame then ends with an empty last block, or only at the end, as
    /// the last block itself, so the bytes depend on timing. Flushing first hands out
    /// whatever input is left as an ordinary job in both cases, and the end is always the
    /// empty block: three bytes for the same bytes every time.
    pub fn finish(mut self) -> io::Result<W> {
        self.encoder.flush()?;
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
