//! The client's requests and its handling of every answer, against the scripted server.

use super::*;

#[tokio::test]
async fn uploads_in_256k_multiples_then_rewrites_and_deletes_staging() {
    let mock = Mock::start().await;
    let gcs = mock.client(QUANTUM).await;
    let (data, body) = body_of(3 * QUANTUM + QUANTUM / 2, 100_000);
    let key = blob_key(&data);
    let staged = gcs.stage(body).await.unwrap();
    assert_eq!(staged.size, data.len() as u64);
    assert!(staged.name.starts_with("staging/"));
    assert_eq!(gcs.size(&key).await.unwrap(), None, "visible before commit");
    gcs.commit(staged, &key).await.unwrap();
    assert_eq!(mock.objects().into_iter().collect::<Vec<_>>(), vec![(key.to_string(), data.clone())]);
    assert_eq!(
        ranges(&mock.seen()),
        ["bytes 0-262143/*", "bytes 262144-524287/*", "bytes 524288-786431/*", "bytes 786432-917503/917504"]
    );
    let seen = mock.seen();
    let rewrite = seen.iter().find(|s| s.uri.contains("/rewriteTo/")).unwrap();
    let target = format!("/o/layers%2Fsha256%3A{}?ifGenerationMatch=0", &key.as_str()[14..]);
    assert!(rewrite.uri.ends_with(&target), "{}", rewrite.uri);
    assert!(seen.iter().all(|s| s.authorization.is_none()), "an emulator gets no credentials");
    assert_eq!(gcs.get(&key).await.unwrap().unwrap(), data);
    assert_eq!(gcs.size(&key).await.unwrap(), Some(data.len() as u64));
}

#[tokio::test]
async fn an_exact_multiple_ends_with_a_chunk_carrying_the_total() {
    let mock = Mock::start().await;
    let gcs = mock.client(QUANTUM).await;
    let (data, body) = body_of(2 * QUANTUM, QUANTUM);
    gcs.commit(gcs.stage(body).await.unwrap(), &blob_key(&data)).await.unwrap();
    assert_eq!(ranges(&mock.seen()), ["bytes 0-262143/*", "bytes 262144-524287/524288"]);
}

#[tokio::test]
async fn an_empty_upload_is_finished_with_a_star_range() {
    let mock = Mock::start().await;
    let gcs = mock.client(QUANTUM).await;
    let key = ObjectKey::build(&crate::digest::Digest::of(b"empty"));
    gcs.commit(gcs.stage(Box::pin(futures::stream::empty())).await.unwrap(), &key).await.unwrap();
    assert_eq!(ranges(&mock.seen()), ["bytes */0"]);
    assert_eq!(gcs.get(&key).await.unwrap().unwrap(), Bytes::new());
}

#[tokio::test]
async fn bytes_the_server_did_not_keep_are_sent_again() {
    let mock = Mock::start().await;
    mock.with(|s| s.keep_short = 1);
    let gcs = mock.client(2 * QUANTUM).await;
    let (data, body) = body_of(5 * QUANTUM, 65_536);
    let key = blob_key(&data);
    gcs.commit(gcs.stage(body).await.unwrap(), &key).await.unwrap();
    assert_eq!(mock.objects()[key.as_str()], data);
    assert_eq!(
        ranges(&mock.seen()),
        // The server kept 256 KiB of the first 512 KiB.
        ["bytes 0-524287/*", "bytes 262144-786431/*", "bytes 786432-1310719/1310720"]
    );
}

#[tokio::test]
async fn unfinished_rewrites_go_on_with_their_token() {
    let mock = Mock::start().await;
    mock.with(|s| s.unfinished_rewrites = 2);
    let gcs = mock.client(QUANTUM).await;
    let key = ObjectKey::build(&crate::digest::Digest::of(b"record"));
    gcs.put_for_test(&key, "record").await;
    let rewrites: Vec<String> =
        mock.seen().into_iter().filter(|s| s.uri.contains("/rewriteTo/")).map(|s| s.uri).collect();
    assert_eq!(rewrites.len(), 3);
    assert!(!rewrites[0].contains('?'), "a build record is replaced, not kept: {}", rewrites[0]);
    assert!(rewrites[1].ends_with("?rewriteToken=tok%2F1"), "{}", rewrites[1]);
    assert!(rewrites[2].ends_with("?rewriteToken=tok%2F0"), "{}", rewrites[2]);
    assert_eq!(mock.objects().keys().collect::<Vec<_>>(), [key.as_str()]);
}

