#!/usr/bin/env bash
# Packs the CUDA binaries of scripts/build-cuda.sh (dist/cuda/) into ONE small file that can
# travel to a GPU machine with the source tree: asrl-learner, asrl-rollout-worker and asrl-tools,
# stripped, plus VERSIONS.txt, in a tar.xz. The CUDA libraries (dist/cuda/lib/, 700+ MB) stay
# behind: scripts/gpu-check.sh resolves them from the GPU machine's python CUDA wheels.
#
# Usage: scripts/bundle-cuda.sh [--dist DIR] [--out FILE] [--max-mib N]
#   --dist     build-cuda.sh's output (default: $ASRL_CUDA_DIST or dist/cuda)
#   --out      the bundle (default: dist/cuda-bundle.tar.xz)
#   --max-mib  fail when the bundle is larger (default 46: the device tool carries 64 MiB in all,
#              of which the git working tree takes about 18)
# One xz stream with a 192 MiB dictionary: the three binaries share most of their code (candle,
# the CUDA kernels' PTX), so the second and third compress against the first (single-threaded
# on purpose: xz's threads split the stream into blocks that cannot see each other).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
dist=${ASRL_CUDA_DIST:-$repo/dist/cuda}
out=$repo/dist/cuda-bundle.tar.xz
max_mib=46
while (($#)); do
  case "$1" in
    --dist) dist=$2; shift ;;
    --out) out=$2; shift ;;
    --max-mib) max_mib=$2; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "error: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
bins=(asrl-learner asrl-rollout-worker asrl-tools)
for b in "${bins[@]}"; do
  [[ -x $dist/$b ]] || { echo "error: $dist/$b missing (run scripts/build-cuda.sh)" >&2; exit 2; }
done
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
for b in "${bins[@]}"; do
  strip --strip-all -o "$stage/$b" "$dist/$b"
done
[[ -f $dist/VERSIONS.txt ]] && cp "$dist/VERSIONS.txt" "$stage/"
mkdir -p "$(dirname "$out")"
tar -C "$stage" -cf - . | xz -T1 --lzma2=preset=9e,dict=192MiB >"$out.tmp"
mv "$out.tmp" "$out"
bytes=$(stat -c %s "$out")
echo "bundle-cuda: $out: $((bytes / 1024)) KiB (stripped: $(du -ck "$stage"/asrl-* | tail -n1 | cut -f1) KiB)"
if ((bytes > max_mib * 1024 * 1024)); then
  echo "error: $out is larger than --max-mib $max_mib" >&2
  exit 1
fi
