//! Package popularity: how many packages of the package set depend on each store path name,
//! in Nixery's format (a JSON object from store path name without hash to a count).
//!
//! Popular paths get layers of their own, so images that share them share layers. Without
//! data every path counts 1; the packages every image carries (`cacert`, `iana-etc`) are
//! always treated as very popular, see [`crate::layers`].

use std::collections::HashMap;

/// Popularity counts by store path name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Popularity {
    counts: HashMap<String, u64>,
}

/// Why popularity data could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum PopularityError {
    #[error("cannot read popularity file {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("cannot download popularity data from {url}: {source}")]
    Download { url: String, source: reqwest::Error },
    #[error("popularity data from {origin} is not a JSON object of name to count: {source}")]
    Parse { origin: String, source: serde_json::Error },
}

impl Popularity {
    pub fn from_counts(counts: HashMap<String, u64>) -> Self {
        Popularity { counts }
    }

    /// Parses Nixery's format.
    pub fn parse(json: &[u8], origin: &str) -> Result<Self, PopularityError> {
        let counts: HashMap<String, u64> = serde_json::from_slice(json)
            .map_err(|source| PopularityError::Parse { origin: origin.to_owned(), source })?;
        Ok(Popularity { counts })
    }

    /// Loads from an http(s) URL or a local file path.
    pub async fn load(location: &str) -> Result<Self, PopularityError> {
        let bytes = if location.starts_with("http://") || location.starts_with("https://") {
            let download = |source| PopularityError::Download { url: location.to_owned(), source };
            reqwest::get(location)
                .await
                .and_then(|r| r.error_for_status())
                .map_err(download)?
                .bytes()
                .await
                .map_err(download)?
                .to_vec()
        } else {
            tokio::fs::read(location)
                .await
                .map_err(|source| PopularityError::Read { path: location.to_owned(), source })?
        };
        Self::parse(&bytes, location)
    }

    /// The popularity of a store path name (1 when unknown).
    pub fn of_name(&self, name: &str) -> u64 {
        self.counts.get(name).copied().unwrap_or(1).max(1)
    }

    /// The largest count in the data (at least 1).
    pub fn max(&self) -> u64 {
        self.counts.values().copied().max().unwrap_or(1).max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_nixery_format() {
        let p = Popularity::parse(br#"{"bash-5.2": 4000, "zlib-1.3": 12000}"#, "test").unwrap();
        assert_eq!(p.of_name("bash-5.2"), 4000);
        assert_eq!(p.of_name("unknown"), 1);
        assert_eq!(p.max(), 12000);
    }

    #[test]
    fn rejects_malformed_data() {
        for bad in [&b"[1,2]"[..], b"{\"a\": -1}", b"{\"a\": \"x\"}", b"not json"] {
            assert!(matches!(Popularity::parse(bad, "t"), Err(PopularityError::Parse { .. })));
        }
    }

    #[tokio::test]
    async fn a_missing_file_is_an_error_naming_it() {
        let err = Popularity::load("/nonexistent/popularity.json").await.unwrap_err();
        assert!(err.to_string().contains("/nonexistent/popularity.json"), "{err}");
    }
}
