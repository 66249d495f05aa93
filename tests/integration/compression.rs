//! The layer compression engine against real decompressors: bytes independent of the
//! worker count and of how the input is written, a gzip member per block that `gzip -t`,
//! unpigz, Python's gzip module and flate2 read back as one stream and each alone as its
//! block, zstd frames that the `zstd` command reads back, and a failing sink that ends in an
//! error, not a hang.

use crate::harness::decompressors::{PYTHON_GZIP, python_gzip};
use flate2::read::MultiGzDecoder;
use nixery::compression::{Compression, GzipParams, ParallelGzip, ParallelZstd, Workers, ZstdParams};
use nixery::digest::Digest;
use sha2::{Digest as _, Sha256};
use std::io::{self, Read, Write};
use std::num::NonZeroUsize;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

const BLOCK: usize = GzipParams::BLOCK_SIZE;
const MIB: usize = 1024 * 1024;

fn workers(n: usize) -> Arc<Workers> {
    Workers::new(NonZeroUsize::new(n).unwrap()).unwrap()
}

/// `len` bytes that alternate, every few KiB, between text (compressible, with repeats that
/// reach across gzip blocks) and noise (incompressible), the same for the same `seed`.
fn mixed(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed;
    let mut next = move || {
        // splitmix64
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    let words = ["nix", "store", "layer", "gzip", "zstd", "registry", "/bin/sh", "lib", "\n", "\0\0\0\0"];
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        let run = 1024 + (next() % 8192) as usize;
        if next() % 3 == 0 {
            for _ in 0..run / 8 {
                out.extend_from_slice(&next().to_le_bytes());
            }
        } else {
            let end = out.len() + run;
            while out.len() < end {
                out.extend_from_slice(words[(next() % words.len() as u64) as usize].as_bytes());
            }
        }
    }
    out.truncate(len);
    out
}

/// Writes `data` in pieces of `chunk` bytes and finishes.
fn write_in_chunks<E: Write>(
    mut encoder: E,
    data: &[u8],
    chunk: usize,
    finish: impl FnOnce(E) -> io::Result<Vec<u8>>,
) -> Vec<u8> {
    for piece in data.chunks(chunk.max(1)) {
        encoder.write_all(piece).unwrap();
    }
    finish(encoder).unwrap()
}

fn gzip_with(data: &[u8], workers: Arc<Workers>, params: GzipParams, chunk: usize) -> Vec<u8> {
    write_in_chunks(ParallelGzip::new(Vec::new(), workers, params), data, chunk, ParallelGzip::finish)
}

fn gzip(data: &[u8], workers: &Arc<Workers>) -> Vec<u8> {
    gzip_with(data, Arc::clone(workers), GzipParams::default(), 64 * 1024)
}

fn zstd_with(data: &[u8], workers: usize, chunk: usize) -> Vec<u8> {
    let n = NonZeroUsize::new(workers).unwrap();
    write_in_chunks(ParallelZstd::new(Vec::new(), ZstdParams::default(), n).unwrap(), data, chunk, ParallelZstd::finish)
}

fn gunzip(gz: &[u8]) -> Vec<u8> {
    // Every member (GzDecoder would stop after the first).
    let mut out = Vec::new();
    MultiGzDecoder::new(gz).read_to_end(&mut out).unwrap();
    out
}

/// The gzip members of `gz`, each decompressed on its own, and each one's first 10 bytes
/// (the header).
fn members(mut gz: &[u8]) -> Vec<(Vec<u8>, [u8; 10])> {
    let mut members = Vec::new();
    while !gz.is_empty() {
        let header: [u8; 10] = gz[..10].try_into().unwrap();
        // The bufread decoder takes exactly one member from the slice and leaves the rest.
        let mut member = flate2::bufread::GzDecoder::new(gz);
        let mut out = Vec::new();
        member.read_to_end(&mut out).unwrap();
        gz = member.into_inner();
        members.push((out, header));
    }
    members
}

