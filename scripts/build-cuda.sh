#!/usr/bin/env bash
# Builds the CUDA binaries (asrl-learner, asrl-rollout-worker, asrl-tools) on a machine WITHOUT a system CUDA
# toolkit and without a GPU, from pinned PyPI wheels (CUDA 13.0.x). Needs only python3 + pip,
# cargo, a C compiler (gcc/cc) and binutils (readelf). Idempotent: a second run reuses the toolkit
# and cargo's incremental state. See docs/cuda.md for the why of every step.
#
# Usage:
#   scripts/build-cuda.sh            toolkit + `cargo build --release --features cuda` + dist/cuda/
#   scripts/build-cuda.sh --bundle   the same, then scripts/bundle-cuda.sh: dist/cuda-bundle.tar.xz
#                                    (stripped binaries, no CUDA libraries) for scripts/gpu-check.sh
#   scripts/build-cuda.sh --check    toolkit + `cargo check --features cuda --all-targets` (CI-sized)
#   scripts/build-cuda.sh --toolkit  only download/assemble the toolkit
#   scripts/build-cuda.sh --env      print `export ...` lines; `eval "$(scripts/build-cuda.sh --env)"`
#                                    then run any cargo command against the same toolkit
#   Extra arguments after `--` go to cargo, e.g. `scripts/build-cuda.sh -- -j1`.
#
# Environment (all optional):
#   ASRL_CUDA_DIR     toolkit cache dir            (default: <repo>/.cuda-toolkit, git-ignored)
#   ASRL_CUDA_DIST    self-contained output dir    (default: <repo>/dist/cuda, git-ignored)
#   CUDA_COMPUTE_CAP  GPU arch the kernels target  (default: 90 = H100/H200, built as sm_90a;
#                     80 = A100, 89 = L4/L40/RTX 40xx, 120 = RTX 50xx)
#   CARGO_TARGET_DIR  cargo's target dir           (default: cargo's; keep CUDA builds separate from
#                     CPU ones: RUSTFLAGS differ, so sharing one dir rebuilds everything each switch)
#   PIP               pip command                  (default: python3 -m pip)
#
# Output layout (default mode):
#   dist/cuda/{asrl-learner,asrl-rollout-worker,asrl-tools,cuda-smoke,lib/*.so*,VERSIONS.txt}
# The binaries carry DT_RPATH=$ORIGIN/lib, so the folder runs on any x86-64 Linux with an NVIDIA
# driver >= 580 (CUDA 13.0) and glibc >= the build machine's, without a CUDA toolkit.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
mode=build
cargo_extra=()
while (($#)); do
  case "$1" in
    --check) mode=check ;;
    --bundle) mode=bundle ;;
    --toolkit) mode=toolkit ;;
    --env) mode=env ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    --) shift; cargo_extra=("$@"); break ;;
    *) echo "error: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

cuda_dir=${ASRL_CUDA_DIR:-$repo/.cuda-toolkit}
dist=${ASRL_CUDA_DIST:-$repo/dist/cuda}
compute_cap=${CUDA_COMPUTE_CAP:-90}
pip=${PIP:-python3 -m pip}
root=$cuda_dir/root
log() { if [[ $mode != env ]]; then echo "build-cuda: $*" >&2; fi; }

