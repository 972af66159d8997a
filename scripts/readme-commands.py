#!/usr/bin/env python3
"""Checks that every shell command in the user documentation runs as written.

Reads the ```sh blocks of README.md and docs/*.md. Each command (backslash continuations
joined, comments dropped) is checked by its form:

- a program of this project (`just gen|train|sweep|reproduce|report|bench|docker ...`,
  `scripts/just ...`, `target/release/<program> ...`, `cargo run --release -p <program> -- ...`)
  runs as written with `--dry-run` appended: its flags, files and directories are checked and
  nothing is trained or written;
- a run directory it names (`--resume DIR`, `report DIR`) that does not exist is first made by a
  two-epoch run of configs/tiny.toml, and removed at the end;
- other `just` recipes must exist (`just --summary`); `cargo test|build|clippy|doc` must name
  packages and targets of the workspace; `cargo run --example` an existing example;
- shell housekeeping (`export`, `cp`, `set`, `.`, `cd`, `git clone`, `docker ...`, `pip ...`) is
  checked for syntax only.

Any other form is an error, so a new kind of command needs a rule here. Exit status 1 when any
command fails, with the file, line and output of each failure.
"""

from __future__ import annotations

import glob
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
JUST = os.path.join(ROOT, "scripts", "just")
DRY_RECIPES = {"gen", "train", "sweep", "reproduce", "report", "bench", "docker"}
PROGRAMS = {"gen", "train", "sweep", "report"}
PACKAGE_OF = {"sweep": "sweep-cli"}
SYNTAX_ONLY = {"export", "cp", "set", ".", "source", "cd", "git", "docker", "pip", "python3",
               "mkdir", "ls", "cat", "nvidia-smi", "$EDITOR"}


def commands(path: str):
    """(line number, command) for each command of the ```sh blocks of `path`."""
    out = []
    in_block = False
    pending, start = "", 0
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            stripped = line.strip()
            if stripped.startswith("```"):
                in_block = stripped in ("```sh", "```bash", "```shell") if not in_block else False
                continue
            if not in_block:
                continue
            if not pending:
                start = n
            if stripped.endswith("\\"):
                pending += stripped[:-1] + " "
                continue
            text = (pending + stripped).strip()
            pending = ""
            if text and not text.startswith("#"):
                out.append((start, text))
    return out


def words(cmd: str) -> list[str]:
    lexer = shlex.shlex(cmd, posix=True, punctuation_chars=False)
    lexer.whitespace_split = True
    lexer.commenters = "#"
    return list(lexer)


def dry(w: list[str]) -> list[str]:
    """`--dry-run`, unless the command has it already."""
    return [] if "--dry-run" in w else ["--dry-run"]


def metadata():
    meta = json.loads(subprocess.run(
        ["cargo", "metadata", "--no-deps", "--format-version", "1"],
        cwd=ROOT, check=True, capture_output=True, text=True).stdout)
    targets = {}
    for p in meta["packages"]:
        targets[p["name"]] = {(k, t["name"]) for t in p["targets"] for k in t["kind"]}
    return targets


def recipes():
    out = subprocess.run([JUST, "--summary"], cwd=ROOT, check=True, capture_output=True,
                         text=True).stdout
    return set(out.split())


