//! Where the time of one layer archive goes, for the log (`RUST_LOG=nixery::archive=debug`).
//!
//! The stages of the pipeline ([`super`]) are writers wrapped in one another, and the caller's
//! thread runs through all of them: reading the files and writing the tar, hashing the tar,
//! handing it to the encoder (copying into blocks and, when every worker is busy, waiting for
//! the oldest), hashing the compressed bytes, and handing them to storage (which waits when
//! the upload lags). A [`Clocked`] writer around each stage counts the time spent inside its
//! `write` and `flush` calls, which includes the stages below it; the differences between
//! neighbours are each stage's own share, and they add up to the archive's wall time. The
//! encoder reports its workers' CPU time besides, the compression itself.

use std::io::{self, Write};
use std::time::{Duration, Instant};

/// A writer that counts the time spent in its inner writer.
pub struct Clocked<W> {
    inner: W,
    spent: Duration,
}

impl<W> Clocked<W> {
    pub fn new(inner: W) -> Self {
        Clocked { inner, spent: Duration::ZERO }
    }

    /// The inner writer and the time spent writing into it.
    pub fn into_parts(self) -> (W, Duration) {
        (self.inner, self.spent)
    }
}

impl<W: Write> Write for Clocked<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let start = Instant::now();
        let result = self.inner.write(data);
        self.spent += start.elapsed();
        result
    }

    fn flush(&mut self) -> io::Result<()> {
        let start = Instant::now();
        let result = self.inner.flush();
        self.spent += start.elapsed();
        result
    }
}

/// The time the caller's thread spent in each stage of one archive (they add up to its wall
/// time), and the compression workers' CPU time.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Phases {
    /// Walking the store paths, reading the files, writing tar headers.
    pub read: Duration,
    /// SHA-256 of the tar (the diff_id).
    pub hash_tar: Duration,
    /// Copying into the encoder's blocks and waiting for its workers.
    pub compress_wait: Duration,
    /// SHA-256 of the compressed bytes (the digest).
    pub hash_blob: Duration,
    /// Handing compressed bytes to storage, including waiting for the upload.
    pub write: Duration,
    /// CPU time of the compression workers on this archive (gzip only: libzstd's threads
    /// are its own).
    pub compress_cpu: Option<Duration>,
}

impl Phases {
    /// The stages' shares from the time spent below each stage's input: `total` for the whole
    /// archive, then inside the tar hash, the encoder, the blob hash and the output.
    pub fn from_nested(total: Duration, below: [Duration; 4], compress_cpu: Option<Duration>) -> Self {
        let [tar_hash, encoder, blob_hash, output] = below;
        Phases {
            read: total.saturating_sub(tar_hash),
            hash_tar: tar_hash.saturating_sub(encoder),
            compress_wait: encoder.saturating_sub(blob_hash),
            hash_blob: blob_hash.saturating_sub(output),
            write: output,
            compress_cpu,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::thread;

    /// A sink that takes `delay` per write.
    struct Slow(Duration);

    impl Write for Slow {
        fn write(&mut self, data: &[u8]) -> io::Result<usize> {
            thread::sleep(self.0);
            Ok(data.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn clocked_counts_the_time_inside_and_nothing_outside() {
        let mut w = Clocked::new(Slow(Duration::from_millis(20)));
        w.write_all(b"a").unwrap();
        thread::sleep(Duration::from_millis(100));
        w.write_all(b"b").unwrap();
        w.flush().unwrap();
        let (_, spent) = w.into_parts();
        assert!(spent >= Duration::from_millis(40), "{spent:?}");
        assert!(spent < Duration::from_millis(100), "{spent:?} counts the sleep between writes");
    }

    #[test]
    fn nested_times_become_shares_that_add_up() {
        let ms = Duration::from_millis;
        let p = Phases::from_nested(ms(100), [ms(70), ms(60), ms(20), ms(15)], Some(ms(150)));
        assert_eq!(
            (p.read, p.hash_tar, p.compress_wait, p.hash_blob, p.write),
            (ms(30), ms(10), ms(40), ms(5), ms(15))
        );
        assert_eq!(p.read + p.hash_tar + p.compress_wait + p.hash_blob + p.write, ms(100));
        assert_eq!(p.compress_cpu, Some(ms(150)));
    }
}