#[tokio::test]
async fn a_content_addressed_key_already_stored_is_kept() {
    let mock = Mock::start().await;
    let gcs = mock.client(QUANTUM).await;
    let key = blob_key(b"layer");
    mock.with(|s| s.objects.insert(key.to_string(), b"layer".to_vec()));
    gcs.put_for_test(&key, "layer").await;
    let seen = mock.seen();
    assert!(seen.iter().any(|s| s.uri.contains("/rewriteTo/") && s.uri.ends_with("ifGenerationMatch=0")));
    assert_eq!(mock.objects().keys().collect::<Vec<_>>(), [key.as_str()], "staging object left behind");
}

#[tokio::test]
async fn a_failed_rewrite_leaves_nothing_and_deletes_the_staging_object() {
    let mock = Mock::start().await;
    mock.with(|s| s.rewrite_status = Some(403));
    let gcs = mock.client(QUANTUM).await;
    let key = blob_key(b"layer");
    let staged = gcs.stage(Box::pin(futures::stream::iter([Ok(Bytes::from("layer"))]))).await.unwrap();
    let err = gcs.commit(staged, &key).await.unwrap_err();
    assert_eq!((err.op(), err.key(), err.kind()), (Op::Commit, key.as_str(), ErrorKind::Rejected));
    match gcs_error(&err) {
        GcsError::Status { status: 403, message } => assert_eq!(message, "scripted failure"),
        other => panic!("unexpected error {other:?}"),
    }
    assert!(err.to_string().contains(key.as_str()), "{err}");
    assert!(mock.objects().is_empty());
}

#[tokio::test]
async fn a_broken_stream_cancels_the_session_and_leaves_nothing() {
    let mock = Mock::start().await;
    let gcs = mock.client(QUANTUM).await;
    let pieces: Vec<std::io::Result<Bytes>> = vec![
        Ok(Bytes::from(vec![1u8; 400_000])),
        Ok(Bytes::from(vec![2u8; 400_000])),
        Err(std::io::Error::other("archive writer failed")),
    ];
    let err = gcs.stage(Box::pin(futures::stream::iter(pieces))).await.err().unwrap();
    assert_eq!((err.op(), err.kind()), (Op::Upload, ErrorKind::Body));
    assert!(err.key().starts_with("staging/"), "{}", err.key());
    assert_eq!(std::error::Error::source(&err).unwrap().to_string(), "archive writer failed");
    assert!(mock.with(|s| s.sessions.is_empty()), "the session was not cancelled");
    assert!(mock.objects().is_empty());
    assert!(mock.seen().iter().any(|s| s.method == Method::DELETE && s.uri.starts_with("/session/")));
}

