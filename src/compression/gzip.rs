//! gzip on every core, as pigz does it, with bytes that depend only on the input.
//!
//! The input is cut into blocks of a fixed size, counted from the start of the stream (never
//! from how the caller's writes happen to fall). Each block is compressed on any free worker
//! as raw deflate, primed with the 32 KiB of input before it as a preset dictionary, so
//! matches reach back across the cut as they would in one stream. Every block but the last
//! ends with a sync flush (an empty stored block: byte-aligned, not final), the last with
//! the final block, so the pieces concatenate into one deflate stream inside one gzip member.
//! Each worker computes its block's CRC-32; the writer combines them in order (a few
//! multiplications per block, against re-reading every byte) into the trailer.
//!
//! A block's bytes are a function of the block, the 32 KiB before it, whether it is the last
//! and the [`GzipParams`]: nothing else. The worker count, which worker ran a block and when, and how
//! the input arrived in `write` calls change no byte, so two servers (or one with more cores)
//! produce the same digest.
//!
//! The thread that writes (the tar writer) fills a block, hands it to the workers, and
//! writes finished blocks out in order, waiting for the oldest once `max_in_flight` blocks
//! are out; memory is that many blocks and their output, whatever the layer's size.
//! `flush` passes finished blocks on but never cuts a block: a cut there would make the
//! bytes depend on when the caller flushed.

use super::workers::Workers;
use flate2::{Compress, Crc, FlushCompress, Status};
use std::collections::VecDeque;
use std::io::{self, Write};
use std::mem;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver};

/// deflate's window: how much earlier input a match can reach, so the dictionary size.
const WINDOW: usize = 32 * 1024;

/// The gzip member header: magic, deflate, no flags, no timestamp (0), XFL, OS "unknown".
/// What flate2's `GzBuilder::new()` writes, so one-block layers match today's bytes.
fn header(level: u32) -> [u8; 10] {
    // XFL: 2 for the slowest level, 4 for the fastest, else 0 (RFC 1952, as zlib sets it).
    let xfl = match level {
        9.. => 2,
        0 | 1 => 4,
        _ => 0,
    };
    [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, xfl, 255]
}

/// What decides the bytes of a parallel gzip stream, besides the input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GzipParams {
    /// deflate level, 0–9.
    pub level: u32,
    /// Input bytes per block, at least 32 KiB (the dictionary comes from one block).
    pub block_size: usize,
    /// Store blocks that look like noise (see [`looks_like_noise`]) instead of deflating
    /// them. deflate at level 6 spends as long failing to compress random or already
    /// compressed bytes as compressing text, and then stores them anyway; storing them
    /// directly is several times faster for about the same output. Off in `default()`
    /// (plain `gzip -6`, as pigz writes it), on in layers ([`GzipParams::LAYERS`]).
    pub store_noise: bool,
}

impl GzipParams {
    /// The level layers use: zlib's default, the speed/size balance registries use.
    pub const LEVEL: u32 = 6;
    /// Block size of layers, pigz's. Larger blocks were no faster here (36.7–38.4 MB per
    /// CPU-second from 128 KiB to 1 MiB on binaries, within the noise) and their output was
    /// slightly larger: each block's Huffman codes adapt to its own data.
    pub const BLOCK_SIZE: usize = 128 * 1024;
    /// The parameters of layer archives, part of the layer format (whatever changes them
    /// changes its version, `FORMAT_VERSION` in build/layer.rs): level 6, 128 KiB blocks,
    /// noise stored.
    pub const LAYERS: GzipParams = GzipParams { level: Self::LEVEL, block_size: Self::BLOCK_SIZE, store_noise: true };
}

impl Default for GzipParams {
    fn default() -> Self {
        GzipParams { level: Self::LEVEL, block_size: Self::BLOCK_SIZE, store_noise: false }
    }
}

/// Whether `block`'s byte values are spread as evenly as random bytes: Pearson's χ² of its
/// byte histogram against a uniform one below 1,000 (random data scores about 255 ± 23;
/// text and machine code score tens of thousands). Such bytes give deflate's Huffman codes
/// nothing to gain; only a repeat within 32 KiB could, which layers rarely hold. Integer
/// arithmetic, so every platform decides the same way.
pub fn looks_like_noise(block: &[u8]) -> bool {
    const CHI2_LIMIT: u128 = 1000;
    if block.len() < 4096 {
        return false;
    }
    let mut counts = [0u64; 256];
    for &b in block {
        counts[b as usize] += 1;
    }
    let n = block.len() as u128;
    // χ² = Σ (c - n/256)² / (n/256) = Σ (256 c - n)² / (256 n)
    let scaled: u128 = counts.iter().map(|&c| (256 * c as u128).abs_diff(n).pow(2)).sum();
    scaled < CHI2_LIMIT * 256 * n
}

