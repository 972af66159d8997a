//! A dataset directory in the original's layout, plus `meta.json`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::json::{self, Row};
use crate::{DataConfig, DataError, Example, FactType, TokenKind, Vocab};

/// Version of the `meta.json` layout this crate writes and the newest it reads.
pub const FORMAT_VERSION: u32 = 1;

/// File names of a dataset directory.
pub mod files {
    /// The token list.
    pub const VOCAB: &str = "vocab.json";
    /// ID facts without types.
    pub const TRAIN: &str = "train.json";
    /// Every fact with its type.
    pub const TEST: &str = "test.json";
    /// Generation parameters and the functor (absent from the original's datasets).
    pub const META: &str = "meta.json";
}

/// The fact types that get a file of their own (the original writes no `id_atomic.json`).
pub const PER_TYPE_FILES: [crate::FactType; 6] = [
    crate::FactType::OodAtomic,
    crate::FactType::IdCompositional,
    crate::FactType::NearOodCompositional,
    crate::FactType::FarOodCompositional,
    crate::FactType::IdAnalogical,
    crate::FactType::OodAnalogical,
];

/// Contents of `meta.json`: how a dataset was made and what it holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Meta {
    /// Layout version ([`FORMAT_VERSION`] when written by this crate).
    pub format_version: u32,
    /// Generation parameters, seed included, with `sub_size` resolved.
    pub params: DataConfig,
    /// Entity tokens of E1, sorted by id.
    pub e1: Vec<String>,
    /// Entity tokens of E2, sorted by id.
    pub e2: Vec<String>,
    /// The remaining ("other") entity tokens, sorted by id.
    pub others: Vec<String>,
    /// `(e, f(e))` for every E1 entity, sorted by the id of `e`.
    pub functor: Vec<(String, String)>,
    /// Rows of `test.json` per type (every type listed, zeros included).
    pub counts: BTreeMap<FactType, usize>,
    /// Rows of `train.json`.
    pub train_rows: usize,
    /// Tokens in `vocab.json`.
    pub vocab_size: usize,
}

/// The functor between the two categories, as token ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Functor {
    /// E1 entity ids, sorted.
    pub e1: Vec<u32>,
    /// E2 entity ids, sorted.
    pub e2: Vec<u32>,
    /// `(e, f(e))` for every E1 entity, sorted by `e`.
    pub pairs: Vec<(u32, u32)>,
    /// E1 entities whose `<f>` fact is held out (OOD), sorted.
    pub ood_sources: Vec<u32>,
}

impl Functor {
    /// `f(e)`, if `e` is in E1.
    pub fn image(&self, e: u32) -> Option<u32> {
        self.pairs
            .binary_search_by_key(&e, |&(a, _)| a)
            .ok()
            .map(|i| self.pairs[i].1)
    }
}

/// A whole dataset in memory.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    /// Token list; ids index into it.
    pub vocab: Vocab,
    /// Training rows (ID facts), in file order, each with the type it has in `test.json`.
    pub train: Vec<Example>,
    /// Every fact with its type, in file order.
    pub test: Vec<Example>,
    /// `meta.json`, when the dataset has one.
    pub meta: Option<Meta>,
}

/// What a dataset directory holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DirState {
    /// The path does not exist.
    Absent,
    /// An empty directory.
    Empty,
    /// `vocab.json`, `train.json` and `test.json` are there.
    Complete,
    /// A directory with other files: these required ones are missing.
    Partial {
        /// The missing file names.
        missing: Vec<&'static str>,
    },
    /// The path exists but is not a readable directory.
    NotADirectory,
}

impl DirState {
    /// The state of `dir`.
    pub fn of(dir: &Path) -> Self {
        if !dir.exists() {
            return DirState::Absent;
        }
        let Ok(mut entries) = fs::read_dir(dir) else {
            return DirState::NotADirectory;
        };
        if entries.next().is_none() {
            return DirState::Empty;
        }
        let missing: Vec<&'static str> = [files::VOCAB, files::TRAIN, files::TEST]
            .into_iter()
            .filter(|f| !dir.join(f).is_file())
            .collect();
        if missing.is_empty() {
            DirState::Complete
        } else {
            DirState::Partial { missing }
        }
    }
}

