//! How layer archives are compressed: gzip, which every client reads, or zstd, which is
//! faster and smaller but needs an OCI manifest and a recent client.
//!
//! A cold image is as fast as its largest layer, and one layer usually holds most of an
//! image, so one layer's compression must use every core. Both encoders do, and both write
//! bytes that depend only on the input and their parameters, never on the number of threads
//! or on timing: the digest of a layer is the same on every server, which is what lets
//! replicas and restarts share layer records. [`ParallelGzip`] cuts the stream into 1 MiB
//! blocks that libdeflate compresses in parallel, each into a gzip member of its own;
//! [`ParallelZstd`] uses libzstd's multi-threaded mode. Both keep a fixed number of blocks in
//! memory, whatever the layer's size.
//!
//! [`Compression`] is the operator's choice. Its [`id`](Compression::id) belongs in the key
//! of a layer record: the same store paths give different blobs under each setting.

mod gzip;
mod workers;
mod zstd;

pub use self::zstd::{ParallelZstd, ZstdParams};
pub use gzip::{GzipParams, ParallelGzip, looks_like_noise};
pub use workers::Workers;

use oci_spec::image::MediaType;
use std::fmt;
use std::io::{self, Write};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

/// How a layer's tar is compressed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Compression {
    /// gzip (libdeflate level 5, a member per 1 MiB block): what every client reads (the
    /// default).
    #[default]
    Gzip,
    /// zstd, level 3: OCI `tar+zstd` layers, read by containerd ≥ 1.5, podman and Docker ≥ 23.
    Zstd,
}

/// A name that is not a compression this registry writes.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("unknown layer compression '{0}': expected gzip or zstd")]
pub struct UnknownCompression(pub String);

impl Compression {
    /// Every compression, for tests and benchmarks that try each.
    pub const ALL: [Compression; 2] = [Compression::Gzip, Compression::Zstd];

    /// The name in configuration and in layer-record keys; stable, never renamed.
    pub fn id(self) -> &'static str {
        match self {
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
        }
    }

    /// The layer's media type in an OCI manifest.
    pub fn oci_media_type(self) -> MediaType {
        match self {
            Compression::Gzip => MediaType::ImageLayerGzip,
            Compression::Zstd => MediaType::ImageLayerZstd,
        }
    }

    /// The layer's media type in a Docker schema 2 manifest. Schema 2 has none for zstd:
    /// zstd layers can only be served in OCI manifests (Docker reads those since 23.0).
    pub fn docker_media_type(self) -> Option<&'static str> {
        match self {
            Compression::Gzip => Some("application/vnd.docker.image.rootfs.diff.tar.gzip"),
            Compression::Zstd => None,
        }
    }

    /// An encoder writing this compression of what it is given into `out` as layers are
    /// compressed ([`GzipParams::LAYERS`], [`ZstdParams::default`]), on `workers` (zstd: on
    /// as many threads of its own).
    pub fn encoder<W: Write>(self, out: W, workers: Arc<Workers>) -> io::Result<Encoder<W>> {
        Ok(match self {
            Compression::Gzip => Encoder::Gzip(ParallelGzip::new(out, workers, GzipParams::LAYERS)),
            Compression::Zstd => Encoder::Zstd(ParallelZstd::new(out, ZstdParams::default(), workers.count())?),
        })
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.id())
    }
}

impl FromStr for Compression {
    type Err = UnknownCompression;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Compression::ALL.into_iter().find(|c| c.id() == s).ok_or_else(|| UnknownCompression(s.to_owned()))
    }
}

/// A compressing writer of either kind; [`finish`](Self::finish) ends the stream and returns
/// the inner writer.
pub enum Encoder<W: Write> {
    Gzip(ParallelGzip<W>),
    Zstd(ParallelZstd<W>),
}

impl<W: Write> Encoder<W> {
    pub fn finish(self) -> io::Result<W> {
        self.finish_timed().map(|(out, _)| out)
    }

    /// [`finish`](Self::finish), with the CPU time the workers spent compressing, where the
    /// encoder can tell (gzip; libzstd's threads are its own).
    pub fn finish_timed(self) -> io::Result<(W, Option<Duration>)> {
        match self {
            Encoder::Gzip(gzip) => gzip.finish_timed().map(|(out, cpu)| (out, Some(cpu))),
            Encoder::Zstd(zstd) => zstd.finish().map(|out| (out, None)),
        }
    }
}

impl<W: Write> Write for Encoder<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        match self {
            Encoder::Gzip(gzip) => gzip.write(data),
            Encoder::Zstd(zstd) => zstd.write(data),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Encoder::Gzip(gzip) => gzip.flush(),
            Encoder::Zstd(zstd) => zstd.flush(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::image::ToDockerV2S2;

    #[test]
    fn names_round_trip_and_bad_names_are_refused() {
        for c in Compression::ALL {
            assert_eq!(c.id().parse::<Compression>(), Ok(c));
            assert_eq!(c.to_string(), c.id());
        }
        assert_eq!(Compression::default(), Compression::Gzip);
        let err = "xz".parse::<Compression>().unwrap_err();
        assert_eq!(err.to_string(), "unknown layer compression 'xz': expected gzip or zstd");
        assert!("GZIP".parse::<Compression>().is_err());
    }

    #[test]
    fn media_types_are_the_specs_names() {
        assert_eq!(Compression::Gzip.oci_media_type().to_string(), "application/vnd.oci.image.layer.v1.tar+gzip");
        assert_eq!(Compression::Zstd.oci_media_type().to_string(), "application/vnd.oci.image.layer.v1.tar+zstd");
        // The Docker names agree with oci-spec's table, which has none for zstd layers.
        for c in Compression::ALL {
            assert_eq!(c.docker_media_type(), c.oci_media_type().to_docker_v2s2().ok(), "{c}");
        }
        assert_eq!(Compression::Zstd.docker_media_type(), None);
    }
}
