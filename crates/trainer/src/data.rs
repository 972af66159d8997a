//! The dataset of a run: loaded (or generated into an absent or empty directory), the
//! parameters it records, and the splits as device tensors: every split is padded once and
//! uploaded once, and batches are gathered on the device by index, so a training step moves no
//! data from the host.

use kg_data::{DataConfig, DataError, Dataset, DirState, Example, FactType, pad_inputs};
use tch::{Device, Kind, Tensor};

use crate::TrainError;
use crate::config::RunConfig;

/// Pad id of the original (`<e_0>`'s id; PAD keys are masked, so the id itself never matters).
pub const PAD_ID: i64 = 0;

/// One split on the device.
#[derive(Debug)]
pub struct Split {
    /// Input ids `[n, w]` (int64), right-padded with [`PAD_ID`].
    pub ids: Tensor,
    /// `[n, w]` bool, true at PAD positions.
    pub pad: Tensor,
    /// `[n]` int64: the position of each row's last input token (where the answer is read).
    pub positions: Tensor,
    /// `[n]` int64: the answer token of each row.
    pub answers: Tensor,
    /// `[n]` int64: index of each row's [`FactType`] in [`FactType::ALL`].
    pub kinds: Tensor,
    /// Rows.
    pub n: usize,
    /// Rows per [`FactType`] (in [`FactType::ALL`] order).
    pub counts: [usize; 7],
}

impl Split {
    /// Pads `examples` and uploads them to `device`.
    pub fn new(examples: &[Example], device: Device) -> Self {
        let rows = pad_inputs(examples, PAD_ID);
        let (n, w) = (rows.rows as i64, rows.width as i64);
        let ids = Tensor::from_slice(&rows.ids).view([n, w]); // (n, w)
        let lengths = Tensor::from_slice(&rows.lengths); // (n)
        let pad = Tensor::arange(w, (Kind::Int64, Device::Cpu))
            .view([1, w])
            .ge_tensor(&lengths.view([n, 1])); // (n, w)
        let kinds: Vec<i64> = examples.iter().map(|e| kind_index(e.kind) as i64).collect();
        let mut counts = [0usize; 7];
        for e in examples {
            counts[kind_index(e.kind)] += 1;
        }
        Self {
            ids: ids.to_device(device),
            pad: pad.to_device(device),
            positions: (lengths - 1).to_device(device),
            answers: Tensor::from_slice(&rows.answers).to_device(device),
            kinds: Tensor::from_slice(&kinds).to_device(device),
            n: rows.rows,
            counts,
        }
    }

    /// The rows at `index` (`[b]` int64 on the split's device), as (ids, pad, positions,
    /// answers).
    pub fn gather(&self, index: &Tensor) -> (Tensor, Tensor, Tensor, Tensor) {
        (
            self.ids.index_select(0, index),
            self.pad.index_select(0, index),
            self.positions.index_select(0, index),
            self.answers.index_select(0, index),
        )
    }
}

/// Position of `kind` in [`FactType::ALL`].
pub fn kind_index(kind: FactType) -> usize {
    FactType::ALL.iter().position(|&k| k == kind).unwrap_or(0)
}

/// The training and test splits of a dataset on one device.
#[derive(Debug)]
pub struct DeviceData {
    /// `train.json`.
    pub train: Split,
    /// `test.json` (every fact, with its type).
    pub test: Split,
}

impl DeviceData {
    /// Uploads both splits.
    pub fn new(ds: &Dataset, device: Device) -> Self {
        Self {
            train: Split::new(&ds.train, device),
            test: Split::new(&ds.test, device),
        }
    }
}

/// Loads the dataset of `cfg.train.data_dir`, generating it from `cfg.data` first when the
/// directory is absent or empty. A directory with other files but no dataset is an error: a
/// dataset is never generated over files that are there.
///
/// # Errors
/// [`TrainError::Data`] naming the directory and the missing files, or the file and row at
/// fault; I/O errors.
pub fn load_or_generate(cfg: &RunConfig) -> Result<Dataset, TrainError> {
    let dir = &cfg.train.data_dir;
    match DirState::of(dir) {
        DirState::Complete => Ok(Dataset::load(dir)?),
        DirState::Absent | DirState::Empty => {
            tracing::info!(
                "no dataset in {}; generating one from the [data] parameters",
                dir.display()
            );
            let ds = kg_data::generate(&cfg.data)?;
            ds.save(dir)?;
            Ok(ds)
        }
        DirState::Partial { missing } => Err(TrainError::Data(DataError::File {
            file: dir.clone(),
            reason: format!(
                "holds files but no dataset ({} missing); nothing is generated over them: point \
                 data_dir at a dataset, or at an absent or empty directory to generate one",
                missing.join(", ")
            ),
        })),
        DirState::NotADirectory => Err(TrainError::Data(DataError::File {
            file: dir.clone(),
            reason: "is not a readable directory".into(),
        })),
    }
}

/// The `[data]` parameters a run on `ds` records: the dataset's own (`meta.json`), or, for a
/// dataset without one (the original's), `given` with what its files show exactly (entity and
/// relation counts, `sub_size`, `include_f_inverse`, the analogical OOD share). Returns them with
/// warnings about what differed from `given` or could not be known.
pub fn recorded_params(ds: &Dataset, given: &DataConfig) -> (DataConfig, Vec<String>) {
    let mut notes = Vec::new();
    let params = match &ds.meta {
        Some(meta) => meta.params.clone(),
        None => {
            let mut p = given.clone();
            p.num_entities = ds.vocab.entity_ids().len();
            p.num_relations = ds.vocab.relation_ids().len();
            p.include_f_inverse = ds
                .vocab
                .tokens()
                .iter()
                .any(|t| t == kg_data::FUNCTOR_INVERSE);
            if let Ok(functor) = ds.functor() {
                p.sub_size = Some(functor.pairs.len());
            }
            let counts = ds.counts();
            let (id, ood) = (
                counts[&FactType::IdAnalogical],
                counts[&FactType::OodAnalogical],
            );
            if id + ood > 0 {
                p.analogical_ood_ratio = ood as f64 / (id + ood) as f64;
            }
            notes.push(
                "the dataset has no meta.json (it was not written by this project): its seed, \
                 atomic and compositional OOD ratios are not known and are recorded as configured"
                    .to_string(),
            );
            p
        }
    };
    let differing = differing_keys(given, &params);
    if !differing.is_empty() {
        notes.push(format!(
            "the configuration's [data] differs from the dataset in {}; the run records the \
             dataset's",
            differing.join(", ")
        ));
    }
    (params, notes)
}

/// `key (given vs dataset)` for every `[data]` key whose value differs.
fn differing_keys(given: &DataConfig, dataset: &DataConfig) -> Vec<String> {
    let as_table = |c: &DataConfig| {
        let mut c = c.clone();
        c.sub_size = Some(c.resolved_sub_size());
        toml::Value::try_from(c)
            .ok()
            .and_then(|v| v.as_table().cloned())
    };
    let (Some(a), Some(b)) = (as_table(given), as_table(dataset)) else {
        return Vec::new();
    };
    let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .map(|k| {
            let show = |v: Option<&toml::Value>| v.map_or("unset".to_string(), |v| v.to_string());
            format!("{k} ({} vs {})", show(a.get(k)), show(b.get(k)))
        })
        .collect()
}