class Checker:
    def __init__(self):
        self.targets = metadata()
        self.recipes = recipes()
        self.scratch = tempfile.mkdtemp(prefix="readme-commands-")
        self.made: list[str] = []
        self.failures: list[str] = []

    def run(self, argv: list[str]) -> tuple[bool, str]:
        env = dict(os.environ)
        env.pop("WANDB_API_KEY", None)
        env.setdefault("RUST_BACKTRACE", "0")
        p = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True)
        return p.returncode == 0, (p.stdout + p.stderr)[-3000:]

    def make_run(self, rel: str) -> None:
        """A tiny finished run at `rel` (relative to the repository) when nothing is there."""
        path = os.path.join(ROOT, rel)
        if os.path.exists(path):
            return
        ok, out = self.run([os.path.join(ROOT, "target/release/train"), "--config",
                            "configs/tiny.toml", "--data_dir",
                            os.path.join(self.scratch, "data"), "--save_dir", path,
                            "--epochs", "2", "--no_wandb", "--quiet", "--plots", "false"])
        if not ok:
            raise RuntimeError(f"could not make the run {rel}: {out}")
        self.made.append(path)

    def prerequisites(self, prog: str, args: list[str]) -> None:
        for i, a in enumerate(args):
            if a == "--resume":
                self.make_run(args[i + 1])
            elif a.startswith("--resume="):
                self.make_run(a.split("=", 1)[1])
        if prog == "report":
            for a in args:
                if not a.startswith("-") and a.startswith("runs/"):
                    self.make_run(a)

    def check_cargo(self, w: list[str]) -> str | None:
        sub = w[1]
        pkgs = [w[i + 1] for i, a in enumerate(w) if a == "-p"]
        for p in pkgs:
            if p not in self.targets:
                return f"no package {p}"
        for flag, kind in (("--test", "test"), ("--example", "example"), ("--bench", "bench")):
            for i, a in enumerate(w):
                if a == flag:
                    name = w[i + 1]
                    if not any((kind, name) in self.targets[p] for p in (pkgs or self.targets)):
                        return f"no {kind} target {name} in {pkgs or 'the workspace'}"
        if sub == "run" and "--example" not in w:
            if not pkgs:
                return "cargo run without -p"
            return "dry"
        if sub not in ("test", "build", "clippy", "doc", "run", "fmt", "bench"):
            return f"unknown cargo subcommand {sub}"
        return None

    def check(self, where: str, cmd: str) -> None:
        try:
            w = words(cmd)
        except ValueError as e:
            self.failures.append(f"{where}: {cmd}\n  cannot split: {e}")
            return
        if not w:
            return
        head = w[0]
        problem = None
        argv = None
        if head in ("just", "scripts/just"):
            recipe = w[1] if len(w) > 1 else "default"
            if recipe.startswith("-"):
                problem = f"flags before the recipe: {recipe}"
            elif recipe not in self.recipes:
                problem = f"no recipe {recipe}"
            elif recipe in DRY_RECIPES:
                prog = {"reproduce": "sweep"}.get(recipe, recipe)
                self.prerequisites(prog, w[2:])
                argv = [JUST] + w[1:] + dry(w)
        elif head.startswith("target/release/"):
            prog = head.rsplit("/", 1)[1]
            if prog not in PROGRAMS:
                problem = f"no program {prog}"
            else:
                self.prerequisites(prog, w[1:])
                argv = [os.path.join(ROOT, head)] + w[1:] + dry(w)
        elif head == "cargo":
            problem = self.check_cargo(w)
            if problem == "dry":
                problem = None
                pkg = w[w.index("-p") + 1]
                prog = next((k for k, v in PACKAGE_OF.items() if v == pkg), pkg)
                rest = w[w.index("--") + 1:] if "--" in w else []
                self.prerequisites(prog, rest)
                argv = w + ([] if "--" in w else ["--"]) + dry(w)
        elif head in ("bash", "sh") and len(w) > 1 and w[1].startswith("scripts/"):
            if not os.path.exists(os.path.join(ROOT, w[1])):
                problem = f"no script {w[1]}"
        elif head in SYNTAX_ONLY or head.startswith("$"):
            p = subprocess.run(["bash", "-n", "-c", cmd], capture_output=True, text=True)
            if p.returncode != 0:
                problem = p.stderr.strip()
        else:
            problem = f"no rule for `{head}` in scripts/readme-commands.py"
        if problem is None and argv is not None:
            ok, out = self.run(argv)
            if not ok:
                problem = "failed:\n" + "\n".join("    " + l for l in out.splitlines())
        if problem:
            self.failures.append(f"{where}: {cmd}\n  {problem}")
        else:
            print(f"ok  {where}: {cmd}")

    def cleanup(self) -> None:
        for path in self.made:
            shutil.rmtree(path, ignore_errors=True)
            parent = os.path.dirname(path)
            if os.path.isdir(parent) and not os.listdir(parent):
                os.rmdir(parent)
        shutil.rmtree(self.scratch, ignore_errors=True)


def main() -> int:
    files = [os.path.join(ROOT, "README.md")] + sorted(glob.glob(os.path.join(ROOT, "docs/*.md")))
    checker = Checker()
    count = 0
    try:
        for path in files:
            rel = os.path.relpath(path, ROOT)
            for n, cmd in commands(path):
                checker.check(f"{rel}:{n}", cmd)
                count += 1
    finally:
        checker.cleanup()
    if checker.failures:
        print(f"\n{len(checker.failures)} of {count} documented commands fail:", file=sys.stderr)
        for f in checker.failures:
            print(f, file=sys.stderr)
        return 1
    print(f"all {count} documented commands run as written")
    return 0


if __name__ == "__main__":
    sys.exit(main())
