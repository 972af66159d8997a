//! `gen`: generates a synthetic knowledge-graph dataset and writes it in the original's layout.
//!
//! Parameters come from, in increasing precedence: the defaults, the `[data]` table of
//! `--config <toml>` (other tables are ignored), and the command-line flags, which keep the
//! original's underscore names (`--num_entities`) and also accept kebab-case
//! (`--num-entities`).
//!
//! `--rng` (or `rng` in `[data]`) picks the random stream: `chacha` (the default, this
//! project's byte-stable ChaCha20 stream) or `numpy` (NumPy's `default_rng(seed)` in the
//! original's build order, which writes the original `generate_data.py`'s files byte for byte
//! for the same parameters and seed).

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Parser;
use kg_data::{DataConfig, Dataset, DirState, RngKind, generate};

/// Generate a knowledge graph of two isomorphic categories and a functor between them.
#[derive(Debug, Parser)]
#[command(name = "gen", version, about)]
struct Args {
    /// Config file (TOML, or the original's YAML); its `[data]` table, and `data_dir` as the
    /// default output directory.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Output directory [default: the config's `data_dir` (where `train` reads it), else
    /// data/composition_functor.N.R.S from the entity, relation and sub_size counts].
    #[arg(long = "output_dir", alias = "output-dir")]
    output_dir: Option<PathBuf>,
    /// Total number of entities.
    #[arg(long = "num_entities", alias = "num-entities")]
    num_entities: Option<usize>,
    /// Number of relation tokens.
    #[arg(long = "num_relations", alias = "num-relations")]
    num_relations: Option<usize>,
    /// Size of E1 and of E2 [default: num_entities / 2].
    #[arg(long = "sub_size", alias = "sub-size")]
    sub_size: Option<usize>,
    /// Seed of the generator.
    #[arg(long)]
    seed: Option<u64>,
    /// Share of atomic facts held out.
    #[arg(long = "atomic_ood_ratio", alias = "atomic-ood-ratio")]
    atomic_ood_ratio: Option<f64>,
    /// Probability that a composition of two seen hops is held out.
    #[arg(long = "compositional_ood_ratio", alias = "compositional-ood-ratio")]
    compositional_ood_ratio: Option<f64>,
    /// Share of functor facts held out.
    #[arg(long = "analogical_ood_ratio", alias = "analogical-ood-ratio")]
    analogical_ood_ratio: Option<f64>,
    /// Also emit inverse functor facts (`--include_f_inverse` or `--include_f_inverse=false`).
    #[arg(
        long = "include_f_inverse",
        alias = "include-f-inverse",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true"
    )]
    include_f_inverse: Option<bool>,
    /// Allow one head to use a relation on several out-edges (`--duplicate_relation[=false]`).
    #[arg(
        long = "duplicate_relation",
        alias = "duplicate-relation",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true"
    )]
    duplicate_relation: Option<bool>,
    /// Random stream: `chacha` (this project's, the default) or `numpy` (the original's exact
    /// draws and files) [default: chacha].
    #[arg(long, value_parser = parse_rng)]
    rng: Option<RngKind>,
    /// Replace a dataset already in the output directory (without it, a non-empty directory is
    /// an error and nothing is written). The old files stay until the new ones are complete.
    #[arg(long)]
    overwrite: bool,
    /// Check the parameters and say where the dataset would go; write nothing.
    #[arg(long)]
    dry_run: bool,
}

/// Parses `--rng`, listing the accepted values on error.
fn parse_rng(s: &str) -> Result<RngKind, String> {
    s.parse()
        .map_err(|_| format!("accepted values are {}", RngKind::NAMES.join(", ")))
}

/// Reads the `[data]` table of a TOML file (or the `data:` table of the original's YAML) and
/// the training's `data_dir`; a file without them gives the defaults and `None`.
fn config_from_file(path: &Path) -> Result<(DataConfig, Option<PathBuf>)> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading config {}", path.display()))?;
    let mut table: toml::Table = if run_config::yaml::is_yaml(path) {
        run_config::yaml::run_config_toml(&text)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
    } else {
        toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?
    };
    let data_dir = table
        .get("train")
        .and_then(|t| t.get("data_dir"))
        .and_then(toml::Value::as_str)
        .filter(|d| !d.is_empty())
        .map(PathBuf::from);
    let data = match table.remove("data") {
        None => DataConfig::default(),
        Some(toml::Value::Table(data)) => toml::Value::Table(data)
            .try_into()
            .with_context(|| format!("{}: [data]", path.display()))?,
        Some(other) => bail!(
            "{}: `data` must be a table, found a {}",
            path.display(),
            other.type_str()
        ),
    };
    Ok((data, data_dir))
}

/// The parameters of [`resolve_with_dir`] alone.
#[cfg(test)]
fn resolve(args: &Args) -> Result<DataConfig> {
    Ok(resolve_with_dir(args)?.0)
}

