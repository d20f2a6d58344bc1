#!/usr/bin/env bash
# This CPU's f32 FMA peak (GFLOP/s), the ceiling the training step is measured against in
# docs/benchmarks.md: 12 independent 256-bit FMA chains (enough to hide the FMA latency) on one
# core, then on every core at once (all-core clocks are lower). Needs a C compiler (cc) and
# AVX2 + FMA.
#   scripts/fma-peak.sh
set -euo pipefail
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
cat >"$dir/peak.c" <<'C'
#include <immintrin.h>
#include <stdio.h>
#include <time.h>
int main(void) {
  __m256 acc[12];
  const __m256 b = _mm256_set1_ps(1.0000001f), c = _mm256_set1_ps(0.999999f);
  for (int i = 0; i < 12; i++) acc[i] = _mm256_set1_ps((float)i);
  const long n = 400000000;
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  for (long it = 0; it < n; it++) {
#pragma GCC unroll 12
    for (int i = 0; i < 12; i++) acc[i] = _mm256_fmadd_ps(acc[i], b, c);
  }
  clock_gettime(CLOCK_MONOTONIC, &t1);
  const double s = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) * 1e-9;
  float keep = 0; /* use the results so the loop is not removed */
  for (int i = 0; i < 12; i++) { float x[8]; _mm256_storeu_ps(x, acc[i]); keep += x[0]; }
  printf("%.1f GFLOP/s%s\n", (double)n * 12 * 16 / s * 1e-9, keep == 0.5f ? " " : "");
  return 0;
}
C
cc -O2 -mavx2 -mfma -o "$dir/peak" "$dir/peak.c"
cores=$(nproc)
echo "one core: $("$dir/peak")"
echo "all $cores cores at once (each):"
for _ in $(seq "$cores"); do "$dir/peak" & done | sed 's/^/  /'
wait
