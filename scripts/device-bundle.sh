#!/usr/bin/env bash
# Builds the device bundle: what a GPU machine with PyTorch 2.11 and no Rust toolchain or network
# needs to prove the CUDA path in one command (scripts/device-check.sh). See docs/CUDA.md.
#
#   scripts/device-bundle.sh [--original DIR] [--out DIR] [--rehearse]
#
# From the committed tree (HEAD), in a git worktree and a target directory of its own under
# .device/ (ignored), so that this checkout's Cargo.lock and target/ are never touched:
# - fetches the torch 2.11.0 wheel once (pip download, kept in .device/cache/) and unpacks its
#   libtorch (torch/lib, torch/include; build-version 2.11.0);
# - pins tch/torch-sys 0.24.0 (the pair for libtorch 2.11) in the worktree's Cargo.lock;
# - builds train, gen and the test binaries that hold the CUDA tests (release), checks that
#   libtorch_cuda.so is in the NEEDED list of train and of every test binary;
# - writes the bundle (default .device/bundle, at most 20 MiB): bin.tar.xz (bin/ and bin/tests/,
#   about 32 MB unpacked; device-check.sh unpacks it), configs/, the fixtures the tests and the
#   benchmark read, scripts/device-check.sh and BUILD-INFO.
# --original DIR also carries the Python original's toy_model/src (DIR: a clone of its
# repository, a work tree or a bare git directory) as plain files, for the side-by-side benchmark.
# --rehearse then runs the bundle's device-check.sh here, without a GPU (--allow-no-cuda, results
# in .device/rehearsal/): the programs need the CUDA libraries libtorch_cuda.so links against,
# so the nvidia wheels torch 2.11.0 requires are fetched once (about 1.6 GB, .device/cache/) and
# the libraries the programs load are unpacked into .device/cuda-libs/.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
dev=$root/.device
out=$dev/bundle
original=
rehearse=0
torch_version=2.11.0
tch_version=0.24.0
max_mib=20

while [ $# -gt 0 ]; do
  case "$1" in
    --original) original=$2; shift 2 ;;
    --original=*) original=${1#--original=}; shift ;;
    --out) out=$2; shift 2 ;;
    --out=*) out=${1#--out=}; shift ;;
    --rehearse) rehearse=1; shift ;;
    -h|--help) sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "device-bundle: unknown argument $1" >&2; exit 2 ;;
  esac
