//! Layer compression micro-benchmark: the same input through a single-thread zlib gzip, the
//! parallel gzip and zstd encoders, and the tools a user would pick instead (`pigz -6 -p2`,
//! `zstd -3 -T2`), side by side in one run.
//!
//! `cargo bench --bench compression`. Every measurement runs in a fresh child process (this
//! binary again) that streams the input file from the page cache through the encoder into a
//! SHA-256, as the server does (the tar's SHA-256 before, the blob's after), or pipes it
//! through the command and hashes its output, as `pigz | sha256sum` does; the child reports
//! its wall and CPU time, the output's size and digest, and peak RSS (its own; for a
//! command, the command's). Throughput is input MB (10^6 bytes) per wall second, and per
//! CPU second (what a core does, which other load on the machine does not change); each row
//! is the median of the runs.
//!
//! Inputs (made once under target/compression-bench/, `tar --sort=name` like a layer):
//!
//! - `text`: this machine's Python library tree and documentation (/usr/lib/python3*,
//!   /usr/share/doc): source, byte code, HTML and changelogs, what language runtimes and
//!   their packages hold;
//! - `files`: binaries and libraries of this machine (/usr/lib/x86_64-linux-gnu, /usr/bin),
//!   what Nix store paths mostly hold;
//! - `random`: the test package set's `big` package (`NIXERY_BIG_MIB` of /dev/urandom, the
//!   input of scripts/bench-build): the worst case for deflate's speed;
//! - `mixed`: random and files concatenated.
//!
//! Settings (environment): `NIXERY_COMPRESS_BENCH_MIB` size of each input (256; `text` is
//! what the directories hold if that is less), `NIXERY_COMPRESS_BENCH_INPUTS`
//! comma-separated inputs (text,files,random), `NIXERY_COMPRESS_BENCH_RUNS` runs per row (3),
//! `NIXERY_COMPRESS_BENCH_BLOCKS` and `NIXERY_COMPRESS_BENCH_ZSTD_JOBS`: comma-separated
//! extra gzip block sizes and zstd job sizes in KiB to compare at 2 workers (none);
//! `NIXERY_COMPRESS_BENCH_GZIP_LEVELS` other libdeflate levels to compare at 2 workers (none;
//! 4 and 6 are the neighbours of the layers' 5). The row "noise stored" is the parallel gzip
//! with `GzipParams::store_noise`, as layers are written.

use flate2::write::GzEncoder;
use nixery::compression::{GzipParams, ParallelGzip, ParallelZstd, Workers, ZstdParams};
use nixery::digest::HashingWriter;
use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

const CHILD: &str = "NIXERY_COMPRESS_BENCH_CHILD";

/// One way of compressing the input.
#[derive(Clone, Debug)]
enum Method {
    /// flate2's GzEncoder (zlib-rs, level 6) on the calling thread: a plain `gzip -6`.
    GzipOneThread,
    ParallelGzip {
        workers: usize,
        params: GzipParams,
    },
    ParallelZstd {
        workers: usize,
        job_kib: usize,
    },
    Command {
        program: &'static str,
        args: &'static [&'static str],
    },
}

impl Method {
    fn label(&self) -> String {
        match self {
            Method::GzipOneThread => "gzip -6, zlib-rs GzEncoder, one thread".into(),
            Method::ParallelGzip { workers, params } => {
                let noise = if params.store_noise { ", noise stored" } else { "" };
                let (level, block_kib) = (params.level, params.block_size / 1024);
                format!("libdeflate -{level}, {workers} worker(s), {block_kib} KiB members{noise}")
            }
            Method::ParallelZstd { workers, job_kib } => {
                format!("zstd -3, parallel, {workers} worker(s), {job_kib} KiB jobs")
            }
            Method::Command { program, args } => format!("{program} {}", args.join(" ")),
        }
    }

    /// The form passed to a child process.
    fn encode(&self) -> String {
        match self {
            Method::GzipOneThread => "gzip1".into(),
            Method::ParallelGzip { workers, params } => {
                format!("pgzip:{workers}:{}:{}:{}", params.block_size, params.level, params.store_noise)
            }
            Method::ParallelZstd { workers, job_kib } => format!("pzstd:{workers}:{job_kib}"),
            Method::Command { program, .. } => format!("cmd:{program}"),
        }
    }

