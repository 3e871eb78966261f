# The planner: the one place where a convolution pass's algorithm, micro-kernel, tiles,
# thread count and workspace are decided.  Included by _conv.pyx.
#
# plan_conv(pass, geometry, dtype, threads, finiteness) -> ConvPlan, a plain record that
# the drivers (conv_drivers.pxi) only execute.  The ISA level and CCONV_CONV_ALGO are fixed
# at import; a caller may force an algorithm per call (autotune: applicable_algos lists the
# algorithms a pass can run exactly, each a forced plan).  Plans depend on the data in one
# way only: some algorithms are exact only when an operand is finite (Winograd's transforms
# mix values; direct loops skip the zero padding, where PyTorch computes 0 * inf = NaN).
# A plan lists the finiteness it assumed (`needs`); the caller checks exactly those
# operands and, if one is not finite, asks again with that fact.  Plans are cached per key
# in a small direct-mapped table.
#
# Before choosing an algorithm a plan drops the kernel taps that only ever read the zero
# padding (_live_taps): the pass runs on the cropped kernel with the same output size.

# ---- algorithms (names in ALGORITHMS, same order) ---------------------------------------
cdef enum:
    A_EMPTY = 0       # nothing to compute (empty batch, no input channels)
    A_DIRECT = 1      # direct loops over kernel taps
    A_PADDED = 2      # implicit GEMM on a zero-padded (polyphase) copy of each image slice
    A_IM2COL = 3      # packed-im2col GEMM (blocks of output pixels or weight-gradient rows)
    A_LANES = 4       # output channels in the vector lanes (float32, AVX-512)
    A_WINOGRAD = 5    # Winograd F(2x2, 3x3)
    A_DOT = 6         # weight gradient: register-tiled dot kernel over padded images
    A_COL2IM = 7      # input gradient: GEMM with W^T, then col2im
    A_SUM = 8         # bias gradient: per-channel sums
    A_ROWS = 9        # few output pixels: weight rows read in place (conv_rows.h)
    A_DEPTHWISE = 10  # one input and 1-2 output channels per group: vector loops per plane
    A_VOLUME = 11     # conv3d: implicit GEMM on a zero-padded (polyphase) copy of each volume
    A_BANDS = 12      # output cut into bands of rows x columns with the same live taps: an
    #                   unpadded im2col sub-pass on each (no multiply-add meets the padding)
    N_ALGOS = 13

ALGORITHMS = ("empty", "direct", "padded", "im2col", "lanes", "winograd", "dot", "col2im", "sum",
              "rows", "depthwise", "volume", "bands")

cdef enum:  # passes
    P_FORWARD = 0
    P_GRAD_INPUT = 1
    P_GRAD_WEIGHT = 2
    P_GRAD_BIAS = 3

PASSES = ("forward", "grad_input", "grad_weight", "grad_bias")

cdef enum:  # finiteness facts a plan may assume (bit set: the operand is finite)
    F_DATA = 1        # the operand that slides: x (forward, grad_weight), grad_output (grad_input)
    F_OTHER = 2       # weights (forward, grad_input) or grad_output (grad_weight)
    F_ALL = 3

# ---- thresholds (all of them; measured on the benchmark shapes, see build_info) -------------
# Each thread of a team gets at least this many multiply-adds: its share must outlast waking
# it (_TEAM_WAKE_US, threads.pxi) at the 1-thread rate of small layers, _SMALL_MACS_PER_US:
# the median over 123 batch-1 passes of 0.05-3 ms (1x1 and 3x3 kernels, maps 1x1-7x7, 64-1024
# channels, every pass; benchmarks/small_teams.py, 2026-12-02) was 14,300 (rows 14,300,
# im2col 19,100).  So 2 threads from 2 x 1.66M multiply-adds; the 200,000 before gave N1
# C480->432 on a 1x1 map (207K) a team: forward 0.033 ms on 1 thread, 0.127 ms on 2.
DEF _SMALL_MACS_PER_US = 14300
DEF _PARALLEL_MIN_MACS = _TEAM_WAKE_US * _SMALL_MACS_PER_US
# GEMM tiles are ~6 output channels tall; with fewer per group most of a tile is padding.
DEF _GEMM_MIN_CHANNELS = 4
# Passes below this many multiply-adds use direct loops (latency over throughput).
DEF _DIRECT_MAX_MACS = 32768
# Dead kernel taps (reading only zero padding) are cropped off a pass when that saves at
# least this many multiply-adds per (output, input) channel plane of the weights: the crop
# is a strided copy of each plane (and a weight gradient's uncrop, a clear of the full
# array), worth about this many multiply-adds.  Measured (2026-12-02, AVX-512 VM, 1 thread):
# 40 random small-map layers (batch 1-8, maps 1x1-3x3, kernels 1-7, 64-1024 channels), each
# pass cropped and not, paired: cropping won where it saved >= ~100 multiply-adds a plane
# (1.1-3.8x) and mostly lost below ~50 (0.3-0.9x; the machine was noisy: single cases
# flipped between runs); callgrind on N1 C512->512 1x1 k3x3: 140M instructions cropped
# against 30M computing the 8 dead taps' zeros.
DEF _TRIM_PLANE_MACS = 64
TRIM_PLANE_MACS = _TRIM_PLANE_MACS      # for tests
# Largest padded image slice (elements) the implicit-GEMM forward copies per thread.
DEF _PADDED_MAX_ELEMS = 4194304
# The padded grid reads a group's packed weights (round_up(m, mr) x K) again for every block
# of CCONV_NB_PANELS * nr columns, packed im2col once per blk.nc columns.  Up to
# _padded_a_bytes() (half of L2: B columns and the C block share it; see blocking) they stay
# in L2; beyond, every block streams them from L3, a cost proportional to the multiply-adds
# that _PADDED_RESTREAM weighs.  It shows where the grid is one output row (forcing each
# algorithm on 20 seeded random conv1d layers and the benchmark's): at stride > 1 (the
# polyphase copy spreads each channel's taps over `stride` planes, more cache lines per B
# panel) padded ran 1.1-1.4x slower than im2col at 192-512 output channels, and at stride 1
# on two threads (both cores streaming the weights from the shared L3) 1.1-1.9x at 256-512;
# at stride 1 on one thread, or 128 channels, there was no consistent winner.  2-d grids
# were not measured: they keep the column-waste rule alone.
DEF _PADDED_RESTREAM = 0.1
# Channels in lanes: at most this many output channels per group (128 lose ~10% to GEMM).
DEF _LANES_MAX_CHANNELS = 64
# ... except on a one-row grid (conv1d's H = 1): there the padded grid and im2col waste no
# columns that lanes would save, and what is left is the inner loop.  Per tap, lanes loads one
# aligned 16-channel weight vector and broadcasts 16 single input values (4-byte loads that
# never split a cache line) for 16 FMAs; the padded grid's indirect B rows are 64-byte vector
# loads at every tap offset of the grid, 15 of 16 of them misaligned (two cache lines each:
# the likely cost, not measured by itself), and im2col writes and re-reads K values per pixel
# (callgrind: all three are kernel-bound, no overhead outside the kernels).  Measured by timing
# every algorithm (autotune) on the conv1d forwards with 65-512 output channels of
# benchmarks/nd_sweep.py and of `--random 60 --seed 2/3` (25 layers x 1 and 2 threads,
# AVX-512 VM, 2026-12-02; benchmarks/results-nd.md): lanes
# beat the planner's pick on 47 of 50 (padded/lanes 1.03-2.4x, median ~1.25; im2col/lanes
# 1.15-2.4x), up to 512 channels.  Its tasks are whole slices (an image and group): a single
# slice cannot be split, and on 2 threads it lost (batch 1: 0.50-0.80x), so it needs two or
# more (not a test of the thread count: the algorithm, and so the bits, stay the same on any
# team; more than 2 threads over 2-3 slices is unmeasured).  It lost on one 0.2 ms layer of 5
# channels at stride 4, dilation 8 (im2col 0.66x).  Forward passes only: the stride-1 input
# gradient that runs as a forward was mixed (0.45-1.29x), and keeps the 64-channel cut.
# Winograd: enough channels for the transforms to pay off; weight gradient on wide layers.
DEF _WINO_MIN_CHANNELS = 16
DEF _WINO_GW_MIN_MC = 16384
# ... and enough 2x2 output tiles in the call to repay the weight transform, a fixed cost per
# (out, in) channel pair.  Measured by forcing each algorithm on 3x3 layers of 32-512
# channels, maps 2-16, batch 1-4 (benchmarks/results-winograd-tiles.md): the transform costs
# what Winograd saves on ~20 tiles while its 16 GEMM strips (16 x out x in values) stay in
# cache, and twice that when they are as large as _WINO_STRIPS_BYTES.
DEF _WINO_MIN_TILES = 20
DEF _WINO_STRIPS_BYTES = 16777216
# On a team each thread streams all 16 strips for its own tiles while the other does the same
# through the shared L3 and memory, so the strips weigh more.  Measured at 2 threads by timing
# every algorithm on the sweep's 3x3 layers (benchmarks/results-planner.md): Winograd lost
# 1.1-3x with 10-28 MiB of strips over 64-128 tiles (e.g. 512->512 on 4x4 maps, batch 32) and
# won with 2-9 MiB over 256-1024 tiles; weights of 6-20 separate the two.  More threads: unmeasured.
DEF _WINO_TEAM_STRIPS = 8
# Winograd tile block: about this many scratch elements per thread.
DEF _WINO_BLOCK_ELEMS = 262144
# Outputs of at least this many bytes (8x the 512 KiB L2 it was measured on: far past what
# the caches keep until the next layer reads it) are written with streaming stores by the
# packed-im2col forward (pointwise forward 8.1 -> 7.75 ms).  Not derived from the probed
# caches: only this one size was measured.
DEF _STREAM_MIN_BYTES = 4194304
# Largest im2col block (elements) the col2im input gradient keeps per thread.
DEF _COL_BLOCK_ELEMS = 65536
# Flipped weights of a direct stride-1 grad_input up to this size need no workspace.
DEF _SMALL_WEIGHTS = 256
# Weight gradients reduce over at most this many batch parts, summed in a fixed order: the
# partition does not depend on the thread count, so the result does not either.  Each part
# beyond the first costs one pass over a partial sum (Winograd's: 16 x O x C values), so as
# few as keep two threads busy.
DEF _GW_PARTS = 2
# Span-image im2col forwards cut each group's panels into this many shares per thread; padded
# forwards with fewer slices than this per thread cut each slice's grid into chunks, and dot
# weight gradients with fewer batch parts cut the output channels into blocks, to as many tasks.
DEF _SHARES_PER_THREAD = 4
# ... but a dot block keeps at least this many output channels (each block pads its images
# again: one copy per this many channels' multiply-adds).
DEF _DOT_MIN_BLOCK = 32
# 1x1 weight gradients by the dot kernel in place rather than the packed GEMM (see
# _pw_dot_pays): at most this many channels on one side, any size; or on large images at
# most this many output channels and channel pairs.
DEF _PW_DOT_FEW = 8
DEF _PW_DOT_MAX_M = 128
DEF _PW_DOT_MAX_MC = 2048
# A 1x1 forward read in place (conv_pointwise.h) reads its weights in place too, unpacked,
# when the batch has at most this many pixels: each weight then meets at most 64 panels,
# and packing it (read, write, read back) costs more than the unpacked strips' six row
# streams.  Measured on benchmarks/pointwise.py's 102 layers (1 thread, forcing each way):
# batch 1 on 7x7 maps 1.6-1.8x faster unpacked, 14x14-28x28 1.03-1.4x; batch 8 on 14x14 and
# 28x28 (1568-6272 pixels) mostly 0.6-1.0x, 56x56 at batch 1 mixed (0.8-1.15x).  The input
# gradient's W^T would be read a column at a time (6 values per cache line): it loses
# (0.5-1.0x) and always packs.
DEF _PW_UNPACKED_MAX_COLS = 1024
# Bias-gradient and partial-sum passes go parallel above this many elements.
DEF _PARALLEL_MIN_ELEMS = 65536
# The rows algorithm (few output pixels) against the GEMMs, in multiply-adds at GEMM speed
# per weight element: packing one (a strided read, a write, and the packed copy read back:
# the bytes that decide a pass with few columns); the rows kernels' multiply-add (their
# tiles load a weight vector per 2 FMAs where the GEMM's load a B vector per 6), measured
# over P = 1..256 and 64..2048 channels (see _rows_pays).  Re-fitted after the GEMM
# micro-kernel got ~1.6x faster: the constants (and the two packing costs below) that make
# the default agree best with autotune's fastest algorithm on 100 sweep layers (seed 11:
# every pass at 1 and 2 threads, 600 tasks; benchmarks/results-planner.md): the GEMM's
# packing now costs more multiply-adds' time, the rows kernel's multiply-adds less.
DEF _ROWS_PACK = 24.0
DEF _ROWS_MAC = 1.25
# ... and the rows algorithm's own copy of the pixels' columns (one element per pixel and
# weight column, whatever m): what makes it lose with few output channels.
DEF _ROWS_COPY = 32.0
# Packing one im2col element costs about this many multiply-adds at GEMM speed: in the
# forward (against the padded grid's wasted columns) and in the weight gradient (against
# the dot kernel's), spread over the m rows of output channels.
DEF _IM2COL_PACK_FWD = 32.0
DEF _IM2COL_PACK_GW = 16.0
# Rows tasks: output channels per forward / weight-gradient task, columns per input-gradient
# task (any cut gives the same bits; these keep tasks of ~100 us on large layers).
DEF _ROWS_CHUNK = 32
DEF _ROWS_K_CHUNK = 128
# Depthwise tasks take whole planes (grad_weight: whole channels) until a task has about this
# many multiply-adds: a 2x2-output plane is ~100 of them, too little to hand out alone.
DEF _DW_TASK_MACS = 65536
# Volume (conv3d) tasks take whole output depth planes, about _vol_task_cols() grid columns
# each (see blocking; a task re-pads the (kd - 1) halo planes it shares with its neighbours).
# Depthwise outputs of at most this many pixels per plane put channels in the vector lanes
# (m == 1): a plane's own copies and loops would cost more than its arithmetic.
DEF _DW_LANES_MAX_PIXELS = 64

