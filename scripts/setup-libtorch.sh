#!/usr/bin/env bash
# Installs libtorch 2.13.0 (the version tch 0.26 requires) into `.libtorch/` at the repository
# root, taken from PyPI's torch wheel, which carries libtorch's headers and shared libraries.
#
#   LIBTORCH_VARIANT=cpu|cuda|auto   (default auto: cuda when `nvidia-smi -L` lists a GPU)
#
# CPU: only the headers and the five libraries a CPU build links are kept (~490 MB), plus the two
# small CUDA runtime libraries that libtorch_cpu.so loads unconditionally.
# CUDA: the wheel is installed with its nvidia-* dependencies under `.libtorch/py`, and
# `.libtorch/{include,lib}` point into it, so libtorch_cuda.so finds its CUDA libraries through
# its own $ORIGIN-relative search path.
#
# Idempotent: a complete install of the wanted variant is left alone; anything else (a missing
# marker, a missing file, another version or variant) is removed and installed again.
set -euo pipefail

version=2.13.0
cuda_runtime=13.0.96
cuda_cupti=13.0.85
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
dest="$root/.libtorch"
tmp="$root/.libtorch.tmp"
wheels="$root/.cache/wheels"
python=${PYTHON:-python3}

variant=${LIBTORCH_VARIANT:-auto}
if [ "$variant" = auto ]; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q '^GPU'; then
    variant=cuda
  else
    variant=cpu
  fi
fi
case "$variant" in
  cpu | cuda) ;;
  *) echo "setup-libtorch: LIBTORCH_VARIANT must be cpu, cuda or auto, not '$variant'" >&2; exit 2 ;;
esac

complete() {
  [ -f "$dest/.installed" ] && [ "$(cat "$dest/.installed")" = "$version $variant" ] || return 1
  [ "$(cat "$dest/build-version" 2>/dev/null)" = "$version" ] || return 1
  local f
  for f in include/torch/csrc/api/include/torch/torch.h lib/libtorch_cpu.so lib/libtorch.so \
    lib/libc10.so lib/libgomp.so.1; do
    [ -s "$dest/$f" ] || return 1
  done
  if [ "$variant" = cuda ]; then
    [ -s "$dest/lib/libtorch_cuda.so" ] || return 1
  else
    [ -s "$dest/lib/libcudart.so.13" ] && [ -s "$dest/lib/libcupti.so.13" ] || return 1
  fi
}

if complete; then
  echo "libtorch $version ($variant) already installed in $dest"
  exit 0
fi

if [ -e "$dest" ]; then
  echo "setup-libtorch: $dest is incomplete or of another variant; installing again" >&2
fi
rm -rf "$tmp"
mkdir -p "$tmp" "$wheels"

if [ "$variant" = cpu ]; then
  echo "setup-libtorch: downloading the torch $version wheel (CPU parts only are kept)"
  "$python" -m pip download --quiet --no-deps --disable-pip-version-check -d "$wheels" \
    "torch==$version" "nvidia-cuda-runtime==$cuda_runtime" "nvidia-cuda-cupti==$cuda_cupti"
  "$python" - "$wheels" "$tmp" "$version" <<'PY'
import glob, os, shutil, sys, zipfile

wheels, out, version = sys.argv[1:4]

def one(pattern):
    found = sorted(glob.glob(os.path.join(wheels, pattern)))
    if not found:
        sys.exit(f"setup-libtorch: no wheel matching {pattern} in {wheels}")
    return found[-1]

keep_libs = {"libtorch_cpu.so", "libtorch.so", "libc10.so", "libgomp.so.1", "libshm.so"}
os.makedirs(os.path.join(out, "lib"), exist_ok=True)
with zipfile.ZipFile(one(f"torch-{version}-*.whl")) as z:
    for info in z.infolist():
        name = info.filename
        if name.startswith("torch/include/") and not name.endswith("/"):
            rel = name[len("torch/"):]
        elif name.startswith("torch/lib/") and os.path.basename(name) in keep_libs:
            rel = "lib/" + os.path.basename(name)
        else:
            continue
        target = os.path.join(out, rel)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with z.open(info) as src, open(target, "wb") as dst:
            shutil.copyfileobj(src, dst)
for pattern, lib in (("nvidia_cuda_runtime-*.whl", "libcudart.so.13"),
                     ("nvidia_cuda_cupti-*.whl", "libcupti.so.13")):
    with zipfile.ZipFile(one(pattern)) as z:
        member = next((n for n in z.namelist() if n.endswith("/" + lib)), None)
        if member is None:
            sys.exit(f"setup-libtorch: {lib} not found in the {pattern} wheel")
        with z.open(member) as src, open(os.path.join(out, "lib", lib), "wb") as dst:
            shutil.copyfileobj(src, dst)
PY
else
  echo "setup-libtorch: installing the torch $version wheel with its CUDA libraries"
  "$python" -m pip install --quiet --disable-pip-version-check --target "$tmp/py" "torch==$version"
  ln -s py/torch/include "$tmp/include"
  ln -s py/torch/lib "$tmp/lib"
fi

echo "$version" >"$tmp/build-version"
echo "$version $variant" >"$tmp/.installed"
rm -rf "$dest"
mv "$tmp" "$dest"
if ! complete; then
  echo "setup-libtorch: the install in $dest is incomplete after setup" >&2
  exit 1
fi
echo "libtorch $version ($variant) installed in $dest"
