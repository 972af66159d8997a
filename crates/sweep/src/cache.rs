//! The dataset cache: one directory per data configuration, generated once, before any run.
//!
//! `DataConfig::dir_name` (`composition_functor.<E>.<R>.<S>`) does not tell apart datasets that
//! differ in OOD ratios, flags or the generator seed, so the cache key is that readable name plus
//! a hash of the canonical TOML of the whole `[data]` table (with `sub_size` resolved, so an
//! omitted `sub_size` and the explicit default share a dataset). The hash is FNV-1a 64, defined
//! here, so keys are stable across Rust versions and machines.

use std::path::{Path, PathBuf};

use kg_data::{DataConfig, Dataset};

use crate::error::{Result, SweepError, io_err};

/// Name of the file written next to a cached dataset: the canonical `[data]` table it came from.
pub const DATA_CONFIG_FILE: &str = "sweep-data.toml";

/// The canonical TOML text of a data configuration (what the cache key hashes).
pub fn canonical_data_toml(cfg: &DataConfig) -> String {
    let mut c = cfg.clone();
    c.sub_size = Some(c.resolved_sub_size());
    // Serialising a struct of numbers and booleans cannot fail.
    toml::to_string(&c).unwrap_or_default()
}

/// The cache directory name of a data configuration: `<dir_name>-<12 hex digits>`.
pub fn data_key(cfg: &DataConfig) -> String {
    let h = fnv1a64(canonical_data_toml(cfg).as_bytes());
    format!("{}-{:012x}", cfg.dir_name(), h >> 16)
}

/// FNV-1a, 64-bit.
fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Makes sure `dir` holds the dataset of `cfg`; returns whether it had to be generated.
///
/// The dataset is written to a temporary sibling and renamed into place, so a reader (or a
/// concurrent Slurm task generating the same dataset) never sees a half-written directory.
///
/// # Errors
/// [`SweepError::Data`] when generation or saving fails (e.g. an invalid `[data]` table),
/// [`SweepError::Io`] when the rename fails for another reason than a finished twin.
pub fn ensure_dataset(cfg: &DataConfig, dir: &Path) -> Result<bool> {
    if Dataset::exists(dir) {
        return Ok(false);
    }
    let data_err = |source| SweepError::Data {
        dir: dir.to_path_buf(),
        source,
    };
    let ds = kg_data::generate(cfg).map_err(data_err)?;
    let tmp = tmp_sibling(dir);
    ds.save(&tmp).map_err(data_err)?;
    let note = tmp.join(DATA_CONFIG_FILE);
    std::fs::write(&note, canonical_data_toml(cfg)).map_err(io_err(&note))?;
    if let Err(e) = std::fs::rename(&tmp, dir) {
        // Lost a race against another process writing the same dataset: theirs is as good.
        let _ = std::fs::remove_dir_all(&tmp);
        if !Dataset::exists(dir) {
            return Err(SweepError::Io {
                path: dir.to_path_buf(),
                source: e,
            });
        }
        return Ok(false);
    }
    Ok(true)
}

fn tmp_sibling(dir: &Path) -> PathBuf {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    dir.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_known_values() {
        // Published FNV-1a 64 test vectors.
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn omitted_sub_size_shares_the_default_dataset() {
        let a = DataConfig::default();
        let mut b = a.clone();
        b.sub_size = Some(a.num_entities / 2);
        assert_eq!(data_key(&a), data_key(&b));
    }
}
