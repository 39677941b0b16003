#!/usr/bin/env bash
# Create (or refresh) the project's virtual environment in .venv at the repository root.
#
#   bash tools/setup_env.sh            # idempotent: returns in seconds when .venv is up to date
#
# What it does, and why (details in docs/install.md):
#   1. python3.11 -m venv .venv
#   2. torch 2.14.1 + torchvision 0.29.1 (pinned in requirements.txt; they run on the CPU)
#   3. mmcv 2.1.0 compiled *with its ops* (RoIAlign, nms, ... which Mask R-CNN needs). The wheel is
#      built once into a cache outside the repository and reused afterwards:
#        - build isolation off, or pip silently builds mmcv without ops;
#        - mmcv 2.1.0's setup.py forces -std=c++17 while torch 2.14's headers need C++20, so the
#          compiler is a two-line wrapper that appends -std=c++20 (gcc keeps the last -std).
#      On a machine with a GPU and a CUDA toolkit (nvcc on PATH or in $CUDA_HOME) whose major version matches
#      torch's CUDA, mmcv is built with its CUDA ops as well (FORCE_CUDA=1, TORCH_CUDA_ARCH_LIST from the GPUs
#      present) into a separate cache folder; otherwise with CPU ops only (a toolkit without a GPU is not used:
#      compiling the CUDA ops takes hours on 2 cores). The script says which it built.
#      (The CUDA branch has not been run by us: no GPU machine was available. docs/install.md, "GPU".)
#   4. everything else from requirements.txt, then this package in editable mode.
#
# Environment: PYTHON (default python3.11, else python3), VITATTN_CACHE (default ~/.cache/vitattn_mm),
# VITATTN_MMCV_OPS=auto|cpu|cuda (default auto: CUDA ops when a GPU and a matching toolkit are found; cuda: CUDA
# ops or an error, also without a GPU, for TORCH_CUDA_ARCH_LIST or 7.5;8.0;8.6;8.9;9.0), TORCH_CUDA_ARCH_LIST.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
CACHE="${VITATTN_CACHE:-$HOME/.cache/vitattn_mm}"
WHEELS="$CACHE/wheels"
STAMP="$VENV/.vitattn_mm-installed"
MMCV_VERSION=2.1.0

say() { printf '[setup_env] %s\n' "$*"; }
die() { printf '[setup_env] ERROR: %s\n' "$*" >&2; exit 1; }

# The stamp records what the venv was built from; when nothing changed we are done.
want="$(cat "$ROOT/requirements.txt" "$ROOT/tools/setup_env.sh" "$ROOT/pyproject.toml" | sha256sum | cut -d' ' -f1)"
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$want" && -x "$VENV/bin/python" ]]; then
    say ".venv is up to date ($VENV)"
    exit 0
fi

PY="${PYTHON:-}"
if [[ -z "$PY" ]]; then
    if command -v python3.11 >/dev/null; then PY=python3.11; else PY=python3; fi
fi
"$PY" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else 1)' \
    || die "Python 3.11 is required (found $("$PY" --version 2>&1)); set PYTHON=/path/to/python3.11"

if [[ ! -x "$VENV/bin/python" ]]; then
    say "creating $VENV"
    "$PY" -m venv "$VENV" || die "could not create the virtual environment at $VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)
mkdir -p "$WHEELS"

pin() { grep -E "^$1==" "$ROOT/requirements.txt" || die "$1 is not pinned in requirements.txt"; }

say "step 1/4: build tools and torch"
"${PIP[@]}" install -q setuptools==80.9.0 wheel ninja "$(pin torch)" "$(pin torchvision)" "$(pin numpy)" \
    || die "installing torch failed (see pip's message above)"

say "step 2/4: mmcv $MMCV_VERSION with ops"
# CPU ops, or CPU + CUDA ops: decided by VITATTN_MMCV_OPS and by the CUDA toolkit found on this machine.
ops_mode="${VITATTN_MMCV_OPS:-auto}"
[[ "$ops_mode" =~ ^(auto|cpu|cuda)$ ]] || die "VITATTN_MMCV_OPS must be auto, cpu or cuda (got '$ops_mode')"
torch_cuda="$("$VENV/bin/python" -c 'import torch; print(torch.version.cuda or "")')"
# compute capabilities of the GPUs that torch sees ("" on a machine without one)
gpu_archs="$("$VENV/bin/python" -c 'import torch; print(";".join(sorted({"%d.%d" % torch.cuda.get_device_capability(i)
    for i in range(torch.cuda.device_count())})))' 2>/dev/null || true)"
