//! The dataset as device tensors: every split is padded once and uploaded once, and batches are
//! gathered on the device by index, so a training step moves no data from the host.

use kg_data::{Dataset, Example, FactType, pad_inputs};
use tch::{Device, Kind, Tensor};

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