/// A fresh sibling of `dir` to write a dataset into before it is renamed into place.
fn staging_dir(dir: &Path) -> std::path::PathBuf {
    dir.with_file_name(format!(
        ".{}.tmp-{}",
        dir.file_name().unwrap_or_default().to_string_lossy(),
        std::process::id()
    ))
}

/// Syncs the directory holding `dir` (so that a rename into it is durable).
fn sync_parent(dir: &Path) -> Result<(), DataError> {
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    fs::File::open(parent)
        .and_then(|d| d.sync_all())
        .map_err(|e| DataError::io(parent, e))
}

impl Dataset {
    /// True when `dir` holds `vocab.json`, `train.json` and `test.json`.
    pub fn exists(dir: &Path) -> bool {
        [files::VOCAB, files::TRAIN, files::TEST]
            .iter()
            .all(|f| dir.join(f).is_file())
    }

    /// Rows of `test.json` per type; every type is present, zeros included.
    pub fn counts(&self) -> BTreeMap<FactType, usize> {
        let mut counts: BTreeMap<FactType, usize> = FactType::ALL.iter().map(|&t| (t, 0)).collect();
        for ex in &self.test {
            *counts.entry(ex.kind).or_default() += 1;
        }
        counts
    }

    /// Test rows of one type, in file order.
    pub fn test_of(&self, kind: FactType) -> impl Iterator<Item = &Example> {
        self.test.iter().filter(move |e| e.kind == kind)
    }

    /// Recovers the functor from the `<f>` facts of `test.json` (which lists every fact, ID or
    /// OOD), checking `<f_inv>` facts against it.
    ///
    /// # Errors
    /// [`DataError::Functor`] when there is no `<f>` fact, when the facts do not form a
    /// bijection between two disjoint entity sets, or when an `<f_inv>` fact contradicts it.
    pub fn functor(&self) -> Result<Functor, DataError> {
        let text = |ex: &Example| {
            self.vocab
                .decode(&ex.tokens)
                .unwrap_or_else(|| format!("{:?}", ex.tokens))
        };
        let fail = |reason: String| Err(DataError::Functor { reason });
        let fid = self.vocab.functor_id();
        let iid = self.vocab.functor_inverse_id();
        let mut forward: BTreeMap<u32, u32> = BTreeMap::new();
        let mut backward: HashMap<u32, u32> = HashMap::new();
        let mut ood = BTreeSet::new();
        let mut inverse = Vec::new();
        for ex in self
            .test
            .iter()
            .filter(|e| matches!(e.kind, FactType::IdAnalogical | FactType::OodAnalogical))
        {
            let &[a, op, b] = ex.tokens.as_slice() else {
                return fail(format!("{} is not a 3-token functor fact", text(ex)));
            };
            if Some(op) == iid {
                inverse.push((a, b, ex));
                continue;
            }
            if Some(op) != fid {
                return fail(format!("{} uses neither <f> nor <f_inv>", text(ex)));
            }
            if let Some(&prev) = forward.get(&a)
                && prev != b
            {
                return fail(format!("{} gives a second image of its entity", text(ex)));
            }
            if let Some(&prev) = backward.get(&b)
                && prev != a
            {
                return fail(format!(
                    "{} maps a second entity to the same image",
                    text(ex)
                ));
            }
            forward.insert(a, b);
            backward.insert(b, a);
            if ex.kind == FactType::OodAnalogical {
                ood.insert(a);
            }
        }
        if forward.is_empty() {
            return fail("test.json has no <f> fact".into());
        }
        for (img, e, ex) in inverse {
            if forward.get(&e) != Some(&img) {
                return fail(format!("{} is not the inverse of an <f> fact", text(ex)));
            }
        }
        let e1: Vec<u32> = forward.keys().copied().collect();
        let mut e2: Vec<u32> = forward.values().copied().collect();
        e2.sort_unstable();
        if let Some(both) = e1.iter().find(|e| e2.binary_search(e).is_ok()) {
            return fail(format!(
                "{} is both a source and an image of <f>",
                self.vocab.token(*both).unwrap_or("?")
            ));
        }
        Ok(Functor {
            e1,
            e2,
            pairs: forward.into_iter().collect(),
            ood_sources: ood.into_iter().collect(),
        })
    }

