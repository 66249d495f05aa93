//! The narinfo format: what a binary cache says about one store path, in `Key: value` lines
//! (`StorePath`, `URL` of the NAR, hashes and sizes, `References`, `Deriver`, `Sig`, ...).
//!
//! Only what popularity needs is read: the path itself and its runtime references.
//! `References` lists directory entry names (`<hash>-<name>`) separated by spaces, the path
//! itself among them when it refers to itself, and may be empty. Unknown keys are skipped, as
//! Nix skips them; a line without a colon makes the file corrupt, as it does for Nix.

use crate::nix::{StorePath, StorePathError};

/// The parts of a narinfo file that popularity uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NarInfo {
    pub store_path: StorePath,
    /// Runtime references, the path itself included if it refers to itself.
    pub references: Vec<StorePath>,
}

/// Why a narinfo file could not be read.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum NarInfoError {
    #[error("line {line} is not `Key: value`")]
    Syntax { line: usize },
    #[error("no StorePath")]
    NoStorePath,
    #[error("StorePath: {0}")]
    StorePath(StorePathError),
    #[error("References: {0}")]
    Reference(StorePathError),
}

impl NarInfo {
    pub fn parse(text: &str) -> Result<NarInfo, NarInfoError> {
        let mut store_path = None;
        let mut references = Vec::new();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let (key, value) = line.split_once(':').ok_or(NarInfoError::Syntax { line: i + 1 })?;
            let value = value.trim();
            match key {
                "StorePath" => store_path = Some(StorePath::parse(value).map_err(NarInfoError::StorePath)?),
                "References" => {
                    references = value
                        .split_whitespace()
                        .map(StorePath::from_base_name)
                        .collect::<Result<_, _>>()
                        .map_err(NarInfoError::Reference)?;
                }
                _ => {}
            }
        }
        Ok(NarInfo { store_path: store_path.ok_or(NarInfoError::NoStorePath)?, references })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// As `nix copy --to file://...` writes it (Nix 2.26), for a path referring to itself
    /// and to busybox.
    const NARINFO: &str = "StorePath: /nix/store/3m4spq9rszwr1nd2h1610dkzj58kc3s2-hello-lib\n\
        URL: nar/0dxb07q45hvd81wbvwd8iq8x5rrqy8wmr8nmbpgyzi24lsk32pcw.nar.zst\n\
        Compression: zstd\n\
        FileHash: sha256:0dxb07q45hvd81wbvwd8iq8x5rrqy8wmr8nmbpgyzi24lsk32pcw\n\
        FileSize: 312\n\
        NarHash: sha256:1xbmxxl8qs3zhj9njm1qzm5pnnd1jlh3qjvj6f0cz0ij3fyjhs7q\n\
        NarSize: 632\n\
        References: 3m4spq9rszwr1nd2h1610dkzj58kc3s2-hello-lib vnpqqkk4kkw2xrwcww7di1gc4vf9wsrd-busybox-1.35.0\n\
        Deriver: fjaipyaqjdk09bqfskr9ahbm70n6m082-hello-lib.drv\n\
        Sig: test-cache-1:Uxq6SAn7tvS8707hzT3UZYTc5cQNLYWLTmRlnIrwc6U=\n";

    #[test]
    fn reads_the_path_and_its_references() {
        let info = NarInfo::parse(NARINFO).unwrap();
        assert_eq!(info.store_path.as_str(), "/nix/store/3m4spq9rszwr1nd2h1610dkzj58kc3s2-hello-lib");
        let names: Vec<&str> = info.references.iter().map(|r| r.name()).collect();
        assert_eq!(names, ["hello-lib", "busybox-1.35.0"]);
        assert_eq!(info.references[1].as_str(), "/nix/store/vnpqqkk4kkw2xrwcww7di1gc4vf9wsrd-busybox-1.35.0");
    }

    #[test]
    fn no_references_is_an_empty_list() {
        for line in ["References: \n", "References:\n", ""] {
            let text = format!("StorePath: /nix/store/vnpqqkk4kkw2xrwcww7di1gc4vf9wsrd-busybox-1.35.0\n{line}");
            assert_eq!(NarInfo::parse(&text).unwrap().references, [], "{line:?}");
        }
    }

    #[test]
    fn refuses_what_is_not_a_narinfo() {
        assert_eq!(NarInfo::parse("<html>404 Not Found</html>"), Err(NarInfoError::Syntax { line: 1 }));
        assert_eq!(NarInfo::parse("URL: nar/x.nar\n"), Err(NarInfoError::NoStorePath));
        assert!(matches!(NarInfo::parse("StorePath: /tmp/x\n"), Err(NarInfoError::StorePath(_))));
        let bad_ref = NARINFO.replace("vnpqqkk4kkw2xrwcww7di1gc4vf9wsrd-busybox", "../etc/passwd");
        assert!(matches!(NarInfo::parse(&bad_ref), Err(NarInfoError::Reference(_))));
    }
}
