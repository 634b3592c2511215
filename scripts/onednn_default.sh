#!/usr/bin/env bash
# Print 1 if TensorFlow turns its oneDNN kernels on by default on this machine, else 0.
# TensorFlow's own rule (DefaultOneDnnPolicy in tensorflow/core/util/port.cc, Linux): on for x86
# CPUs with AVX512_VNNI, AVX512_BF16, AVX_VNNI or AMX (TILE, INT8, BF16), so AVX2-only and plain
# AVX-512F machines run without them. (Its other case, ARM Neoverse V1, is not detected here.)
# CPUINFO overrides /proc/cpuinfo (the tests use it).
grep -qwE 'avx512_vnni|avx512_bf16|avx_vnni|amx_tile|amx_int8|amx_bf16' "${CPUINFO:-/proc/cpuinfo}" 2>/dev/null \
  && echo 1 || echo 0
