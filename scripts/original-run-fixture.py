#!/usr/bin/env python3
"""Records a run of the Python original as the fixture of `train --rng torch`.

Runs the original's own `train()` (its `toy_model/src/train.py`, imported, not modified) on a
dataset directory, single-threaded on the CPU, and writes into OUT:

- `initial-weights.json`: per parameter (state-dict name, in module order) its shape, the SHA-256
  of its float32 little-endian bytes, its sum (float64) and its first eight values, as the model
  stands right after construction (after the original's own `_init` pass);
- `metrics.jsonl`: every row the original sends to W&B, in order (training rows at each epoch's
  first batch, one evaluation row per epoch with `val_ACC/<type>`, `val_PROB/<type>`,
  `val/macro/CE`, ...), captured by a stand-in `wandb` module that records instead of sending;
- `order.json`: the training rows each of the first epochs visits, in order (recorded by a
  dataset subclass that notes each index it is asked for, drawing nothing).

Nothing here draws from PyTorch's generators: the original's run is the one it makes alone.

Usage:
  python scripts/original-run-fixture.py --original PATH/toy_model --data DATASET_DIR \
      --out OUT_DIR [--epochs 100] [--seed 42] [--n-layer 2] [--dropout P] [--order-epochs 5]
"""

import argparse
import hashlib
import json
import math
import os
import sys
import tempfile
import types


def stand_in_wandb(rows):
    """A module named `wandb` whose `log` appends each row to `rows`."""
    mod = types.ModuleType("wandb")
    mod.init = lambda **kwargs: None
    mod.define_metric = lambda *args, **kwargs: None
    mod.finish = lambda *args, **kwargs: None

    def log(payload, step=None):
        row = {k: v for k, v in payload.items()}
        rows.append(row)

    mod.log = log
    return mod


def number(v):
    """JSON-safe: non-finite floats as strings."""
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return v


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--original", required=True, help="the original's toy_model directory")
    ap.add_argument("--data", required=True, help="dataset directory (train.json, test.json, vocab.json)")
    ap.add_argument("--out", required=True, help="directory to write the fixture into")
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--n-layer", type=int, default=2)
    ap.add_argument("--dropout", type=float, default=None, help="instead of default.yaml's 0.0")
    ap.add_argument("--order-epochs", type=int, default=5)
    args = ap.parse_args()

    sys.path.insert(0, os.path.join(os.path.abspath(args.original), "src"))
    rows = []
    sys.modules["wandb"] = stand_in_wandb(rows)

    # The CPU run: the fixture's numbers are the CPU kernels'.
    os.environ["CUDA_VISIBLE_DEVICES"] = ""
    import torch
    import yaml

    torch.set_num_threads(1)
    import train as original

    with open(os.path.join(args.original, "configs", "default.yaml")) as f:
        config = yaml.safe_load(f)
    config.update(
        {
            "data_dir": os.path.abspath(args.data),
            "save_dir": tempfile.mkdtemp(prefix="original-run-"),
            "epochs": args.epochs,
            "seed": args.seed,
            "n_layer": args.n_layer,
            "dropout": config["dropout"] if args.dropout is None else args.dropout,
            # PyYAML reads `1e-4` as text; the original's flags pass a float.
            "lr": float(config["lr"]),
            "use_wandb": True,
            "num_workers": 0,
            "save_every": 0,
        }
    )

    initial = {}
    visited = []

    class RecordingEncoder(original.GPT2LikeEncoder):
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            for name, p in self.state_dict().items():
                initial[name] = p.detach().clone()

    class RecordingDataset(original.CompDataset):
        def __init__(self, path_json, *a, **kw):
            super().__init__(path_json, *a, **kw)
            self.is_train = os.path.basename(path_json) == "train.json"

        def __getitem__(self, idx):
            if self.is_train:
                visited.append(int(idx))
            return super().__getitem__(idx)

    original.GPT2LikeEncoder = RecordingEncoder
    original.CompDataset = RecordingDataset
    original.train(config)

    os.makedirs(args.out, exist_ok=True)
    params = []
    for name, t in initial.items():
        t = t.to(torch.float32).contiguous()
        raw = t.numpy().astype("<f4").tobytes()
        params.append(
            {
                "name": name,
                "shape": list(t.shape),
                "sha256": hashlib.sha256(raw).hexdigest(),
                "sum": float(t.double().sum()),
                "first": [float(x) for x in t.flatten()[:8]],
            }
        )
    with open(os.path.join(args.out, "initial-weights.json"), "w") as f:
        json.dump(
            {
                "torch": torch.__version__,
                "seed": args.seed,
                "threads": torch.get_num_threads(),
                "config": {k: config[k] for k in ("d_model", "n_layer", "n_head", "max_len", "dropout")},
                "params": params,
            },
            f,
            indent=1,
        )
        f.write("\n")
    with open(os.path.join(args.out, "metrics.jsonl"), "w") as f:
        for row in rows:
            f.write(json.dumps({k: number(v) for k, v in row.items()}) + "\n")
    n = len(original.CompDataset(os.path.join(args.data, "train.json"), os.path.join(args.data, "vocab.json"), 64))
    epochs = [visited[i * n : (i + 1) * n] for i in range(min(args.order_epochs, len(visited) // n))]
    with open(os.path.join(args.out, "order.json"), "w") as f:
        json.dump({"rows": n, "batch_size": config["batch_size"], "epochs": epochs}, f)
        f.write("\n")


if __name__ == "__main__":
    main()