/// The dataset's parameters (defaults, then the config file's `[data]`, then the flags) and the
/// output directory: `--output_dir`, else the config's `data_dir`, else `data/` and the dataset's
/// conventional name.
fn resolve_with_dir(args: &Args) -> Result<(DataConfig, PathBuf)> {
    let (mut cfg, config_dir) = match &args.config {
        Some(path) => config_from_file(path)?,
        None => (DataConfig::default(), None),
    };
    if let Some(v) = args.num_entities {
        cfg.num_entities = v;
    }
    if let Some(v) = args.num_relations {
        cfg.num_relations = v;
    }
    if let Some(v) = args.sub_size {
        cfg.sub_size = Some(v);
    }
    if let Some(v) = args.seed {
        cfg.seed = v;
    }
    if let Some(v) = args.atomic_ood_ratio {
        cfg.atomic_ood_ratio = v;
    }
    if let Some(v) = args.compositional_ood_ratio {
        cfg.compositional_ood_ratio = v;
    }
    if let Some(v) = args.analogical_ood_ratio {
        cfg.analogical_ood_ratio = v;
    }
    if let Some(v) = args.include_f_inverse {
        cfg.include_f_inverse = v;
    }
    if let Some(v) = args.duplicate_relation {
        cfg.duplicate_relation = v;
    }
    if let Some(v) = args.rng {
        cfg.rng = v;
    }
    cfg.validate()?;
    let dir = args
        .output_dir
        .clone()
        .or(config_dir)
        .unwrap_or_else(|| Path::new("data").join(cfg.dir_name()));
    Ok((cfg, dir))
}

fn summary(ds: &Dataset, dir: &Path) -> String {
    let mut out = format!("dataset written to {}\n", dir.display());
    if let Some(meta) = &ds.meta {
        out += &format!(
            "  entities {} (E1 {}, E2 {}, other {}), relations {}, vocab {}, seed {}, rng {}\n",
            meta.params.num_entities,
            meta.e1.len(),
            meta.e2.len(),
            meta.others.len(),
            meta.params.num_relations,
            ds.vocab.len(),
            meta.params.seed,
            meta.params.rng
        );
    }
    for (kind, n) in ds.counts() {
        out += &format!("  {:<24}{n:>8}\n", kind.as_str());
    }
    out += &format!(
        "  train rows {}, test rows {}",
        ds.train.len(),
        ds.test.len()
    );
    out
}

