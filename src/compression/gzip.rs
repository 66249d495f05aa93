//! gzip on every core, with bytes that depend only on the input.
//!
//! The input is cut into blocks of a fixed size, counted from the start of the stream (never
//! from how the caller's writes happen to fall). Each block is compressed on any free worker
//! by libdeflate into a gzip member of its own: header, deflate stream, CRC-32 and length.
//! The members, written out in order, are the layer: RFC 1952 defines a gzip file as "a
//! series of members (compressed data sets)", and every decompressor of a container client
//! reads them all as one stream (Go's `compress/gzip` and pgzip read multistream by
//! default, as do unpigz, `gzip -d`, Python's `gzip` and Java's `GZIPInputStream`; eStargz
//! layers are the same shape). What reads only the first member (flate2's `GzDecoder`;
//! `MultiGzDecoder` reads them all) stops after one block.
//!
//! Why members rather than one deflate stream as pigz writes it: libdeflate compresses whole
//! buffers at once, 1.5 times as fast as zlib-rs at level 6 on text and 1.3 times on
//! binaries, and smaller, but it takes no preset dictionary and ends every stream with a
//! final block, after which a deflate decoder stops. So a block cannot be primed with the
//! input before it nor continued by the next; it has to be a member. Blocks are 1 MiB, eight
//! times pigz's 128 KiB: a block starting without the 32 KiB before it loses what those
//! matches would have saved, which over 1 MiB is about what 128 KiB primed blocks lose
//! by restarting their Huffman codes (`GzipParams::BLOCK_SIZE` gives the figures).
//!
//! A block's bytes are a function of the block and the [`GzipParams`]: nothing else. libdeflate
//! keeps no state from one call to the next, and each block gets a fresh compressor anyway.
//! The worker count, which worker ran a block and when, and how the input arrived in `write`
//! calls change no byte, so two servers (or one with more cores) produce the same digest.
//! The libdeflate version does decide the bytes: a unit test below pins the digest of a
//! fixed input, so an upgrade that changes them is noticed and the layer format version
//! bumped.
//!
//! The thread that writes (the tar writer) fills a block, hands it to the workers, and
//! writes finished members out in order, waiting for the oldest once `max_in_flight` blocks
//! are out; memory is that many blocks and their output, whatever the layer's size.
//! `flush` passes finished members on but never cuts a block: a cut there would make the
//! bytes depend on when the caller flushed.

use super::workers::{Workers, thread_cpu_time};
use libdeflater::{CompressionLvl, Compressor};
use std::collections::VecDeque;
use std::io::{self, Write};
use std::mem;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::time::Duration;

/// What decides the bytes of a parallel gzip stream, besides the input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GzipParams {
    /// libdeflate level, 0–12 (0 stores, 1–9 are zlib's levels in spirit, 10–12 slow and
    /// small).
    pub level: u32,
    /// Input bytes per block, so per gzip member (the last may be shorter).
    pub block_size: usize,
    /// Store blocks that look like noise (see [`looks_like_noise`]) instead of deflating
    /// them. deflate spends nearly as long failing to compress random or already compressed
    /// bytes as compressing text, and then stores them anyway; storing them directly is
    /// dozens of times faster for about the same output. Off in `default()`, on in layers
    /// ([`GzipParams::LAYERS`]).
    pub store_noise: bool,
}