# ---- reasons (one line each, for explain) -------------------------------------------------
cdef enum:
    W_EMPTY = 0
    W_TINY
    W_FEW_CHANNELS
    W_NONFINITE_PADDING
    W_WINOGRAD
    W_LANES
    W_PADDED
    W_IM2COL_POINTWISE
    W_IM2COL_COLUMNS
    W_IM2COL_LARGE
    W_DOT
    W_GW_IM2COL
    W_GW_WINOGRAD
    W_COL2IM_STRIDE
    W_COL2IM_NONFINITE
    W_SUM
    W_ALL_PADDING
    W_ROWS
    W_DEPTHWISE
    W_DEPTHWISE_LANES
    W_VOLUME
    W_IM2COL_WEIGHTS
    W_DOT_POINTWISE
    W_IM2COL_IN_PLACE
    W_LANES_ROW
    W_BANDS

REASONS = (
    "no work: an empty batch or no input channels; the output is the bias or zeros",
    "fewer than %d multiply-adds: direct loops, no packing or workspace" % _DIRECT_MAX_MACS,
    "fewer than %d output channels per group: a GEMM tile would be mostly padding"
    % _GEMM_MIN_CHANNELS,
    "a non-finite operand meets the zero padding: a GEMM that multiplies the padding as "
    "PyTorch does",
    "3x3, stride 1, undilated, >= %d channels in and out per group, >= %d output tiles (more "
    "on wide layers), finite operands: 2.25x fewer multiplies"
    % (_WINO_MIN_CHANNELS, _WINO_MIN_TILES),
    "float32 on AVX-512, 12-%d output channels per group filling the 16-lane blocks, and "
    "its padded copy and lane-rounded multiply-adds cost less than im2col's packing"
    % _LANES_MAX_CHANNELS,
    "the padded image copy fits and its grid wastes fewer columns than im2col packing costs",
    "1x1 kernel: im2col is a plain copy into panels, which streams better",
    "padding the grid would waste more columns than packing im2col panels costs",
    "the padded image copy would exceed %d elements" % _PADDED_MAX_ELEMS,
    "register-tiled dot kernel over padded images: fewer wasted grid columns than packing",
    "1x1 kernel or a wide grid: packed GEMM over im2col panels",
    "3x3, stride 1, undilated, finite operands and wide (out x in channels per group >= %d) "
    "or a wasteful grid: Winograd's 16 GEMMs" % _WINO_GW_MIN_MC,
    "stride > 1: GEMM with the transposed weights, then col2im",
    "non-finite weights: GEMM with the transposed weights over real grad_output pixels only",
    "per-channel sums in a fixed order",
    "every kernel tap reads only zero padding: the output is the bias or zeros",
    "few output pixels: streaming the weights once in place costs less than packing or "
    "transposing them for a GEMM over so few columns",
    "depthwise (one input, 1-2 output channels per group): a GEMM tile would be mostly "
    "padding; vector loops over each plane's padded copy",
    "depthwise on small maps (<= %d output pixels, one output channel per group): neighbouring "
    "channels in the vector lanes" % _DW_LANES_MAX_PIXELS,
    "3-d: implicit GEMM over a padded copy of each volume (depth taps are grid offsets), no "
    "stacked copies of the input and no transposed output",
    "one output row (strided, or on a team) and packed weights over half of L2: the padded "
    "grid would stream them from L3 for every block of columns, im2col panels reuse them "
    "longer",
    "1x1 kernel with few channels: register-tiled dot kernel on the input and grad_output in "
    "place, where a GEMM would pad its tiles and transpose both operands into panels",
    "1x1 kernel: the GEMM reads the input in place as its B panels and writes the output "
    "in place, where packing panels and staging the output would cost about as much as the "
    "multiply-adds on few channels or pixels",
    "float32 on AVX-512, one output row (conv1d) filling the 16-lane blocks, >= 2 slices: no "
    "grid columns to waste, aligned weight vectors and broadcast inputs",
    "most multiply-adds would read zero padding (dilation or padding against a small map): "
    "the output in rectangles of equal live taps, each an unpadded im2col pass on its live "
    "taps, costs less than the padded pass with the copies and per-piece overhead",
)

# ---- workspace regions --------------------------------------------------------------------
cdef enum:  # shared regions, booked once per call
    R_FLIPPED = 0     # stride-1 grad_input: the flipped, transposed weights
    R_WEIGHTS = 1     # packed weights: GEMM strips, Winograd U, lanes blocks or W^T
    R_OFFSETS = 2     # kernel-tap offsets (Py_ssize_t) on the padded grid
    R_MASK = 3        # dot kernel: which grid columns are real output pixels
    R_PARTIALS = 4    # weight gradient: partial sums of batch parts 1.. (part 0: the output)
    R_CROPPED = 5     # trimmed taps: the cropped weights, or the cropped weight gradient
    #                   (bands: one rectangle's block of either, its largest)
    R_COLUMNS = 6     # rows: im2col columns with pixels as rows, and a copy of grad_output
    R_PADDED = 7      # padded forward cut into grid chunks: every slice's padded copy
    R_BAND_INPUTS = 8     # bands: a rectangle's input region (its largest)
    R_BAND_OUTPUTS = 9    # bands: a rectangle's output (or grad_output) block
    R_SUB_PASS = 10       # bands: the rectangles' im2col sub-passes' own workspace
    R_BAND_TASKS = 11     # bands: the rectangles run side by side (_BandTask each)
    R_THREADS = 12    # per-thread blocks, t_stride elements each
    N_REGIONS = 13

cdef enum:  # regions inside each thread's block
    T_A = 0           # padded image copy, im2col panels, Winograd tiles, dot images, packed gy
    #                   (bands: a side-by-side rectangle's copies and sub-pass workspace)
    T_B = 1           # C tile, B panel or col block
    N_TREGIONS = 2

REGION_NAMES = ("flipped_weights", "packed_weights", "tap_offsets", "grid_mask",
                "partial_sums", "cropped_weights", "pixel_columns", "padded_images",
                "band_inputs", "band_outputs", "sub_pass", "band_tasks", "per_thread")

cdef struct ConvPlan:
    int pass_                 # P_*
    int algo                  # A_*
    int forced                # 1: the forced algorithm was taken; -1: forced, not applicable
    int reason                # W_*
    int via_forward           # grad_input computed as a forward conv of grad_output
    int needs                 # F_* facts this plan assumed
    int threads               # team size for this pass
    int side_threads          # team for side phases (weight transforms, partial sums)
    int itemsize
    const void *kern          # GEMM micro-kernel (kernel_t_f32 / kernel_t_f64)
    int mr, nr
    cconv_blocking blk        # GEMM cache blocking (_blocking)
    bint span                 # im2col forward: blocks span images
    Py_ssize_t shares         # ... in this many equal shares of the panels per group
    bint stream               # im2col forward: streaming stores
    bint pointwise            # 1x1 stride 1 unpadded: im2col is the input itself
    bint in_place             # ... forward read in place (conv_pointwise.h), not packed
    bint pw_fits              # a 1x1 that can be read in place (_pw_in_place, asked once)
    Py_ssize_t rparts         # ... in this many row parts per column block (whole mr strips)
    bint pw_unpacked          # ... and the weights read in place too (not packed)
    Py_ssize_t nimg, nty, tpad    # Winograd blocking (nimg: also col2im's images per task)
    Py_ssize_t nc             # col2im block columns
    Py_ssize_t parts          # weight gradient: batch parts (fixed order reduction)
    bint trimmed              # the pass runs on kernel taps [tap_h0, +g.kernel_h) x
    Py_ssize_t tap_h0, tap_w0     # [tap_w0, +g.kernel_w) of the full full_kh x full_kw kernel
    Py_ssize_t full_kh, full_kw
    Py_ssize_t chunks         # padded forward: grid column chunks per slice (1: whole slices)
    Py_ssize_t oblocks        # dot weight gradient: output-channel blocks per batch part
    Py_ssize_t planes         # depthwise: planes per task (grad_weight: channels per task)
    bint dw_lanes             # ... counted in blocks of channels in the vector lanes
    bint dot_finite           # dot weight gradient: x is finite, the mask-free kernel runs
    cconv_geom g              # slice geometry the driver runs (transposed for via_forward)
    cconv_depth d             # volume: its depth dimension (zeros for a 2-d plan)
    Py_ssize_t dchunk         # volume: output depth planes per task
    bint vol_rows             # volume: output rows of whole panels written in place
    bint vol_wide             # volume: runs the 4 x 3-vector tile (_choose_vol_kernel)
    Py_ssize_t tap_d0, full_kd    # volume, trimmed: depth taps [tap_d0, +d.kernel_d) of full_kd
    Py_ssize_t batch, groups, m   # m: output channels per group of that geometry
    Py_ssize_t pieces         # bands: rectangles with live taps (sub-passes run)
    int sub_threads           # bands: the thread count the sub-passes are planned with
    bint split_h, split_w     # bands: rows / columns cut into bands (else whole, padded)
    Py_ssize_t side           # bands: rectangles run side by side, one thread each
    Py_ssize_t band_t[4]      # ... their input region, output, weight block, sub-pass
    #                           workspace: offsets in the thread's T_A block
    Py_ssize_t off[N_REGIONS]
    Py_ssize_t size[N_REGIONS]
    Py_ssize_t t_off[N_TREGIONS]
    Py_ssize_t t_size[N_TREGIONS]
    Py_ssize_t t_stride
    Py_ssize_t ws_elems       # total workspace, elements of the float type


cdef int _env_algo = -1       # CCONV_CONV_ALGO, -1: none
# The algorithm forced on the plan being made, -1: none.  plan_conv sets it for each planning
# (the caller's choice, else CCONV_CONV_ALGO's); the choice functions below honour it where
# the algorithm applies and is exact, and set p.forced to say whether it did.
cdef int _forced_algo = -1


cdef int _read_forced_algo() except -2:
    import os
    want = os.environ.get("CCONV_CONV_ALGO", "").strip().lower()
    if not want:
        return -1
    choosable = ALGORITHMS[1:]
    if want not in choosable:
        raise ValueError(f"CCONV_CONV_ALGO={want!r} is not an algorithm; accepted: "
                         f"{', '.join(choosable)} (or unset: the planner chooses)")
    return ALGORITHMS.index(want)


_env_algo = _read_forced_algo()


# ---- cache blocking ----------------------------------------------------------------------
# Every cache-sized quantity of a plan, from the data cache sizes probed at import (isa.pxi;
# CCONV_CACHE_BYTES overrides), in one place.  The GEMMs are blocked GotoBLAS-style: the
# micro-kernel keeps an mr x nr tile of C in registers and streams an A strip (mr x kc) and a
# B panel (kc x nr); gemm_macro runs every A strip of a row block against one B panel.
#   kc: the B panel (kc x nr, reread for every A strip) fills half of L1d, the A strip and the
#       C tile's lines the rest: kc = L1d / (2 nr itemsize), a multiple of 8 in
#       [8, CCONV_KC_MAX].  The type enters through nr * itemsize (one vector per panel row:
#       64 bytes on AVX2 for both types, so kc = 256 on a 32 KiB L1d).
#   mc: the A block (mc x kc, rounded down to whole mr strips by the drivers) stays in L2
#       while the B panels stream: 3/8 of L2 counted in float64 (mc = 96 at 512 KiB and
#       kc = 256).  float32 blocks keep float64's shape (half the bytes): the constants
#       these rules reproduce were tuned as one shape for both types.
#   nc: a B block (kc x nc) of packed im2col panels, reread for every row block, takes 3/4 of
#       L2 in float64 (192 columns), a multiple of nr.
#   dot_gy_bytes: the dot-kernel weight gradient keeps this much grad_output in L2 while
#       every tap of the padded images passes over it: 3/8 of L2.
#   _padded_a_bytes(): packed weights up to half of L2 stay there for the padded grid.
#   _vol_task_cols(): a volume task's grid columns, L2 / 128: the padded copy of those
#       columns stays within L2 for up to 128 bytes of channels (32 float32 channels).
# On the machine the planner was tuned on (32 KiB L1d, 512 KiB L2) these are the fitted
# constants: kc 256, mc 96, nc 192, 192 KiB of grad_output, 256 KiB of weights, 4096 columns.