# Pinned to 13.0.x: cudarc 0.19's build script only knows CUDA <= 13.4 (it panics on 13.5), and
# 13.0 matches the GPU machines' driver 580. The hashes make the pins exact.
requirements='
nvidia-cuda-nvcc==13.0.88 --hash=sha256:56fe502eb77625a12f25172caa3cdddb4e4c8ba2c8c17dba44b164761b380f03
nvidia-cuda-crt==13.0.88 --hash=sha256:2c8043c7c9e02492716426e9919fc78d2c5b3b2a7a768a88e952676b08aa55a4
nvidia-nvvm==13.0.88 --hash=sha256:c5f41ffeb6466944a026dfa5317d7d85355c119bbec279205d22f1869d1054e0
nvidia-cuda-runtime==13.0.96 --hash=sha256:7f82250d7782aa23b6cfe765ecc7db554bd3c2870c43f3d1821f1d18aebf0548
nvidia-cuda-cccl==13.0.85 --hash=sha256:e0da7ad981f3a8aff08241b5bfc1af868742a63e2762f53a5171c492ef242649
nvidia-cublas==13.0.2.14 --hash=sha256:0cf238ffdbe46c00cb9aa98e7bca745c223a5ca5a53e686ac8b3e5a08fe80d6c
nvidia-curand==10.4.0.35 --hash=sha256:1aee33a5da6e1db083fe2b90082def8915f30f3248d5896bcec36a579d941bfc
nvidia-cuda-nvrtc==13.0.88 --hash=sha256:ad9b6d2ead2435f11cbb6868809d2adeeee302e9bb94bcf0539c7a40d80e8575
'
stamp_text=$(printf '%s' "$requirements")