done
case "$out" in /*) ;; *) out=$PWD/$out ;; esac

say() { printf 'device-bundle: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

started=$(date +%s)
mkdir -p "$dev/cache/wheels"
commit=$(git -C "$root" rev-parse HEAD)
if [ -n "$(git -C "$root" status --porcelain --untracked-files=no)" ]; then
  dirty=true
  say "the checkout has uncommitted changes: the bundle is built from HEAD ($commit) without them"
else
  dirty=false
fi

# The worktree: HEAD exactly, whatever an earlier build left there.
worktree=$dev/worktree
git -C "$root" worktree prune
if [ -e "$worktree/.git" ]; then
  git -C "$worktree" checkout --quiet --detach --force "$commit"
  git -C "$worktree" clean -fdxq
else
  rm -rf "$worktree"
  git -C "$root" worktree add --quiet --detach --force "$worktree" "$commit"
fi

# libtorch 2.11.0 from PyPI's torch wheel (the CUDA 13.0 build); the wheel is downloaded once.
wheel=$(find "$dev/cache/wheels" -name "torch-$torch_version-cp312-cp312-manylinux_2_28_x86_64.whl" | head -n 1)
if [ -z "$wheel" ]; then
  say "downloading the torch $torch_version wheel (about 530 MB) into $dev/cache/wheels"
  python3 -m pip download --quiet "torch==$torch_version" --no-deps --python-version 3.12 \
    --only-binary=:all: --platform manylinux_2_28_x86_64 -d "$dev/cache/wheels"
  wheel=$(find "$dev/cache/wheels" -name "torch-$torch_version-cp312-cp312-manylinux_2_28_x86_64.whl" | head -n 1)
  [ -n "$wheel" ] || die "pip did not leave a torch $torch_version wheel in $dev/cache/wheels"
fi
libtorch=$dev/libtorch-$torch_version/torch
if [ "$(cat "$libtorch/build-version" 2>/dev/null)" != "$torch_version" ]; then
  say "unpacking libtorch from $(basename "$wheel")"
  rm -rf "$dev/libtorch-$torch_version" "$dev/libtorch-$torch_version.tmp"
  unzip -q "$wheel" 'torch/lib/*' 'torch/include/*' -d "$dev/libtorch-$torch_version.tmp"
  echo "$torch_version" >"$dev/libtorch-$torch_version.tmp/torch/build-version"
  mv "$dev/libtorch-$torch_version.tmp" "$dev/libtorch-$torch_version"
fi
[ -f "$libtorch/lib/libtorch_cuda.so" ] || die "$libtorch/lib has no libtorch_cuda.so: not a CUDA build"
wheel_sha=$(sha256sum "$wheel" | cut -d' ' -f1)

# tch 0.24.0 in the worktree only.
(cd "$worktree" && cargo update --quiet -p tch -p torch-sys --precise "$tch_version")
locked=$(awk '/^name = "tch"$/ { getline; print $3 }' "$worktree/Cargo.lock" | tr -d '"')
[ "$locked" = "$tch_version" ] || die "the worktree's Cargo.lock pins tch $locked, not $tch_version"

export CARGO_TARGET_DIR=$dev/target
export LIBTORCH=$libtorch
export LIBTORCH_CXX11_ABI=1
# No line tables: the binaries are stripped anyway, and the build is shorter.
export CARGO_PROFILE_RELEASE_DEBUG=false
messages=$dev/cargo-messages.jsonl
: >"$messages"
# Under load rustc can fail once to spawn a thread ("Resource temporarily unavailable"): a
# failed cargo command is tried once more.
cargo_json() {
  local attempt
  for attempt in 1 2; do
    if (cd "$worktree" && nice -n 5 cargo "$@" --release --locked \
        --message-format=json-render-diagnostics >>"$messages"); then
      return 0
    fi
    [ "$attempt" = 1 ] && say "cargo $1 failed; trying once more"
  done
  return 1
}
say "building train and gen (tch $tch_version, libtorch $torch_version) in $CARGO_TARGET_DIR"
cargo_json build -p train -p gen
say "building the test binaries"
cargo_json test --no-run -p gpt-rope --test parity
cargo_json test --no-run -p trainer --lib --test adam_parity --test ensemble
cargo_json test --no-run -p metrics --lib

# The executables, from cargo's messages: programs as bin/<name>, tests as
# bin/tests/<package>-<target> (`lib` for a crate's unit tests).
rm -rf "$out.tmp"
mkdir -p "$out.tmp/bin/tests"
python3 - "$messages" "$out.tmp" <<'PY'
import json, os, shutil, sys
messages, out = sys.argv[1], sys.argv[2]
want_bins = {"train", "gen"}
want_tests = {("gpt-rope", "parity"), ("trainer", "trainer"), ("trainer", "adam_parity"),
              ("trainer", "ensemble"), ("metrics", "metrics")}
found = {}
for line in open(messages):
    m = json.loads(line)
    if m.get("reason") != "compiler-artifact" or not m.get("executable"):
        continue
    # "path+file:///…/crates/gpt-rope#0.1.0", or "…#name@version" where the name differs.
    source, _, fragment = m["package_id"].partition("#")
    pkg = fragment.split("@")[0] if "@" in fragment else source.rstrip("/").split("/")[-1]
    name, kinds = m["target"]["name"], m["target"]["kind"]
    if m["profile"]["test"]:
        if (pkg, name) in want_tests:
            target = "lib" if "lib" in kinds else name
            found[f"bin/tests/{pkg}-{target}"] = m["executable"]
    elif name in want_bins and "bin" in kinds:
        found[f"bin/{name}"] = m["executable"]
missing = len(want_bins) + len(want_tests) - len(found)
if missing:
    sys.exit(f"device-bundle: {missing} executables missing from cargo's messages: {sorted(found)}")
for dest, src in sorted(found.items()):
    shutil.copy2(src, os.path.join(out, dest))
    print(dest)
PY
for exe in "$out.tmp"/bin/* "$out.tmp"/bin/tests/*; do
  [ -f "$exe" ] || continue
  strip --strip-all "$exe"
done

# CUDA must be linked: libtorch_cuda.so in NEEDED (rustc's --as-needed would drop it).
for exe in "$out.tmp/bin/train" "$out.tmp"/bin/tests/*; do
  readelf -d "$exe" | grep -q 'Shared library: \[libtorch_cuda.so\]' \
    || die "$(basename "$exe") does not list libtorch_cuda.so in NEEDED: CUDA would never be available"
done

# What the tests and the benchmark read at run time, where the repository has it.
cp -r "$worktree/configs" "$out.tmp/configs"
mkdir -p "$out.tmp/tests/fixtures" "$out.tmp/scripts"
cp -r "$worktree/tests/fixtures/golden" "$worktree/tests/fixtures/python-dataset-e10" \
  "$out.tmp/tests/fixtures/"
cp "$worktree/scripts/device-check.sh" "$out.tmp/scripts/"

if [ -n "$original" ]; then
  mkdir -p "$out.tmp/original"
  if [ -d "$original/toy_model/src" ]; then
    (cd "$original" && tar -cf - --exclude=__pycache__ toy_model/src) | tar -xf - -C "$out.tmp/original"
  elif git --git-dir="$original" rev-parse --verify --quiet HEAD >/dev/null; then
    git --git-dir="$original" archive HEAD toy_model/src | tar -xf - -C "$out.tmp/original"
  else
    die "--original $original: neither a work tree with toy_model/src nor a git directory"
  fi
  [ -f "$out.tmp/original/toy_model/src/train.py" ] || die "--original $original has no toy_model/src/train.py"
fi

# The newest glibc and libstdc++ symbol versions the programs need (the GPU machine must have them).
needs=$(find "$out.tmp/bin" -type f -exec objdump -T {} + \
  | grep -oE '(GLIBC|GLIBCXX|CXXABI)_[0-9.]+' | sort -u -t_ -k1,1 -k2,2V \
  | awk -F_ '{ last[$1] = $0 } END { for (k in last) print last[k] }' | sort | tr '\n' ' ')

# The files' sums as they will be unpacked, then the executables packed (xz: a third of the size).
sums=$(cd "$out.tmp" && find . -type f | sed 's|^\./||' | LC_ALL=C sort \
  | while read -r f; do echo "  $(sha256sum "$f" | cut -d' ' -f1) $(stat -c %s "$f") $f"; done)
unpacked=$(du -sb "$out.tmp/bin" | cut -f1)
tar -cf - -C "$out.tmp" bin | xz -9 -T2 >"$out.tmp/bin.tar.xz"
rm -rf "$out.tmp/bin"
archive_sum="  $(sha256sum "$out.tmp/bin.tar.xz" | cut -d' ' -f1) $(stat -c %s "$out.tmp/bin.tar.xz") bin.tar.xz"
total=$(du -sb "$out.tmp" | cut -f1)
limit=$((max_mib * 1024 * 1024))
[ "$total" -le "$limit" ] || die "the bundle is $total bytes, over $max_mib MiB"
seconds=$(($(date +%s) - started))
{
  echo "commit: $commit"
  echo "dirty: $dirty (uncommitted changes in the checkout, which the bundle does not hold)"
  echo "tch: $tch_version (torch-sys $tch_version; the repository's Cargo.lock pins $(awk '/^name = "tch"$/ { getline; print $3 }' "$root/Cargo.lock" | tr -d '"'))"
  echo "libtorch: $torch_version ($(basename "$wheel"), sha256 $wheel_sha)"
  echo "libtorch_dir: $libtorch"
  echo "built: $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(uname -srm), $(ldd --version | head -n 1)"
  echo "build_seconds: $seconds"
  echo "needs: $needs"
  echo "original: $([ -n "$original" ] && echo "toy_model/src from $original" || echo "not carried")"
  echo "size_bytes: $total (bin/ unpacked: $unpacked)"
  echo "files (sha256, bytes, path; bin/ as unpacked from bin.tar.xz):"
  echo "$archive_sum"
  echo "$sums"
} >"$out.tmp/BUILD-INFO"
rm -rf "$out"
mv "$out.tmp" "$out"
say "bundle $out: $(du -sh "$out" | cut -f1) ($total bytes) in ${seconds} s"
say "on the GPU machine: cd <bundle> && bash scripts/device-check.sh (docs/CUDA.md)"

[ "$rehearse" = 1 ] || exit 0

# The rehearsal: the CUDA libraries that libtorch_cuda.so needs (and theirs), from the nvidia
# wheels torch's metadata names.
cuda_wheels=$dev/cache/cuda-wheels
cuda_libs=$dev/cuda-libs
mkdir -p "$cuda_wheels"
mapfile -t reqs < <(unzip -p "$wheel" "torch-$torch_version.dist-info/METADATA" \
  | sed -n 's/^Requires-Dist: \(\(cuda-toolkit\|nvidia-\)[^;]*\).*/\1/p' | tr -d ' ')
