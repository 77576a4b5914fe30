//! Bad input gets a clear error and changes nothing on the hub.

use ferry_content::{Digest, Manifest, pack_push};
use ferry_e2e::process::block_on;
use ferry_e2e::tree::write_app;
use ferry_e2e::{Client, Hub};
use ferry_net::api::PackResponse;

/// Files in the hub's staging area: uploads waiting for a publish.
/// Files in the hub's staging area. A missing directory fails the test: a
/// count of zero from nowhere would prove nothing.
fn staged_files(hub: &Hub) -> usize {
    fn count(dir: &std::path::Path) -> usize {
        std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| {
                let e = e.expect("directory entry");
                if e.path().is_dir() {
                    count(&e.path())
                } else {
                    1
                }
            })
            .sum()
    }
    count(&hub.data.join("store/staging"))
}

fn listed(publisher: &Client) -> usize {
    publisher
        .run(&["packages", "--json"])
        .json()
        .as_array()
        .unwrap()
        .len()
}

#[test]
fn the_cli_refuses_bad_packages_and_arguments() {
    let hub = Hub::start();
    let publisher = hub.enroll("publisher", "publisher");
    let app = hub.root.path().join("app");
    write_app(&app, 4);

    publisher
        .publish(&app, "app", "1.0")
        .failure("not a semver version");
    publisher
        .publish(&app, "Bad/Name", "1.0.0")
        .failure("invalid package name");
    publisher
        .run(&[
            "publish".as_ref(),
            app.as_os_str(),
            "--name".as_ref(),
            "app".as_ref(),
            "--version".as_ref(),
            "1.0.0".as_ref(),
            "--install".as_ref(),
            "copy@not-a-req".as_ref(),
        ])
        .failure("not a semver requirement");

    std::os::unix::fs::symlink("../../etc/passwd", app.join("escape")).unwrap();
    publisher
        .publish(&app, "app", "1.0.0")
        .failure("leaves the package");
    std::fs::remove_file(app.join("escape")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", app.join("absolute")).unwrap();
    publisher
        .publish(&app, "app", "1.0.0")
        .failure("leaves the package");
    std::fs::remove_file(app.join("absolute")).unwrap();

    publisher
        .publish(&hub.root.path().join("missing-dir"), "app", "1.0.0")
        .failure("missing-dir");
    assert_eq!(listed(&publisher), 0);
    assert_eq!(staged_files(&hub), 0);

    publisher.publish(&app, "app", "1.0.0").success();
    publisher
        .run(&["packages", "app@>>1"])
        .failure("not a semver requirement");
}

#[test]
fn the_api_refuses_bad_uploads_and_manifests() {
    let hub = Hub::start();
    let publisher = hub.enroll("publisher", "publisher");
    let http = publisher.http();

    // A truncated pack, an empty chunk and a length written with a
    // redundant byte are refused whole: nothing is staged.
    let good = b"some chunk bytes".to_vec();
    let mut pack = Vec::new();
    pack_push(&mut pack, &good);
    pack_push(&mut pack, b"other");
    let truncated = pack[..pack.len() - 2].to_vec();
    let err = block_on(http.post_bytes::<PackResponse>(
        "v1/chunks",
        "application/x-ferry-pack",
        truncated,
    ))
    .unwrap_err();
    assert_eq!(err.status(), Some(400), "{err}");
    assert!(err.to_string().contains("truncated"), "{err}");
    for (bad, why) in [
        ([&pack[..], &[0]].concat(), "outside 1..="),
        (
            [&pack[..], &[0x85, 0x00], b"abcde"].concat(),
            "redundant byte",
        ),
    ] {
        let err =
            block_on(http.post_bytes::<PackResponse>("v1/chunks", "application/x-ferry-pack", bad))
                .unwrap_err();
        assert_eq!(err.status(), Some(400), "{err}");
        assert!(err.to_string().contains(why), "{err}");
    }
    assert_eq!(staged_files(&hub), 0, "a refused upload left files");

    // Missing-chunks queries that are not whole prefixes, or name a prefix
    // length outside 1-32, are refused.
    let query = |prefix: usize, body: Vec<u8>| {
        let url = http
            .url(&format!("v1/chunks/missing?prefix={prefix}"))
            .unwrap();
        block_on(async {
            let response = http
                .post_streaming(&url, "application/octet-stream", body, false)
                .await?;
            http.read_limited(&url, response, 1 << 20).await
        })
    };
    for (prefix, len) in [(8, 12), (0, 0), (33, 33)] {
        let err = query(prefix, vec![7; len]).unwrap_err();
        assert_eq!(
            err.status(),
            Some(400),
            "prefix {prefix}, {len} bytes: {err}"
        );
    }
    // Control: a well-formed query is answered, one bit per prefix.
    assert_eq!(query(8, vec![7; 24]).unwrap().to_vec(), vec![0b111]);

    // Compressed packs: one that would decode past the pack limit, one
    // that is not zstd at all, and an unknown encoding are refused.
    let bomb = zstd::bulk::compress(&vec![0u8; 80 << 20], 19).unwrap();
    let post = |encoding: &str, body: Vec<u8>| {
        block_on(http.post_bytes_encoded::<PackResponse>(
            "v1/chunks",
            "application/x-ferry-pack",
            Some(encoding),
            body,
            std::time::Duration::ZERO,
        ))
    };
    let err = post("zstd", bomb).unwrap_err();
    assert_eq!(err.status(), Some(413), "{err}");
    assert_eq!(err.code(), Some("too-large"), "{err}");
    let err = post("zstd", b"not zstd".to_vec()).unwrap_err();
    assert!(
        err.to_string().contains("compressed pack is corrupt"),
        "{err}"
    );
    let err = post("br", pack.clone()).unwrap_err();
    assert_eq!(err.status(), Some(400), "{err}");
    // Control: a good pack, compressed, is staged.
    let control = b"a chunk sent compressed".repeat(20);
    let mut fine = Vec::new();
    pack_push(&mut fine, &control);
    let staged = post("zstd", zstd::bulk::compress(&fine, 3).unwrap()).unwrap();
    assert_eq!(staged.chunks, 1);
    assert_eq!(staged_files(&hub), 1);

    // A manifest whose chunks were never uploaded is not published.
    let manifest = |path: &str| {
        format!(
            r#"{{"format":1,"name":"evil","version":"1.0.0","chunking":{{"min":256,"avg":1024,"max":8192,"normalization":1}},"files":[{{"path":"{path}","mode":420,"size":16,"chunks":"{}"}}]}}"#,
            chunk_list(&good)
        )
    };
    let err = block_on(http.post_bytes::<serde_json::Value>(
        "v1/publish",
        "application/json",
        manifest("bin/tool").into_bytes(),
    ))
    .unwrap_err();
    assert_eq!(err.status(), Some(409), "{err}");
    assert!(err.to_string().contains("not on the hub"), "{err}");

    // Path traversal and absolute paths are refused before anything else.
    for path in ["../../etc/cron.d/evil", "/etc/passwd", "a/./b", "a\\\\b"] {
        let err = block_on(http.post_bytes::<serde_json::Value>(
            "v1/publish",
            "application/json",
            manifest(path).into_bytes(),
        ))
        .unwrap_err();
        assert_eq!(err.status(), Some(400), "{path}: {err}");
        assert!(err.to_string().contains("invalid path"), "{path}: {err}");
    }
    assert_eq!(listed(&publisher), 0);

    // Abbreviated manifests: the hub rebuilds the manifest from chunks it
    // holds and publishes it only if it is the one the publisher meant.
    let of = |bytes: &[u8]| {
        let json = format!(
            r#"{{"format":1,"name":"short","version":"1.0.0","chunking":{{"min":256,"avg":1024,"max":8192,"normalization":1}},"files":[{{"path":"f","mode":420,"size":{},"chunks":"{}"}}]}}"#,
            bytes.len(),
            chunk_list(bytes)
        );
        Manifest::from_slice(json.as_bytes(), Default::default()).unwrap()
    };
    let publish = |manifest: &Manifest, expected: Digest, body: Vec<u8>| {
        block_on(http.post_bytes::<serde_json::Value>(
            &format!("v1/publish?abbreviated={expected}&prefix=8"),
            "application/zstd",
            zstd::bulk::compress(&body, 3).unwrap(),
        ))
        .map(|_| manifest.target_name())
    };
    let staged_one = of(&control);
    let never_uploaded = of(&good);
    let err = publish(
        &never_uploaded,
        Digest::of(&never_uploaded.to_vec()),
        never_uploaded.abbreviate(8),
    )
    .unwrap_err();
    assert_eq!(err.code(), Some("chunks-missing"), "{err}");
    let err = publish(
        &staged_one,
        Digest::of(b"another manifest"),
        staged_one.abbreviate(8),
    )
    .unwrap_err();
    assert_eq!(err.code(), Some("manifest-mismatch"), "{err}");
    let mut garbled = staged_one.abbreviate(8);
    garbled.push(0);
    let err = publish(&staged_one, Digest::of(&staged_one.to_vec()), garbled).unwrap_err();
    assert_eq!(err.status(), Some(400), "{err}");
    assert!(err.to_string().contains("abbreviated manifest"), "{err}");
    assert_eq!(
        listed(&publisher),
        0,
        "a refused abbreviated manifest was published"
    );
    // Control: the right digest publishes it.
    publish(
        &staged_one,
        Digest::of(&staged_one.to_vec()),
        staged_one.abbreviate(8),
    )
    .unwrap();
    assert_eq!(listed(&publisher), 1);
}

/// The manifest encoding of a one-chunk file.
fn chunk_list(bytes: &[u8]) -> String {
    use base64::Engine as _;
    let mut raw = Digest::of(bytes).0.to_vec();
    raw.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    base64::engine::general_purpose::STANDARD.encode(raw)
}