/// One compressed block, as a worker hands it back.
struct Compressed {
    bytes: Vec<u8>,
    crc: Crc,
}

/// A `Write` that gzips what it is given on `workers` and writes one gzip member, in order,
/// to the writer it wraps. [`finish`](Self::finish) writes the end and returns that writer.
pub struct ParallelGzip<W: Write> {
    out: Option<W>,
    workers: Arc<Workers>,
    params: GzipParams,
    max_in_flight: usize,
    /// The block being filled.
    block: Vec<u8>,
    /// The block submitted before, whose tail primes the next one.
    previous: Option<Arc<Vec<u8>>>,
    /// Submitted blocks, oldest first.
    in_flight: VecDeque<Receiver<io::Result<Compressed>>>,
    /// Set when this writer goes away, so its queued blocks are skipped.
    abandoned: Arc<AtomicBool>,
    header_written: bool,
    /// CRC-32 and length of every block written out so far.
    crc: Crc,
    /// A write failed: the stream is broken and takes no more.
    failed: bool,
}

impl<W: Write> ParallelGzip<W> {
    /// A writer with at most twice as many blocks in flight as there are workers: enough
    /// that no worker waits while the writer's thread writes out a finished block.
    pub fn new(out: W, workers: Arc<Workers>, params: GzipParams) -> Self {
        let max_in_flight = 2 * workers.count().get();
        Self::with_max_in_flight(out, workers, params, max_in_flight)
    }

    /// A writer with at most `max_in_flight` (at least 1) blocks submitted and not yet written.
    pub fn with_max_in_flight(out: W, workers: Arc<Workers>, params: GzipParams, max_in_flight: usize) -> Self {
        assert!(params.block_size >= WINDOW, "gzip blocks must hold a whole dictionary");
        assert!(params.level <= 9, "deflate levels are 0 to 9");
        ParallelGzip {
            out: Some(out),
            workers,
            params,
            max_in_flight: max_in_flight.max(1),
            block: Vec::with_capacity(params.block_size),
            previous: None,
            in_flight: VecDeque::new(),
            abandoned: Arc::new(AtomicBool::new(false)),
            header_written: false,
            crc: Crc::new(),
            failed: false,
        }
    }

    /// Compresses what is left, writes the gzip trailer and returns the inner writer (not
    /// flushed, as flate2's encoders leave it).
    pub fn finish(mut self) -> io::Result<W> {
        self.check()?;
        self.guard(|gz| {
            gz.submit(true)?;
            while !gz.in_flight.is_empty() {
                gz.write_oldest()?;
            }
            let crc = gz.crc.sum();
            let size = gz.crc.amount(); // the length modulo 2^32, as gzip's ISIZE is defined
            let out = gz.out.as_mut().expect("present until finish");
            out.write_all(&crc.to_le_bytes())?;
            out.write_all(&size.to_le_bytes())
        })?;
        Ok(self.out.take().expect("present until finish"))
    }

    fn check(&self) -> io::Result<()> {
        if self.failed {
            return Err(io::Error::other("the gzip stream failed earlier"));
        }
        Ok(())
    }

    /// Runs `step`, marking the stream broken if it fails.
    fn guard<T>(&mut self, step: impl FnOnce(&mut Self) -> io::Result<T>) -> io::Result<T> {
        let result = step(self);
        self.failed |= result.is_err();
        result
    }

    /// Hands the filled block to the workers, first writing out the oldest if too many are
    /// in flight.
    fn submit(&mut self, last: bool) -> io::Result<()> {
        if self.in_flight.len() >= self.max_in_flight {
            self.write_oldest()?;
        }
        let capacity = if last { 0 } else { self.params.block_size };
        let data = Arc::new(mem::replace(&mut self.block, Vec::with_capacity(capacity)));
        let previous = self.previous.replace(Arc::clone(&data));
        let (done, result) = mpsc::sync_channel(1);
        let abandoned = Arc::clone(&self.abandoned);
        let GzipParams { level, store_noise, .. } = self.params;
        self.workers.submit(Box::new(move || {
            if abandoned.load(Ordering::Relaxed) {
                return;
            }
            let level = if store_noise && looks_like_noise(&data) { 0 } else { level };
            let dictionary = previous.as_deref().map(|p| &p[p.len() - WINDOW..]);
            // The receiver may be gone (the writer failed): nothing to report to then.
            let _ = done.send(compress_block(level, dictionary, &data, last));
        }));
        self.in_flight.push_back(result);
        Ok(())
    }

    /// Waits for the oldest block in flight and writes it out.
    fn write_oldest(&mut self) -> io::Result<()> {
        let Some(result) = self.in_flight.pop_front() else { return Ok(()) };
        self.write_block(result.recv().map_err(|_| worker_failed())?)
    }

