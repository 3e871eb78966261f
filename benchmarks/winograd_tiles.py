"""Where Winograd pays: 3x3 stride-1 layers (32-512 channels, maps 2-16, batch 1-4, up to 64
2x2 output tiles) timed with every algorithm that applies (autotune's timings), printing
Winograd's time over the best other algorithm's.  The planner's _WINO_MIN_TILES and
_WINO_STRIPS_BYTES come from this table.

    python benchmarks/winograd_tiles.py [THREADS]
"""
import sys

import numpy as np

import cconv


def main(threads=1):
    cconv.set_num_threads(threads)
    cconv.set_autotune(True)
    rng = np.random.default_rng(0)
    for channels in (32, 64, 128, 256, 512):
        for size in (2, 4, 6, 8, 12, 16):
            for batch in (1, 2, 4):
                tiles = batch * ((size + 1) // 2) ** 2
                if tiles > 64:
                    continue
                x = rng.standard_normal((batch, channels, size, size), dtype=np.float32)
                w = rng.standard_normal((channels, channels, 3, 3), dtype=np.float32)
                cconv.conv2d(x, w, None, 1, 1)      # tunes: every applicable algorithm timed
                timings = cconv.explain("conv2d", x, w, None, 1, 1)["forward"].get("timings_us", {})
                if "winograd" not in timings:
                    continue
                best_other = min(t for name, t in timings.items() if name != "winograd")
                print(f"C{channels} H{size} N{batch} tiles {tiles:3d} "
                      f"winograd/best-other {timings['winograd'] / best_other:.2f}  {timings}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1)
