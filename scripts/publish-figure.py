#!/usr/bin/env python3
"""Publishes a reproduced paper figure into docs/figures/<name>/.

    scripts/publish-figure.py SWEEP_DIR [--dest docs/figures] [--out-root DIR]
                              [--cache-root DIR] [--bin-dir DIR]

SWEEP_DIR is what `sweep reproduce` wrote (`<out>/<name>`: figure files, summary.json and one
directory per experiment). Copied: the figure files the summary lists, summary.json, the
sweep's sweep-status.jsonl (so a redraw from the copy reports the same outcomes), and per
experiment its config.toml, timings.json, summary.json and the metrics (metrics.jsonl and
pca.jsonl gzipped, reproducibly: no name or time in the gzip header). Not copied: checkpoints,
plots, logs. Paths of the machine that ran the figure (the sweep's --out root, its --cache root
and the directory of the train binary) are rewritten to the defaults `runs/paper`, `data/cache`
and `target/release`, so the records read as `just reproduce <name>` writes them. An existing
destination is replaced whole (it is a copy of the run, regenerated from it).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import sys
import tempfile

RUN_FILES = ["config.toml", "timings.json", "summary.json"]
GZIP_FILES = ["metrics.jsonl", "pca.jsonl"]


def rewrite(text: str, subs: list[tuple[str, str]]) -> str:
    for old, new in subs:
        text = text.replace(old, new)
    return text


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("sweep_dir")
    ap.add_argument("--dest", default="docs/figures")
    ap.add_argument("--out-root", help="the sweep's --out (default: SWEEP_DIR's parent)")
    ap.add_argument("--cache-root", help="the sweep's --cache")
    ap.add_argument("--bin-dir", help="the directory of the train binary the sweep ran")
    args = ap.parse_args()

    src = os.path.abspath(args.sweep_dir)
    summary_path = os.path.join(src, "summary.json")
    if not os.path.isfile(summary_path):
        print(f"error: {summary_path} does not exist (run `sweep reproduce` first)", file=sys.stderr)
        return 1
    with open(summary_path, encoding="utf-8") as f:
        summary = json.load(f)
    name = os.path.basename(src)
    out_root = os.path.abspath(args.out_root or os.path.dirname(src))
    subs = [(out_root + "/", "runs/paper/")]
    if args.cache_root:
        subs.insert(0, (os.path.abspath(args.cache_root) + "/", "data/cache/"))
    if args.bin_dir:
        subs.insert(0, (os.path.abspath(args.bin_dir) + "/", "target/release/"))

    experiments = [e["experiment"] for e in summary.get("experiments", [])]
    missing = [e for e in experiments if not os.path.isfile(os.path.join(src, e, "metrics.jsonl"))]
    if not experiments or missing:
        print(f"error: {src}: no metrics.jsonl of {', '.join(missing) or 'any experiment'}",
              file=sys.stderr)
        return 1

    dest_root = os.path.abspath(args.dest)
    os.makedirs(dest_root, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{name}-", dir=dest_root)
    try:
        for fig in summary.get("figures", []):
            shutil.copyfile(os.path.join(src, fig), os.path.join(tmp, fig))
        with open(os.path.join(tmp, "summary.json"), "w", encoding="utf-8") as f:
            f.write(rewrite(json.dumps(summary, indent=2, ensure_ascii=False), subs) + "\n")
        status = os.path.join(src, "sweep-status.jsonl")
        if os.path.isfile(status):
            with open(status, encoding="utf-8") as f:
                text = rewrite(f.read(), subs)
            with open(os.path.join(tmp, "sweep-status.jsonl"), "w", encoding="utf-8") as f:
                f.write(text)
        for e in experiments:
            os.makedirs(os.path.join(tmp, e))
            for fname in RUN_FILES:
                path = os.path.join(src, e, fname)
                if os.path.isfile(path):
                    with open(path, encoding="utf-8") as f:
                        text = rewrite(f.read(), subs)
                    with open(os.path.join(tmp, e, fname), "w", encoding="utf-8") as f:
                        f.write(text)
            for fname in GZIP_FILES:
                path = os.path.join(src, e, fname)
                if os.path.isfile(path):
                    with open(path, "rb") as f:
                        data = f.read()
                    with open(os.path.join(tmp, e, fname + ".gz"), "wb") as raw:
                        with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0,
                                           compresslevel=9) as gz:
                            gz.write(data)
        dest = os.path.join(dest_root, name)
        if os.path.exists(dest):
            shutil.rmtree(dest)
        os.rename(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(dest) for f in fs)
    print(f"{dest}: {len(experiments)} runs, {size / 1e6:.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