#[tokio::test]
async fn a_dropped_staged_upload_is_deleted() {
    let mock = Mock::start().await;
    let gcs = mock.client(QUANTUM).await;
    let staged = gcs.stage(Box::pin(futures::stream::iter([Ok(Bytes::from("x"))]))).await.unwrap();
    assert_eq!(mock.objects().len(), 1);
    drop(staged);
    for _ in 0..100 {
        if mock.objects().is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the staging object is still there");
}

#[tokio::test]
async fn busy_answers_are_retried_twice() {
    let mock = Mock::start().await;
    let gcs = mock.client(QUANTUM).await;
    let key = blob_key(b"x");
    mock.with(|s| s.busy_stats = 2);
    assert_eq!(gcs.size(&key).await.unwrap(), None);
    mock.with(|s| s.busy_stats = 3);
    let err = gcs.size(&key).await.unwrap_err();
    assert_eq!((err.op(), err.kind()), (Op::Stat, ErrorKind::Unavailable));
    assert!(matches!(gcs_error(&err), GcsError::Status { status: 503, .. }), "{err:?}");
}

#[tokio::test]
async fn ranges_are_read_and_missing_objects_are_none() {
    let mock = Mock::start().await;
    let gcs = mock.client(QUANTUM).await;
    let key = blob_key(b"0123456789");
    gcs.put_for_test(&key, "0123456789").await;
    let part: Vec<Bytes> = gcs.read(&key, Some(2..5)).await.unwrap().unwrap().try_collect().await.unwrap();
    assert_eq!(part.concat(), b"234");
    let missing = blob_key(b"missing");
    assert!(gcs.read(&missing, None).await.unwrap().is_none());
    assert!(gcs.get(&missing).await.unwrap().is_none());
    assert!(gcs.download(&missing).await.unwrap().is_none());
}

#[tokio::test]
async fn downloads_redirect_to_public_urls_or_proxy() {
    let mock = Mock::start().await;
    let gcs = mock.client(QUANTUM).await;
    let key = blob_key(b"blob");
    gcs.put_for_test(&key, "blob").await;
    match gcs.download(&key).await.unwrap().unwrap() {
        Download::Redirect { url, len } => {
            assert_eq!(len, 4);
            assert_eq!(url, format!("{}/{BUCKET}/layers/sha256%3A{}", mock.base, &key.as_str()[14..]));
        }
        other => panic!("unexpected {other:?}"),
    }
    let mut config = GcsConfig::new(BUCKET);
    config.emulator_host = Some(mock.base.clone());
    config.proxy_blobs = true;
    let proxied = Gcs::new(config).await.unwrap();
    let Some(Download::Stream(stream)) = proxied.download(&key).await.unwrap() else { panic!("not streamed") };
    assert_eq!(stream.len(), 4);
    let bytes: Vec<Bytes> = stream.bytes(Some(1..3)).await.unwrap().try_collect().await.unwrap();
    assert_eq!(bytes.concat(), b"lo");
}

#[tokio::test]
async fn a_service_account_key_gives_bearer_tokens_and_signed_urls() {
    let mock = Mock::start().await;
    let mut config = GcsConfig::new(BUCKET);
    config.credentials_file = Some(KEY_FILE.into());
    let gcs = Gcs::build(config, Some(mock.base.clone())).await.unwrap();
    let key = blob_key(b"blob");
    gcs.put_for_test(&key, "blob").await;
    let seen = mock.seen();
    assert!(!seen.is_empty());
    for s in &seen {
        let auth = s.authorization.as_deref().unwrap_or_default();
        // A self-signed JWT (the key's own signature; no token server involved).
        assert!(auth.starts_with("Bearer ey") && auth.matches('.').count() == 2, "{} {}: {auth:?}", s.method, s.uri);
    }
    let Some(Download::Redirect { url, .. }) = gcs.download(&key).await.unwrap() else { panic!("no redirect") };
    assert!(url.starts_with(&format!("{}/{BUCKET}/layers/sha256%3A", mock.base)), "{url}");
    assert!(url.contains("X-Goog-Expires=300&X-Goog-SignedHeaders=host&X-Goog-Signature="), "{url}");
}

#[tokio::test]
async fn setup_errors_are_typed() {
    let err = |c: GcsConfig| async { Gcs::new(c).await.err().expect("set-up should fail") };
    assert!(matches!(err(GcsConfig::new(" ")).await, SetupError::EmptyBucket));
    let mut c = GcsConfig::new("b");
    c.emulator_host = Some("ftp://x".into());
    assert!(matches!(err(c).await.backend(), Some(GcsSetupError::EmulatorHost(_))));
    let mut c = GcsConfig::new("b");
    c.credentials_file = Some("/does/not/exist.json".into());
    assert!(matches!(err(c).await.backend(), Some(GcsSetupError::ReadCredentials { .. })));
    let mut c = GcsConfig::new("b");
    c.url_ttl = Duration::from_secs(8 * 86_400);
    assert!(matches!(err(c).await, SetupError::UrlTtl(_)));
    let dir = tempfile::tempdir().unwrap();
    let bad_key = dir.path().join("key.json");
    std::fs::write(&bad_key, r#"{"type":"service_account","client_email":"a@b","private_key_id":"x","private_key":"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n","project_id":"p"}"#).unwrap();
    let mut c = GcsConfig::new("b");
    c.credentials_file = Some(bad_key);
    c.emulator_host = Some("127.0.0.1:1".into());
    assert!(matches!(err(c).await.backend(), Some(GcsSetupError::SigningKey { .. })));
}

#[test]
fn emulator_hosts_read_as_googles_clients_do() {
    assert_eq!(emulator_base("127.0.0.1:4443").unwrap(), "http://127.0.0.1:4443");
    assert_eq!(emulator_base("http://localhost:9023/").unwrap(), "http://localhost:9023");
    assert_eq!(emulator_base("https://gcs.test").unwrap(), "https://gcs.test");
    assert!(emulator_base("http://").is_err());
    assert!(emulator_base("http://h/path").is_err());
}
