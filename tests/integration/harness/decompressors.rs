//! Layer blobs read back by real decompressors, not by the library that wrote them: Python's
//! gzip module, member by member as RFC 1952 reads a gzip file, and the `zstd` command.

use std::fs;
use std::process::Command;

use super::server::Server;
use super::temp_dir;

/// The OCI media types of gzip and zstd layers, and Docker's gzip one.
pub const OCI_GZIP_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const OCI_ZSTD_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
pub const DOCKER_GZIP_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

/// A Python program that reads the gzip members of the file named by its argument, or of
/// stdin without one, one by one: each must end, nothing but another member may follow one,
/// and `gzip.decompress` must read the same. Prints `sha256:<hex>` of what they hold and
/// how many members there are (read it with [`python_gzip`]).
pub const PYTHON_GZIP: &str = r#"
import gzip, hashlib, sys, zlib
data = open(sys.argv[1], "rb").read() if len(sys.argv) > 1 else sys.stdin.buffer.read()
parts, rest, members = [], data, 0
while True:
    d = zlib.decompressobj(wbits=31)
    parts.append(d.decompress(rest))
    members += 1
    assert d.eof, f"gzip member {members} does not end"
    rest = d.unused_data
    if not rest:
        break
out = b"".join(parts)
assert gzip.decompress(data) == out
print("sha256:" + hashlib.sha256(out).hexdigest(), members)
"#;

/// What [`PYTHON_GZIP`] printed: the digest of the content and the number of members.
pub fn python_gzip(printed: &[u8]) -> (String, usize) {
    let printed = String::from_utf8_lossy(printed);
    let mut words = printed.split_whitespace();
    let digest = words.next().unwrap_or_default().to_owned();
    let members = words.next().and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("python printed {printed:?}"));
    (digest, members)
}

/// How many gzip members a gzip layer blob has (read by [`PYTHON_GZIP`]).
pub fn gzip_members(server: &Server, blob: &[u8]) -> usize {
    let dir = temp_dir("layer-blob");
    let file = dir.path().join("blob");
    fs::write(&file, blob).expect("write the blob to a temp file");
    python_gzip(server.run(Command::new("python3").args(["-c", PYTHON_GZIP]).arg(&file)).as_bytes()).1
}

/// `sha256:<hex>` of the tar inside a layer blob of `media_type`, decompressed by a real
/// tool (the `zstd` command tests the frame and its checksum first); panics with the server
/// log if the tool refuses the blob.
pub fn tar_digest(server: &Server, media_type: &str, blob: &[u8]) -> String {
    let dir = temp_dir("layer-blob");
    let file = dir.path().join("blob");
    fs::write(&file, blob).expect("write the blob to a temp file");
    let printed = match media_type {
        OCI_GZIP_LAYER | DOCKER_GZIP_LAYER => {
            python_gzip(server.run(Command::new("python3").args(["-c", PYTHON_GZIP]).arg(&file)).as_bytes()).0
        }
        OCI_ZSTD_LAYER => {
            let script = r#"zstd -q -t "$1" && zstd -q -d -c "$1" | sha256sum"#;
            let out = server.run(Command::new("sh").args(["-c", script, "sh"]).arg(&file));
            format!("sha256:{}", out.split_whitespace().next().unwrap_or_default())
        }
        other => server.fail(&format!("not a layer media type this registry writes: {other}")),
    };
    printed.trim().to_owned()
}