    /// Reads a dataset directory: `vocab.json`, `train.json`, `test.json`, and, when present,
    /// the per-type files and `meta.json`, checking that they agree.
    ///
    /// # Errors
    /// - [`DataError::Missing`] if one of the three required files is absent;
    /// - [`DataError::Json`] / [`DataError::File`] / [`DataError::Row`] for malformed JSON or
    ///   rows, naming the file and 0-based row: a bad vocabulary entry, an unknown `type`, a
    ///   text that does not tokenise, a target that is not the input plus one token, a row whose
    ///   shape does not fit its type, one text given two types, a train row that is not an ID
    ///   fact of `test.json`, a per-type file that differs from `test.json`;
    /// - [`DataError::File`] on `test.json` when the analogical facts are not a functor, or on
    ///   `meta.json` when it disagrees with the data.
    pub fn load(dir: &Path) -> Result<Self, DataError> {
        for name in [files::VOCAB, files::TRAIN, files::TEST] {
            let path = dir.join(name);
            if !path.is_file() {
                return Err(DataError::Missing { path });
            }
        }
        let vocab_path = dir.join(files::VOCAB);
        let vocab = Vocab::from_tokens(json::read_strings(&vocab_path)?).map_err(|e| match e {
            DataError::VocabEntry {
                index,
                token,
                reason,
            } => DataError::row(&vocab_path, index, token, reason),
            other => other,
        })?;

        let test_path = dir.join(files::TEST);
        let mut test = Vec::new();
        let mut type_of: HashMap<Vec<u32>, (FactType, usize)> = HashMap::new();
        for (i, row) in json::read_rows(&test_path)?.iter().enumerate() {
            let Some(name) = &row.kind else {
                return Err(DataError::row(
                    &test_path,
                    i,
                    &row.target_text,
                    "missing type",
                ));
            };
            let kind: FactType = name.parse().map_err(|e: DataError| {
                DataError::row(&test_path, i, &row.target_text, e.to_string())
            })?;
            let tokens = row_tokens(&vocab, row, kind, &test_path, i)?;
            match type_of.get(&tokens) {
                Some(&(prev, prev_row)) if prev != kind => {
                    return Err(DataError::row(
                        &test_path,
                        i,
                        &row.target_text,
                        format!("typed {kind} here but {prev} in row {prev_row}"),
                    ));
                }
                Some(_) => {}
                None => {
                    type_of.insert(tokens.clone(), (kind, i));
                }
            }
            test.push(Example { tokens, kind });
        }

        let train_path = dir.join(files::TRAIN);
        let mut train = Vec::new();
        for (i, row) in json::read_rows(&train_path)?.iter().enumerate() {
            let bad = |reason: String| DataError::row(&train_path, i, &row.target_text, reason);
            let tokens = vocab
                .tokenize(&row.target_text)
                .map_err(|e| bad(e.to_string()))?;
            let kind = match type_of.get(&tokens) {
                Some(&(kind, _)) if kind.is_id() => kind,
                Some(&(kind, test_row)) => {
                    return Err(bad(format!(
                        "a training row must be an ID fact, but test.json row {test_row} types it {kind}"
                    )));
                }
                None => return Err(bad("not among the facts of test.json".into())),
            };
            if let Some(name) = &row.kind
                && name != kind.as_str()
            {
                return Err(bad(format!("typed {name} here but {kind} in test.json")));
            }
            // Checks the input/target relation and the shape for this type.
            row_tokens(&vocab, row, kind, &train_path, i)?;
            train.push(Example { tokens, kind });
        }

        let ds = Dataset {
            vocab,
            train,
            test,
            meta: None,
        };
        ds.check_per_type_files(dir)?;
        if ds
            .test
            .iter()
            .any(|e| matches!(e.kind, FactType::IdAnalogical | FactType::OodAnalogical))
        {
            ds.functor()
                .map_err(|e| DataError::file(&test_path, e.to_string()))?;
        }
        let meta_path = dir.join(files::META);
        let meta = if meta_path.is_file() {
            let text = fs::read_to_string(&meta_path).map_err(|e| DataError::io(&meta_path, e))?;
            let meta: Meta = serde_json::from_str(&text).map_err(|error| DataError::Json {
                file: meta_path.clone(),
                error,
            })?;
            ds.check_meta(&meta)
                .map_err(|reason| DataError::file(&meta_path, reason))?;
            Some(meta)
        } else {
            None
        };
        Ok(Dataset { meta, ..ds })
    }

