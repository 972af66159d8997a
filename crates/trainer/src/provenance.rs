//! How a run was made: the command line, the program's version and git commit (and whether the
//! tree had uncommitted changes), the libtorch and tch versions, the device, the host and the
//! start time. Written to `provenance.json` in every run directory (once per invocation: a
//! resumed run appends its own entry) and sent with the W&B run config under `provenance`.

use std::path::Path;

use serde::Serialize;

use crate::TrainError;

/// The provenance of one invocation of a run.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Provenance {
    /// The command line, program first.
    pub command: Vec<String>,
    /// The program's version.
    pub version: String,
    /// Git commit of the source tree the program was built from (`unknown` outside git).
    pub git_commit: String,
    /// Whether that tree had uncommitted changes to tracked files (`unknown` outside git).
    pub git_dirty: String,
    /// The libtorch version linked against.
    pub libtorch: String,
    /// The tch version.
    pub tch: String,
    /// The device trained on, with libtorch's thread count.
    pub device: String,
    /// The machine's host name.
    pub host: String,
    /// When the invocation started (UTC, ISO 8601).
    pub started_at: String,
    /// Whether the run streams to W&B, in words.
    pub wandb: String,
}

impl Provenance {
    /// As JSON, for the W&B config.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }

    /// Appends this invocation to `save_dir/provenance.json` (a list, oldest first).
    ///
    /// # Errors
    /// I/O errors naming the file.
    pub fn record(&self, save_dir: &Path) -> Result<(), TrainError> {
        let path = save_dir.join("provenance.json");
        let mut all: Vec<serde_json::Value> = std::fs::read_to_string(&path)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default();
        all.push(self.to_json());
        let text = serde_json::to_string_pretty(&all).unwrap_or_default() + "\n";
        crate::checkpoint::write_atomic(&path, text.as_bytes())
    }
}

/// This machine's host name (`unknown` when it cannot be read).
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown".into())
}

/// The current time as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn now_utc() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let stamp = crate::run_dir::utc_stamp(secs); // YYYYMMDD-HHMMSS
    format!(
        "{}-{}-{}T{}:{}:{}Z",
        &stamp[0..4],
        &stamp[4..6],
        &stamp[6..8],
        &stamp[9..11],
        &stamp[11..13],
        &stamp[13..15]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invocations_are_appended() {
        let tmp = tempfile::tempdir().unwrap();
        let mut p = Provenance {
            command: vec!["train".into(), "--epochs".into(), "3".into()],
            version: "0.1.0".into(),
            started_at: now_utc(),
            ..Default::default()
        };
        p.record(tmp.path()).unwrap();
        p.command.push("--resume".into());
        p.record(tmp.path()).unwrap();
        let all: Vec<serde_json::Value> = serde_json::from_str(
            &std::fs::read_to_string(tmp.path().join("provenance.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[1]["command"][3], "--resume");
        let t = &all[0]["started_at"].as_str().unwrap();
        assert_eq!((t.len(), &t[4..5], &t[10..11]), (20, "-", "T"), "{t}");
    }
}