/// The sizes every determinism test covers: empty, under a block, block edges, ragged.
fn sizes() -> Vec<usize> {
    vec![0, 1, 1000, BLOCK - 1, BLOCK, BLOCK + 1, 2 * BLOCK, 3 * BLOCK + 12_345, 5 * MIB + 77]
}

#[test]
fn gzip_bytes_do_not_depend_on_workers_or_write_sizes() {
    let pools = [workers(1), workers(2), workers(8)];
    for size in sizes() {
        let data = mixed(size, size as u64);
        let reference = gzip(&data, &pools[0]);
        assert_eq!(gunzip(&reference), data, "round trip of {size} bytes");
        for (pool, chunk) in pools.iter().zip([1000, 4093, 3 * BLOCK]) {
            let out = gzip_with(&data, Arc::clone(pool), GzipParams::default(), chunk);
            assert_eq!(
                Digest::of(&out),
                Digest::of(&reference),
                "{size} bytes, {} workers, writes of {chunk}",
                pool.count()
            );
        }
        // One block in flight (fully sequential) and many give the same bytes too.
        let sequential = write_in_chunks(
            ParallelGzip::with_max_in_flight(Vec::new(), Arc::clone(&pools[2]), GzipParams::default(), 1),
            &data,
            BLOCK / 3,
            ParallelGzip::finish,
        );
        assert_eq!(Digest::of(&sequential), Digest::of(&reference), "{size} bytes, one block in flight");
    }
}

#[test]
fn gzip_is_a_member_per_block_each_readable_alone() {
    // Each block of the input is one gzip member that decompresses without the others, with
    // the same header: no timestamp, no name, XFL 0 (level 5), OS 255. An empty stream is
    // one empty member, still a gzip file.
    let header = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255];
    for size in [0, 1, BLOCK - 1, BLOCK, BLOCK + 1, 3 * BLOCK + 12_345] {
        let data = mixed(size, 7);
        let gz = gzip(&data, &workers(2));
        let members = members(&gz);
        let blocks: Vec<&[u8]> = if data.is_empty() { vec![&[]] } else { data.chunks(BLOCK).collect() };
        assert_eq!(members.len(), blocks.len(), "{size} bytes");
        for (i, ((out, head), block)) in members.iter().zip(blocks).enumerate() {
            assert!(out == block, "{size} bytes: member {i} does not hold block {i}");
            assert_eq!(head, &header, "{size} bytes: header of member {i}");
        }
    }
}

#[test]
fn gzip_with_noise_stored_is_as_reproducible_and_changes_only_noise() {
    let noise: Vec<u8> = (0..(3 * MIB / 32) as u32).flat_map(|i| Sha256::digest(i.to_le_bytes())).collect();
    let params = GzipParams { store_noise: true, ..GzipParams::default() };
    let stored = gzip_with(&noise, workers(1), params, 10_000);
    assert_eq!(gunzip(&stored), noise);
    assert_eq!(gzip_with(&noise, workers(8), params, 4093), stored, "8 workers");
    // Stored: the input, 5 bytes per stored deflate block (at most 64 KiB each), and a
    // header and trailer per member; deflating gives no less here.
    let members = noise.len().div_ceil(BLOCK);
    let stored_blocks = members * BLOCK.div_ceil(65_535);
    assert!(stored.len() <= noise.len() + stored_blocks * 5 + members * 18, "{} bytes", stored.len());
    assert!(stored.len() <= gzip(&noise, &workers(2)).len());
    // Text and mixed blocks are deflated as before: the same bytes as without the option.
    let data = mixed(3 * MIB, 12);
    assert_eq!(gzip_with(&data, workers(2), params, 64 * 1024), gzip(&data, &workers(2)));
}

#[test]
fn gzip_block_size_and_level_are_honoured() {
    let data = mixed(2 * MIB, 3);
    let params = GzipParams { level: 1, block_size: 32 * 1024, ..GzipParams::default() };
    let a = gzip_with(&data, workers(1), params, 10_000);
    let b = gzip_with(&data, workers(8), params, 777);
    assert_eq!(a, b);
    assert_eq!(gunzip(&a), data);
    assert_eq!(a[8], 4, "XFL of the fastest level");
    assert_ne!(a, gzip(&data, &workers(2)), "other parameters, other bytes");
}