    fn check_per_type_files(&self, dir: &Path) -> Result<(), DataError> {
        for kind in FactType::ALL {
            let path = dir.join(format!("{}.json", kind.as_str()));
            if !path.is_file() {
                continue;
            }
            let rows = json::read_rows(&path)?;
            let expected: Vec<&Example> = self.test_of(kind).collect();
            for (i, row) in rows.iter().enumerate() {
                let tokens = row_tokens(&self.vocab, row, kind, &path, i)?;
                if let Some(name) = &row.kind
                    && name != kind.as_str()
                {
                    return Err(DataError::row(
                        &path,
                        i,
                        &row.target_text,
                        format!("typed {name} in a file of {kind} facts"),
                    ));
                }
                if expected.get(i).map(|e| &e.tokens) != Some(&tokens) {
                    return Err(DataError::row(
                        &path,
                        i,
                        &row.target_text,
                        format!("differs from the {i}-th {kind} row of test.json"),
                    ));
                }
            }
            if rows.len() != expected.len() {
                return Err(DataError::file(
                    &path,
                    format!(
                        "{} rows, but test.json has {} {kind} rows",
                        rows.len(),
                        expected.len()
                    ),
                ));
            }
        }
        Ok(())
    }

    fn check_meta(&self, meta: &Meta) -> Result<(), String> {
        if meta.format_version > FORMAT_VERSION {
            return Err(format!(
                "format_version {} is newer than this reader ({FORMAT_VERSION})",
                meta.format_version
            ));
        }
        if meta.vocab_size != self.vocab.len() {
            return Err(format!(
                "vocab_size {} but vocab.json has {} tokens",
                meta.vocab_size,
                self.vocab.len()
            ));
        }
        if meta.train_rows != self.train.len() {
            return Err(format!(
                "train_rows {} but train.json has {} rows",
                meta.train_rows,
                self.train.len()
            ));
        }
        let counts = self.counts();
        for kind in FactType::ALL {
            let stated = meta.counts.get(&kind).copied().unwrap_or(0);
            if stated != counts[&kind] {
                return Err(format!(
                    "counts.{kind} = {stated} but test.json has {}",
                    counts[&kind]
                ));
            }
        }
        let ids = |names: &[String], key: &str| -> Result<Vec<u32>, String> {
            let mut ids = names
                .iter()
                .map(|n| match self.vocab.id(n) {
                    Some(id) if self.vocab.is_entity(id) => Ok(id),
                    _ => Err(format!("{key}: {n:?} is not an entity of vocab.json")),
                })
                .collect::<Result<Vec<_>, _>>()?;
            ids.sort_unstable();
            Ok(ids)
        };
        let functor = self.functor().map_err(|e| e.to_string())?;
        if ids(&meta.e1, "e1")? != functor.e1 || ids(&meta.e2, "e2")? != functor.e2 {
            return Err("e1/e2 differ from the entities of the <f> facts in test.json".into());
        }
        ids(&meta.others, "others")?;
        let mut pairs = Vec::with_capacity(meta.functor.len());
        for (a, b) in &meta.functor {
            match (self.vocab.id(a), self.vocab.id(b)) {
                (Some(x), Some(y)) => pairs.push((x, y)),
                _ => return Err(format!("functor: ({a:?}, {b:?}) is not in vocab.json")),
            }
        }
        pairs.sort_unstable();
        if pairs != functor.pairs {
            return Err("functor differs from the <f> facts in test.json".into());
        }
        Ok(())
    }

    /// Writes the dataset in the original's layout (`vocab.json`, `train.json`, `test.json`,
    /// the six per-type files), plus `meta.json` when [`Dataset::meta`] is set, into `dir`,
    /// which must be absent or empty: a dataset is never written over files that are there.
    /// The files are written (and synced) into a sibling directory first and renamed into
    /// place once complete, so a failure half-way leaves nothing at `dir`.
    ///
    /// Files are byte-identical to what Python's `json.dump` writes for the same rows.
    ///
    /// # Errors
    /// [`DataError::File`] when `dir` is not empty; [`DataError::Io`] naming the path that
    /// could not be created or written; [`DataError::Row`] if an example holds a token id
    /// outside the vocabulary.
    pub fn save(&self, dir: &Path) -> Result<(), DataError> {
        match DirState::of(dir) {
            DirState::Absent | DirState::Empty => {}
            _ => {
                return Err(DataError::File {
                    file: dir.to_path_buf(),
                    reason: "is not empty: a dataset is only written into an absent or empty \
                             directory (remove it, or choose another one)"
                        .into(),
                });
            }
        }
        let tmp = staging_dir(dir);
        self.write_files(&tmp, dir)?;
        if dir.exists() {
            // Empty (checked above); a rename cannot replace a directory otherwise.
            fs::remove_dir(dir).map_err(|e| DataError::io(dir, e))?;
        }
        fs::rename(&tmp, dir).map_err(|e| DataError::io(dir, e))?;
        sync_parent(dir)
    }