fn main() -> std::process::ExitCode {
    signals::quiet_broken_pipe();
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("gen: error: {}", run_config::error_text(err.as_ref()));
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let args = Args::parse();
    let (cfg, dir) = resolve_with_dir(&args)?;
    let state = DirState::of(&dir);
    let empty = matches!(state, DirState::Absent | DirState::Empty);
    if !args.overwrite && !empty {
        bail!(
            "{} is not empty; nothing was written (--overwrite replaces what is there, or choose another --output_dir)",
            dir.display()
        );
    }
    if args.dry_run {
        println!(
            "would generate {} entities (E1/E2 of {}), {} relations, seed {}, rng {} into {}{}",
            cfg.num_entities,
            cfg.resolved_sub_size(),
            cfg.num_relations,
            cfg.seed,
            cfg.rng,
            dir.display(),
            if empty {
                ""
            } else {
                " (replacing what is there)"
            }
        );
        return Ok(());
    }
    tracing::info!(?cfg, "generating");
    let ds = generate(&cfg)?;
    if args.overwrite {
        ds.save_replacing(&dir)
    } else {
        ds.save(&dir)
    }
    .context("writing the dataset")?;
    println!("{}", summary(&ds, &dir));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kg_data::FactType;

    fn args(list: &[&str]) -> Args {
        Args::try_parse_from(std::iter::once("gen").chain(list.iter().copied())).unwrap()
    }

    fn write_config(text: &str) -> tempfile::NamedTempFile {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), text).unwrap();
        file
    }

    #[test]
    fn the_originals_yaml_config_gives_its_data_table() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tests/fixtures/original-configs/default.yaml"
        );
        let cfg = resolve(&args(&["--config", path])).unwrap();
        assert_eq!(
            (cfg.num_entities, cfg.num_relations, cfg.sub_size),
            (10, 10000, Some(5))
        );
        assert_eq!(cfg.analogical_ood_ratio, 0.1);
        let file = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
        std::fs::write(file.path(), "data:\n  num_entites: 12\n").unwrap();
        let err = resolve(&args(&["--config", file.path().to_str().unwrap()])).unwrap_err();
        assert!(format!("{err:#}").contains("num_entites"), "{err:#}");
    }

    #[test]
    fn no_flags_give_the_defaults() {
        assert_eq!(resolve(&args(&[])).unwrap(), DataConfig::default());
    }

    #[test]
    fn flags_beat_the_file_which_beats_the_defaults() {
        let file = write_config(
            "[data]\nnum_entities = 12\nseed = 5\ninclude_f_inverse = true\n\n\
             [model]\nd_model = 64\n[train]\nlr = 0.001\n",
        );
        let path = file.path().to_str().unwrap();
        let cfg = resolve(&args(&["--config", path])).unwrap();
        assert_eq!(cfg.num_entities, 12);
        assert_eq!(cfg.seed, 5);
        assert!(cfg.include_f_inverse);
        assert_eq!(cfg.num_relations, 10_000, "default kept");

        let cfg = resolve(&args(&[
            "--config",
            path,
            "--seed",
            "9",
            "--num-relations",
            "77",
            "--include_f_inverse=false",
            "--duplicate_relation",
            "--sub_size",
            "3",
        ]))
        .unwrap();
        assert_eq!(cfg.seed, 9);
        assert_eq!(cfg.num_relations, 77);
        assert_eq!(cfg.num_entities, 12, "from the file");
        assert!(!cfg.include_f_inverse);
        assert!(cfg.duplicate_relation);
        assert_eq!(cfg.sub_size, Some(3));
    }

    #[test]
    fn unknown_key_in_data_names_key_and_file() {
        let file = write_config("[data]\nnum_entites = 12\n");
        let err = resolve(&args(&["--config", file.path().to_str().unwrap()])).unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("num_entites"), "{msg}");
        assert!(msg.contains(&file.path().display().to_string()), "{msg}");
    }

    #[test]
    fn invalid_values_are_rejected() {
        let err = resolve(&args(&["--sub_size", "6"])).unwrap_err();
        assert!(format!("{err:#}").contains("sub_size"));
        let err = resolve(&args(&["--analogical-ood-ratio", "1.5"])).unwrap_err();
        assert!(format!("{err:#}").contains("analogical_ood_ratio"));
        let file = write_config("data = 3\n");
        assert!(resolve(&args(&["--config", file.path().to_str().unwrap()])).is_err());
        assert!(Args::try_parse_from(["gen", "--num_entities", "ten"]).is_err());
    }

    #[test]
    fn shipped_configs_are_valid() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs");
        // The original's defaults, and the paper's Fig. 1B setting (one functor fact in ten
        // held out) into the directory train reads.
        let original = DataConfig {
            sub_size: Some(5),
            ..DataConfig::default()
        };
        let (orig, dir) = config_from_file(&root.join("original.toml")).unwrap();
        assert_eq!(
            (orig, dir),
            (
                original.clone(),
                Some(PathBuf::from("data/composition_functor.10.10000.5"))
            )
        );
        let (default, dir) = config_from_file(&root.join("default.toml")).unwrap();
        assert_eq!(
            default,
            DataConfig {
                analogical_ood_ratio: 0.1,
                ..original
            }
        );
        assert_eq!(dir, Some(PathBuf::from("data/paper-fig1b")));
        let (tiny, _) = config_from_file(&root.join("tiny.toml")).unwrap();
        tiny.validate().unwrap();
        assert_eq!(tiny.dir_name(), "composition_functor.8.50.4");
    }

    #[test]
    fn summary_lists_every_type() {
        let ds = generate(&DataConfig::default()).unwrap();
        let text = summary(&ds, Path::new("out"));
        for kind in FactType::ALL {
            assert!(text.contains(kind.as_str()), "{text}");
        }
        assert!(text.contains("vocab 10011"));
        assert!(text.contains("id_atomic                     40"), "{text}");
    }

    #[test]
    fn rng_comes_from_the_file_or_the_flag() {
        assert_eq!(resolve(&args(&[])).unwrap().rng, RngKind::Chacha);
        assert_eq!(
            resolve(&args(&["--rng", "numpy"])).unwrap().rng,
            RngKind::Numpy
        );
        let file = write_config("[data]\nrng = \"numpy\"\n");
        let path = file.path().to_str().unwrap();
        assert_eq!(
            resolve(&args(&["--config", path])).unwrap().rng,
            RngKind::Numpy
        );
        assert_eq!(
            resolve(&args(&["--config", path, "--rng", "chacha"]))
                .unwrap()
                .rng,
            RngKind::Chacha,
            "the flag beats the file"
        );
    }

    #[test]
    fn unknown_rng_names_the_flag_or_key_and_the_accepted_values() {
        let err = Args::try_parse_from(["gen", "--rng", "pcg64"]).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("--rng"), "{msg}");
        assert!(msg.contains("pcg64"), "{msg}");
        assert!(msg.contains("chacha, numpy"), "{msg}");

        let file = write_config("[data]\nrng = \"pcg64\"\n");
        let err = resolve(&args(&["--config", file.path().to_str().unwrap()])).unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("rng"), "{msg}");
        assert!(msg.contains("pcg64"), "{msg}");
        assert!(msg.contains("chacha, numpy"), "{msg}");
        assert!(msg.contains(&file.path().display().to_string()), "{msg}");
    }

    #[test]
    fn summary_names_the_stream() {
        let cfg = DataConfig {
            rng: RngKind::Numpy,
            ..DataConfig::default()
        };
        let text = summary(&generate(&cfg).unwrap(), Path::new("out"));
        assert!(text.contains("seed 42, rng numpy"), "{text}");
    }
}