#[test]
fn zstd_bytes_do_not_depend_on_workers_or_write_sizes() {
    // Several jobs, so that workers really share the frame; and an exact number of jobs,
    // where libzstd ends the frame differently depending on whether the last job was handed
    // out before the end (see zstd.rs).
    let job = ZstdParams::JOB_SIZE as usize;
    let mut all = sizes();
    all.extend([3 * job + 5, 4 * job]);
    for size in all {
        let data = mixed(size, size as u64 + 1);
        let reference = zstd_with(&data, 1, 64 * 1024);
        assert_eq!(zstd::decode_all(&reference[..]).unwrap(), data, "round trip of {size} bytes");
        for (n, chunk) in [(1, 3 * MIB), (2, 1000), (2, 64 * 1024), (8, 4093), (8, 3 * MIB), (8, job)] {
            let out = zstd_with(&data, n, chunk);
            assert_eq!(Digest::of(&out), Digest::of(&reference), "{size} bytes, {n} workers, writes of {chunk}");
        }
    }
}

#[test]
fn zstd_bytes_do_not_depend_on_timing_at_the_end_of_the_last_job() {
    // Noise of exactly 16 jobs: whether libzstd has handed out the last job when the frame
    // ends depends on how far the workers are behind, and libzstd ends the frame
    // differently in the two cases (one empty block more or less) unless the encoder evens
    // them out. Repeated runs land in both cases.
    let job = ZstdParams::JOB_SIZE as usize;
    let noise: Vec<u8> = (0..(16 * job / 32) as u32).flat_map(|i| Sha256::digest(i.to_le_bytes())).collect();
    let reference = zstd_with(&noise, 2, 256 * 1024);
    assert_eq!(zstd::decode_all(&reference[..]).unwrap(), noise);
    for (run, chunk) in [256 * 1024, 4096].into_iter().cycle().take(8).enumerate() {
        let out = zstd_with(&noise, 2, chunk);
        assert_eq!(out.len(), reference.len(), "run {run}, writes of {chunk}");
        assert_eq!(Digest::of(&out), Digest::of(&reference), "run {run}, writes of {chunk}");
    }
}

#[test]
fn the_encoder_of_each_compression_round_trips() {
    let data = mixed(3 * MIB, 11);
    let pool = workers(2);
    for compression in Compression::ALL {
        let mut encoder = compression.encoder(Vec::new(), Arc::clone(&pool)).unwrap();
        encoder.write_all(&data).unwrap();
        // A flush in the middle does not cut the stream: the bytes are those without it.
        encoder.flush().unwrap();
        encoder.write_all(&data).unwrap();
        let out = encoder.finish().unwrap();
        let back = match compression {
            Compression::Gzip => gunzip(&out),
            Compression::Zstd => zstd::decode_all(&out[..]).unwrap(),
        };
        assert_eq!(back, [&data[..], &data[..]].concat(), "{compression}");
        let whole =
            write_in_chunks(compression.encoder(Vec::new(), Arc::clone(&pool)).unwrap(), &back, back.len(), |e| {
                e.finish()
            });
        assert_eq!(Digest::of(&whole), Digest::of(&out), "{compression}: flush changed the bytes");
    }
}

/// Runs `check` on its own thread and fails if it takes longer than `secs`.
fn within(secs: u64, what: &str, check: impl FnOnce() + Send + 'static) {
    let (done, finished) = mpsc::channel();
    thread::spawn(move || {
        check();
        let _ = done.send(());
    });
    match finished.recv_timeout(Duration::from_secs(secs)) {
        Ok(()) => {}
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("{what} hung for {secs} s"),
        Err(mpsc::RecvTimeoutError::Disconnected) => panic!("{what} panicked"),
    }
}

/// A sink that takes `limit` bytes and then fails, like an upload that went away.
struct Failing {
    limit: usize,
    written: usize,
}

