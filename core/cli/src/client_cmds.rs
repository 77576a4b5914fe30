//! Client commands: enroll, publish, packages, fetch, unpublish.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use ferry_content::{ChunkParams, InstallStep, PackageName, scan_directory};
use ferry_net::api::{VersionInfo, routes};
use ferry_net::{ClientCredentials, HubClient};
use ferry_transfer::upload::{ManifestCache, UploadProgress};
use indicatif::{HumanBytes, ProgressBar, ProgressStyle};

use crate::{ClientData, output};

#[derive(Debug, Args)]
pub struct EnrollArgs {
    /// The hub's URL, e.g. https://hub.example.com:8443
    #[arg(long)]
    server: url::Url,
    /// The one-time token from `ferry token create`.
    #[arg(long, env = "FERRY_TOKEN", hide_env_values = true)]
    token: String,
    /// A name for this machine in the hub's inventory (default: host name).
    #[arg(long)]
    name: Option<String>,
    /// For a relay: a DNS name or IP address agents reach it at
    /// (repeatable); its certificate then also serves TLS under them.
    #[arg(long = "server-name", value_name = "NAME")]
    server_names: Vec<String>,
    #[command(flatten)]
    data: ClientData,
}

#[derive(Debug, Args)]
pub struct PublishArgs {
    /// Directory whose contents become the package.
    dir: PathBuf,
    /// Package name (a-z, 0-9, '-', '_', '.').
    #[arg(long)]
    name: String,
    /// Version, semver (e.g. 1.4.2).
    #[arg(long)]
    version: String,
    /// Installer plugin and acceptable versions, e.g. `copy` or `archive@^1.2`.
    #[arg(long, value_name = "PLUGIN[@REQ]")]
    install: Option<String>,
    /// A parameter for the install step (repeatable). Values are read as
    /// TOML when they parse (8080, true, [1,2]), else as strings.
    #[arg(long = "param", value_name = "KEY=VALUE", requires = "install")]
    params: Vec<String>,
    /// Print a JSON report instead of text.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    data: ClientData,
}

#[derive(Debug, Args)]
pub struct PackagesArgs {
    /// Only this package, optionally with a version requirement:
    /// `name`, `name@^1.2`, `name@>=2, <3`.
    #[arg(value_name = "NAME[@REQ]")]
    filter: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    data: ClientData,
}

#[derive(Debug, Args)]
pub struct FetchArgs {
    /// Package, optionally with a version requirement (newest match wins).
    #[arg(value_name = "NAME[@REQ]")]
    package: String,
    /// New directory to write the package into.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Fetch metadata and content from this untrusted mirror instead of the
    /// hub; every byte is still verified against the pinned root.
    #[arg(long, value_name = "URL")]
    mirror: Option<url::Url>,
    /// Print a JSON report instead of text.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    data: ClientData,
}

#[derive(Debug, Args)]
pub struct UnpublishArgs {
    /// The exact version to withdraw, as NAME@VERSION.
    #[arg(value_name = "NAME@VERSION")]
    package: String,
    #[command(flatten)]
    data: ClientData,
}

pub(crate) fn connect(data: &ClientData) -> anyhow::Result<(ClientCredentials, HubClient)> {
    let dir = data.dir()?;
    let creds = ClientCredentials::load(&dir)?;
    let client = HubClient::from_credentials(&creds)?;
    Ok((creds, client))
}

/// Splits `name[@req]`.
fn split_spec(spec: &str) -> anyhow::Result<(PackageName, semver::VersionReq)> {
    let (name, req) = match spec.split_once('@') {
        Some((n, r)) => (n, r),
        None => (spec, "*"),
    };
    let name = PackageName::new(name)?;
    let req = semver::VersionReq::parse(req).with_context(|| {
        format!("{req:?} is not a semver requirement (try ^1.2, =1.2.3, >=1, <2)")
    })?;
    Ok((name, req))
}

pub async fn enroll(args: EnrollArgs) -> anyhow::Result<()> {
    let dir = args.data.dir()?;
    let hostname = args.name.or_else(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|h| h.trim().to_owned())
    });
    let creds =
        ferry_net::enroll(&args.server, &args.token, &dir, hostname, args.server_names).await?;
    println!(
        "enrolled as {} (role {}{}) with {}",
        creds.info.id,
        creds.info.role,
        creds
            .info
            .site
            .as_deref()
            .map(|s| format!(", site {s}"))
            .unwrap_or_default(),
        creds.info.server
    );
    println!("credentials saved in {}", dir.display());
    Ok(())
}

