#!/usr/bin/env bash
# Build Horovod for PyTorch once, cache the wheel outside the repo, install it.
#
#   deploy/horovod/build.sh [python]        # default: .venv/bin/python
#
# PyPI has Horovod 0.28.1 as an sdist only, and it does not compile against
# PyTorch >= 2.1 as shipped, and its PyTorch binding waits for an allreduce by
# spinning on the CPU; the .patch files beside this script say why and how each
# is changed. This script fetches the sdist from PyPI, applies the patches in name
# order, builds a wheel with gloo (no MPI, no TensorFlow, no MXNet) and caches it
# under $SPARKDL_WHEEL_CACHE (default ~/.cache/sparkdl/wheels), keyed by Horovod,
# PyTorch and Python versions and the patches. A second run installs the cached
# wheel in seconds; an environment holding a build under another key (say, from
# before a patch changed) gets the wheel for the current key.
#
# GPU clusters: HOROVOD_GPU_OPERATIONS=NCCL deploy/horovod/build.sh builds the NCCL
# variant (needs the CUDA toolkit and NCCL headers; HOROVOD_NCCL_HOME if not under
# /usr); it is cached under its own key.
#
# Not the `horovod[spark]` extra: it pins pyarrow<11. sparkdl launches Horovod itself.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
PY="${1:-${PY:-.venv/bin/python}}"
VERSION=0.28.1
PATCHES=("$here"/horovod-"$VERSION"-*.patch)
CACHE="${SPARKDL_WHEEL_CACHE:-$HOME/.cache/sparkdl/wheels}"
GPU_OPS="${HOROVOD_GPU_OPERATIONS:-}"

torch_version=$("$PY" -c 'import torch; print(torch.__version__.split("+")[0])')
py_tag=$("$PY" -c 'import sys; print(f"cp{sys.version_info.major}{sys.version_info.minor}")')
patch_hash=$(cat "${PATCHES[@]}" | sha256sum | cut -c1-12)
key="horovod-$VERSION-torch$torch_version-$py_tag-$patch_hash${GPU_OPS:+-$(echo "$GPU_OPS" | tr 'A-Z' 'a-z')}"
wheel_dir="$CACHE/$key"
installed_key="$("$PY" -c 'import sys; print(sys.prefix)')/sparkdl-horovod.key"

if [ "$(cat "$installed_key" 2>/dev/null)" = "$key" ] && \
   "$PY" -c "import horovod.torch, sys; sys.exit(horovod.__version__ != '$VERSION')" 2>/dev/null
then
  echo "horovod $VERSION ($key) already installed in $PY"
  exit 0
fi

if ! ls "$wheel_dir"/horovod-*.whl >/dev/null 2>&1; then
  echo "building horovod $VERSION for torch $torch_version ($key); about 10 minutes on 2 cores"
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  "$PY" -m pip download -q --no-deps --no-binary :all: "horovod==$VERSION" -d "$work"
  tar -xzf "$work/horovod-$VERSION.tar.gz" -C "$work"
  for p in "${PATCHES[@]}"; do patch -s -d "$work/horovod-$VERSION" -p1 < "$p"; done
  "$PY" -m pip install -q "cmake>=3.13" wheel packaging psutil pyyaml cffi
  mkdir -p "$wheel_dir.partial"
  HOROVOD_WITH_PYTORCH=1 HOROVOD_WITH_GLOO=1 HOROVOD_WITHOUT_MPI=1 \
  HOROVOD_WITHOUT_TENSORFLOW=1 HOROVOD_WITHOUT_MXNET=1 \
  MAKEFLAGS="-j$(nproc)" \
    "$PY" -m pip wheel --no-deps --no-build-isolation -w "$wheel_dir.partial" \
      "$work/horovod-$VERSION"
  rm -rf "$wheel_dir" && mv "$wheel_dir.partial" "$wheel_dir"
fi
"$PY" -m pip install -q --force-reinstall --no-deps "$wheel_dir"/horovod-*.whl
echo "$key" > "$installed_key"
"$PY" -m pip install -q cloudpickle psutil pyyaml packaging cffi
"$PY" -c 'import horovod.torch as hvd; print("horovod", __import__("horovod").__version__, "gloo built:", hvd.gloo_built())'
