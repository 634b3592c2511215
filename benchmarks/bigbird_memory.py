"""BigBirdAttention peak memory: one compiled forward+backward train step at a long length.

The step and its peak (rise of resident memory during the timed step) are those of
`nlpkit bench attention` (nlpkit/bench/attention.py); this also prints the process's peak
resident memory (`ru_maxrss`, which includes the warm-up step that traces and compiles) and
that peak above the resident memory before the layer was built (TensorFlow/JAX already loaded).

    python benchmarks/bigbird_memory.py                      # 65,536 tokens, batch 1, hidden 256
    KERAS_BACKEND=jax python benchmarks/bigbird_memory.py --length 16384
"""

import argparse
import json
import resource
import sys
from pathlib import Path

# Keep this folder off the import path (scripts here are named after what they measure).
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nlpkit.bench import attention as bench  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--length", type=int, default=65536)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--heads", type=int, default=4)
    args = parser.parse_args()
    import keras

    keras.ops.convert_to_numpy(keras.ops.ones((2, 2)))  # loads the backend's runtime before the baseline
    baseline = bench._resident_bytes()
    seconds, step_peak = bench.measure("bigbird", args.length, args.batch, args.hidden, args.heads)
    process_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB
    print(f"bigbird @ {args.length}: {seconds:.3g} s, step peak {step_peak / bench.GIB:.2f} GiB, "
          f"process peak {process_peak / bench.GIB:.2f} GiB ({(process_peak - baseline) / bench.GIB:.2f} GiB above "
          f"the {baseline / bench.GIB:.2f} GiB before building the layer)", file=sys.stderr)
    print(json.dumps(dict(benchmark="bigbird.memory", backend=keras.backend.backend(), length=args.length,
                          batch=args.batch, hidden=args.hidden, heads=args.heads, seconds=round(seconds, 3),
                          step_peak_bytes=step_peak, process_peak_bytes=process_peak,
                          baseline_bytes=baseline)))


if __name__ == "__main__":
    main()