cdef void _blocking(ConvPlan *p) noexcept nogil:
    """p.blk from the cache sizes, the float type and the micro-kernel's nr."""
    cdef long long l1 = cconv_cache_bytes[0], l2 = cconv_cache_bytes[1]
    cdef Py_ssize_t kc = <Py_ssize_t>(l1 // (2 * p.nr * p.itemsize)) // 8 * 8
    kc = max(<Py_ssize_t>8, min(kc, <Py_ssize_t>CCONV_KC_MAX))
    p.blk.kc = kc
    p.blk.mc = max(<Py_ssize_t>1, <Py_ssize_t>(3 * l2 // (8 * 8 * kc)))
    p.blk.nc = max(<Py_ssize_t>p.nr, <Py_ssize_t>(3 * l2 // (4 * 8 * kc)) // p.nr * p.nr)
    p.blk.dot_gy_bytes = <Py_ssize_t>(3 * l2 // 8)


cdef inline Py_ssize_t _padded_a_bytes() noexcept nogil:
    return <Py_ssize_t>(cconv_cache_bytes[1] // 2)


cdef inline Py_ssize_t _vol_task_cols() noexcept nogil:
    return max(<Py_ssize_t>1, <Py_ssize_t>(cconv_cache_bytes[1] // 128))


# ---- small helpers ------------------------------------------------------------------------

cdef inline Py_ssize_t _round_up(Py_ssize_t v, Py_ssize_t step) noexcept nogil:
    return (v + step - 1) // step * step


cdef inline Py_ssize_t _padded_rows(int mr, Py_ssize_t rows) noexcept nogil:
    return _round_up(rows, mr)


cdef inline void _base_kernel(int itemsize, const void **kern, int *mr, int *nr,
                              const void **tall, int *tall_mr) noexcept nogil:
    if itemsize == 4:
        kern[0] = cconv_kernel_f32()
        mr[0] = cconv_kernel_f32().mr
        nr[0] = cconv_kernel_f32().nr
        tall[0] = cconv_kernel_tall_f32()
        tall_mr[0] = cconv_kernel_tall_f32().mr if tall[0] != NULL else 0
    else:
        kern[0] = cconv_kernel_f64()
        mr[0] = cconv_kernel_f64().mr
        nr[0] = cconv_kernel_f64().nr
        tall[0] = cconv_kernel_tall_f64()
        tall_mr[0] = cconv_kernel_tall_f64().mr if tall[0] != NULL else 0


cdef void _choose_kernel(ConvPlan *p, Py_ssize_t rows, bint winograd) noexcept nogil:
    """The micro-kernel for a GEMM whose A operand has `rows` rows: the taller-strip
    variant when it pads fewer rows (16 rows: 16 instead of 18; 512: 512 instead of 516,
    +3% on the pointwise gradients); Winograd's GEMMs only when it pads >= 5% fewer (with
    256 rows they lost: ImageNet-256 forward 6.4 -> 7.9 ms)."""
    cdef const void *tall
    cdef int tall_mr
    _base_kernel(p.itemsize, &p.kern, &p.mr, &p.nr, &tall, &tall_mr)
    if tall == NULL:
        return
    if ((not winograd and _padded_rows(tall_mr, rows) < _padded_rows(p.mr, rows))
            or (winograd and 20 * _padded_rows(tall_mr, rows) <= 19 * _padded_rows(p.mr, rows))):
        p.kern = tall
        p.mr = tall_mr


cdef inline bint _reads_padding(const cconv_geom *s) noexcept nogil:
    """Whether some kernel tap of some output pixel falls in the zero padding."""
    return (s.pad_top > 0 or s.pad_left > 0
            or (s.out_h - 1) * s.stride_h + s.dilation_h * (s.kernel_h - 1) - s.pad_top >= s.in_h
            or (s.out_w - 1) * s.stride_w + s.dilation_w * (s.kernel_w - 1) - s.pad_left >= s.in_w)


cdef void _live_taps(Py_ssize_t size, Py_ssize_t out, Py_ssize_t kernel, Py_ssize_t stride,
                     Py_ssize_t dilation, Py_ssize_t pad, Py_ssize_t *lo,
                     Py_ssize_t *hi) noexcept nogil:
    """[lo, hi]: the kernel taps of one spatial dimension that read a real input row (not
    the zero padding) for at least one of the `out` output positions; tap t of output o
    reads row o*stride + t*dilation - pad of `size`.  lo > hi when no tap does.  lo is at
    most pad // dilation, so the cropped kernel's padding (pad - lo*dilation) is never
    negative (a tap kept below it is dead but harmless)."""
    cdef Py_ssize_t t, r, o
    lo[0] = kernel
    hi[0] = -1
    for t in range(kernel):
        r = t * dilation - pad                              # the row output 0 reads
        o = 0 if r >= 0 else (-r + stride - 1) // stride    # first output on a real row
        if o < out and r + o * stride < size:
            lo[0] = min(lo[0], t)
            hi[0] = t
    if hi[0] >= 0:
        lo[0] = min(lo[0], pad // dilation)


cdef int _trim_taps(ConvPlan *p, int fin, double uses) noexcept nogil:
    """Crops p.g to the live kernel taps of each dimension (padding reduced by the dropped
    leading taps, output size unchanged) and books the cropped weights (forward, input
    gradient) or weight gradient.  Returns 0: nothing dropped; 1: cropped; 2: no live tap.
    A dead tap multiplies only zero padding, which PyTorch computes (0 * inf = NaN): it is
    dropped from a forward pass only if the weights are finite, from a weight gradient only
    if grad_output is (the other slice is never read).  The input gradient never adds a
    dead tap's products to a real pixel: no condition.  uses: how many times the pass uses
    each weight (output pixels over the batch); below _TRIM_PLANE_MACS saved multiply-adds
    per plane the dead taps are computed instead (0)."""
    cdef cconv_geom *s = &p.g
    cdef Py_ssize_t h0, h1, w0, w1
    _live_taps(s.in_h, s.out_h, s.kernel_h, s.stride_h, s.dilation_h, s.pad_top, &h0, &h1)
    _live_taps(s.in_w, s.out_w, s.kernel_w, s.stride_w, s.dilation_w, s.pad_left, &w0, &w1)
    if h0 == 0 and h1 == s.kernel_h - 1 and w0 == 0 and w1 == s.kernel_w - 1:
        return 0
    if p.pass_ != P_GRAD_INPUT:
        p.needs |= F_OTHER
        if not (fin & F_OTHER):
            return 0
    if h1 < h0 or w1 < w0:
        return 2
    # Cropping costs a strided copy of every plane's weights (and the weight gradient an
    # uncrop and a clear of the full array) and saves `uses` multiply-adds per dead tap and
    # plane: on small maps at small batch that trade loses.
    if uses * (s.kernel_h * s.kernel_w - (h1 - h0 + 1) * (w1 - w0 + 1)) < _TRIM_PLANE_MACS:
        return 0
    p.trimmed = True
    p.tap_h0 = h0
    p.tap_w0 = w0
    p.full_kh = s.kernel_h
    p.full_kw = s.kernel_w
    s.pad_top -= h0 * s.dilation_h
    s.pad_left -= w0 * s.dilation_w
    s.kernel_h = h1 - h0 + 1
    s.kernel_w = w1 - w0 + 1
    _book(p, R_CROPPED, p.groups * p.m * s.channels * s.kernel_h * s.kernel_w)
    return 1


# ---- bands: the output in rectangles of equal live taps ------------------------------------
# Tap t of output o reads row o*stride + t*dilation - pad: the taps that read a real row form
# a contiguous range [t0, t1) that moves monotonically with o, so the outputs of one
# dimension fall into at most 2k-1 bands of equal ranges, and rows and columns are
# independent.  On a rectangle (row band x column band) the pass is an ordinary unpadded
# convolution of a cropped input region with the cropped kernel [t0h, t1h) x [t0w, t1w):
# summed over the rectangles that is exactly the multiply-adds that read real input.  Each
# rectangle costs a copy of its input region and output (or grad_output) block and a
# sub-pass's fixed overhead (planning, scratch, a team's wake-up, packing its weights).
DEF _BANDS_MAX_KERNEL = 64
# Fixed cost of one rectangle's sub-pass besides its weights, in multiply-adds at GEMM speed:
# the sub-plan lookup, the scratch and a team's wake-up, a few us (not fitted).
DEF _BANDS_PIECE = 143000.0
# Bands must save this fraction of the padded pass's modelled cost: the model does not see
# the sub-passes' smaller GEMMs (partial tiles on thin bands).
DEF _BANDS_MARGIN = 0.8
# Copying one element of a rectangle's input region or output block (whole rows, memcpy),
# in multiply-adds at GEMM speed: a quarter of packing an im2col element (_IM2COL_PACK_FWD).
DEF _BANDS_COPY = 8.0
# Copying (element loops) and packing one weight element of a rectangle's taps: ~1.3 ns
# each, measured (perf) on N1 C80->144 14x21 dilation 12 at ~50 multiply-adds per ns.
DEF _BANDS_WEIGHT = 64.0


cdef Py_ssize_t cconv_bands(Py_ssize_t size, Py_ssize_t out, Py_ssize_t kernel,
                            Py_ssize_t stride, Py_ssize_t dilation, Py_ssize_t pad,
                            Py_ssize_t *b, double *sums) noexcept nogil:
    """The bands of one dimension with at least one live tap, into b[4 i ..]: outputs
    [o0, o1) and taps [t0, t1); returns how many (at most 2 kernel).  sums[0]: live
    (output, tap) pairs; sums[1]: input rows the bands' regions span; sums[2]: outputs with
    a live tap.  b must hold 4 * (2 kernel + 2) entries."""
    cdef Py_ssize_t o, base, t0, t1, n = 0, cur0 = -1, cur1 = -1
    sums[0] = sums[1] = sums[2] = 0
    for o in range(out):
        base = o * stride - pad
        t0 = 0 if base >= 0 else (-base + dilation - 1) // dilation
        t1 = 0 if base >= size else min(kernel, (size - 1 - base) // dilation + 1)
        if t1 <= t0:
            cur0 = cur1 = -1          # a position with no live tap ends the band
            continue
        sums[0] += t1 - t0
        sums[2] += 1
        if t0 != cur0 or t1 != cur1:
            b[4 * n] = o
            b[4 * n + 2] = t0
            b[4 * n + 3] = t1
            n += 1
            cur0 = t0
            cur1 = t1
        b[4 * n - 3] = o + 1
    for o in range(n):
        sums[1] += ((b[4 * o + 1] - 1 - b[4 * o]) * stride
                    + (b[4 * o + 3] - 1 - b[4 * o + 2]) * dilation + 1)
    return n


cdef Py_ssize_t _bands_list(const cconv_geom *s, bint rows, bint split,
                            Py_ssize_t *b) noexcept nogil:
    """One dimension's bands (cconv_bands) when split, else one band: the whole dimension
    (outputs [0, out), taps [0, k), its padding kept); b as cconv_bands's."""
    cdef double sums[3]
    cdef Py_ssize_t out = s.out_h if rows else s.out_w, k = s.kernel_h if rows else s.kernel_w
    if not split:
        b[0] = 0
        b[1] = out
        b[2] = 0
        b[3] = k
        return 1
    return cconv_bands(s.in_h if rows else s.in_w, out, k, s.stride_h if rows else s.stride_w,
                       s.dilation_h if rows else s.dilation_w,
                       s.pad_top if rows else s.pad_left, b, sums)


cdef inline Py_ssize_t _band_start(const cconv_geom *s, bint rows, bint split,
                                   const Py_ssize_t *b) noexcept nogil:
    """First input row (column) of a band's region: its first output's first live tap, or 0
    for a dimension not cut (the whole of it, padding kept)."""
    if not split:
        return 0
    if rows:
        return b[0] * s.stride_h - s.pad_top + b[2] * s.dilation_h
    return b[0] * s.stride_w - s.pad_left + b[2] * s.dilation_w


cdef inline Py_ssize_t _band_span(const cconv_geom *s, bint rows, bint split,
                                  const Py_ssize_t *b) noexcept nogil:
    """Input rows (columns) a band's region copies."""
    if not split:
        return s.in_h if rows else s.in_w
    return ((b[1] - 1 - b[0]) * (s.stride_h if rows else s.stride_w)
            + (b[3] - 1 - b[2]) * (s.dilation_h if rows else s.dilation_w) + 1)


cdef int _bands_cost(ConvPlan *p, double pack, double full_per_col) noexcept nogil:
    """Chooses how bands cut p.g (forward-shaped: also a stride-1 grad_input on its
    transposed geometry; or a weight gradient): rows, columns or both into bands (a
    dimension not cut keeps its padding), into p.split_h, p.split_w, p.pieces.  Returns 0:
    bands do not apply (no multiply-add reads the padding, a kernel over _BANDS_MAX_KERNEL
    taps); 1: apply but cost more than the padded pass; 2: apply and pay.  Cost in
    multiply-adds at GEMM speed, per rectangle: its GEMM over its live taps and its columns
    rounded up to whole nr panels (a rectangle of 2 pixels computes a whole panel), (m +
    pack) per tap and column (pack: the im2col packing spread over m rows; full_per_col
    for the padded pass, its algorithm's rate); copying its input region and output block
    (_BANDS_COPY per element); copying and packing its weights (_BANDS_WEIGHT per
    element); _BANDS_PIECE.  The padded pass runs every tap on every column, packs the
    weights once."""
    cdef const cconv_geom *s = &p.g
    cdef Py_ssize_t bh[4 * (2 * _BANDS_MAX_KERNEL + 2)]
    cdef Py_ssize_t bw[4 * (2 * _BANDS_MAX_KERNEL + 2)]
    cdef double C = s.channels, m = p.m, G = p.groups, N = p.batch
    cdef double cost, best = -1, full, taps, cols
    cdef double live_all = 0
    cdef Py_ssize_t nh, nw, i, j
    cdef int sh, sw
    p.pieces = 0
    if s.kernel_h > _BANDS_MAX_KERNEL or s.kernel_w > _BANDS_MAX_KERNEL or not _reads_padding(s):
        return 0
    full = (G * C * s.kernel_h * s.kernel_w * full_per_col
            * _round_up(p.batch * s.out_h * s.out_w, p.nr)
            + G * m * C * s.kernel_h * s.kernel_w * _BANDS_WEIGHT)
    for sh in range(2):
        for sw in range(2):
            if not (sh or sw):
                continue
            nh = _bands_list(s, True, sh, bh)
            nw = _bands_list(s, False, sw, bw)
            if nh * nw == 0:
                continue
            cost = nh * nw * _BANDS_PIECE
            live_all = 0
            for i in range(nh):
                for j in range(nw):
                    taps = <double>(bh[4 * i + 3] - bh[4 * i + 2]) * (bw[4 * j + 3] - bw[4 * j + 2])
                    cols = _round_up(p.batch * (bh[4 * i + 1] - bh[4 * i])
                                     * (bw[4 * j + 1] - bw[4 * j]), p.nr)
                    live_all += taps * (bh[4 * i + 1] - bh[4 * i]) * (bw[4 * j + 1] - bw[4 * j])
                    cost += (G * C * taps * cols * (m + pack)
                             + G * m * C * taps * _BANDS_WEIGHT
                             + _BANDS_COPY * N * G * (C * _band_span(s, True, sh, bh + 4 * i)
                                                      * _band_span(s, False, sw, bw + 4 * j)
                                                      + m * cols / N))
            if live_all >= <double>s.kernel_h * s.kernel_w * s.out_h * s.out_w:
                continue      # nothing skipped
            if best < 0 or cost < best:
                best = cost
                p.split_h = sh
                p.split_w = sw
                p.pieces = nh * nw
    if best < 0:
        return 0
    return 2 if best < _BANDS_MARGIN * full else 1


cdef inline void _band_geom(const cconv_geom *s, bint split_h, bint split_w,
                            const Py_ssize_t *bh, const Py_ssize_t *bw,
                            cconv_geom *s2) noexcept nogil:
    """s2: the unpadded (in a dimension not cut: padded as s) sub-pass of the rectangle of
    row band bh and column band bw (4 entries each, as cconv_bands's) of pass s: its input
    region's size, the band's live taps, its outputs."""
    s2[0] = s[0]
    s2.in_h = _band_span(s, True, split_h, bh)
    s2.in_w = _band_span(s, False, split_w, bw)
    s2.pad_top = 0 if split_h else s.pad_top
    s2.pad_left = 0 if split_w else s.pad_left
    s2.kernel_h = bh[3] - bh[2]
    s2.kernel_w = bw[3] - bw[2]
    s2.out_h = bh[1] - bh[0]
    s2.out_w = bw[1] - bw[0]


cdef struct _BandTask:
    ConvPlan sub              # its sub-pass, on one thread
    Py_ssize_t i, j           # row band, column band
    double macs


cdef inline double _band_macs(const ConvPlan *p, const cconv_geom *s2) noexcept nogil:
    return (<double>p.batch * p.groups * p.m * s2.channels * s2.kernel_h * s2.kernel_w
            * s2.out_h * s2.out_w)


cdef inline bint _band_side(const ConvPlan *p, double macs, double total) noexcept nogil:
    """Whether a rectangle of `macs` multiply-adds (of `total` in the pass) runs side by side
    with others, each on one thread, rather than on the whole team: in a forward-shaped pass
    on a team, when it is no more than an equal share of the team's work (a larger one would
    hold up the others).  Measured at 2 threads on benchmarks/dilated_pairs.py's layers
    (results-dilated.md): forwards 0.59-0.90x the time, input gradients mostly faster
    (0.72-1.14x); weight gradients 1.03-1.24x slower on 7 of 8 (their 3 rectangles, one
    about half the work, their blocks kept apart and added in order): they stay on the team."""
    return p.threads > 1 and p.pass_ != P_GRAD_WEIGHT and macs * p.threads <= total


cdef void _plan_bands(ConvPlan *p) noexcept nogil:
    """Books a bands plan's buffers (p.g, p.split_h, p.split_w chosen by _bands_cost).  On a
    team the rectangles of a forward-shaped pass of at most an equal share of the work
    (_band_side) run side by side, one thread each (if there are two or more): each thread's
    T_A block holds the largest of their input regions, output blocks, weight blocks and
    their sub-passes' workspaces on one thread; band_tasks their plans.  The others run one
    after another on the team: the largest of their input regions, output (or grad_output)
    blocks, weight (or weight gradient) blocks and sub-pass workspaces.  Each sub-pass is
    the plan its driver asks for, im2col forced (planned here without the cache, which may
    hold the plan being made).  A stride-1 input gradient also books the flipped kernel
    (_plan_grad_input)."""
    cdef const cconv_geom *s = &p.g
    cdef Py_ssize_t bh[4 * (2 * _BANDS_MAX_KERNEL + 2)]
    cdef Py_ssize_t bw[4 * (2 * _BANDS_MAX_KERNEL + 2)]
    cdef Py_ssize_t nh, nw, i, j, k
    cdef Py_ssize_t big[4]
    cdef Py_ssize_t side[4]
    cdef Py_ssize_t *at
    cdef Py_ssize_t O = p.groups * p.m, Cin = p.groups * s.channels
    cdef int saved = _forced_algo
    cdef int pass_ = P_GRAD_WEIGHT if p.pass_ == P_GRAD_WEIGHT else P_FORWARD
    cdef double total = 0, macs
    cdef bint on_side
    cdef cconv_geom s2
    cdef ConvPlan sub
    global _forced_algo
    p.sub_threads = p.threads
    p.side = 0
    nh = _bands_list(s, True, p.split_h, bh)
    nw = _bands_list(s, False, p.split_w, bw)
    for k in range(4):
        big[k] = side[k] = 0
    for i in range(nh):
        for j in range(nw):
            _band_geom(s, p.split_h, p.split_w, bh + 4 * i, bw + 4 * j, &s2)
            total += _band_macs(p, &s2)
    for i in range(nh):
        for j in range(nw):
            _band_geom(s, p.split_h, p.split_w, bh + 4 * i, bw + 4 * j, &s2)
            on_side = _band_side(p, _band_macs(p, &s2), total)
            at = &side[0] if on_side else &big[0]
            at[0] = max(at[0], p.batch * Cin * s2.in_h * s2.in_w)
            at[1] = max(at[1], p.batch * O * s2.out_h * s2.out_w)
            at[2] = max(at[2], O * s2.channels * s2.kernel_h * s2.kernel_w)
            _forced_algo = A_IM2COL
            _plan_pass(&sub, pass_, &s2, p.batch, p.groups, p.m, p.itemsize,
                       1 if on_side else p.sub_threads, F_ALL)
            _forced_algo = saved
            at[3] = max(at[3], sub.ws_elems)
            p.side += on_side
    if p.side < 2:            # one rectangle side by side is one on a team of one: recount
        p.side = 0
        for k in range(4):
            big[k] = max(big[k], side[k])
        if side[3]:           # its sub-pass on the team
            for i in range(nh):
                for j in range(nw):
                    _band_geom(s, p.split_h, p.split_w, bh + 4 * i, bw + 4 * j, &s2)
                    _forced_algo = A_IM2COL
                    _plan_pass(&sub, pass_, &s2, p.batch, p.groups, p.m, p.itemsize,
                               p.sub_threads, F_ALL)
                    _forced_algo = saved
                    big[3] = max(big[3], sub.ws_elems)
    _book(p, R_BAND_INPUTS, big[0])
    _book(p, R_BAND_OUTPUTS, big[1])
    _book(p, R_CROPPED, big[2])
    _book(p, R_SUB_PASS, big[3])
    if p.side:
        _book(p, R_BAND_TASKS, p.side * ((sizeof(_BandTask) + p.itemsize - 1) // p.itemsize))
        k = 0
        for i in range(4):
            p.band_t[i] = k
            k += _round_up(side[i], 16)
        _book_thread(p, T_A, k)


cdef inline bint _is_3x3_unit(const cconv_geom *s) noexcept nogil:
    return (s.kernel_h == 3 and s.kernel_w == 3 and s.stride_h == 1 and s.stride_w == 1
            and s.dilation_h == 1 and s.dilation_w == 1)


cdef inline bint _wino_pays(const ConvPlan *p) noexcept nogil:
    """3x3, stride 1, undilated, enough channels and enough 2x2 output tiles over the batch
    to repay streaming the 16 GEMM strips (more tiles on a team)."""
    cdef const cconv_geom *s = &p.g
    cdef double strips = 16.0 * p.m * s.channels * p.itemsize / _WINO_STRIPS_BYTES
    if p.threads > 1:
        strips *= _WINO_TEAM_STRIPS
    return (_is_3x3_unit(s) and p.m >= _WINO_MIN_CHANNELS and s.channels >= _WINO_MIN_CHANNELS
            and p.batch * ((s.out_h + 1) // 2) * ((s.out_w + 1) // 2)
            >= _WINO_MIN_TILES * (1.0 + strips))


cdef inline bint _is_pointwise(const cconv_geom *s) noexcept nogil:
    return (s.kernel_h == 1 and s.kernel_w == 1 and s.stride_h == 1 and s.stride_w == 1
            and s.pad_top == 0 and s.pad_left == 0 and s.in_h == s.out_h and s.in_w == s.out_w)


cdef inline Py_ssize_t _padded_size(const ConvPlan *p) noexcept nogil:
    if p.itemsize == 4:
        return padded_size_f32(&p.g, p.nr)
    return padded_size_f64(&p.g, p.nr)


cdef inline bint _lanes_fit(const ConvPlan *p) noexcept nogil:
    return (p.itemsize == 4 and cconv_lanes_available() and cconv_lanes_cols(&p.g) > 0
            and padded_size_f32(&p.g, CCONV_LANES_SLACK) <= _PADDED_MAX_ELEMS)


cdef inline Py_ssize_t _dot_scratch(const ConvPlan *p) noexcept nogil:
    """Elements of one thread's dot-kernel images (0: too large for the dot kernel)."""
    if p.itemsize == 4:
        return dot_images_f32(&p.g, p.m, p.nr) * dot_image_size_f32(&p.g, p.m, p.nr)
    return dot_images_f64(&p.g, p.m, p.nr) * dot_image_size_f64(&p.g, p.m, p.nr)


cdef inline bint _has_dot(int itemsize) noexcept nogil:
    if itemsize == 4:
        return cconv_kernel_f32().dot != NULL
    return cconv_kernel_f64().dot != NULL


cdef inline Py_ssize_t _dot_grid(const ConvPlan *p) noexcept nogil:
    if p.itemsize == 4:
        return dot_grid_f32(&p.g)
    return dot_grid_f64(&p.g)


cdef inline Py_ssize_t _offsets_elems(Py_ssize_t K, int itemsize) noexcept nogil:
    """Elements of the float type holding K Py_ssize_t tap offsets."""
    return K * sizeof(Py_ssize_t) // itemsize + 1


cdef inline void _book(ConvPlan *p, int region, Py_ssize_t elems) noexcept nogil:
    p.size[region] = _round_up(elems, 16)


cdef inline void _book_thread(ConvPlan *p, int region, Py_ssize_t elems) noexcept nogil:
    p.t_size[region] = _round_up(elems, 16)


cdef void _lay_out(ConvPlan *p) noexcept nogil:
    """Offsets of every booked region (64-byte aligned for float32), per-thread blocks last."""
    cdef Py_ssize_t at = 0
    cdef int r
    for r in range(N_TREGIONS):
        p.t_off[r] = at
        at += p.t_size[r]
    p.t_stride = at
    p.size[R_THREADS] = p.threads * p.t_stride
    at = 0
    for r in range(N_REGIONS):
        p.off[r] = at
        at += p.size[r]
    p.ws_elems = at


cdef inline int _team(int threads, double macs, Py_ssize_t tasks) noexcept nogil:
    """Threads for a conv pass: at most one per _PARALLEL_MIN_MACS multiply-adds."""
    return _grain_team(threads, macs, _PARALLEL_MIN_MACS, tasks)


cdef void _wino_blocking(ConvPlan *p) noexcept nogil:
    """Tiles per Winograd task: about _WINO_BLOCK_ELEMS of scratch, as tile rows of one
    image or, for small images, whole images (nimg of them)."""
    cdef const cconv_geom *s = &p.g
    cdef Py_ssize_t tw = (s.out_w + 1) // 2, th = (s.out_h + 1) // 2
    cdef Py_ssize_t tiles = _WINO_BLOCK_ELEMS // (16 * (s.channels + p.m))
    tiles = max(<Py_ssize_t>p.nr, min(tiles, <Py_ssize_t>8 * p.nr))
    p.nty = max(<Py_ssize_t>1, min(th, tiles // tw))
    p.nimg = 1
    if p.nty == th:
        p.nimg = max(<Py_ssize_t>1, min(p.batch, tiles // (th * tw)))
    p.tpad = _round_up(p.nimg * p.nty * tw, p.nr)


# ---- depthwise ----------------------------------------------------------------------------

cdef bint _plan_depthwise(ConvPlan *p, double macs, int fin) noexcept nogil:
    """Plans a depthwise pass (one input channel, 1-2 output channels per group) and returns
    True; False where it does not apply (another algorithm forced, a padded plane over
    _PADDED_MAX_ELEMS, a tiny single-channel forward or weight gradient, or an input gradient
    with non-finite weights: its zero margins would meet them where PyTorch multiplies
    nothing)."""
    cdef const cconv_geom *s = &p.g
    cdef Py_ssize_t total, per, khw = s.kernel_h * s.kernel_w, width
    cdef double plane_macs
    if (s.channels != 1 or p.m > 2 or p.pass_ == P_GRAD_BIAS
            or (_forced_algo >= 0 and _forced_algo != A_DEPTHWISE)
            or _padded_size(p) > _PADDED_MAX_ELEMS):
        return False
    # Tiny passes too when they are depthwise layers (groups > 1): the direct loops cost a
    # call per output pixel and tap row, the depthwise kernels a plane copy (forward 1.3-9x,
    # weight gradient 0.8-2.6x faster on 2.6k-29k multiply-adds, maps 1-16, 4-176
    # channels).  A tiny single-channel conv keeps the direct loops where they are exact.
    if (_forced_algo != A_DEPTHWISE and macs < _DIRECT_MAX_MACS and p.groups == 1
            and p.pass_ != P_GRAD_INPUT and (not _reads_padding(s) or (fin & F_OTHER))):
        return False
    if p.pass_ == P_GRAD_INPUT:
        p.needs |= F_OTHER
        if not (fin & F_OTHER):
            return False
    p.algo = A_DEPTHWISE
    p.reason = W_DEPTHWISE
    p.forced = 1 if _forced_algo == A_DEPTHWISE else 0
    width = dw_lanes_width_f32() if p.itemsize == 4 else dw_lanes_width_f64()
    p.dw_lanes = (dw_lanes_available_f32() and p.m == 1 and p.groups >= width
                  and s.out_h * s.out_w <= _DW_LANES_MAX_PIXELS)
    total = p.batch * p.groups
    plane_macs = p.m * khw * s.out_h * s.out_w + s.in_h * s.in_w
    if p.dw_lanes:
        p.reason = W_DEPTHWISE_LANES
        total = p.batch * ((p.groups + width - 1) // width)
        plane_macs *= width
    if p.pass_ == P_GRAD_WEIGHT:
        total = total // p.batch
        plane_macs *= p.batch
    # whole planes per task up to _DW_TASK_MACS, but at least 4 tasks per thread
    per = max(<Py_ssize_t>1, <Py_ssize_t>(_DW_TASK_MACS / plane_macs))
    p.planes = max(<Py_ssize_t>1, min(per, total // (4 * max(p.threads, 1))))
    p.threads = _team(p.threads, macs, (total + p.planes - 1) // p.planes)
    if p.dw_lanes:
        if p.pass_ != P_GRAD_WEIGHT:
            _book(p, R_WEIGHTS, total // p.batch * width * khw)
        _book_thread(p, T_A, dw_lanes_ws_f32(s) if p.itemsize == 4 else dw_lanes_ws_f64(s))
    elif p.pass_ == P_FORWARD:
        _book(p, R_OFFSETS, _offsets_elems(khw, p.itemsize))
        _book_thread(p, T_A, dw_ws_forward_f32(s) if p.itemsize == 4 else dw_ws_forward_f64(s))
    elif p.pass_ == P_GRAD_INPUT:
        _book(p, R_OFFSETS, _offsets_elems(dw_gi_table_size_f32(s, p.m), p.itemsize))
        _book_thread(p, T_A, dw_ws_grad_input_f32(s, p.m) if p.itemsize == 4
                     else dw_ws_grad_input_f64(s, p.m))
    else:
        _book(p, R_OFFSETS, _offsets_elems(khw, p.itemsize))
        _book_thread(p, T_A, dw_ws_grad_weight_f32(s, p.m) if p.itemsize == 4
                     else dw_ws_grad_weight_f64(s, p.m))
    _lay_out(p)
    return True


# ---- forward (also the stride-1 input gradient) ------------------------------------------

cdef inline bint _spans_images(const ConvPlan *p) noexcept nogil:
    """Packed-im2col forward blocks span images when an image's last panel would be mostly
    empty (more than 1/16 of its columns wasted)."""
    cdef Py_ssize_t P = p.g.out_h * p.g.out_w
    return p.batch > 1 and 16 * (_round_up(P, p.nr) - P) > _round_up(P, p.nr)


cdef inline Py_ssize_t _phases_read(Py_ssize_t kernel, Py_ssize_t dilation,
                                    Py_ssize_t stride) noexcept nogil:
    """Stride phases of one dimension that some kernel tap reads: the distinct t*dilation
    mod stride over the taps t."""
    cdef Py_ssize_t t, u, n = 0
    cdef bint seen
    for t in range(kernel):
        seen = False
        for u in range(t):
            if (u * dilation) % stride == (t * dilation) % stride:
                seen = True
                break
        n += not seen
    return n


cdef inline double _unread_phase_elems(const cconv_geom *s) noexcept nogil:
    """Elements of a padded polyphase image copy (padded_size) in the stride phases that no
    kernel tap reads: a stride above the kernel (or a dilation sharing a factor with the
    stride) leaves whole phases that the dot kernel and the padded grid copy for nothing."""
    cdef Py_ssize_t hreq = (s.out_h - 1) * s.stride_h + s.dilation_h * (s.kernel_h - 1) + 1
    cdef Py_ssize_t wreq = (s.out_w - 1) * s.stride_w + s.dilation_w * (s.kernel_w - 1) + 1
    cdef double plane = (<double>((hreq + s.stride_h - 1) // s.stride_h)
                         * ((wreq + s.stride_w - 1) // s.stride_w))
    return s.channels * plane * (s.stride_h * s.stride_w
                                 - _phases_read(s.kernel_h, s.dilation_h, s.stride_h)
                                 * _phases_read(s.kernel_w, s.dilation_w, s.stride_w))


cdef inline double _padded_copy_cols(const ConvPlan *p) noexcept nogil:
    """The padded polyphase copies of a forward over the batch (every stride phase of each
    image slice), in the column units of the padded / im2col rule (multiply-adds per weight
    column, so over the K weight columns): a copied element of a phase some kernel tap reads
    costs half of what packing an im2col element does (_IM2COL_PACK_FWD: rows copied whole,
    where packing gathers K values per pixel), one of a phase no tap reads
    (_unread_phase_elems: a stride above the kernel) a whole one: pure overhead."""
    cdef double K = p.g.channels * p.g.kernel_h * p.g.kernel_w
    cdef double unread = _unread_phase_elems(&p.g)
    return (_IM2COL_PACK_FWD * p.batch
            * (0.5 * padded_size_f32(&p.g, CCONV_LANES_SLACK) + 0.5 * unread) / K)


cdef bint _lanes_pays(const ConvPlan *p) noexcept nogil:
    """Whether channels in lanes cost less than the packed-im2col GEMM, in multiply-adds at
    GEMM speed per weight column, over the batch.  Lanes computes round_up(m, 16) channels
    (the 16-lane blocks) over the output rounded up to whole 16-pixel tiles, and first copies
    each image slice's padded polyphase grid (_padded_copy_cols: all stride x stride phases,
    which at a stride above the kernel holds inputs no tap reads: 16 phases at stride 4, for
    the 4 or 9 a 2x2 or 3x3 kernel reads); im2col computes m rows over its columns and packs
    only the K values per pixel it multiplies (_IM2COL_PACK_FWD each).  At stride 1 the copy
    is about one input per output pixel against im2col's K, so this decides strided layers
    with few channels.  Timing every algorithm (autotune) on 540 sweep passes (seeds 5-7,
    1 thread): it turns lanes down on 2x2 and 3x3 kernels at stride 4 with 4-16 input
    channels (im2col 1.8-2.3x faster) and keeps every other forward on lanes; pricing every
    copied element as a packed one also turned down a stride-2 2x2 layer that lanes ran 1.24x
    faster."""
    cdef const cconv_geom *s = &p.g
    cdef int cols = cconv_lanes_cols(s), rows = 16 // cols
    cdef double tiled = (_round_up(s.out_h, rows) * _round_up(s.out_w, cols))
    cdef double im2col_cols = (_round_up(p.batch * s.out_h * s.out_w, p.nr) if _spans_images(p)
                               else p.batch * _round_up(s.out_h * s.out_w, p.nr))
    return (p.batch * _round_up(p.m, 16) * tiled + _padded_copy_cols(p)
            < im2col_cols * (p.m + _IM2COL_PACK_FWD))


cdef int _forward_choice(ConvPlan *p, double macs, int fin) noexcept nogil:
    """Sets p.algo, p.reason and p.needs for a forward-shaped pass on p.g."""
    cdef const cconv_geom *s = &p.g
    cdef Py_ssize_t m = p.m, khw = s.kernel_h * s.kernel_w
    cdef bint pad = _reads_padding(s)
    cdef bint direct_exact = not pad or (fin & F_OTHER)
    cdef bint gemm_pays = m >= _GEMM_MIN_CHANNELS, restream
    cdef Py_ssize_t wph, grid_cols, im2col_cols
    cdef bint copy_grid
    if pad:
        p.needs |= F_OTHER
    if _forced_algo >= 0:
        p.forced = 1
        if _forced_algo == A_DIRECT and direct_exact:
            return A_DIRECT
        if _forced_algo == A_IM2COL:
            return A_IM2COL
        if _forced_algo == A_PADDED and _padded_size(p) <= _PADDED_MAX_ELEMS:
            return A_PADDED
        if _forced_algo == A_LANES and _lanes_fit(p):
            return A_LANES
        if _forced_algo == A_WINOGRAD and _is_3x3_unit(s):
            p.needs |= F_DATA | F_OTHER
            if fin == F_ALL:
                return A_WINOGRAD
        if _forced_algo == A_ROWS and not p.via_forward and _rows_fit(p):
            return A_ROWS
        if (_forced_algo == A_BANDS and (fin & F_OTHER)
                and _bands_cost(p, _IM2COL_PACK_FWD, m + _IM2COL_PACK_FWD)):
            return A_BANDS
        p.forced = -1
    if macs < _DIRECT_MAX_MACS and direct_exact:
        p.reason = W_TINY
        return A_DIRECT
    # A 1x1 whose input is read in place (conv_pointwise.h) packs nothing but (sometimes) the
    # weights: forcing it against the planner's earlier picks on benchmarks/pointwise.py's
    # layers (1 thread), it beat rows on 10 of 11 forwards (0.41-0.64x torch -> 0.60-1.05x) and
    # 11 of 13 input gradients (0.25-0.72x -> 0.70-1.46x; the other two within 10%), the padded
    # grid on both few-channel layers (m = 3: 0.63 -> 0.96x, 0.65 -> 0.70x).  Tiny passes keep
    # the direct loops (one measured, in-place faster, is too few to move that threshold).
    if p.pw_fits:
        p.reason = W_IM2COL_IN_PLACE
        return A_IM2COL
    if not p.via_forward and _rows_pays(p, P_FORWARD):
        p.reason = W_ROWS
        return A_ROWS
    # Not few pixels (rows above streams the weights once): skipping the padding's
    # multiply-adds, only with finite weights (PyTorch's 0 * inf = NaN on the padding) and
    # channels enough for the sub-passes' GEMMs.  Also the stride-1 input gradient run as a
    # forward (via_forward) of the transposed geometry with the flipped kernel, of dilated
    # layers only: where it was measured faster.  Undilated, that geometry is the full
    # (k - 1) padding of every unpadded layer's input gradient, cut into 2k - 1 thin bands a
    # dimension, which the cost model prices far too low (LeNet's 64x6x12x12, 16 5x5: 14.5 ms
    # against 0.67 ms on the padded grid).
    if (pad and (fin & F_OTHER) and gemm_pays
            and (not p.via_forward or s.dilation_h > 1 or s.dilation_w > 1)
            and _bands_cost(p, _IM2COL_PACK_FWD, m + _IM2COL_PACK_FWD) == 2):
        p.reason = W_BANDS
        return A_BANDS
    if _wino_pays(p):
        p.needs |= F_DATA | F_OTHER
        if fin == F_ALL:
            p.reason = W_WINOGRAD
            return A_WINOGRAD
    # Channels in lanes when they fill the lanes and are few enough that the GEMM's reuse
    # of each loaded input value (over mr rows) does not win (16-64 channels win 1.1-1.5x,
    # 128 lose ~10%; 1x1 kernels stream better as im2col panels) ... and when its work, priced
    # against im2col's (_lanes_pays), is the smaller: lanes copies the whole padded polyphase
    # slice, every stride phase, where im2col packs only the K x pixels it multiplies.
    copy_grid = False
    if (_lanes_fit(p) and khw > 1 and m <= _LANES_MAX_CHANNELS
            and 4 * m >= 3 * _round_up(m, 16)):
        if _lanes_pays(p):
            p.reason = W_LANES
            return A_LANES
        # The padded grid below makes the same copy that lost lanes the choice: price it.
        copy_grid = True
    if (s.out_h == 1 and not p.via_forward and _lanes_fit(p) and khw > 1
            and 4 * m >= 3 * _round_up(m, 16)
            and p.batch * p.groups >= 2):
        p.reason = W_LANES_ROW
        return A_LANES
    if _padded_size(p) <= _PADDED_MAX_ELEMS:
        # Columns each computes per output channel: the padded grid has extra columns per
        # row; im2col has none but pays _IM2COL_PACK_FWD per packed element, over m rows.
        # Over the batch: the grid is padded per image, im2col's blocks may span images.
        wph = ((s.out_w - 1) * s.stride_w + s.dilation_w * (s.kernel_w - 1)) // s.stride_w + 1
        grid_cols = p.batch * _round_up(s.out_h * wph, p.nr)
        im2col_cols = (_round_up(p.batch * s.out_h * s.out_w, p.nr) if _spans_images(p)
                       else p.batch * _round_up(s.out_h * s.out_w, p.nr))
        restream = (s.out_h == 1 and (s.stride_w > 1 or p.threads > 1)
                    and _round_up(m, p.mr) * s.channels * khw * p.itemsize > _padded_a_bytes())
        if not gemm_pays or not (im2col_cols * (m + _IM2COL_PACK_FWD)
                                 < grid_cols * m * (1 + restream * _PADDED_RESTREAM)
                                 + copy_grid * _padded_copy_cols(p)
                                 or khw == 1):
            p.reason = W_PADDED
            return A_PADDED
        p.reason = (W_IM2COL_POINTWISE if khw == 1
                    else W_IM2COL_COLUMNS if im2col_cols * (m + _IM2COL_PACK_FWD) < grid_cols * m
                    else W_IM2COL_WEIGHTS)
        return A_IM2COL
    if gemm_pays:
        p.reason = W_IM2COL_LARGE
        return A_IM2COL
    if not direct_exact:
        p.reason = W_NONFINITE_PADDING
        return A_IM2COL
    p.reason = W_FEW_CHANNELS
    return A_DIRECT


cdef void _padded_chunks(ConvPlan *p) noexcept nogil:
    """Grid column chunks per slice of a padded forward: with fewer than _SHARES_PER_THREAD
    slices per thread (a batch of one long row: one task for the whole pass), each slice is
    padded once into a shared copy and its grid cut into chunks of whole column blocks, to
    about _SHARES_PER_THREAD tasks per thread.  The copies must fit twice _PADDED_MAX_ELEMS."""
    cdef Py_ssize_t slices = p.batch * p.groups
    cdef Py_ssize_t blocks = ((grid_cols_f32(&p.g) + CCONV_NB_PANELS * p.nr - 1)
                              // (CCONV_NB_PANELS * p.nr))
    cdef Py_ssize_t want = _SHARES_PER_THREAD * p.threads
    p.chunks = 1
    if (p.threads > 1 and slices < want
            and slices * _round_up(_padded_size(p), 16) <= 2 * _PADDED_MAX_ELEMS):
        p.chunks = max(<Py_ssize_t>1, min(blocks, (want + slices - 1) // slices))


cdef void _plan_forward_shape(ConvPlan *p, double macs, int fin) noexcept nogil:
    """Algorithm, kernel, tiles, threads and workspace of a forward-shaped pass on p.g."""
    cdef const cconv_geom *s = &p.g
    cdef Py_ssize_t m = p.m, K = s.channels * s.kernel_h * s.kernel_w
    cdef Py_ssize_t P = s.out_h * s.out_w, tasks
    _choose_kernel(p, m, False)
    p.algo = _forward_choice(p, macs, fin)
    if p.algo == A_BANDS:       # the sub-passes plan their own teams
        _plan_bands(p)
        return
    if p.algo == A_DIRECT:
        p.threads = _team(p.threads, macs, p.batch * p.groups * m)
        return
    if p.algo == A_ROWS:
        _plan_rows(p, macs, p.groups * ((m + _ROWS_CHUNK - 1) // _ROWS_CHUNK))
        return
    if p.algo == A_WINOGRAD:
        _choose_kernel(p, m, True)
        _wino_blocking(p)
        tasks = ((p.batch + p.nimg - 1) // p.nimg * p.groups
                 * (((s.out_h + 1) // 2 + p.nty - 1) // p.nty))
        p.threads = _team(p.threads, macs, tasks)
        # the weight transform (16*O*C values) is worth a team on wide layers only
        p.side_threads = p.threads if p.groups * m * s.channels > 4096 else 1
        _book(p, R_WEIGHTS, 16 * p.groups * _round_up(m, p.mr) * s.channels)
        _book(p, R_OFFSETS, _offsets_elems(s.channels, p.itemsize))
        _book_thread(p, T_A, wino_task_size_f32(s.channels, m, p.nty, (s.out_w + 1) // 2,
                                                p.tpad))
        return
    if p.algo == A_LANES:
        p.threads = _team(p.threads, macs, p.batch * p.groups)
        _book(p, R_WEIGHTS, p.groups * cconv_lanes_weights_size(m, K))
        _book(p, R_OFFSETS, _offsets_elems(K, p.itemsize))
        _book_thread(p, T_A, padded_size_f32(s, CCONV_LANES_SLACK))
        return
    _book(p, R_WEIGHTS, p.groups * _round_up(m, p.mr) * K)
    if p.algo == A_PADDED:
        _padded_chunks(p)
        p.threads = _team(p.threads, macs, p.batch * p.groups * p.chunks)
        _book(p, R_OFFSETS, _offsets_elems(K, p.itemsize))
        if p.chunks > 1:
            _book(p, R_PADDED, p.batch * p.groups * _round_up(_padded_size(p), 16))
        else:
            _book_thread(p, T_A, _padded_size(p))
        _book_thread(p, T_B, _round_up(m, p.mr) * CCONV_NB_PANELS * p.nr)
        return
    # Packed im2col (blocks spanning images: _spans_images), or a 1x1 read in place
    p.pointwise = _is_pointwise(s)
    p.span = _spans_images(p)
    if p.pw_fits:
        _plan_pw_in_place(p, macs)
        return
    if p.span:
        p.stream = p.batch * p.groups * m * P * p.itemsize >= _STREAM_MIN_BYTES
        p.threads = _team(p.threads, macs, (p.batch * P + p.nr - 1) // p.nr)
        # equal shares, a few per thread: balanced on an idle machine, and a thread that
        # runs while another waits for a core can take over some of its shares
        p.shares = min(<Py_ssize_t>_SHARES_PER_THREAD * p.threads if p.threads > 1 else 1,
                       (p.batch * P + p.nr - 1) // p.nr)
        _book_thread(p, T_A, p.blk.kc * p.blk.nc + p.blk.nc + _round_up(m, p.mr) * p.blk.nc)
    else:
        p.threads = _team(p.threads, macs,
                          p.batch * p.groups * ((P + p.blk.nc - 1) // p.blk.nc))
        _book_thread(p, T_A, p.blk.kc * p.blk.nc)


cdef inline bint _pw_in_place(const ConvPlan *p) noexcept nogil:
    """Whether a 1x1 packed-im2col forward reads the input in place (conv_pointwise.h): its
    panels cannot span images, so not when spanning would save padded columns at batch > 1
    (_spans_images), and not on images of fewer than nr pixels (every panel would be the
    packed short one)."""
    return (_is_pointwise(&p.g) and not _spans_images(p)
            and p.g.out_h * p.g.out_w >= p.nr)


cdef void _plan_pw_in_place(ConvPlan *p, double macs) noexcept nogil:
    """Tasks of an in-place 1x1 forward: per image-group slice, column blocks of about
    blk.nc pixels; when those are fewer than _SHARES_PER_THREAD per thread (batch 1, small
    maps), each block is also cut into row parts of whole mr strips."""
    cdef Py_ssize_t P = p.g.out_h * p.g.out_w
    cdef Py_ssize_t cblocks = _pw_col_blocks(p)
    cdef Py_ssize_t tasks = p.batch * p.groups * cblocks
    cdef Py_ssize_t want = _SHARES_PER_THREAD * p.threads if p.threads > 1 else 1
    cdef Py_ssize_t strips = (p.m + p.mr - 1) // p.mr
    p.in_place = True
    p.reason = W_IM2COL_IN_PLACE
    # Rows of x that do not start on a cache line make each panel row two lines: half the
    # depth keeps a panel in half of L1, as a packed one is.
    if P * p.itemsize % 64:
        p.blk.kc = max(<Py_ssize_t>8, p.blk.kc // 2)
    p.pw_unpacked = not p.via_forward and p.batch * P <= _PW_UNPACKED_MAX_COLS
    if p.pw_unpacked:
        p.size[R_WEIGHTS] = 0
    p.rparts = max(<Py_ssize_t>1, min(strips, (want + tasks - 1) // tasks))
    p.threads = _team(p.threads, macs, tasks * p.rparts)
    _book_thread(p, T_A, min(p.blk.kc, <Py_ssize_t>CCONV_KC_MAX) * p.nr)


cdef inline Py_ssize_t _pw_col_blocks(const ConvPlan *p) noexcept nogil:
    """Column blocks per image of an in-place 1x1 forward: whole nr panels, about blk.nc
    columns each."""
    cdef Py_ssize_t panels = (p.g.out_h * p.g.out_w + p.nr - 1) // p.nr
    return max(<Py_ssize_t>1, (panels * p.nr + p.blk.nc // 2) // p.blk.nc)


# ---- few output pixels: the rows algorithm ------------------------------------------------

cdef inline bint _rows_fit(const ConvPlan *p) noexcept nogil:
    """Whether the columns of every pixel of the batch fit in _PADDED_MAX_ELEMS (rows keeps
    them all: it is meant for few pixels, never a whole-batch im2col of a large layer)."""
    cdef const cconv_geom *s = &p.g
    return (<double>p.groups * p.batch * s.out_h * s.out_w    # in double: no overflow
            * _round_up(s.channels * s.kernel_h * s.kernel_w + p.m, 16) <= _PADDED_MAX_ELEMS)


cdef bint _rows_pays(const ConvPlan *p, int pass_) noexcept nogil:
    """Whether streaming the weights in place (rows) costs less than the GEMM path, in
    multiply-adds at GEMM speed per group.  The GEMM computes round_up(m, mr) rows over
    its columns rounded up to whole nr-wide panels and first packs every weight element
    (forward and col2im grad_input: once; stride-1 grad_input: flipped, then packed:
    twice), _ROWS_PACK each; rows computes exactly m x J columns at _ROWS_MAC each, packs
    no weights and copies the K x J pixel columns once (_ROWS_COPY each).  The weight
    gradient writes m x K either way; there the GEMM's depth is J (the pixels), each
    micro-kernel tile pays ~nr multiply-adds of overhead (C tile load / store) per column
    of depth, and batch parts beyond the first add a partial sum of m x K (written, then
    read back: 2 x _ROWS_PACK per element).  So rows wins when J is small next to the
    packing and m is not too small for its column copy: in the forward, near
    J (m _ROWS_MAC + _ROWS_COPY) = m _ROWS_PACK + m_padded J_padded.  With fewer than
    _GEMM_MIN_CHANNELS output channels the alternative is direct loops, not a GEMM: rows
    is not considered."""
    cdef const cconv_geom *s = &p.g
    cdef double m = p.m, K = s.channels * s.kernel_h * s.kernel_w
    cdef double J = <double>p.batch * s.out_h * s.out_w
    cdef double rows_cost = K * J * (m * _ROWS_MAC + _ROWS_COPY)
    cdef double cols = _round_up(p.batch * s.out_h * s.out_w, p.nr)
    cdef double gemm_cost = _round_up(p.m, p.mr) * K * cols
    if p.m < _GEMM_MIN_CHANNELS or not _rows_fit(p):
        return False
    if pass_ == P_FORWARD:
        gemm_cost += m * K * _ROWS_PACK
    elif pass_ == P_GRAD_INPUT:
        gemm_cost += m * K * _ROWS_PACK * (2 if s.stride_h == 1 and s.stride_w == 1 else 1)
    else:
        gemm_cost = m * K * (J + p.nr) + m * K * 2 * _ROWS_PACK * (min(_GW_PARTS, J) - 1)
    return rows_cost < gemm_cost


cdef void _plan_rows(ConvPlan *p, double macs, Py_ssize_t tasks) noexcept nogil:
    """Threads and workspace of a rows pass: per group J rows of columns (ldc apart) and
    a J x m copy of grad_output."""
    cdef const cconv_geom *s = &p.g
    cdef Py_ssize_t J = p.batch * s.out_h * s.out_w
    cdef Py_ssize_t ldc = _round_up(s.channels * s.kernel_h * s.kernel_w, 16)
    p.threads = _team(p.threads, macs, tasks)
    _book(p, R_COLUMNS, p.groups * J * (ldc + _round_up(p.m, 16)))


# ---- the four passes ----------------------------------------------------------------------

cdef void _plan_init(ConvPlan *p, int pass_, const cconv_geom *s, Py_ssize_t batch,
                     Py_ssize_t groups, Py_ssize_t m, int itemsize, int threads) noexcept nogil:
    memset(p, 0, sizeof(ConvPlan))
    p.pass_ = pass_
    p.g = s[0]
    p.batch = batch
    p.groups = groups
    p.m = m
    p.itemsize = itemsize
    p.threads = threads
    p.parts = 1
    p.chunks = 1
    p.oblocks = 1
    _choose_kernel(p, m, False)
    _blocking(p)


cdef void _plan_grad_input(ConvPlan *p, double macs, int fin) noexcept nogil:
    """Stride 1 with finite weights: a forward conv of grad_output with the flipped,
    transposed kernel (padding dilation*(k-1) - pad); else GEMM with W^T + col2im, or
    scatter loops for few channels."""
    cdef cconv_geom s = p.g
    cdef Py_ssize_t m = p.m, K = s.channels * s.kernel_h * s.kernel_w
    cdef Py_ssize_t P = s.out_h * s.out_w, n_wt, cols
    cdef bint forced_col2im = _forced_algo == A_COL2IM
    cdef bint forced_direct = _forced_algo == A_DIRECT
    if ((_forced_algo == A_ROWS and _rows_fit(p))
            or (_forced_algo < 0 and _rows_pays(p, P_GRAD_INPUT)
                and not (p.pw_fits and (fin & F_OTHER)))):   # see _forward_choice
        p.forced = _forced_algo == A_ROWS
        p.algo = A_ROWS
        p.reason = W_ROWS
        _plan_rows(p, macs, p.groups * ((K + _ROWS_K_CHUNK - 1) // _ROWS_K_CHUNK))
        _lay_out(p)
        return
    p.needs |= F_OTHER if s.stride_h == 1 and s.stride_w == 1 else 0
    if s.stride_h == 1 and s.stride_w == 1 and (fin & F_OTHER) and not forced_col2im:
        p.via_forward = 1
        p.g.channels = m
        p.g.in_h = s.out_h
        p.g.in_w = s.out_w
        p.g.pad_top = s.dilation_h * (s.kernel_h - 1) - s.pad_top
        p.g.pad_left = s.dilation_w * (s.kernel_w - 1) - s.pad_left
        p.g.out_h = s.in_h
        p.g.out_w = s.in_w
        p.m = s.channels
        # the transposed conv reads grad_output where the forward read x: F_DATA is gy,
        # F_OTHER the (flipped) weights, as in a forward pass
        _plan_forward_shape(p, macs, fin)
        n_wt = p.groups * s.channels * m * s.kernel_h * s.kernel_w
        if not (p.algo == A_DIRECT and _round_up(n_wt, 16) <= _SMALL_WEIGHTS) and not p.in_place:
            _book(p, R_FLIPPED, n_wt)
        _lay_out(p)
        return
    if _forced_algo >= 0:
        p.forced = 1 if (forced_col2im or forced_direct) else -1
    if forced_col2im or (not forced_direct and m >= _GEMM_MIN_CHANNELS):
        p.algo = A_COL2IM
        p.reason = W_COL2IM_STRIDE if (s.stride_h > 1 or s.stride_w > 1) else W_COL2IM_NONFINITE
        _choose_kernel(p, K, False)
        # Column blocks of up to ~_COL_BLOCK_ELEMS / K pixels; images smaller than that go
        # nimg to a task (keeping a task per thread), so their GEMM is not a matrix-vector
        # product per image that streams all of W^T for a few columns.
        cols = max(<Py_ssize_t>p.nr, _COL_BLOCK_ELEMS // max(K, <Py_ssize_t>1) // p.nr * p.nr)
        p.nimg = max(<Py_ssize_t>1, min(cols // P, p.batch // p.threads))
        p.nc = max(<Py_ssize_t>p.nr, min(cols, _round_up(p.nimg * P, p.nr)))
        p.threads = _team(p.threads, macs, (p.batch + p.nimg - 1) // p.nimg * p.groups)
        _book(p, R_WEIGHTS, p.groups * _round_up(K, p.mr) * m)
        _book_thread(p, T_A, p.blk.kc * p.nc)
        _book_thread(p, T_B, K * p.nc)
    else:
        p.algo = A_DIRECT
        p.reason = W_FEW_CHANNELS
        p.threads = _team(p.threads, macs, p.batch * p.groups * s.channels)
    _lay_out(p)


cdef void _plan_grad_weight(ConvPlan *p, double macs, int fin) noexcept nogil:
    """Direct loops for tiny passes; the dot kernel on padded image copies; packed-im2col
    GEMM; Winograd for wide 3x3 layers.  The batch is cut into a fixed number of parts
    (independent of the thread count), each part's sum kept apart and the parts added in
    order, so the result is the same on any number of threads."""
    cdef const cconv_geom *s = &p.g
    cdef Py_ssize_t m = p.m, C = s.channels, K = C * s.kernel_h * s.kernel_w
    cdef Py_ssize_t P = s.out_h * s.out_w, GW = p.groups * m * K
    cdef bint pad = _reads_padding(s)
    cdef bint direct_exact = not pad or (fin & F_OTHER)
    cdef bint gemm_pays = m >= _GEMM_MIN_CHANNELS
    cdef bint pw = _is_pointwise(s)
    # The dot kernel in place sums each image's pixels in whole vectors; on images smaller
    # than a vector it would add one scalar product per image into the result, a long
    # sequential float sum: those take the dot kernel on grid copies (or the GEMM).
    cdef bint in_place = pw and P * p.itemsize >= CCONV_VECTOR_BYTES
    cdef bint dot_ok = _has_dot(p.itemsize) and (in_place or _dot_scratch(p) > 0)
    cdef int algo = -1
    if pad:
        p.needs |= F_OTHER
    if _forced_algo >= 0:
        p.forced = 1
        if _forced_algo == A_DIRECT and direct_exact:
            algo = A_DIRECT
        elif _forced_algo == A_IM2COL:
            algo = A_IM2COL
        elif _forced_algo == A_DOT and dot_ok:
            algo = A_DOT
        elif _forced_algo == A_WINOGRAD and _is_3x3_unit(s):
            p.needs |= F_DATA | F_OTHER
            if fin == F_ALL:
                algo = A_WINOGRAD
        elif _forced_algo == A_ROWS and _rows_fit(p):
            algo = A_ROWS
        elif (_forced_algo == A_BANDS and (fin & F_OTHER)
              and _bands_cost(p, _IM2COL_PACK_GW, m + _IM2COL_PACK_GW)):
            algo = A_BANDS
        if algo < 0:
            p.forced = -1
    if algo < 0:
        if macs < _DIRECT_MAX_MACS and direct_exact:
            algo = A_DIRECT
            p.reason = W_TINY
        elif _rows_pays(p, P_GRAD_WEIGHT):
            algo = A_ROWS
            p.reason = W_ROWS
        elif (pad and (fin & F_OTHER) and gemm_pays
              and _bands_cost(p, _IM2COL_PACK_GW,
                              min(m + _IM2COL_PACK_GW,
                                  <double>_dot_grid(p) * m / P if dot_ok and not in_place
                                  else m + _IM2COL_PACK_GW)) == 2):
            algo = A_BANDS        # the dot kernel's rate: m per grid column
            p.reason = W_BANDS
        elif dot_ok and in_place and (not gemm_pays or _pw_dot_pays(p)):
            algo = A_DOT
            p.reason = W_DOT_POINTWISE
        # The dot kernel also sums over the grid's extra columns (dot_grid >= P); the
        # packed GEMM pays _IM2COL_PACK_GW per packed element, spread over m rows.  Besides,
        # the dot kernel first copies every stride phase of each padded image, also those no
        # kernel tap reads (_unread_phase_elems: 12 of 16 at stride 4 for a 2x2 kernel), at
        # _IM2COL_PACK_GW per element over the K weight columns: its copy of the phases the
        # taps read stands against im2col's packing, the others are extra.  Timing every
        # algorithm on sweep seeds 5-7 and 11-12 (900 passes, 1 thread): it moved three
        # 2x2-kernel weight gradients at stride 3-4 to the GEMM (1.5-2x faster) and no other;
        # pricing the whole copy moved 10 on seeds 5-6, 5 of them slower (up to 1.38x).
        elif dot_ok and not (gemm_pays and (s.kernel_h * s.kernel_w == 1
                                            or _dot_grid(p) * m
                                            + _IM2COL_PACK_GW * _unread_phase_elems(s) / K
                                            > P * (m + _IM2COL_PACK_GW))):
            algo = A_DOT
            p.reason = W_DOT
        elif gemm_pays or not direct_exact:
            algo = A_IM2COL
            p.reason = W_GW_IM2COL if gemm_pays else W_NONFINITE_PADDING
        else:
            algo = A_DIRECT
            p.reason = W_FEW_CHANNELS
        # Winograd writes 16 values per (channel, tile) and per (output channel, tile) for
        # 16*C*m multiply-adds per tile: it pays on wide layers, or where the dot kernel
        # would waste much of its grid (small images).
        if (algo != A_DIRECT and algo != A_ROWS and _wino_pays(p)
                and (algo == A_IM2COL or m * C >= _WINO_GW_MIN_MC)):
            p.needs |= F_DATA | F_OTHER
            if fin == F_ALL:
                algo = A_WINOGRAD
                p.reason = W_GW_WINOGRAD
    p.algo = algo
    if algo == A_BANDS:
        _plan_bands(p)
        _lay_out(p)
        return
    if algo == A_DIRECT:
        p.threads = _team(p.threads, macs, p.groups * m)
        _lay_out(p)
        return
    if algo == A_ROWS:
        _plan_rows(p, macs, p.groups * ((m + _ROWS_CHUNK - 1) // _ROWS_CHUNK))
        _lay_out(p)
        return
    if algo == A_IM2COL or (algo == A_DOT and in_place):   # parts of the (image, pixel) rows
        p.pointwise = pw
        p.parts = min(<Py_ssize_t>_GW_PARTS, p.batch * P)
    else:
        p.parts = min(<Py_ssize_t>_GW_PARTS, p.batch)
    if algo == A_DOT and not in_place:
        _dot_blocks(p)
    p.threads = _team(p.threads, macs, p.parts * p.oblocks)
    # partial sums and Winograd's output transform go parallel on large weights only
    p.side_threads = p.threads if GW > _PARALLEL_MIN_ELEMS else 1
    if algo == A_WINOGRAD:
        p.side_threads = p.threads if p.groups * m * C > 4096 else 1
        _choose_kernel(p, C, True)
        _wino_blocking(p)
        _book(p, R_PARTIALS, p.parts * _round_up(16 * p.groups * m * C, 16))
        _book_thread(p, T_A, wino_gw_size_f32(C, m, p.nty, (s.out_w + 1) // 2, p.tpad, p.mr,
                                              p.nr))
        _lay_out(p)
        return
    _book(p, R_PARTIALS, (p.parts - 1) * _round_up(GW, 16))
    if algo == A_DOT and in_place:      # reads x and grad_output in place: no scratch
        pass
    elif algo == A_DOT:
        # The grid mask only keeps a non-finite input off the zero grid columns: with x
        # finite those products are exact zeros and the mask-free kernel runs.
        p.needs |= F_DATA
        p.dot_finite = (fin & F_DATA) != 0
        _book(p, R_OFFSETS, _offsets_elems(K, p.itemsize))
        if not p.dot_finite:
            _book(p, R_MASK, _dot_grid(p))     # integers as wide as the float type
        _book_thread(p, T_A, _dot_scratch(p))
    else:
        _book_thread(p, T_A, _round_up(m, p.mr) * p.blk.kc)
        _book_thread(p, T_B, p.blk.kc * p.blk.nc)
    _lay_out(p)


cdef bint _pw_dot_pays(const ConvPlan *p) noexcept nogil:
    """Whether a 1x1 weight gradient is faster by the dot kernel in place than by the packed
    GEMM.  With few channels on either side the GEMM's tiles are mostly padding (C in nr-wide
    panels) and it transposes m + C values per pixel for few multiply-adds each: the dot
    kernel wins at any size.  Images of at least kc pixels make the GEMM pack each
    image's panels apart, which costs more than the dot kernel's reduction up to
    _PW_DOT_MAX_M output channels and _PW_DOT_MAX_MC channel pairs; smaller images share
    the GEMM's depth and the dot kernel's per-image overhead wins only with the fewest
    channels.  Measured by forcing both on every pair of 3-256 channels, 2x56x56 and
    16x14x14 (1 thread); the channel-pair bound from the sweep's 1x1 layers against torch
    (48-128 channels each side lost 5-30% to the GEMM at 17x17-112x112, batch 4-64)."""
    cdef Py_ssize_t m = p.m, C = p.g.channels
    if min(m, C) <= _PW_DOT_FEW:
        return True
    return (p.g.out_h * p.g.out_w >= p.blk.kc and m <= _PW_DOT_MAX_M
            and m * C <= _PW_DOT_MAX_MC)


cdef void _dot_blocks(ConvPlan *p) noexcept nogil:
    """Output-channel blocks per batch part of a dot weight gradient: one, unless the parts
    are fewer than _SHARES_PER_THREAD per thread (a batch of one: a single task); then
    blocks of whole dot tiles, at least _DOT_MIN_BLOCK channels each."""
    cdef int mo = cconv_kernel_f32().dot_mo if p.itemsize == 4 else cconv_kernel_f64().dot_mo
    cdef Py_ssize_t tiles = (p.m + mo - 1) // mo
    cdef Py_ssize_t want = _SHARES_PER_THREAD * p.threads
    p.oblocks = 1
    if p.threads > 1 and p.parts < want:
        p.oblocks = max(<Py_ssize_t>1, min((want + p.parts - 1) // p.parts,
                                           min(tiles, p.m // _DOT_MIN_BLOCK)))


cdef inline Py_ssize_t _dot_block_rows(const ConvPlan *p, Py_ssize_t b) noexcept nogil:
    """First output channel of dot block b (b == oblocks: m): whole tiles of dot_mo."""
    cdef int mo = cconv_kernel_f32().dot_mo if p.itemsize == 4 else cconv_kernel_f64().dot_mo
    cdef Py_ssize_t tiles = (p.m + mo - 1) // mo
    return min(p.m, tiles * b // p.oblocks * mo)


cdef void _plan_grad_bias(ConvPlan *p) noexcept nogil:
    cdef Py_ssize_t O = p.groups * p.m
    p.algo = A_SUM
    p.reason = W_SUM
    if _forced_algo >= 0:
        p.forced = 1 if _forced_algo == A_SUM else -1
    p.threads = (p.threads if p.threads > 1 and O > 1
                 and p.batch * O * p.g.out_h * p.g.out_w > _PARALLEL_MIN_ELEMS else 1)
    p.threads = <int>min(<Py_ssize_t>p.threads, O)
    _lay_out(p)


# ---- cache --------------------------------------------------------------------------------

DEF _CACHE_SLOTS = 128
DEF _KEY_LEN = 20

cdef struct _CacheSlot:
    Py_ssize_t key[_KEY_LEN]
    bint used
    ConvPlan plan

cdef _CacheSlot _cache[_CACHE_SLOTS]
cdef Py_ssize_t _cache_hits = 0, _cache_misses = 0


cdef void _make_key(Py_ssize_t *key, int pass_, const cconv_geom *s, Py_ssize_t batch,
                    Py_ssize_t groups, Py_ssize_t m, int itemsize, int threads,
                    int fin, int want) noexcept nogil:
    key[0] = pass_ | (itemsize << 4) | (fin << 8)
    key[1] = threads
    key[2] = batch
    key[3] = groups
    key[4] = m
    key[5] = s.channels
    key[6] = s.in_h
    key[7] = s.in_w
    key[8] = s.kernel_h
    key[9] = s.kernel_w
    key[10] = s.stride_h
    key[11] = s.stride_w
    key[12] = s.pad_top
    key[13] = s.pad_left
    key[14] = s.dilation_h
    key[15] = s.dilation_w
    key[16] = s.out_h
    key[17] = s.out_w
    key[18] = want + 1
    key[19] = 0


cdef const ConvPlan *plan_conv(int pass_, const cconv_geom *s, Py_ssize_t batch,
                               Py_ssize_t groups, Py_ssize_t m, int itemsize, int threads,
                               int fin, int want=-1) noexcept:
    """The plan of one pass (cached).  s: the slice geometry of the conv2d call; m: its
    output channels per group; fin: the finiteness facts known (F_ALL: assume finite);
    want: the algorithm to force where it applies (-1: CCONV_CONV_ALGO's, if set).
    Called with the GIL held (the cache and _forced_algo are shared)."""
    cdef Py_ssize_t key[_KEY_LEN]
    cdef size_t h = 0
    cdef int i
    cdef _CacheSlot *slot
    cdef ConvPlan *p
    global _forced_algo
    _forced_algo = want if want >= 0 else _env_algo
    _make_key(key, pass_, s, batch, groups, m, itemsize, threads, fin, _forced_algo)
    for i in range(_KEY_LEN):
        h = (h ^ <size_t>key[i]) * <size_t>1000003
    slot = &_cache[(h ^ (h >> 17)) % _CACHE_SLOTS]
    if slot.used and memcmp(slot.key, key, sizeof(key)) == 0:
        global _cache_hits
        _cache_hits += 1
        return &slot.plan
    global _cache_misses
    _cache_misses += 1
    p = &slot.plan
    _plan_pass(p, pass_, s, batch, groups, m, itemsize, threads, fin)
    memcpy(slot.key, key, sizeof(key))
    slot.used = True
    return p


cdef void _plan_pass(ConvPlan *p, int pass_, const cconv_geom *s, Py_ssize_t batch,
                     Py_ssize_t groups, Py_ssize_t m, int itemsize, int threads,
                     int fin) noexcept nogil:
    """plan_conv's plan, made into p (uncached), forcing _forced_algo where it applies."""
    cdef double macs
    cdef int trim = 0
    _plan_init(p, pass_, s, batch, groups, m, itemsize, threads)
    if pass_ != P_GRAD_BIAS and batch and s.channels * s.kernel_h * s.kernel_w and m:
        trim = _trim_taps(p, fin, <double>batch * s.out_h * s.out_w)
    macs = <double>batch * groups * m * p.g.channels * p.g.kernel_h * p.g.kernel_w \
        * p.g.out_h * p.g.out_w
    # Asked once, on the live taps: a 1x1 grad_input read as a forward of grad_output has the
    # same pixels, batch and panel width, so the same answer.
    p.pw_fits = pass_ <= P_GRAD_INPUT and _pw_in_place(p)
    # The team this much work pays for, before a pass cuts its work into shares for a team
    # (the passes' _team calls then cap it by their task counts).
    p.threads = _team(p.threads, macs, p.threads)
    if pass_ != P_GRAD_BIAS and (batch == 0 or s.channels * s.kernel_h * s.kernel_w == 0
                                 or m == 0 or trim == 2):
        p.algo = A_EMPTY
        p.reason = W_ALL_PADDING if trim == 2 else W_EMPTY
        p.threads = 1
        _lay_out(p)
    elif _plan_depthwise(p, macs, fin):
        pass
    elif pass_ == P_FORWARD:
        _plan_forward_shape(p, macs, fin)
        _lay_out(p)
    elif pass_ == P_GRAD_INPUT:
        _plan_grad_input(p, macs, fin)
    elif pass_ == P_GRAD_WEIGHT:
        _plan_grad_weight(p, macs, fin)
    else:
        _plan_grad_bias(p)


cdef int applicable_algos(int pass_, const cconv_geom *s, Py_ssize_t batch, Py_ssize_t groups,
                          Py_ssize_t m, int itemsize, int threads, int fin,
                          int *algos) noexcept:
    """The algorithms that can run this pass exactly given the finiteness facts fin (both
    operands checked: an unchecked one is not known to be finite), in ALGORITHMS order,
    into algos[N_ALGOS]; returns how many.  An algorithm applies when the planner takes it
    forced, so every algorithm the choice functions know is listed without code here."""
    cdef int a, n = 0
    cdef const ConvPlan *p
    for a in range(1, N_ALGOS):
        p = plan_conv(pass_, s, batch, groups, m, itemsize, threads, fin, a)
        if p.forced == 1 and p.algo == a:
            algos[n] = a
            n += 1
    return n


# ---- 3-d: the volume algorithm ------------------------------------------------------------

cdef inline Py_ssize_t _vol_size(const ConvPlan *p, Py_ssize_t nd) noexcept nogil:
    if p.itemsize == 4:
        return padded_vol_size_f32(&p.g, &p.d, nd, p.nr)
    return padded_vol_size_f64(&p.g, &p.d, nd, p.nr)


cdef double _vol_slots(const ConvPlan *p, int mr, int nr, Py_ssize_t hph,
                       Py_ssize_t wph) noexcept nogil:
    """Multiply-add slots (rows x columns of whole mr x nr tiles, per input tap) that
    conv_fwd_vol computes for one chunk of p.dchunk output depths with an mr x nr tile: the
    A rows rounded up to whole strips, times the grid columns its panels cover (whole rows
    in place, or the grid's runs rounded up to whole panels, as the driver cuts them)."""
    cdef Py_ssize_t Ho = p.g.out_h, Wo = p.g.out_w, nout = p.dchunk
    cdef Py_ssize_t plane = hph * wph, live = Ho * wph, J, cols
    if Wo % nr == 0 and wph > Wo:
        cols = nout * Ho * Wo
    else:
        J = (nout - 1) * plane + live
        cols = min(nout * ((live + nr - 1) // nr), (J + nr - 1) // nr) * nr
    return <double>_round_up(p.m, mr) * cols


cdef void _choose_vol_kernel(ConvPlan *p, Py_ssize_t hph, Py_ssize_t wph) noexcept nogil:
    """The volume forward's micro-kernel: the 4 x 3-vector tile (AVX2: 4 x 24 floats) where
    it computes fewer multiply-add slots (_vol_slots: rows padded to whole strips, columns to
    whole panels) than the default 6 x 2-vector one, else the default.  Per slot the two cost
    the same: each k step is 12 vector FMAs, and the 4x3 tile loads 4 broadcasts + 3 B vectors
    + 1 offset against 6 + 2 + 1 (a load per FMA fewer), with 12 accumulators stored either
    way.  Rows the default tile writes in place stay with it (the in-place rows were measured
    faster than the grid and its copy-out: see vol_rows).  Measured (callgrind, 1 thread,
    float32, AVX2): the video stem 2x3x16x56x56 -> 32 (32 rows of 4-row strips, not 36)
    micro-kernel 19.7M -> 16.8M instructions per call; timings in benchmarks/results-nd.md.
    2-d plans never take it: their kernels' instruction counts are unchanged."""
    cdef const void *wide
    cdef int wmr, wnr
    if p.itemsize == 4:
        wide = cconv_kernel_wide_f32()
        if wide == NULL:
            return
        wmr = cconv_kernel_wide_f32().mr
        wnr = cconv_kernel_wide_f32().nr
    else:
        wide = cconv_kernel_wide_f64()
        if wide == NULL:
            return
        wmr = cconv_kernel_wide_f64().mr
        wnr = cconv_kernel_wide_f64().nr
    if p.g.out_w % p.nr == 0 and wph > p.g.out_w and p.g.out_w % wnr != 0:
        return                # keep the rows written in place (no C block, no copy-out)
    if _vol_slots(p, wmr, wnr, hph, wph) < _vol_slots(p, p.mr, p.nr, hph, wph):
        p.kern = wide
        p.mr = wmr
        p.nr = wnr
        p.vol_wide = True
        _blocking(p)


cdef bint plan_volume(ConvPlan *p, int pass_, const cconv_geom *s, const cconv_depth *d,
                      Py_ssize_t batch, Py_ssize_t groups, Py_ssize_t m, int itemsize,
                      int threads, int fin) noexcept:
    """Plans a conv3d pass on the volume algorithm and returns True; False where it does
    not apply, and the pass folds the depth taps into the channels of a conv2d instead
    (cconv._api_nd), whose own plan then decides.  It applies to the forward and, with
    stride 1 and finite weights, to the input gradient (a forward conv of grad_output with
    the flipped kernel), with >= _GEMM_MIN_CHANNELS output channels per group (input
    channels too for the input gradient; else the conv2d's direct loops), a non-empty pass,
    a live tap in every dimension and a padded depth plane within _PADDED_MAX_ELEMS; the
    weight and bias gradients always fold.  Another algorithm forced
    by CCONV_CONV_ALGO folds too (it names a conv2d algorithm); forcing volume lifts the
    channel rule.  Where the folded conv2d would run Winograd it folds too: its 2.25x fewer
    multiplies beat the volume's implicit GEMM, copies included (3x3x3 layers of 32-128
    channels, one thread: forward 21-26 ms folded against 45-55 ms on the volume), while the
    volume wins or ties elsewhere (medical 1->16 channels 64^3: 9.2 -> 7.2 ms, stride 2
    7.9 -> 7.1 ms).  Multiplies the zero padding as PyTorch does: exact for any values.
    s, d: the 3-d conv's (h, w) slice geometry and depth; m: output channels per group.
    Called with the GIL held."""
    cdef Py_ssize_t K = s.channels * d.kernel_d * s.kernel_h * s.kernel_w
    cdef Py_ssize_t hph, wph, plane, nchunks
    cdef double macs
    cdef cconv_geom fold = s[0]       # the conv2d of the folded call: kd*C channels per group
    cdef Py_ssize_t d0, d1
    cdef int trim
    _plan_init(p, pass_, s, batch, groups, m, itemsize, threads)
    fold.channels = s.channels * d.kernel_d
    # Taps that read only zero padding are cropped in (h, w) as the conv2d's planner does
    # (_trim_taps, on p.g), and in depth likewise: the pass runs on the live sub-kernel.
    trim = _trim_taps(p, fin, <double>batch * d.out_d * s.out_h * s.out_w) if batch and K and m else 0
    _live_taps(d.in_d, d.out_d, d.kernel_d, d.stride_d, d.dilation_d, d.pad_front, &d0, &d1)
    p.d = d[0]
    if trim == 2 or d1 < d0:
        return False          # no live tap: the folded conv2d knows the output is the bias
    if (d0 != 0 or d1 != d.kernel_d - 1) and (pass_ == P_GRAD_INPUT or (fin & F_OTHER)):
        if not p.trimmed:     # book the cropped weights now that depth crops too
            p.trimmed = True
            p.full_kh = s.kernel_h
            p.full_kw = s.kernel_w
        p.tap_d0 = d0
        p.d.pad_front -= d0 * d.dilation_d
        p.d.kernel_d = d1 - d0 + 1
    if pass_ != P_GRAD_INPUT and (d0 != 0 or d1 != d.kernel_d - 1):
        p.needs |= F_OTHER
    p.full_kd = d.kernel_d
    if p.trimmed:
        _book(p, R_CROPPED, groups * m * s.channels * p.d.kernel_d * p.g.kernel_h * p.g.kernel_w)
    K = s.channels * p.d.kernel_d * p.g.kernel_h * p.g.kernel_w
    if (_env_algo < 0 and batch and K and m and (pass_ == P_FORWARD or pass_ == P_GRAD_INPUT)
            and plan_conv(pass_, &fold, batch * d.out_d, groups, m, itemsize, threads,
                          fin).algo == A_WINOGRAD):
        return False
    if (pass_ != P_FORWARD and pass_ != P_GRAD_INPUT) or batch == 0 or K == 0 or m == 0:
        return False
    if _env_algo >= 0 and _env_algo != A_VOLUME:
        return False
    if _env_algo != A_VOLUME and m < _GEMM_MIN_CHANNELS:
        return False
    if pass_ == P_GRAD_INPUT:
        p.needs |= F_OTHER
        if (s.stride_h != 1 or s.stride_w != 1 or d.stride_d != 1 or not (fin & F_OTHER)
                or (_env_algo != A_VOLUME and s.channels < _GEMM_MIN_CHANNELS)):
            return False
        p.via_forward = 1      # the transposed conv of the (cropped) geometry
        p.g.channels = m
        p.g.in_h = s.out_h
        p.g.in_w = s.out_w
        p.g.pad_top = p.g.dilation_h * (p.g.kernel_h - 1) - p.g.pad_top
        p.g.pad_left = p.g.dilation_w * (p.g.kernel_w - 1) - p.g.pad_left
        p.g.out_h = s.in_h
        p.g.out_w = s.in_w
        p.d.in_d = d.out_d
        p.d.out_d = d.in_d
        p.d.pad_front = p.d.dilation_d * (p.d.kernel_d - 1) - p.d.pad_front
        p.m = s.channels
        _choose_kernel(p, p.m, False)
    if _vol_size(p, 1) > _PADDED_MAX_ELEMS:
        return False
    K = p.g.channels * p.d.kernel_d * p.g.kernel_h * p.g.kernel_w   # of the (transposed) pass
    p.algo = A_VOLUME
    p.reason = W_VOLUME
    p.forced = 1 if _env_algo == A_VOLUME else 0
    # whole output depth planes per task, ~_vol_task_cols() grid columns (not the thread
    # count: the cut never changes a result anyway, each column is summed in one order)
    phase_dims_f32(&p.g, &hph, &wph)
    plane = hph * wph
    nchunks = max(<Py_ssize_t>1, min(p.d.out_d, p.d.out_d * plane // _vol_task_cols()))
    p.dchunk = (p.d.out_d + nchunks - 1) // nchunks
    # Output rows of whole nr-wide panels, in a grid with longer rows (every strided layer
    # with padding: a 16-wide output row has a 17-wide phase grid row), are computed row by
    # row straight into y (conv_padded.h): fewer columns, full vector stores only.  Rows
    # ending in a partial panel keep the grid: measured on 24 random volume layers, their
    # in-place edge tiles (spilled and copied element by element) cost 1.1-1.8x; ending
    # them instead in a full panel moved back over its neighbour (recomputing the shared
    # columns) was no better either (video stem 2x3x16x56x56 -> 32, 28-wide rows: 1.0-1.3x
    # the grid's time at 1 and 2 threads, 2026-12-02).
    _choose_vol_kernel(p, hph, wph)
    p.vol_rows = p.g.out_w % p.nr == 0 and wph > p.g.out_w
    while p.dchunk > 1 and _vol_size(p, p.dchunk) > _PADDED_MAX_ELEMS:
        p.dchunk = (p.dchunk + 1) // 2
    macs = <double>batch * groups * p.m * K * p.d.out_d * p.g.out_h * p.g.out_w
    p.threads = _team(p.threads, macs, batch * groups * ((p.d.out_d + p.dchunk - 1) // p.dchunk))
    _book(p, R_WEIGHTS, groups * _round_up(p.m, p.mr) * K)
    _book(p, R_OFFSETS, _offsets_elems(K, itemsize))
    if p.via_forward:
        _book(p, R_FLIPPED, groups * K * p.m)
    _book_thread(p, T_A, _vol_size(p, p.dchunk))
    if not p.vol_rows:        # the C block the grid's panels are copied out of
        _book_thread(p, T_B, _round_up(p.m, p.mr) * CCONV_NB_PANELS * p.nr)
    _lay_out(p)
    return True