impl GzipParams {
    /// The level layers use. Measured per core on 100 MB of this machine's Python library
    /// and documentation (text) and 150 MB of /usr/lib/x86_64-linux-gnu (binaries), 1 MiB
    /// blocks, as a share of the input, against one stream of `pigz -6`
    /// (28.92 % and 31.78 %):
    ///
    /// | level | text | binaries | speed relative to zlib-rs level 6 (text, binaries) |
    /// |---|---|---|---|
    /// | zlib-rs 6, 128 KiB primed blocks (layer format v3) | 29.34 % | 32.70 % | 1, 1 |
    /// | libdeflate 4 | 29.61 % | 32.35 % | 2.2, 1.8 |
    /// | libdeflate 5 | 28.88 % | 31.70 % | 1.6, 1.5 |
    /// | libdeflate 6 | 28.65 % | 31.50 % | 1.5, 1.3 |
    ///
    /// Level 5 is the fastest whose layers are no larger than pigz's on either kind of data;
    /// level 4 would be larger than the layers it replaces on text. benches/compression.rs
    /// and scripts/bench-compression measure it end to end.
    pub const LEVEL: u32 = 5;
    /// Block size of layers. libdeflate at level 5, as a share of the input, text and
    /// binaries: 128 KiB 29.31 % and 32.12 %, 512 KiB 28.94 % and 31.76 %, 1 MiB 28.88 % and
    /// 31.70 %, 2 MiB 28.85 % and 31.67 %; the same speed for all. 1 MiB is the smallest
    /// where the loss of the 32 KiB before each block no longer shows; larger blocks only
    /// hold more memory (a layer keeps about 2 × workers of them in flight).
    pub const BLOCK_SIZE: usize = 1024 * 1024;
    /// The parameters of layer archives, part of the layer format (whatever changes them
    /// changes its version, `FORMAT_VERSION` in src/cache/layers.rs): level 5, 1 MiB blocks,
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

/// One gzip member, as a worker hands it back, with the CPU time it took.
struct Member {
    bytes: Vec<u8>,
    cpu: Duration,
}

/// A `Write` that gzips what it is given on `workers` and writes a gzip member per block, in
/// order, to the writer it wraps. [`finish`](Self::finish) writes the last and returns that
/// writer.
pub struct ParallelGzip<W: Write> {
    out: Option<W>,
    workers: Arc<Workers>,
    params: GzipParams,
    max_in_flight: usize,
    /// The block being filled.
    block: Vec<u8>,
    /// Submitted blocks, oldest first.
    in_flight: VecDeque<Receiver<io::Result<Member>>>,
    /// Set when this writer goes away, so its queued blocks are skipped.
    abandoned: Arc<AtomicBool>,
    /// Whether any block was submitted: an empty stream still gets one (empty) member.
    submitted: bool,
    /// The workers' CPU time on the members written out so far.
    cpu: Duration,
    /// A write failed: the stream is broken and takes no more.
    failed: bool,
}

impl<W: Write> ParallelGzip<W> {
    /// A writer with at most twice as many blocks in flight as there are workers: enough
    /// that no worker waits while the writer's thread writes out a finished member.
    pub fn new(out: W, workers: Arc<Workers>, params: GzipParams) -> Self {
        let max_in_flight = 2 * workers.count().get();
        Self::with_max_in_flight(out, workers, params, max_in_flight)
    }

    /// A writer with at most `max_in_flight` (at least 1) blocks submitted and not yet written.
    pub fn with_max_in_flight(out: W, workers: Arc<Workers>, params: GzipParams, max_in_flight: usize) -> Self {
        assert!(params.block_size > 0, "gzip blocks hold at least a byte");
        assert!(CompressionLvl::new(params.level as i32).is_ok(), "libdeflate levels are 0 to 12");
        ParallelGzip {
            out: Some(out),
            workers,
            params,
            max_in_flight: max_in_flight.max(1),
            block: Vec::with_capacity(params.block_size),
            in_flight: VecDeque::new(),
            abandoned: Arc::new(AtomicBool::new(false)),
            submitted: false,
            cpu: Duration::ZERO,
            failed: false,
        }
    }

    /// Compresses what is left, writes it out and returns the inner writer (not flushed, as
    /// flate2's encoders leave it).
    pub fn finish(self) -> io::Result<W> {
        self.finish_timed().map(|(out, _)| out)
    }

    /// [`finish`](Self::finish), with the CPU time the workers spent on this stream.
    pub fn finish_timed(mut self) -> io::Result<(W, Duration)> {
        self.check()?;
        self.guard(|gz| {
            if !gz.block.is_empty() || !gz.submitted {
                gz.submit()?;
            }
            while !gz.in_flight.is_empty() {
                gz.write_oldest()?;
            }
            Ok(())
        })?;
        Ok((self.out.take().expect("present until finish"), self.cpu))
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

    /// Hands the block being filled to the workers, first writing out the oldest if too many
    /// are in flight.
    fn submit(&mut self) -> io::Result<()> {
        if self.in_flight.len() >= self.max_in_flight {
            self.write_oldest()?;
        }
        let data = mem::replace(&mut self.block, Vec::with_capacity(self.params.block_size));
        let (done, result) = mpsc::sync_channel(1);
        let abandoned = Arc::clone(&self.abandoned);
        let GzipParams { level, store_noise, .. } = self.params;
        self.workers.submit(Box::new(move || {
            if abandoned.load(Ordering::Relaxed) {
                return;
            }
            let start = thread_cpu_time();
            let level = if store_noise && looks_like_noise(&data) { 0 } else { level };
            let member = compress_member(level, &data);
            let member = member.map(|bytes| Member { bytes, cpu: thread_cpu_time().saturating_sub(start) });
            // The receiver may be gone (the writer failed): nothing to report to then.
            let _ = done.send(member);
        }));
        self.in_flight.push_back(result);
        self.submitted = true;
        Ok(())
    }

    /// Waits for the oldest block in flight and writes it out.
    fn write_oldest(&mut self) -> io::Result<()> {
        let Some(result) = self.in_flight.pop_front() else { return Ok(()) };
        self.write_member(result.recv().map_err(|_| worker_failed())?)
    }

    fn write_member(&mut self, member: io::Result<Member>) -> io::Result<()> {
        let member = member?;
        self.out.as_mut().expect("present until finish").write_all(&member.bytes)?;
        self.cpu += member.cpu;
        Ok(())
    }
}

fn worker_failed() -> io::Error {
    io::Error::other("a compression worker failed")
}

impl<W: Write> Write for ParallelGzip<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.check()?;
        let n = data.len().min(self.params.block_size - self.block.len());
        self.block.extend_from_slice(&data[..n]);
        if self.block.len() == self.params.block_size {
            self.guard(|gz| gz.submit())?;
        }
        Ok(n)
    }