    /// Writes the dataset into `dir`, replacing whatever dataset is there: the new files are
    /// written beside it first and swapped in only once complete, so a failure leaves the old
    /// dataset untouched.
    ///
    /// # Errors
    /// As [`Dataset::save`].
    pub fn save_replacing(&self, dir: &Path) -> Result<(), DataError> {
        let tmp = staging_dir(dir);
        self.write_files(&tmp, dir)?;
        let old = dir.with_file_name(format!(
            ".{}.old-{}",
            dir.file_name().unwrap_or_default().to_string_lossy(),
            std::process::id()
        ));
        if dir.exists() {
            fs::rename(dir, &old).map_err(|e| DataError::io(dir, e))?;
        }
        fs::rename(&tmp, dir).map_err(|e| DataError::io(dir, e))?;
        sync_parent(dir)?;
        if old.exists() {
            fs::remove_dir_all(&old).map_err(|e| DataError::io(&old, e))?;
        }
        Ok(())
    }

    /// Writes every file of the dataset into `dir` (created), each synced to disk; errors name
    /// the files as they will be called under `shown`, the directory the user asked for.
    fn write_files(&self, dir: &Path, shown: &Path) -> Result<(), DataError> {
        let train = self.rows(&self.train, files::TRAIN, false)?;
        let test = self.rows(&self.test, files::TEST, true)?;
        if dir.exists() {
            fs::remove_dir_all(dir).map_err(|e| DataError::io(dir, e))?;
        }
        fs::create_dir_all(dir).map_err(|e| DataError::io(shown, e))?;
        let write = |name: &str, text: String| {
            let path = dir.join(name);
            fs::write(&path, text)
                .and_then(|()| fs::File::open(&path)?.sync_all())
                .map_err(|e| DataError::io(shown.join(name), e))
        };
        write(files::VOCAB, json::strings_to_py_json(self.vocab.tokens()))?;
        write(files::TRAIN, json::rows_to_py_json(&train))?;
        write(files::TEST, json::rows_to_py_json(&test))?;
        for kind in PER_TYPE_FILES {
            let rows: Vec<Row> = test
                .iter()
                .zip(&self.test)
                .filter(|(_, ex)| ex.kind == kind)
                .map(|(row, _)| Row {
                    kind: None,
                    ..row.clone()
                })
                .collect();
            write(
                &format!("{}.json", kind.as_str()),
                json::rows_to_py_json(&rows),
            )?;
        }
        if let Some(meta) = &self.meta {
            let mut text = serde_json::to_string_pretty(meta).map_err(|error| DataError::Json {
                file: shown.join(files::META),
                error,
            })?;
            text.push('\n');
            write(files::META, text)?;
        }
        fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| DataError::io(shown, e))
    }

    /// A short fingerprint of the dataset's content (vocabulary, training rows, test rows with
    /// their types, in order): equal datasets have equal fingerprints, and a resumed run checks
    /// it against its checkpoint's.
    pub fn fingerprint(&self) -> String {
        // FNV-1a over a canonical byte stream: stable across platforms and releases.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let mut eat = |bytes: &[u8]| {
            for b in bytes {
                h ^= u64::from(*b);
                h = h.wrapping_mul(0x0000_0100_0000_01b3);
            }
        };
        for t in self.vocab.tokens() {
            eat(t.as_bytes());
            eat(&[0]);
        }
        for (part, rows) in [(1u8, &self.train), (2, &self.test)] {
            eat(&[0xff, part]);
            for ex in rows {
                eat(ex.kind.as_str().as_bytes());
                for id in &ex.tokens {
                    eat(&id.to_le_bytes());
                }
                eat(&[0]);
            }
        }
        format!("{h:016x}")
    }

    /// Rows of `train.json` and `test.json` that repeat an earlier row of the same file (same
    /// text and type): `(file, row, earlier row)`, 0-based. The original's generator writes such
    /// rows with `duplicate_relation`; they are kept as the original's loader keeps them.
    pub fn repeated_rows(&self) -> Vec<(&'static str, usize, usize)> {
        let mut out = Vec::new();
        for (file, rows) in [(files::TRAIN, &self.train), (files::TEST, &self.test)] {
            let mut first: std::collections::HashMap<(&[u32], FactType), usize> =
                std::collections::HashMap::new();
            for (i, ex) in rows.iter().enumerate() {
                if let Some(&j) = first.get(&(ex.tokens.as_slice(), ex.kind)) {
                    out.push((file, i, j));
                } else {
                    first.insert((ex.tokens.as_slice(), ex.kind), i);
                }
            }
        }
        out
    }

    fn rows(&self, examples: &[Example], file: &str, typed: bool) -> Result<Vec<Row>, DataError> {
        examples
            .iter()
            .enumerate()
            .map(|(i, ex)| {
                let target = self.vocab.decode(&ex.tokens).ok_or_else(|| {
                    DataError::row(
                        file,
                        i,
                        format!("{:?}", ex.tokens),
                        "token id outside the vocabulary",
                    )
                })?;
                let input_len: usize = ex
                    .input()
                    .iter()
                    .filter_map(|&id| self.vocab.token(id))
                    .map(str::len)
                    .sum();
                Ok(Row {
                    input_text: target[..input_len].to_string(),
                    target_text: target,
                    kind: typed.then(|| ex.kind.as_str().to_string()),
                })
            })
            .collect()
    }
}