# --- 1. Toolkit: download the wheels and assemble a CUDA_ROOT-like tree -------------------------
assemble_toolkit() {
  if [[ -f $root/.asrl-stamp && "$(cat "$root/.asrl-stamp")" == "$stamp_text" ]]; then
    log "toolkit up to date in $root"
    return
  fi
  mkdir -p "$cuda_dir/wheels"
  printf '%s\n' "$requirements" >"$cuda_dir/requirements.txt"
  log "downloading CUDA 13.0 wheels (~680 MB) into $cuda_dir/wheels"
  # Several manylinux tags: the wheels are tagged 2_12, 2_17 or 2_27 depending on the package.
  $pip download --quiet --no-deps --only-binary=:all: --require-hashes \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux2010_x86_64 \
    --dest "$cuda_dir/wheels" -r "$cuda_dir/requirements.txt"

  local tmp=$cuda_dir/root.tmp
  rm -rf "$tmp"
  mkdir -p "$tmp"
  local name whl
  # Only the pinned wheels: an older run may have left other versions in wheels/.
  while read -r name; do
    [[ -n $name ]] || continue
    local pkg=${name%%==*} ver=${name#*==}
    ver=${ver%% *}
    whl=$(ls "$cuda_dir/wheels/${pkg//-/_}-${ver}-"*.whl)
    python3 -m zipfile -e "$whl" "$tmp/"
  done <<<"$requirements"
  # All wheels share the nvidia/cu13/ prefix, so their union is already a toolkit tree.
  mv "$tmp/nvidia/cu13" "$tmp/cu13" && rm -rf "$tmp/nvidia" "$tmp"/*.dist-info
  rm -rf "$root"
  mv "$tmp/cu13" "$root" && rmdir "$tmp"
  # zipfile drops the executable bits.
  chmod +x "$root"/bin/* "$root"/nvvm/bin/* 2>/dev/null || true
  # nvcc.profile looks under $(TOP)/targets/x86_64-linux/{include,lib}; cudarc/cudaforge look
  # under lib64. The wheels ship neither.
  ln -sfn lib "$root/lib64"
  mkdir -p "$root/targets/x86_64-linux"
  ln -sfn ../../include "$root/targets/x86_64-linux/include"
  ln -sfn ../../lib "$root/targets/x86_64-linux/lib"
  # The wheels ship only runtime sonames; the linker wants the unversioned dev names.
  local so base
  for so in "$root"/lib/lib*.so.*; do
    base=$(basename "$so")
    [[ $base == *.alt.* ]] && continue
    ln -sfn "$base" "$root/lib/${base%%.so.*}.so"
  done
  printf '%s' "$stamp_text" >"$root/.asrl-stamp"
  log "toolkit assembled in $root ($("$root/bin/nvcc" --version | grep -o 'release [0-9.]*'))"
}

# --- 2. libcuda stub ---------------------------------------------------------------------------
# candle forces cudarc's `dynamic-linking`, so the binaries link against libcuda.so, which comes
# with the driver, not the toolkit, and no wheel ships a stub. We export every driver entry point
# cudarc binds (names read from the cudarc source in use) from a tiny library whose soname is
# libcuda.so.1, so the real driver's libcuda.so.1 is what loads on the GPU machine. Each stub
# returns CUDA_ERROR_STUB_LIBRARY (34), which is what a process gets if it ever loads this one.
build_libcuda_stub() {
  local lock=$repo/Cargo.lock
  local cudarc_ver
  cudarc_ver=$(awk '/^name = "cudarc"$/ {getline; gsub(/"/, "", $3); print $3; exit}' "$lock")
  [[ -n $cudarc_ver ]] || { echo "error: cudarc not found in $lock" >&2; exit 2; }
  local stub_dir=$root/lib/stubs
  if [[ -f $stub_dir/libcuda.so && "$(cat "$stub_dir/.cudarc-version" 2>/dev/null)" == "$cudarc_ver" ]]; then
    return
  fi
  (cd "$repo" && cargo fetch --quiet)
  local src
  src=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/cudarc-"$cudarc_ver" | head -n1)
  local sys=$src/src/driver/sys/mod.rs
  [[ -f $sys ]] || { echo "error: $sys not found (cargo fetch failed?)" >&2; exit 2; }
  mkdir -p "$stub_dir"
  grep -ohE 'load::<_F>\("cu[A-Za-z0-9_]+"\)' "$sys" | sed -E 's/.*"(cu[A-Za-z0-9_]+)".*/\1/' \
    | sort -u | awk '{ printf "int %s(void) { return 34; }\n", $1 }' >"$stub_dir/libcuda_stub.c"
  local count
  count=$(wc -l <"$stub_dir/libcuda_stub.c")
  ((count > 100)) || { echo "error: only $count driver symbols found in $sys" >&2; exit 2; }
  ${CC:-cc} -shared -fPIC -O0 -w -Wl,-soname,libcuda.so.1 -o "$stub_dir/libcuda.so" "$stub_dir/libcuda_stub.c"
  echo "$cudarc_ver" >"$stub_dir/.cudarc-version"
  log "libcuda stub with $count symbols from cudarc $cudarc_ver"
}

# --- 3. Environment for candle-kernels (cudaforge), cudarc and the linker ------------------------
export_env() {
  export CUDA_ROOT=$root CUDA_HOME=$root CUDA_PATH=$root CUDA_TOOLKIT_ROOT_DIR=$root
  export NVCC=$root/bin/nvcc
  export PATH=$root/bin:$PATH
  export CUDA_COMPUTE_CAP=$compute_cap
  # cudarc otherwise parses `nvcc --version` from PATH; pinning it makes the version explicit.
  export CUDARC_CUDA_VERSION=13000
  # DT_RPATH (not RUNPATH) so that it also applies to libraries libnvrtc dlopens
  # (libnvrtc-builtins), which have no RUNPATH of their own.
  export RUSTFLAGS="${RUSTFLAGS:-} -L native=$root/lib -L native=$root/lib/stubs -C link-arg=-Wl,--disable-new-dtags -C link-arg=-Wl,-rpath,\$ORIGIN/lib"
}

print_env() {
  local v
  for v in CUDA_ROOT CUDA_HOME CUDA_PATH CUDA_TOOLKIT_ROOT_DIR NVCC PATH CUDA_COMPUTE_CAP CUDARC_CUDA_VERSION RUSTFLAGS; do
    printf 'export %s=%q\n' "$v" "${!v}"
  done
  printf '# to run binaries straight from the target dir: export LD_LIBRARY_PATH=%q\n' "$root/lib"
}

# --- 4. Self-contained dist folder ------------------------------------------------------------
target_dir() {
  if [[ -n ${CARGO_TARGET_DIR:-} ]]; then echo "$CARGO_TARGET_DIR"; else echo "$repo/target"; fi
}

# Copies the toolkit libraries a binary needs (transitively), plus nvrtc's dlopened builtins.
collect_libs() {
  local queue=("$@") seen=" " f dep
  while ((${#queue[@]})); do
    f=${queue[0]}
    queue=("${queue[@]:1}")
    for dep in $(readelf -d "$f" | sed -nE 's/.*\(NEEDED\).*\[(.*)\]/\1/p'); do
      [[ $seen == *" $dep "* ]] && continue
      seen+="$dep "
      if [[ -f $root/lib/$dep ]]; then
        cp -f "$root/lib/$dep" "$dist/lib/"
        queue+=("$root/lib/$dep")
      fi
    done
  done
  if [[ -f $dist/lib/libnvrtc.so.13 ]]; then
    cp -f "$root"/lib/libnvrtc-builtins.so.13.* "$dist/lib/"
  fi
}

# Every driver symbol the binaries import must exist in CUDA 13.0's cuda.h (the driver 580 API),
# otherwise the dynamic loader (full RELRO, bind-now) refuses to start them on the GPU machine.
check_driver_symbols() {
  local bin sym missing=0
  for bin in "$@"; do
    for sym in $(nm -D --undefined-only "$bin" | awk '{print $2}' | grep -E '^cu[A-Z]' | sed 's/@.*//'); do
      if ! grep -qE "\b$sym\b" "$root/include/cuda.h"; then
        echo "error: $bin imports $sym, which CUDA 13.0's cuda.h does not declare" >&2
        missing=1
      fi
    done
  done
  ((missing == 0)) || exit 2
}

assemble_dist() {
  local rel
  rel=$(target_dir)/release
  rm -rf "$dist"
  mkdir -p "$dist/lib"
  cp -f "$rel/asrl-learner" "$rel/asrl-rollout-worker" "$rel/asrl-tools" "$dist/"
  cp -f "$rel/examples/cuda-smoke" "$dist/"
  local bins=("$dist/asrl-learner" "$dist/asrl-rollout-worker" "$dist/asrl-tools" "$dist/cuda-smoke")
  collect_libs "${bins[@]}"
  check_driver_symbols "${bins[@]}"
  {
    echo "built: $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(uname -m), $(ldd --version | head -n1)"
    echo "git: $(cd "$repo" && git rev-parse HEAD 2>/dev/null || echo unknown)$(cd "$repo" && git diff --quiet HEAD 2>/dev/null || echo ' (dirty)')"
    echo "CUDA_COMPUTE_CAP=$compute_cap"
    echo "nvcc: $("$root/bin/nvcc" --version | grep -oE 'V[0-9]+\.[0-9.]+')"
    echo "wheels:"
    printf '%s\n' "$requirements" | awk 'NF {print "  " $1}'
    echo "needs: NVIDIA driver >= 580 (CUDA 13.0), glibc >= build machine's, libstdc++.so.6"
  } >"$dist/VERSIONS.txt"
  log "dist ready: $dist ($(du -sh "$dist" | cut -f1))"
}

# --- main --------------------------------------------------------------------------------------
if [[ $mode == env ]]; then
  [[ -x $root/bin/nvcc ]] || { echo "error: toolkit missing in $root; run scripts/build-cuda.sh --toolkit first" >&2; exit 2; }
  export_env
  print_env
  exit 0
fi

assemble_toolkit
build_libcuda_stub
export_env
cd "$repo"
packages=(-p asrl-learner -p asrl-rollout-worker -p asrl-tools)
case $mode in
  toolkit) print_env ;;
  check)
    log "cargo check --features cuda (CUDA_COMPUTE_CAP=$compute_cap, target dir $(target_dir))"
    cargo check --features cuda -p asrl-common "${packages[@]}" --all-targets ${cargo_extra[@]+"${cargo_extra[@]}"}
    ;;
  build|bundle)
    log "cargo build --release --features cuda (CUDA_COMPUTE_CAP=$compute_cap, target dir $(target_dir))"
    # cuda-smoke (common/examples) links every CUDA library candle uses, whatever the binaries
    # use so far, and is the first thing to run on a GPU machine.
    cargo build --release --features cuda "${packages[@]}" -p asrl-common --bins --example cuda-smoke \
      ${cargo_extra[@]+"${cargo_extra[@]}"}
    assemble_dist
    if [[ $mode == bundle ]]; then
      ASRL_CUDA_DIST=$dist "$repo/scripts/bundle-cuda.sh"
    fi
    ;;
esac