impl Write for Failing {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.written + buf.len() > self.limit {
            return Err(io::Error::new(io::ErrorKind::BrokenPipe, "upload stopped"));
        }
        self.written += buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Writes 8 MiB at a time into `encoder` until it fails (an upload that stopped after
/// 100 kB cannot take 512 MiB) and returns the error.
fn write_until_it_fails(encoder: &mut impl Write, seed: u64) -> io::Error {
    let data = mixed(8 * MIB, seed);
    for _ in 0..64 {
        if let Err(err) = encoder.write_all(&data) {
            assert_eq!(err.kind(), io::ErrorKind::BrokenPipe, "{err}");
            return err;
        }
    }
    panic!("512 MiB went into a sink that takes 100 kB");
}

fn failing() -> Failing {
    Failing { limit: 100_000, written: 0 }
}

#[test]
fn a_failing_sink_stops_gzip_without_hanging_or_leaking_threads() {
    within(60, "gzip into a failing sink", || {
        let pool = workers(2);
        let mut gz = ParallelGzip::new(failing(), Arc::clone(&pool), GzipParams::default());
        write_until_it_fails(&mut gz, 5);
        // Broken for good: no later write or finish pretends to succeed.
        assert!(gz.write_all(b"more").is_err());
        assert!(gz.finish().is_err());
        // The writer let go of the workers; dropping the last handle joins every thread,
        // which returns only once each has finished (or skipped) the writer's blocks.
        let pool = Arc::try_unwrap(pool).unwrap_or_else(|_| panic!("the failed writer still holds the workers"));
        drop(pool);
    });
}

#[test]
fn a_failing_sink_stops_zstd_without_hanging() {
    within(60, "zstd into a failing sink", || {
        let mut zs = ParallelZstd::new(failing(), ZstdParams::default(), NonZeroUsize::new(2).unwrap()).unwrap();
        write_until_it_fails(&mut zs, 6);
        // Finishing fails too, and dropping the encoder stops and joins libzstd's threads.
        assert!(zs.finish().is_err());
    });
}

/// Runs `program args` with `input` on stdin; its stdout, or a panic with its stderr.
fn run(program: &str, args: &[&str], input: &[u8]) -> Vec<u8> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{program} (scripts/setup installs it): {e}"));
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let feeder = thread::spawn(move || stdin.write_all(&input));
    let output = child.wait_with_output().unwrap();
    feeder.join().unwrap().unwrap();
    assert!(output.status.success(), "{program} {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    output.stdout
}

/// `gzip`, unpigz (which the Docker engine and containerd run when it is installed) and
/// Python read every member as one stream; the clients' Go readers are tested by pulls
/// (tests/integration/layer_compression.rs).
#[test]
fn real_gzip_tools_read_every_member_and_get_the_input_back() {
    let pool = workers(2);
    for size in [0, BLOCK, 3 * BLOCK + 12_345, 6 * MIB] {
        let data = mixed(size, 21);
        let gz = gzip(&data, &pool);
        run("gzip", &["-t"], &gz);
        assert_eq!(run("gzip", &["-dc"], &gz), data, "gzip -d of {size} bytes");
        run("unpigz", &["-t"], &gz);
        assert_eq!(run("unpigz", &["-c"], &gz), data, "unpigz of {size} bytes");
        let (digest, members) = python_gzip(&run("python3", &["-c", PYTHON_GZIP], &gz));
        assert_eq!(digest, Digest::of(&data).to_string(), "python of {size} bytes");
        assert_eq!(members, size.div_ceil(BLOCK).max(1), "members of {size} bytes");
    }
}

#[test]
fn the_zstd_command_accepts_the_frames_and_gets_the_input_back() {
    for size in [0, 1000, 3 * ZstdParams::JOB_SIZE as usize + 5] {
        let data = mixed(size, 22);
        let zs = zstd_with(&data, 2, 64 * 1024);
        run("zstd", &["-t", "-q"], &zs);
        assert_eq!(run("zstd", &["-d", "-c", "-q"], &zs), data, "zstd -d of {size} bytes");
    }
}