nvcc=""
if [[ -n "${CUDA_HOME:-}" && -x "$CUDA_HOME/bin/nvcc" ]]; then nvcc="$CUDA_HOME/bin/nvcc"
elif command -v nvcc >/dev/null; then nvcc="$(command -v nvcc)"; fi
build_cuda=0
if [[ "$ops_mode" == cuda || ( "$ops_mode" == auto && -n "$gpu_archs" ) ]]; then
    toolkit="$([[ -n "$nvcc" ]] && "$nvcc" --version | sed -n 's/.*release \([0-9][0-9]*\.[0-9][0-9]*\).*/\1/p' || true)"
    if [[ -z "$nvcc" ]]; then
        msg="no CUDA toolkit (nvcc) was found: install CUDA $torch_cuda and set CUDA_HOME"
    elif [[ -z "$torch_cuda" ]]; then
        msg="torch $(pin torch | cut -d= -f3) here is a CPU-only build"
    elif [[ "${toolkit%%.*}" != "${torch_cuda%%.*}" ]]; then
        msg="the CUDA toolkit at $nvcc is ${toolkit:-of unknown version} but torch was built with CUDA $torch_cuda (the major versions must match)"
    else
        build_cuda=1
    fi
    if [[ "$build_cuda" == 0 ]]; then
        [[ "$ops_mode" == cuda ]] && die "cannot build mmcv's CUDA ops: $msg"
        say "WARNING: a GPU is present but $msg; building mmcv with CPU ops only (Mask R-CNN cannot train on the GPU)"
    fi
fi
build_env=(MMCV_WITH_OPS=1 MAX_JOBS="${MAX_JOBS:-2}")
if [[ "$build_cuda" == 1 ]]; then
    arch="${TORCH_CUDA_ARCH_LIST:-${gpu_archs:-7.5;8.0;8.6;8.9;9.0}}"
    wheel_dir="$WHEELS/cuda$toolkit-sm${arch//[^0-9]/_}"
    build_env+=(FORCE_CUDA=1 "TORCH_CUDA_ARCH_LIST=$arch" "CUDA_HOME=$(dirname "$(dirname "$(readlink -f "$nvcc")")")")
    what="CPU and CUDA $toolkit ops for compute capabilities $arch"
else
    wheel_dir="$WHEELS"
    # mmcv's setup.py compiles CUDA ops whenever torch sees a GPU; hide it so that no toolkit is needed.
    build_env+=(FORCE_CUDA=0 CUDA_VISIBLE_DEVICES=)
    what="CPU ops"
fi
mkdir -p "$wheel_dir"
mmcv_wheel="$(ls "$wheel_dir"/mmcv-"$MMCV_VERSION"-*.whl 2>/dev/null | head -n1 || true)"
if [[ -z "$mmcv_wheel" ]]; then
    say "no cached mmcv wheel in $wheel_dir: compiling it with $what (10 to 50 minutes on 2 cores, once per machine)"
    wrapper="$CACHE/cxx20"
    printf '#!/bin/sh\nexec c++ "$@" -std=c++20 -g0\n' > "$wrapper"
    chmod +x "$wrapper"
    build_log="$CACHE/mmcv-build.log"
    if ! env "${build_env[@]}" CXX="$wrapper" \
        "${PIP[@]}" wheel --no-build-isolation --no-deps -w "$wheel_dir" "mmcv==$MMCV_VERSION" >"$build_log" 2>&1; then
        tail -n 40 "$build_log" >&2
        die "compiling mmcv failed; full log: $build_log"
    fi
    mmcv_wheel="$(ls "$wheel_dir"/mmcv-"$MMCV_VERSION"-*.whl | head -n1)"
    say "built $mmcv_wheel"
fi
# the wheel chosen above, so that pip cannot pick the other build from the cache
"${PIP[@]}" install -q --no-deps --force-reinstall "$mmcv_wheel" || die "installing $mmcv_wheel failed"

say "step 3/4: requirements.txt"
"${PIP[@]}" install -q --find-links "$WHEELS" -r "$ROOT/requirements.txt" \
    || die "installing requirements.txt failed (see pip's message above)"
"$VENV/bin/python" -c 'import mmcv.ops; mmcv.ops.nms' 2>/dev/null \
    || die "mmcv was installed without its compiled ops; delete $mmcv_wheel and run again"
built_cuda="$("$VENV/bin/python" -c 'from mmcv.ops import get_compiling_cuda_version as v; print(v())')"
say "mmcv $MMCV_VERSION ops: CPU$([[ "$built_cuda" != "not available" ]] && echo " and CUDA $built_cuda")"

say "step 4/4: vitattn_mm (editable)"
"${PIP[@]}" install -q --no-deps --no-build-isolation -e "$ROOT" || die "installing vitattn_mm failed"

echo "$want" > "$STAMP"
say "done: activate with 'source .venv/bin/activate'"