/// Tokenises a row and checks it against its type: the target is the input plus exactly one
/// token, and the tokens have the type's shape (entity, relation(s) or functor, entity).
fn row_tokens(
    vocab: &Vocab,
    row: &Row,
    kind: FactType,
    file: &Path,
    i: usize,
) -> Result<Vec<u32>, DataError> {
    let bad = |text: &str, reason: String| DataError::row(file, i, text, reason);
    let input = vocab
        .tokenize(&row.input_text)
        .map_err(|e| bad(&row.input_text, e.to_string()))?;
    let target = vocab
        .tokenize(&row.target_text)
        .map_err(|e| bad(&row.target_text, e.to_string()))?;
    if !target.starts_with(&input) {
        return Err(bad(
            &row.target_text,
            format!("target does not start with input {:?}", row.input_text),
        ));
    }
    if target.len() != input.len() + 1 {
        return Err(bad(
            &row.target_text,
            format!(
                "target must be the input plus one token, but has {} tokens for {} input tokens",
                target.len(),
                input.len()
            ),
        ));
    }
    let kinds: Vec<Option<TokenKind>> = target.iter().map(|&id| vocab.kind(id)).collect();
    let is_ent = |k: &Option<TokenKind>| matches!(k, Some(TokenKind::Entity(_)));
    let is_rel = |k: &Option<TokenKind>| matches!(k, Some(TokenKind::Relation(_)));
    let is_fun =
        |k: &Option<TokenKind>| matches!(k, Some(TokenKind::Functor | TokenKind::FunctorInverse));
    let fits = match (kind, kinds.as_slice()) {
        (FactType::IdAtomic | FactType::OodAtomic, [h, r, t]) => {
            is_ent(h) && is_rel(r) && is_ent(t)
        }
        (
            FactType::IdCompositional
            | FactType::NearOodCompositional
            | FactType::FarOodCompositional,
            [s, r1, r2, t],
        ) => is_ent(s) && is_rel(r1) && is_rel(r2) && is_ent(t),
        (FactType::IdAnalogical | FactType::OodAnalogical, [e, f, t]) => {
            is_ent(e) && is_fun(f) && is_ent(t)
        }
        _ => false,
    };
    if !fits {
        let shape = match kind.fact_len() {
            4 => "<e><r><r><e>",
            _ if matches!(kind, FactType::IdAnalogical | FactType::OodAnalogical) => {
                "<e><f or f_inv><e>"
            }
            _ => "<e><r><e>",
        };
        return Err(bad(
            &row.target_text,
            format!("a {kind} fact must have the shape {shape}"),
        ));
    }
    Ok(target)
}