    fn decode(s: &str) -> Method {
        let parts: Vec<&str> = s.split(':').collect();
        let n = |i: usize| parts[i].parse::<usize>().unwrap();
        match parts[0] {
            "gzip1" => Method::GzipOneThread,
            "pgzip" => Method::ParallelGzip {
                workers: n(1),
                params: GzipParams { block_size: n(2), level: n(3) as u32, store_noise: parts[4] == "true" },
            },
            "pzstd" => Method::ParallelZstd { workers: n(1), job_kib: n(2) },
            "cmd" => commands().into_iter().find(|m| m.encode() == s).expect("a known command"),
            other => panic!("unknown method {other}"),
        }
    }
}

/// The tools a user would run instead, with two threads like the machine has cores.
fn commands() -> Vec<Method> {
    vec![
        Method::Command { program: "pigz", args: &["-6", "-p2", "-c"] },
        Method::Command { program: "zstd", args: &["-3", "-T2", "-c", "-q"] },
    ]
}

/// What one child process measured.
struct Run {
    secs: f64,
    /// User + system CPU seconds, of the child and the command it ran.
    cpu_secs: f64,
    out_bytes: u64,
    digest: String,
    rss_kib: u64,
}

fn main() {
    if let Ok(spec) = std::env::var(CHILD) {
        let (method, input) = spec.split_once('@').expect("method@input");
        let run = measure(&Method::decode(method), Path::new(input)).expect("measurement");
        println!("{} {} {} {} {}", run.secs, run.cpu_secs, run.out_bytes, run.digest, run.rss_kib);
        return;
    }
    // cargo bench passes --bench; nothing else is taken.
    let mib: usize = setting("NIXERY_COMPRESS_BENCH_MIB", "256").parse().expect("a size in MiB");
    let runs: usize = setting("NIXERY_COMPRESS_BENCH_RUNS", "3").parse().expect("a number of runs");
    let inputs = setting("NIXERY_COMPRESS_BENCH_INPUTS", "text,files,random");
    let blocks = sizes_kib("NIXERY_COMPRESS_BENCH_BLOCKS");
    let jobs = sizes_kib("NIXERY_COMPRESS_BENCH_ZSTD_JOBS");
    let levels: Vec<u32> = sizes_kib("NIXERY_COMPRESS_BENCH_GZIP_LEVELS").into_iter().map(|l| l as u32).collect();

    let layers = GzipParams::default();
    let mut methods = vec![
        Method::GzipOneThread,
        Method::ParallelGzip { workers: 1, params: layers },
        Method::ParallelGzip { workers: 2, params: layers },
        Method::ParallelGzip { workers: 2, params: GzipParams { store_noise: true, ..layers } },
    ];
    let gzip = |params| Method::ParallelGzip { workers: 2, params };
    methods.extend(blocks.iter().map(|kib| gzip(GzipParams { block_size: kib * 1024, ..layers })));
    methods.extend(levels.iter().map(|&level| gzip(GzipParams { level, ..layers })));
    methods.push(commands()[0].clone());
    let default_job = ZstdParams::JOB_SIZE as usize / 1024;
    methods.push(Method::ParallelZstd { workers: 1, job_kib: default_job });
    methods.push(Method::ParallelZstd { workers: 2, job_kib: default_job });
    methods.extend(jobs.iter().map(|&job_kib| Method::ParallelZstd { workers: 2, job_kib }));
    methods.push(commands()[1].clone());

    for input in inputs.split(',') {
        let path = make_input(input, mib);
        let size = path.metadata().unwrap().len();
        println!(
            "\ninput {input}: {:.1} MiB ({}), {runs} runs each; load: {}",
            size as f64 / 1048576.0,
            path.display(),
            load()
        );
        println!(
            "{:<56} {:>7} {:>9} {:>13} {:>7} {:>10}",
            "method", "MB/s", "MB/CPU-s", "output bytes", "ratio", "peak RSS"
        );
        for method in &methods {
            let mut results: Vec<Run> = (0..runs).map(|_| child(method, &path)).collect();
            let digests: std::collections::BTreeSet<&str> = results.iter().map(|r| r.digest.as_str()).collect();
            assert_eq!(digests.len(), 1, "{}: different bytes across runs", method.label());
            results.sort_by(|a, b| a.secs.total_cmp(&b.secs));
            let median = &results[results.len() / 2];
            let rss = results.iter().map(|r| r.rss_kib).max().unwrap();
            println!(
                "{:<56} {:>7.1} {:>9.1} {:>13} {:>7.4} {:>7.1} MB",
                method.label(),
                size as f64 / 1e6 / median.secs,
                size as f64 / 1e6 / median.cpu_secs,
                median.out_bytes,
                median.out_bytes as f64 / size as f64,
                rss as f64 * 1024.0 / 1e6,
            );
        }
        println!("load after: {}", load());
    }
}

