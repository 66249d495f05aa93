//! Where requests go and with what credentials: an emulator's address as Google's clients
//! read `STORAGE_EMULATOR_HOST`, access tokens from a credentials file by its type, and a
//! service account's signer for V4 URLs.

use super::*;

/// `STORAGE_EMULATOR_HOST` as Google's clients read it: a URL, or `host:port` meaning http.
pub(super) fn emulator_base(host: &str) -> Result<String, GcsSetupError> {
    let given = host.trim();
    let url = if given.contains("://") { given.to_owned() } else { format!("http://{given}") };
    let (scheme, rest) = url.split_once("://").expect("has a scheme");
    let rest = rest.trim_end_matches('/');
    if (scheme == "http" || scheme == "https") && !rest.is_empty() && !rest.contains('/') {
        Ok(format!("{scheme}://{rest}"))
    } else {
        Err(GcsSetupError::EmulatorHost(given.to_owned()))
    }
}

pub(super) async fn service_account_signer(
    path: &std::path::Path,
    json: &serde_json::Value,
) -> Result<(Signer, String), GcsSetupError> {
    let bad = |source| GcsSetupError::SigningKey { path: path.to_owned(), source };
    let signer = credentials::service_account::Builder::new(json.clone())
        .build_signer()
        .map_err(|source| GcsSetupError::BuildCredentials { path: Some(path.to_owned()), source })?;
    let email = signer.client_email().await.map_err(bad)?;
    // Parses the key now, so a broken key stops start-up rather than every blob request.
    signer.sign(b"nixery start-up check".as_slice()).await.map_err(bad)?;
    Ok((signer, email))
}

/// Access tokens from a credentials file's JSON, by its `type`.
pub(super) fn token_credentials(
    json: serde_json::Value,
) -> Result<AccessTokenCredentials, google_cloud_auth::build_errors::Error> {
    use credentials::{external_account, impersonated, service_account, user_account};
    match json["type"].as_str() {
        Some("authorized_user") => user_account::Builder::new(json).build_access_token_credentials(),
        Some("impersonated_service_account") => impersonated::Builder::new(json).build_access_token_credentials(),
        Some("external_account") => external_account::Builder::new(json).build_access_token_credentials(),
        // A service account, or an unknown type the builder names in its error.
        _ => service_account::Builder::new(json).build_access_token_credentials(),
    }
}
