//! An install step: puts the staged package's files in place.

use ferry_plugin_sdk::installer::{
    InstallReport, InstallRequest, Installer, VerifyReport, progress,
};
use serde::Deserialize;

#[derive(Clone, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct Params {
    /// Where to put the files; the node must grant this directory.
    target: String,
}

/// The plugin; `pub` so native builds see it used.
pub struct Step;

fn params(request: &InstallRequest) -> Result<Params, String> {
    toml::from_str(&request.params).map_err(|e| format!("install parameters: {e}"))
}

impl Installer for Step {
    fn install(request: InstallRequest) -> Result<InstallReport, String> {
        let params = params(&request)?;
        let mut written = Vec::new();
        for (i, file) in request.files.iter().enumerate() {
            let from = format!("{}/{}", request.staged_dir, file.path);
            let to = format!("{}/{}", params.target, file.path);
            if let Some((dir, _)) = to.rsplit_once('/') {
                std::fs::create_dir_all(dir).map_err(|e| format!("{dir}: {e}"))?;
            }
            std::fs::copy(&from, &to).map_err(|e| format!("{to}: {e}"))?;
            progress((100 * (i + 1) / request.files.len()) as u8, &file.path);
            written.push(to);
        }
        Ok(InstallReport { message: format!("{} files installed", written.len()), files: written })
    }

    fn uninstall(request: InstallRequest) -> Result<InstallReport, String> {
        let params = params(&request)?;
        let mut removed = Vec::new();
        for file in &request.files {
            let path = format!("{}/{}", params.target, file.path);
            if std::fs::remove_file(&path).is_ok() {
                removed.push(path);
            }
        }
        Ok(InstallReport { message: format!("{} files removed", removed.len()), files: removed })
    }

    fn verify(request: InstallRequest) -> Result<VerifyReport, String> {
        let params = params(&request)?;
        let problems: Vec<String> = request
            .files
            .iter()
            .map(|f| format!("{}/{}", params.target, f.path))
            .filter(|p| std::fs::metadata(p).is_err())
            .map(|p| format!("{p} is missing"))
            .collect();
        Ok(VerifyReport { intact: problems.is_empty(), problems })
    }
}

ferry_plugin_sdk::export_installer!(Step);