    /// Writes out the members already compressed and flushes the inner writer; the block
    /// being filled stays open.
    fn flush(&mut self) -> io::Result<()> {
        self.check()?;
        self.guard(|gz| {
            while let Some(oldest) = gz.in_flight.front() {
                let member = match oldest.try_recv() {
                    Ok(member) => member,
                    Err(mpsc::TryRecvError::Empty) => break,
                    Err(mpsc::TryRecvError::Disconnected) => Err(worker_failed()),
                };
                gz.in_flight.pop_front();
                gz.write_member(member)?;
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

/// `data` as one gzip member at libdeflate `level`: the header (no name, no timestamp,
/// XFL 4 at levels 0–1, 2 at 8 and above, else 0; OS 255, "unknown"), the deflate stream,
/// CRC-32 and length. A fresh compressor per block: its allocation is nothing next to
/// compressing 1 MiB, and no state can pass from one block to another.
fn compress_member(level: u32, data: &[u8]) -> io::Result<Vec<u8>> {
    let level = CompressionLvl::new(level as i32).map_err(|e| io::Error::other(format!("{e:?}")))?;
    let mut compressor = Compressor::new(level);
    // The bound holds stored blocks and the header and trailer: compression cannot fail.
    let mut bytes = vec![0; compressor.gzip_compress_bound(data.len())];
    let n = compressor.gzip_compress(data, &mut bytes).map_err(|e| io::Error::other(format!("{e:?}")))?;
    bytes.truncate(n);
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::Digest;
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

    /// The members of the layer format for a fixed input: text with repeats over two
    /// blocks and a half, then a block of noise (stored). These digests change only with
    /// the layer format, so a change here (a new libdeflate, other parameters) must come
    /// with a new `FORMAT_VERSION` in src/cache/layers.rs and new digests below.
    #[test]
    fn layer_members_are_pinned() {
        let text = (0..).map(|i: u32| format!("{i:x} /nix/store/{} lib{}.so\n", i % 251, i % 17));
        let mut data: Vec<u8> = text.flat_map(String::into_bytes).take(5 * GzipParams::BLOCK_SIZE / 2).collect();
        data.extend(noise(GzipParams::BLOCK_SIZE));
        let blocks: Vec<&[u8]> = data.chunks(GzipParams::BLOCK_SIZE).collect();
        let members: Vec<Vec<u8>> = blocks
            .iter()
            .map(|b| compress_member(if looks_like_noise(b) { 0 } else { GzipParams::LEVEL }, b).unwrap())
            .collect();
        let digests: Vec<String> = members.iter().map(|m| Digest::of(m).to_string()).collect();
        assert_eq!(
            digests,
            [
                "sha256:999a9abdcbc3d16a1fd5ad3b505e55cc3beb1f0b12cf4563352c2f250a1970c3",
                "sha256:bfa4e11ff70a975e5ffaec2c0638e0977af86a805f4265011e60365ef8af2d66",
                "sha256:b1239ad4cbddf9111422d5e7b3aed4d236488f22d4fde0f383cf7f08994b3453",
                "sha256:522301aa0eec145f3cb2c9705c5a4c9c13a749a9a0a44812270bd3d0ff77387d",
            ],
            "libdeflate's output changed: bump the layer format version"
        );
        // Every member has the same header: no timestamp, no name, OS "unknown"; the
        // stored one (level 0) says "fastest".
        for (member, xfl) in members.iter().zip([0, 0, 0, 4]) {
            assert_eq!(member[..10], [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, xfl, 255]);
        }
    }
}