fn parse_install(spec: &str, params: &[String]) -> anyhow::Result<InstallStep> {
    let (plugin, req) = match spec.split_once('@') {
        Some((p, r)) => (p, r),
        None => (spec, "*"),
    };
    PackageName::new(plugin).with_context(|| format!("invalid plugin name {plugin:?}"))?;
    let requirement = semver::VersionReq::parse(req)
        .with_context(|| format!("{req:?} is not a semver requirement for plugin {plugin}"))?;
    let mut table = toml::Table::new();
    for p in params {
        let Some((key, value)) = p.split_once('=') else {
            bail!("--param {p:?} is not KEY=VALUE");
        };
        if key.is_empty() {
            bail!("--param {p:?} has an empty key");
        }
        let parsed = toml::from_str::<toml::Table>(&format!("v = {value}"))
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or_else(|| toml::Value::String(value.to_owned()));
        if table.insert(key.to_owned(), parsed).is_some() {
            bail!("--param {key} is given twice");
        }
    }
    Ok(InstallStep {
        plugin: plugin.to_owned(),
        requirement,
        params: table,
    })
}

struct BarProgress(ProgressBar);

impl UploadProgress for BarProgress {
    fn start(&self, total_bytes: u64, chunks: u64) {
        self.0.set_length(total_bytes);
        self.0.set_message(format!("uploading {chunks} chunk(s)"));
    }
    fn advance(&self, bytes: u64) {
        self.0.inc(bytes);
    }
}