/// A comma-separated list of numbers (sizes in KiB, levels).
fn sizes_kib(name: &str) -> Vec<usize> {
    setting(name, "").split(',').filter(|s| !s.is_empty()).map(|s| s.parse().expect("sizes in KiB")).collect()
}

fn setting(name: &str, default: &str) -> String {
    std::env::var(name).ok().filter(|v| !v.is_empty()).unwrap_or_else(|| default.to_owned())
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg").unwrap_or_default().split(' ').take(3).collect::<Vec<_>>().join(" ")
}

/// Runs one measurement in a fresh process, so peak RSS is that measurement's alone.
fn child(method: &Method, input: &Path) -> Run {
    let output = Command::new(std::env::current_exe().unwrap())
        .env(CHILD, format!("{}@{}", method.encode(), input.display()))
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    assert!(output.status.success(), "{} failed", method.label());
    let text = String::from_utf8(output.stdout).unwrap();
    let fields: Vec<&str> = text.split_whitespace().collect();
    Run {
        secs: fields[0].parse().unwrap(),
        cpu_secs: fields[1].parse().unwrap(),
        out_bytes: fields[2].parse().unwrap(),
        digest: fields[3].to_owned(),
        rss_kib: fields[4].parse().unwrap(),
    }
}

/// In the child: compresses `input` with `method` into a SHA-256.
fn measure(method: &Method, input: &Path) -> io::Result<Run> {
    let start = Instant::now();
    let (digest, out_bytes) = match method {
        Method::Command { program, args } => {
            let mut child = Command::new(program)
                .args(*args)
                .stdin(File::open(input)?)
                .stdout(Stdio::piped())
                .spawn()
                .unwrap_or_else(|e| panic!("{program} (scripts/setup installs it): {e}"));
            let mut sink = HashingWriter::new(io::sink());
            let copied = io::copy(&mut child.stdout.take().unwrap(), &mut sink);
            assert!(child.wait()?.success(), "{program} failed");
            copied?;
            let (_, digest, n) = sink.finish();
            (digest, n)
        }
        _ => {
            let compressed = HashingWriter::new(io::sink());
            let (_, digest, n) = match method {
                Method::GzipOneThread => {
                    let level = flate2::Compression::new(6);
                    feed(input, GzEncoder::new(compressed, level), GzEncoder::finish)?
                }
                Method::ParallelGzip { workers, params } => {
                    let workers = Workers::new(NonZeroUsize::new(*workers).unwrap())?;
                    feed(input, ParallelGzip::new(compressed, workers, *params), ParallelGzip::finish)?
                }
                Method::ParallelZstd { workers, job_kib } => {
                    let n = NonZeroUsize::new(*workers).unwrap();
                    let params = ZstdParams { level: ZstdParams::LEVEL, job_size: (job_kib * 1024) as u32 };
                    let zstd = ParallelZstd::new(compressed, params, n)?;
                    feed(input, zstd, ParallelZstd::finish)?
                }
                Method::Command { .. } => unreachable!(),
            }
            .finish();
            (digest, n)
        }
    };
    let secs = start.elapsed().as_secs_f64();
    let (own, children) = (usage(libc::RUSAGE_SELF), usage(libc::RUSAGE_CHILDREN));
    let rss_kib = match method {
        Method::Command { .. } => children.ru_maxrss as u64,
        _ => own_peak_rss_kib(),
    };
    let cpu_secs = cpu(&own) + cpu(&children);
    Ok(Run { secs, cpu_secs, out_bytes, digest: digest.to_string(), rss_kib })
}