    fn write_block(&mut self, block: io::Result<Compressed>) -> io::Result<()> {
        let block = block?;
        let out = self.out.as_mut().expect("present until finish");
        if !self.header_written {
            out.write_all(&header(self.params.level))?;
            self.header_written = true;
        }
        out.write_all(&block.bytes)?;
        self.crc.combine(&block.crc);
        Ok(())
    }
}

fn worker_failed() -> io::Error {
    io::Error::other("a compression worker failed")
}

impl<W: Write> Write for ParallelGzip<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.check()?;
        if data.is_empty() {
            return Ok(0);
        }
        // A full block is submitted only once more input arrives: which block is the last
        // (ended with the final deflate block) is known only at `finish`.
        if self.block.len() == self.params.block_size {
            self.guard(|gz| gz.submit(false))?;
        }
        let n = data.len().min(self.params.block_size - self.block.len());
        self.block.extend_from_slice(&data[..n]);
        Ok(n)
    }

    /// Writes out the blocks already compressed and flushes the inner writer; the block
    /// being filled stays open.
    fn flush(&mut self) -> io::Result<()> {
        self.check()?;
        self.guard(|gz| {
            while let Some(oldest) = gz.in_flight.front() {
                let block = match oldest.try_recv() {
                    Ok(block) => block,
                    Err(mpsc::TryRecvError::Empty) => break,
                    Err(mpsc::TryRecvError::Disconnected) => Err(worker_failed()),
                };
                gz.in_flight.pop_front();
                gz.write_block(block)?;
            }
            gz.out.as_mut().expect("present until finish").flush()
        })
    }
}

impl<W: Write> Drop for ParallelGzip<W> {
    fn drop(&mut self) {
        // Blocks still queued are skipped; the ones being compressed finish and their
        // results go nowhere. Nothing waits on this writer, so nothing can hang.
        self.abandoned.store(true, Ordering::Relaxed);
    }
}

/// Raw deflate of `data` primed with `dictionary`: ended with a sync flush unless `last`,
/// where it ends with the final block.
///
/// A fresh deflate state per block, never a reset one: zlib-rs (like zlib-ng) does not clear
/// its hash chains (`prev`) on reset and skips the chain link of position 0 on insert, so a
/// reset state can follow a stale link left by the previous block into different matches,
/// and the bytes would depend on which blocks a worker compressed before. A fresh state
/// costs an allocation per block (measured in benches/compression.rs).
fn compress_block(level: u32, dictionary: Option<&[u8]>, data: &[u8], last: bool) -> io::Result<Compressed> {
    let mut deflate = Compress::new(flate2::Compression::new(level), false);
    if let Some(dictionary) = dictionary {
        deflate.set_dictionary(dictionary).map_err(io::Error::other)?;
    }
    let flush = if last { FlushCompress::Finish } else { FlushCompress::Sync };
    // Room for incompressible data (stored blocks add 5 bytes per 64 KiB) and the flush.
    let mut bytes = Vec::with_capacity(data.len() + data.len() / 1024 + 64);
    let mut input = data;
    loop {
        if bytes.len() == bytes.capacity() {
            bytes.reserve(64 * 1024);
        }
        let before = deflate.total_in();
        let status = deflate.compress_vec(input, &mut bytes, flush).map_err(io::Error::other)?;
        input = &input[(deflate.total_in() - before) as usize..];
        let done = match flush {
            FlushCompress::Finish => status == Status::StreamEnd,
            // A flush is complete once deflate stops short of the output's end.
            _ => input.is_empty() && bytes.len() < bytes.capacity(),
        };
        if done {
            break;
        }
    }
    let mut crc = Crc::new();
    crc.update(data);
    Ok(Compressed { bytes, crc })
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest as _, Sha256};

    fn noise(len: usize) -> Vec<u8> {
        (0..len.div_ceil(32) as u32).flat_map(|i| Sha256::digest(i.to_le_bytes())).take(len).collect()
    }

    #[test]
    fn noise_is_told_from_text_code_and_zeros() {
        assert!(looks_like_noise(&noise(128 * 1024)));
        assert!(looks_like_noise(&noise(4096)));
        // Too short to judge, and deflate is quick on short blocks anyway.
        assert!(!looks_like_noise(&noise(4095)));
        assert!(!looks_like_noise(&vec![0u8; 128 * 1024]));
        let text = "fn main() { println!(\"hello\"); }\n".repeat(4096);
        assert!(!looks_like_noise(text.as_bytes()));
        // Half noise, half text: deflate still has something to gain.
        let half = [noise(64 * 1024), text.as_bytes()[..64 * 1024].to_vec()].concat();
        assert!(!looks_like_noise(&half));
        // Every byte value equally often is as even as it gets, whatever the order.
        let ramp: Vec<u8> = (0..128 * 1024).map(|i| i as u8).collect();
        assert!(looks_like_noise(&ramp));
    }
}