fn bar(hidden: bool) -> ProgressBar {
    if hidden {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template(
            "{msg:24} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

pub async fn publish(args: PublishArgs) -> anyhow::Result<()> {
    let name = PackageName::new(&args.name)?;
    let version = semver::Version::parse(&args.version).with_context(|| {
        format!(
            "{:?} is not a semver version (use MAJOR.MINOR.PATCH, e.g. 1.4.2)",
            args.version
        )
    })?;
    let install = args
        .install
        .as_deref()
        .map(|s| parse_install(s, &args.params))
        .transpose()?;
    let (creds, client) = connect(&args.data)?;
    let dir = args.dir.clone();
    let scanned = tokio::task::spawn_blocking(move || {
        scan_directory(&dir, name, version, install, ChunkParams::default())
    })
    .await
    .context("scanning task failed")??;
    let cache = ManifestCache::new(creds.cache_dir().join("manifests"));
    let progress = BarProgress(bar(args.json));
    let report = ferry_transfer::upload::publish(&client, &cache, &scanned, &progress).await;
    progress.0.finish_and_clear();
    let report = report?;
    let published = report
        .published
        .as_ref()
        .expect("a successful publish has an answer");
    for warning in &published.warnings {
        eprintln!("warning from the hub: {warning}");
    }
    if args.json {
        return output::json(&report);
    }
    if report.already_published {
        println!(
            "{} {} is already published with exactly this content; nothing to do",
            published.name, published.version
        );
        return Ok(());
    }
    println!(
        "published {} {} (metadata version {})",
        published.name, published.version, published.metadata_version
    );
    println!("  files      {}", report.files);
    println!("  total      {}", output::bytes(report.total_bytes));
    println!("  sent       {}", output::bytes(report.bytes_moved));
    println!(
        "    chunks   {} ({} compressed) in {} of {} chunk(s)",
        HumanBytes(report.pack_bytes_sent),
        HumanBytes(report.chunk_bytes_sent),
        report.chunks_sent,
        report.chunks
    );
    match &report.delta_base {
        Some(base) => println!(
            "    manifest {} (delta of {base})",
            HumanBytes(report.manifest_bytes_sent)
        ),
        None => println!("    manifest {}", HumanBytes(report.manifest_bytes_sent)),
    }
    println!("    queries  {}", HumanBytes(report.query_bytes));
    Ok(())
}

pub async fn packages(args: PackagesArgs) -> anyhow::Result<()> {
    let (_creds, client) = connect(&args.data)?;
    let path = match &args.filter {
        Some(filter) => {
            let (name, req) = split_spec(filter)?;
            routes::packages(Some(name.as_str()), Some(&url_encode(&req.to_string())))
        }
        None => routes::packages(None, None),
    };
    let versions: Vec<VersionInfo> = client.get_json(&path).await?;
    if args.json {
        return output::json(&versions);
    }
    if versions.is_empty() {
        eprintln!("no published versions match");
        return Ok(());
    }
    let rows: Vec<Vec<String>> = versions
        .iter()
        .map(|v| {
            vec![
                v.name.clone(),
                v.version.clone(),
                HumanBytes(v.total_size).to_string(),
                v.files.to_string(),
                v.published_at.clone(),
                v.published_by.clone(),
            ]
        })
        .collect();
    output::table(
        &["NAME", "VERSION", "SIZE", "FILES", "PUBLISHED", "BY"],
        &rows,
    );
    Ok(())
}

fn url_encode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

pub async fn fetch(args: FetchArgs) -> anyhow::Result<()> {
    let (name, req) = split_spec(&args.package)?;
    let (creds, hub) = connect(&args.data)?;
    // One fetch is judged as a whole: a source trickling answers to its
    // many small requests is dropped after one window.
    let source = match &args.mirror {
        Some(url) => hub.with_base(url.clone()),
        None => hub,
    }
    .sharing_pace();
    let content_dir = creds.cache_dir().join("content");
    let local = ferry_transfer::LocalContent::open(&content_dir, || {
        eprintln!(
            "waiting for another ferry command using {} to finish...",
            content_dir.display()
        )
    })
    .await?;
    let repo = ferry_transfer::load_repository(&creds, &source).await?;
    let version = ferry_transfer::resolve_version(&repo, &name, &req)?;
    let source = source.for_package(name.as_str());
    let (manifest, _, manifest_fetch) =
        ferry_transfer::fetch_manifest(&repo, &source, &local, &name, &version).await?;
    let progress = bar(args.json);
    progress.set_length(manifest.total_size());
    progress.set_message(format!("{name} {version}"));
    let report =
        ferry_transfer::fetch_objects(&source, &local, &manifest, |n| progress.inc(n)).await;
    progress.finish_and_clear();
    let mut report = report?;
    report.count_outline(&manifest_fetch);
    report.files = ferry_transfer::materialize(&local, &manifest, &args.out).await?;
    if args.json {
        return output::json(&serde_json::json!({
            "name": name.as_str(),
            "version": version.to_string(),
            "files": report.files,
            "bytes_downloaded": report.bytes_downloaded,
            "bytes_reused": report.bytes_reused,
            "bytes_resumed": report.bytes_resumed,
            "chunks_downloaded": report.chunks_downloaded,
            "requests": report.requests,
            "bytes_delta": report.bytes_delta,
            "files_by_delta": report.files_by_delta,
            "manifest_bytes": manifest_fetch.bytes_received,
            "manifest_delta_base": manifest_fetch.delta_base,
            "manifest_outline": manifest_fetch.outline,
            "out": args.out,
            "metadata_version": repo.version(),
        }));
    }
    println!(
        "fetched {name} {version}: {} file(s), {} verified, into {}",
        report.files,
        output::bytes(manifest.total_size()),
        args.out.display()
    );
    println!(
        "  received {} in {} chunk(s) over {} request(s); manifest {}{}",
        HumanBytes(report.bytes_downloaded),
        report.chunks_downloaded,
        report.requests,
        HumanBytes(manifest_fetch.bytes_received),
        manifest_fetch
            .delta_base
            .as_deref()
            .map(|b| format!(" (delta of {b})"))
            .unwrap_or_default()
    );
    if report.files_by_delta > 0 {
        println!(
            "  {} file(s) rebuilt from {} of byte-level deltas{}",
            report.files_by_delta,
            HumanBytes(report.bytes_delta),
            if manifest_fetch.outline {
                " (chunk lists made here)"
            } else {
                ""
            }
        );
    }
    if report.bytes_reused > 0 {
        println!(
            "  {} reused from content already on this machine",
            HumanBytes(report.bytes_reused)
        );
    }
    if report.bytes_resumed > 0 {
        println!(
            "  {} resumed from an interrupted fetch",
            HumanBytes(report.bytes_resumed)
        );
    }
    Ok(())
}

pub async fn unpublish(args: UnpublishArgs) -> anyhow::Result<()> {
    let Some((name, version)) = args.package.split_once('@') else {
        bail!("give the exact version as NAME@VERSION, e.g. my-app@1.2.0");
    };
    let name = PackageName::new(name)?;
    let version = semver::Version::parse(version)
        .with_context(|| format!("{version:?} is not a semver version"))?;
    let (_creds, client) = connect(&args.data)?;
    let url = client.url(&routes::package_version(
        name.as_str(),
        &version.to_string(),
    ))?;
    client.delete(&url).await?;
    println!("withdrew {name} {version}; its content is removed at the next garbage collection");
    Ok(())
}