if [ ! -f "$cuda_wheels/.complete" ]; then
  say "downloading the CUDA libraries torch $torch_version requires: ${reqs[*]}"
  platforms=()
  for n in 12 17 18 24 25 26 27 28; do platforms+=(--platform "manylinux_2_${n}_x86_64"); done
  python3 -m pip download --quiet "${reqs[@]}" --python-version 3.12 --only-binary=:all: \
    "${platforms[@]}" --platform manylinux2014_x86_64 --platform manylinux2010_x86_64 \
    -d "$cuda_wheels"
  touch "$cuda_wheels/.complete"
fi
python3 - "$libtorch/lib" "$cuda_wheels" "$cuda_libs" <<'PY'
import os, subprocess, sys, zipfile
lib, wheels, dest = sys.argv[1:]
os.makedirs(dest, exist_ok=True)
def needed(path):
    out = subprocess.run(["readelf", "-d", path], capture_output=True, text=True).stdout
    return {l.split("[")[1].split("]")[0] for l in out.splitlines() if "(NEEDED)" in l}
have = set(os.listdir(lib))
todo = set()
for name in ("libtorch_cuda.so", "libtorch_cpu.so", "libc10_cuda.so", "libtorch_nvshmem.so"):
    todo |= needed(os.path.join(lib, name))
members = {}
for w in sorted(os.listdir(wheels)):
    if w.endswith(".whl"):
        for m in zipfile.ZipFile(os.path.join(wheels, w)).namelist():
            if "/lib/" in m and ".so" in m:
                members.setdefault(os.path.basename(m), (w, m))
done = set()
while todo - have - done:
    name = sorted(todo - have - done)[0]
    done.add(name)
    if name not in members:
        continue  # a system library
    w, m = members[name]
    target = os.path.join(dest, name)
    if not os.path.exists(target):
        with zipfile.ZipFile(os.path.join(wheels, w)) as z, open(target, "wb") as f:
            f.write(z.read(m))
    todo |= needed(target)
print(f"{len(os.listdir(dest))} CUDA libraries in {dest}")
PY
say "rehearsing scripts/device-check.sh --allow-no-cuda (results in $dev/rehearsal)"
rm -rf "$dev/rehearsal"
OUT=$dev/rehearsal TORCH_LIB=$libtorch/lib DEVICE_CHECK_EXTRA_LIBS=$cuda_libs \
  bash "$out/scripts/device-check.sh" --allow-no-cuda
