//! Layer blobs read back by real decompressors, not by the library that wrote them: Python's
//! gzip module (which also checks that a gzip blob is exactly one member, as clients that
//! read only the first member need) and the `zstd` command.

use std::fs;
use std::process::Command;

use super::server::Server;
use super::temp_dir;

/// The OCI media types of gzip and zstd layers, and Docker's gzip one.
pub const OCI_GZIP_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const OCI_ZSTD_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
pub const DOCKER_GZIP_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

/// A Python program that reads one gzip member from the file named by its argument, or from
/// stdin without one, fails unless the member ends the input, and prints `sha256:<hex>` of
/// what it holds.
pub const PYTHON_GZIP: &str = r#"
import gzip, hashlib, sys, zlib
data = open(sys.argv[1], "rb").read() if len(sys.argv) > 1 else sys.stdin.buffer.read()
d = zlib.decompressobj(wbits=31)
out = d.decompress(data)
assert d.eof, "the gzip member does not end"
assert d.unused_data == b"", f"{len(d.unused_data)} bytes after the first member"
assert gzip.decompress(data) == out
print("sha256:" + hashlib.sha256(out).hexdigest())
"#;

/// `sha256:<hex>` of the tar inside a layer blob of `media_type`, decompressed by a real
/// tool (the `zstd` command tests the frame and its checksum first); panics with the server
/// log if the tool refuses the blob.
pub fn tar_digest(server: &Server, media_type: &str, blob: &[u8]) -> String {
    let dir = temp_dir("layer-blob");
    let file = dir.path().join("blob");
    fs::write(&file, blob).expect("write the blob to a temp file");
    let printed = match media_type {
        OCI_GZIP_LAYER | DOCKER_GZIP_LAYER => server.run(Command::new("python3").args(["-c", PYTHON_GZIP]).arg(&file)),
        OCI_ZSTD_LAYER => {
            let script = r#"zstd -q -t "$1" && zstd -q -d -c "$1" | sha256sum"#;
            let out = server.run(Command::new("sh").args(["-c", script, "sh"]).arg(&file));
            format!("sha256:{}", out.split_whitespace().next().unwrap_or_default())
        }
        other => server.fail(&format!("not a layer media type this registry writes: {other}")),
    };
    printed.trim().to_owned()
}