/// Streams `input` through a SHA-256 (the layer's diff_id) into `encoder` in 256 KiB
/// reads, as the tar writer does, and finishes it.
fn feed<E: Write, W>(input: &Path, encoder: E, finish: impl FnOnce(E) -> io::Result<W>) -> io::Result<W> {
    let mut tar = HashingWriter::new(encoder);
    let mut reader = BufReader::with_capacity(256 * 1024, File::open(input)?);
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            break;
        }
        tar.write_all(&buf[..n])?;
    }
    let (encoder, _diff_id, _) = tar.finish();
    finish(encoder)
}

fn own_peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn usage(who: libc::c_int) -> libc::rusage {
    // SAFETY: rusage is plain data, and getrusage only writes the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(who, &mut usage) };
    usage
}

fn cpu(usage: &libc::rusage) -> f64 {
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

/// The input file `name` of `mib` MiB per part, made once.
fn make_input(name: &str, mib: usize) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/compression-bench");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{name}-{mib}.tar"));
    if path.exists() {
        return path;
    }
    let partial = dir.join(format!("{name}-{mib}.partial"));
    let mut out = File::create(&partial).unwrap();
    match name {
        "random" => tar_prefix(&[&big_package(mib)], mib, &mut out),
        "files" => tar_prefix(&[Path::new("/usr/lib/x86_64-linux-gnu"), Path::new("/usr/bin")], mib, &mut out),
        "text" => {
            let python = std::fs::read_dir("/usr/lib").unwrap().map(|e| e.unwrap().path());
            let mut dirs: Vec<PathBuf> =
                python.filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("python3")).collect();
            dirs.sort();
            dirs.push("/usr/share/doc".into());
            let dirs: Vec<&Path> = dirs.iter().map(PathBuf::as_path).collect();
            tar_at_most(&dirs, mib, &mut out);
        }
        "mixed" => {
            for part in ["random", "files"] {
                io::copy(&mut File::open(make_input(part, mib)).unwrap(), &mut out).unwrap();
            }
        }
        other => panic!("unknown input {other}: text, files, random or mixed"),
    }
    drop(out);
    std::fs::rename(&partial, &path).unwrap();
    path
}

/// The test package set's `big` package of `mib` MiB, built with Nix.
fn big_package(mib: usize) -> PathBuf {
    let pkgs = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/pkgs/default.nix");
    let out = Command::new("nix-build")
        .args(["--no-out-link", "-A", "big"])
        .arg(&pkgs)
        .env("NIXERY_BIG_MIB", mib.to_string())
        .env("NIX_CONFIG", "substituters =")
        .stderr(Stdio::inherit())
        .output()
        .expect("nix-build (scripts/setup installs Nix)");
    assert!(out.status.success(), "nix-build of big failed");
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// The first `mib` MiB of `tar --sort=name` of `paths`.
fn tar_prefix(paths: &[&Path], mib: usize, out: &mut File) {
    let copied = tar_at_most(paths, mib, out);
    assert_eq!(copied, (mib * 1024 * 1024) as u64, "{paths:?} hold less than {mib} MiB");
}

/// At most the first `mib` MiB of `tar --sort=name` of `paths`; how many bytes.
fn tar_at_most(paths: &[&Path], mib: usize, out: &mut File) -> u64 {
    let mut tar = Command::new("tar")
        .args(["--sort=name", "--owner=0", "--group=0", "--numeric-owner", "--mtime=@1", "-cf", "-"])
        .args(paths)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = tar.stdout.take().unwrap();
    let copied = io::copy(&mut (&mut stdout).take((mib * 1024 * 1024) as u64), out).unwrap();
    drop(stdout);
    let _ = tar.wait();
    copied
}
