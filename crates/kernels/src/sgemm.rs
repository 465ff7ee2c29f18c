//! Single-precision matrix multiplication for x86-64 CPUs with AVX2 and FMA, and AVX-512 where
//! the CPU has it (detected at run time, so one binary runs on both).
//!
//! The classic blocked scheme: the right operand is packed in panels of up to `KC` rows by `NC`
//! columns, cut in slivers of `NR` columns; the left one in blocks of `MC` rows by `KC`, cut in
//! slivers of [`MR`] rows; a register tile of six rows then multiplies a left sliver by a right
//! sliver with one broadcast and two fused multiply-adds per row and step of k. With AVX2 the
//! tile is 6 x 16 (twelve 8-lane accumulators) and k runs in passes of 256; with AVX-512 it is
//! 6 x 32 (twelve 16-lane accumulators, twice the work per instruction: CPUs with full-width
//! 512-bit units multiply twice as fast) and k runs in passes of 128, so that either right sliver
//! (16 KB) stays in the L1 cache while the left block (144 KB with AVX2, 72 KB with AVX-512) stays
//! in L2. Work is shared
//! out over rows and chunks of columns to the rayon threads as they come free.
//!
//! Packing reads either operand through any row and column strides, so transposed views cost
//! nothing. Other CPUs and other types use the `gemm` crate (see [`crate::matmul`]).

use std::cell::RefCell;

/// Rows of the register tile.
pub(crate) const MR: usize = 6;
/// Columns of the AVX2 register tile (two 8-lane vectors).
const NR_AVX2: usize = 16;
/// Columns of the AVX-512 register tile (two 16-lane vectors).
const NR_AVX512: usize = 32;
/// Rows of a packed left block.
const MC: usize = 144;
/// Columns of a packed right panel.
const NC: usize = 4080;

/// Depth of a packed panel (k per pass) for a tile of `nr` columns: a right sliver of 16 KB.
const fn kc_for(nr: usize) -> usize {
    4096 / nr
}

/// Multiply-adds below which a product runs on one thread whatever it is given (about 40 us
/// of one core's work).
const PARALLEL_WORK: usize = 1 << 22;

/// A matrix read through strides: element `(i, j)` is at `ptr + i * rs + j * cs`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct MatRef {
    pub ptr: *const f32,
    pub rs: isize,
    pub cs: isize,
}
impl MatRef {
    /// The view starting at element `(i, j)`.
    ///
    /// # Safety
    /// Element `(i, j)` must lie inside the matrix.
    unsafe fn from(self, i: usize, j: usize) -> Self {
        // SAFETY: the caller's contract.
        Self { ptr: unsafe { self.ptr.offset(i as isize * self.rs + j as isize * self.cs) }, ..self }
    }
}
// SAFETY: a view for reading only; the callers of `sgemm` keep the data alive and unchanged.
unsafe impl Send for MatRef {}
// SAFETY: as above.
unsafe impl Sync for MatRef {}

/// Whether this CPU runs the kernel here (AVX2 and FMA, detected once).
pub(crate) fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        use std::sync::OnceLock;
        static OK: OnceLock<bool> = OnceLock::new();
        *OK.get_or_init(|| is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"))
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether the AVX-512 tile is used: the CPU has AVX-512F and `ZOO_SGEMM` is not `avx2` (read
/// once; `avx2` keeps the 6 x 16 tile, for comparisons).
fn use_avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        use std::sync::OnceLock;
        static OK: OnceLock<bool> = OnceLock::new();
        *OK.get_or_init(|| {
            available()
                && is_x86_feature_detected!("avx512f")
                && std::env::var("ZOO_SGEMM").map_or(true, |v| !v.eq_ignore_ascii_case("avx2"))
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// A pointer that may cross to the rayon threads (each writes a disjoint part of its target).
#[derive(Clone, Copy)]
struct Shared<T>(T);
// SAFETY: used only for the packed buffers (read-only while shared) and the output matrix, whose
// tiles are written by exactly one task each.
unsafe impl<T> Send for Shared<T> {}
// SAFETY: as above.
unsafe impl<T> Sync for Shared<T> {}
impl<T: Copy> Shared<T> {
    /// The pointer (a method, so that closures capture the whole wrapper, not its field).
    fn get(self) -> T {
        self.0
    }
}

thread_local! {
    /// Packing buffers of the calling thread, kept between calls (fresh pages cost more than the
    /// packing itself on small products).
    static BUFFERS: RefCell<(Vec<f32>, Vec<f32>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// A 64-byte (cache line) aligned region of `len` floats inside `v` (grown as needed), so that
/// no 512-bit load of a packed sliver straddles two lines.
fn aligned(v: &mut Vec<f32>, len: usize) -> *mut f32 {
    if v.len() < len + 16 {
        v.resize(len + 16, 0.0);
    }
    let off = v.as_ptr().align_offset(64).min(15);
    // SAFETY: `off + len <= v.len()`.
    unsafe { v.as_mut_ptr().add(off) }
}

/// `c [m, n] = (accumulate ? c : 0) + a [m, k] b [k, n]`, with `c` row-major with row stride
/// `ldc` (column stride 1). `threads` above 1 shares the work out to the rayon threads.
///
/// # Safety
/// [`available`] must be true; `a` and `b` must be readable at every element of the sizes named
/// through their strides, and `c` writable at `i * ldc + j` for `i < m`, `j < n`, and not overlap
/// `a` or `b`.
pub(crate) unsafe fn sgemm(
    (m, n, k): (usize, usize, usize),
    c: *mut f32,
    ldc: usize,
    accumulate: bool,
    a: MatRef,
    b: MatRef,
    threads: usize,
) {
    // SAFETY: forwarded; the AVX-512 tile only where the CPU has it.
    unsafe {
        if use_avx512() {
            sgemm_with::<NR_AVX512>((m, n, k), c, ldc, accumulate, a, b, threads)
        } else {
            sgemm_with::<NR_AVX2>((m, n, k), c, ldc, accumulate, a, b, threads)
        }
    }
}

/// [`sgemm`] with the register tile of `NR` columns (16: AVX2, 32: AVX-512).
///
/// # Safety
/// As [`sgemm`]; for `NR` = 32 the CPU has AVX-512F.
unsafe fn sgemm_with<const NR: usize>(
    (m, n, k): (usize, usize, usize),
    c: *mut f32,
    ldc: usize,
    accumulate: bool,
    a: MatRef,
    b: MatRef,
    threads: usize,
) {
    const { assert!(NR == NR_AVX2 || NR == NR_AVX512, "the register tiles are 16 or 32 columns wide") };
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                // SAFETY: row i of c is writable for n elements (the caller's contract).
                unsafe { std::slice::from_raw_parts_mut(c.add(i * ldc), n).fill(0.0) };
            }
        }
        return;
    }
    // Sharing out costs a wake-up and a synchronisation: small products run on one thread.
    let threads = if m * n * k < PARALLEL_WORK { 1 } else { threads.max(1) };
    let (m_slivers, n_slivers) = (m.div_ceil(MR), n.div_ceil(NR));
    let product = Product { m, n, k, c: Shared(c), ldc, accumulate, a, b };
    if threads == 1 {
        // SAFETY: forwarded from the caller's contract.
        unsafe { product.run_all::<NR>() };
        return;
    }
    // Rectangles of left slivers by chunks of right slivers, about two per thread (taken as
    // the threads come free), each running its own passes over k with its own packing: one
    // synchronisation per product. Splitting the rows packs the right operand once per
    // rectangle row, splitting the columns the left one once per rectangle column.
    let row_blocks = m_slivers.div_ceil(MC / MR);
    let target = 2 * threads;
    let row_groups = row_blocks.min(target);
    let col_groups = target.div_ceil(row_groups).min(n_slivers);
    if row_groups * col_groups < threads && k >= 2 * kc_for(NR) {
        // Too few output tiles for the threads (a deep product with a small result): the passes
        // over k are shared out instead, into separate sums added in a fixed order.
        // SAFETY: forwarded from the caller's contract.
        unsafe { split_k::<NR>(product, threads) };
        return;
    }
    // Equal shares of slivers (not whole blocks: 171 slivers in blocks of 24 would split 96 / 75
    // between two threads); each rectangle then cuts its rows into equal blocks.
    let rows_per = m_slivers.div_ceil(row_groups);
    let cols_per = n_slivers.div_ceil(col_groups);
    let (row_groups, col_groups) = (m_slivers.div_ceil(rows_per), n_slivers.div_ceil(cols_per));
    crate::util::self_scheduled(
        row_groups * col_groups,
        || (),
        |_, t| {
            let (rg, cg) = (t / col_groups, t % col_groups);
            let rows = (rg * rows_per, ((rg + 1) * rows_per).min(m_slivers));
            let cols = (cg * cols_per, ((cg + 1) * cols_per).min(n_slivers));
            // SAFETY: the rectangles are disjoint, so each tile of c has one writer.
            unsafe { product.run::<NR>(rows, cols) };
        },
    );
}

/// One product `c [m, n] = (accumulate ? c : 0) + a [m, k] b [k, n]`, as [`sgemm`] takes it.
#[derive(Clone, Copy)]
struct Product {
    m: usize,
    n: usize,
    k: usize,
    c: Shared<*mut f32>,
    ldc: usize,
    accumulate: bool,
    a: MatRef,
    b: MatRef,
}

impl Product {
    /// The tiles in left slivers `rows.0..rows.1` and right slivers `cols.0..cols.1` (see
    /// [`rectangle`]), with this thread's packing buffers, or fresh ones if they are in use (a
    /// rayon thread waiting inside a parallel section may take up another product).
    ///
    /// # Safety
    /// As [`sgemm`]; no other thread writes the tiles named.
    unsafe fn run<const NR: usize>(self, rows: (usize, usize), cols: (usize, usize)) {
        BUFFERS.with(|cell| match cell.try_borrow_mut() {
            // SAFETY: forwarded.
            Ok(mut bufs) => unsafe { rectangle::<NR>(self, rows, cols, &mut bufs) },
            // SAFETY: forwarded.
            Err(_) => unsafe { rectangle::<NR>(self, rows, cols, &mut (Vec::new(), Vec::new())) },
        });
    }

    /// Every tile, on this thread.
    ///
    /// # Safety
    /// As [`sgemm`]; no other thread writes `c`.
    unsafe fn run_all<const NR: usize>(self) {
        // SAFETY: forwarded.
        unsafe { self.run::<NR>((0, self.m.div_ceil(MR)), (0, self.n.div_ceil(NR))) }
    }
}

/// The passes over k shared out to `threads` tasks: the first adds into `c` (or writes it), the
/// others into zeroed sums of their own, which are then added to `c` in the tasks' order.
///
/// # Safety
/// As [`sgemm`].
unsafe fn split_k<const NR: usize>(whole: Product, threads: usize) {
    let Product { m, n, k, c, ldc, a, b, .. } = whole;
    let per = k.div_ceil(threads).next_multiple_of(kc_for(NR)).min(k);
    let parts = k.div_ceil(per);
    let sums = crate::util::self_scheduled(
        parts,
        || (),
        |_, t| {
            let (p0, p1) = (t * per, ((t + 1) * per).min(k));
            // Operands shifted to the part's first column of a and first row of b.
            // SAFETY: p0 < k, so both shifted views stay inside the operands.
            let part = unsafe { Product { k: p1 - p0, a: a.from(0, p0), b: b.from(p0, 0), ..whole } };
            if t == 0 {
                // SAFETY: only this task writes c.
                unsafe { part.run_all::<NR>() };
                None
            } else {
                let mut sum = vec![0f32; m * n];
                let own = Product { c: Shared(sum.as_mut_ptr()), ldc: n, accumulate: false, ..part };
                // SAFETY: `sum` is this task's own m x n buffer (row stride n).
                unsafe { own.run_all::<NR>() };
                Some(sum)
            }
        },
    );
    for sum in sums.into_iter().flatten() {
        for i in 0..m {
            // SAFETY: row i of c holds n writable elements, and no task is running any more.
            let row = unsafe { std::slice::from_raw_parts_mut(c.get().add(i * ldc), n) };
            for (d, v) in row.iter_mut().zip(&sum[i * n..(i + 1) * n]) {
                *d += *v;
            }
        }
    }
}

/// The tiles of `c` in left slivers `rows.0..rows.1` and right slivers `cols.0..cols.1`: for each
/// panel of up to `NC` columns and each pass over k, the panel is packed, then each block of up to
/// `MC` rows, whose tiles are then multiplied.
///
/// # Safety
/// As [`sgemm`]; no other thread writes the tiles named.
unsafe fn rectangle<const NR: usize>(
    p: Product,
    rows: (usize, usize),
    cols: (usize, usize),
    bufs: &mut (Vec<f32>, Vec<f32>),
) {
    let Product { m, n, k, c, ldc, accumulate, a, b } = p;
    // Even splits: k = 300 runs as 150 + 150 rather than 256 + 44 (passes of 256, AVX2).
    let kc = k.div_ceil(k.div_ceil(kc_for(NR)));
    let panel = (NC / NR).min(cols.1 - cols.0);
    // Equal blocks of at most `MC / MR` slivers (43 slivers run as 22 + 21, not 24 + 19).
    let block = (rows.1 - rows.0).div_ceil((rows.1 - rows.0).div_ceil(MC / MR)).max(1);
    let pa = aligned(&mut bufs.0, block * MR * kc);
    let pb = aligned(&mut bufs.1, panel * NR * kc);
    // The right operand is packed through its transpose, as the left one is.
    let bt = MatRef { ptr: b.ptr, rs: b.cs, cs: b.rs };
    for q0 in (cols.0..cols.1).step_by(panel) {
        let q1 = (q0 + panel).min(cols.1);
        for pc in (0..k).step_by(kc) {
            let kcur = kc.min(k - pc);
            let load = accumulate || pc > 0;
            for q in q0..q1 {
                let j0 = q * NR;
                // SAFETY: sliver q - q0 lies within the buffer sized for `panel` slivers; the
                // columns read are < n, the rows < k.
                unsafe { pack_sliver::<NR>(bt, j0, NR.min(n - j0), pc, kcur, pb.add((q - q0) * NR * kcur)) };
            }
            for s0 in (rows.0..rows.1).step_by(block) {
                let s1 = (s0 + block).min(rows.1);
                for s in s0..s1 {
                    let i0 = s * MR;
                    // SAFETY: as for the right panel, with the rows < m.
                    unsafe { pack_sliver::<MR>(a, i0, MR.min(m - i0), pc, kcur, pa.add((s - s0) * MR * kcur)) };
                }
                for q in q0..q1 {
                    let j0 = q * NR;
                    let nr = NR.min(n - j0);
                    // SAFETY: the packed slivers were written above; the tile of c is in range and
                    // written by this caller only.
                    unsafe {
                        let bs = pb.add((q - q0) * NR * kcur);
                        for s in s0..s1 {
                            let i0 = s * MR;
                            let tile = c.get().add(i0 * ldc + j0);
                            tile_product::<NR>(
                                kcur,
                                pa.add((s - s0) * MR * kcur),
                                bs,
                                tile,
                                ldc,
                                load,
                                MR.min(m - i0),
                                nr,
                            );
                        }
                    }
                }
            }
        }
    }
}

/// Packs rows `i0..i0 + w` and columns `p0..p0 + kc` of `x` as `kc` groups of `W` values
/// (rows past `w` as zeros): a left sliver (`W` = [`MR`]), or, given the right operand's
/// transpose, a right one (`W` = `NR`).
unsafe fn pack_sliver<const W: usize>(x: MatRef, i0: usize, w: usize, p0: usize, kc: usize, dst: *mut f32) {
    // SAFETY (whole body): the caller guarantees rows i0..i0+w and columns p0..p0+kc exist and
    // that dst holds kc * W floats.
    unsafe {
        let base = x.ptr.offset(i0 as isize * x.rs + p0 as isize * x.cs);
        if x.rs == 1 {
            // The sliver's rows are contiguous in memory: each group is one copy (and zeros past
            // the last row).
            if w == W {
                // A constant length: moved in registers, not through `memcpy`.
                for p in 0..kc {
                    std::ptr::copy_nonoverlapping(base.offset(p as isize * x.cs), dst.add(p * W), W);
                }
            } else {
                for p in 0..kc {
                    let src = base.offset(p as isize * x.cs);
                    for i in 0..W {
                        *dst.add(p * W + i) = if i < w { *src.add(i) } else { 0.0 };
                    }
                }
            }
            return;
        }
        #[cfg(target_arch = "x86_64")]
        if x.cs == 1 {
            // Each row is contiguous: 8 x 8 blocks transposed in registers.
            x86::pack_transposed::<W>(base, x.rs, w, kc, dst);
            return;
        }
        for i in 0..W {
            if i < w {
                let row = base.offset(i as isize * x.rs);
                for p in 0..kc {
                    *dst.add(p * W + i) = *row.offset(p as isize * x.cs);
                }
            } else {
                for p in 0..kc {
                    *dst.add(p * W + i) = 0.0;
                }
            }
        }
    }
}

/// One tile of `c` (`mr` x `nr`, at most [`MR`] x `NR`) from a packed left and right sliver.
#[allow(clippy::too_many_arguments)]
unsafe fn tile_product<const NR: usize>(
    kc: usize,
    a: *const f32,
    b: *const f32,
    c: *mut f32,
    ldc: usize,
    load: bool,
    mr: usize,
    nr: usize,
) {
    // SAFETY (whole body): the packed slivers hold kc groups; the caller's tile of c has mr rows
    // of nr writable elements at row stride ldc.
    unsafe {
        if mr == MR && nr == NR {
            kernel::<NR>(kc, a, b, c, ldc, load);
            return;
        }
        // A partial tile: computed whole into a local buffer, then the valid part added.
        let mut buf = [0f32; MR * NR_AVX512];
        kernel::<NR>(kc, a, b, buf.as_mut_ptr(), NR, false);
        for i in 0..mr {
            let row = c.add(i * ldc);
            for j in 0..nr {
                let v = buf[i * NR + j];
                *row.add(j) = if load { *row.add(j) + v } else { v };
            }
        }
    }
}

/// Dispatches to the register tile of `NR` columns (callers checked [`available`], and AVX-512F
/// for `NR` = 32).
#[inline]
unsafe fn kernel<const NR: usize>(kc: usize, a: *const f32, b: *const f32, c: *mut f32, ldc: usize, load: bool) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: forwarded; the instructions each tile needs were detected by the callers.
    unsafe {
        if NR == NR_AVX512 {
            x86::kernel_6x32(kc, a, b, c, ldc, load)
        } else {
            x86::kernel_6x16(kc, a, b, c, ldc, load)
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (kc, a, b, c, ldc, load);
        unreachable!("sgemm is only called where `available()` is true")
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// Defines a register tile `$name`: `c [6, 2 L] = (load ? c : 0) + a b` over `kc` packed
    /// steps, in twelve accumulators of `L` lanes, from the vector type and intrinsics of one
    /// instruction set (so that both tiles are the same code).
    macro_rules! register_tile {
        ($(#[$doc:meta])* $name:ident, $feature:literal, $lanes:literal, $zero:expr, $load:ident, $bcast:ident,
         $fma:ident, $add:ident, $store:ident) => {
            $(#[$doc])*
            #[target_feature(enable = $feature)]
            pub(super) unsafe fn $name(kc: usize, a: *const f32, b: *const f32, c: *mut f32, ldc: usize, load: bool) {
                const W: usize = 2 * $lanes;
                // SAFETY (whole body): `a` holds kc * 6 floats, `b` kc * W, and the 6 x W tile of
                // c at row stride ldc is writable (the caller's contract).
                unsafe {
                    // The tile of c is needed only at the end: its lines start on their way now.
                    for i in 0..6 {
                        for off in (0..W).step_by(16).chain([W - 1]) {
                            _mm_prefetch::<_MM_HINT_T0>(c.add(i * ldc + off) as *const i8);
                        }
                    }
                    let mut acc = [[$zero; 2]; 6];
                    let (mut ap, mut bp) = (a, b);
                    macro_rules! step {
                        () => {{
                            let b0 = $load(bp);
                            let b1 = $load(bp.add($lanes));
                            // A constant six-row loop, unrolled by the compiler.
                            for (i, row) in acc.iter_mut().enumerate() {
                                let ai = $bcast(&*ap.add(i));
                                row[0] = $fma(ai, b0, row[0]);
                                row[1] = $fma(ai, b1, row[1]);
                            }
                            ap = ap.add(6);
                            bp = bp.add(W);
                        }};
                    }
                    let mut left = kc;
                    while left >= 4 {
                        step!();
                        step!();
                        step!();
                        step!();
                        left -= 4;
                    }
                    while left > 0 {
                        step!();
                        left -= 1;
                    }
                    for (i, row) in acc.iter().enumerate() {
                        let out = c.add(i * ldc);
                        let (mut v0, mut v1) = (row[0], row[1]);
                        if load {
                            v0 = $add(v0, $load(out));
                            v1 = $add(v1, $load(out.add($lanes)));
                        }
                        $store(out, v0);
                        $store(out.add($lanes), v1);
                    }
                }
            }
        };
    }

    /// An AVX-512 broadcast of one float from memory (the form AVX2's `_mm256_broadcast_ss` has).
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn broadcast512(x: &f32) -> __m512 {
        _mm512_set1_ps(*x)
    }

    register_tile!(
        /// The AVX2 tile: 6 x 16 in twelve 8-lane accumulators.
        kernel_6x16,
        "avx2,fma",
        8,
        _mm256_setzero_ps(),
        _mm256_loadu_ps,
        _mm256_broadcast_ss,
        _mm256_fmadd_ps,
        _mm256_add_ps,
        _mm256_storeu_ps
    );
    register_tile!(
        /// The AVX-512 tile: 6 x 32 in twelve 16-lane accumulators.
        kernel_6x32,
        "avx512f",
        16,
        _mm512_setzero_ps(),
        _mm512_loadu_ps,
        broadcast512,
        _mm512_fmadd_ps,
        _mm512_add_ps,
        _mm512_storeu_ps
    );

    /// `dst[p * W + i] = rows[i * rs + p]` for `i < w` (zero for `w <= i < W`), `p < kc`, with
    /// `W` 6, 16 or 32: 8 x 8 blocks transposed with unpacks, shuffles and lane permutes.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn pack_transposed<const W: usize>(
        rows: *const f32,
        rs: isize,
        w: usize,
        kc: usize,
        dst: *mut f32,
    ) {
        // SAFETY (whole body): rows i < w hold kc floats from `rows + i * rs`; dst holds kc * W.
        unsafe {
            let groups = W.div_ceil(8);
            let full = kc / 8 * 8;
            for h in 0..groups {
                let row = |r: usize, p: usize| {
                    let i = h * 8 + r;
                    if i < w && i < W {
                        _mm256_loadu_ps(rows.offset(i as isize * rs + p as isize))
                    } else {
                        _mm256_setzero_ps()
                    }
                };
                for p in (0..full).step_by(8) {
                    let t0 = _mm256_unpacklo_ps(row(0, p), row(1, p));
                    let t1 = _mm256_unpackhi_ps(row(0, p), row(1, p));
                    let t2 = _mm256_unpacklo_ps(row(2, p), row(3, p));
                    let t3 = _mm256_unpackhi_ps(row(2, p), row(3, p));
                    let t4 = _mm256_unpacklo_ps(row(4, p), row(5, p));
                    let t5 = _mm256_unpackhi_ps(row(4, p), row(5, p));
                    let t6 = _mm256_unpacklo_ps(row(6, p), row(7, p));
                    let t7 = _mm256_unpackhi_ps(row(6, p), row(7, p));
                    let u0 = _mm256_shuffle_ps::<0x44>(t0, t2);
                    let u1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
                    let u2 = _mm256_shuffle_ps::<0x44>(t1, t3);
                    let u3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
                    let u4 = _mm256_shuffle_ps::<0x44>(t4, t6);
                    let u5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
                    let u6 = _mm256_shuffle_ps::<0x44>(t5, t7);
                    let u7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
                    // Column j of the block: rows 0..8 at step p + j.
                    let cols = [
                        _mm256_permute2f128_ps::<0x20>(u0, u4),
                        _mm256_permute2f128_ps::<0x20>(u1, u5),
                        _mm256_permute2f128_ps::<0x20>(u2, u6),
                        _mm256_permute2f128_ps::<0x20>(u3, u7),
                        _mm256_permute2f128_ps::<0x31>(u0, u4),
                        _mm256_permute2f128_ps::<0x31>(u1, u5),
                        _mm256_permute2f128_ps::<0x31>(u2, u6),
                        _mm256_permute2f128_ps::<0x31>(u3, u7),
                    ];
                    for (j, col) in cols.into_iter().enumerate() {
                        let out = dst.add((p + j) * W + h * 8);
                        if W >= 8 {
                            _mm256_storeu_ps(out, col);
                        } else {
                            // Six rows: four and two values, nothing past the group.
                            _mm_storeu_ps(out, _mm256_castps256_ps128(col));
                            _mm_storel_epi64(
                                out.add(4) as *mut __m128i,
                                _mm_castps_si128(_mm256_extractf128_ps::<1>(col)),
                            );
                        }
                    }
                }
            }
            for p in full..kc {
                for i in 0..W {
                    *dst.add(p * W + i) = if i < w { *rows.offset(i as isize * rs + p as isize) } else { 0.0 };
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The plain triple loop, in f64.
    #[allow(clippy::too_many_arguments)]
    fn reference(
        m: usize,
        n: usize,
        k: usize,
        a: &[f32],
        ars: usize,
        acs: usize,
        b: &[f32],
        brs: usize,
        bcs: usize,
    ) -> Vec<f64> {
        let mut c = vec![0f64; m * n];
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] = (0..k).map(|p| a[i * ars + p * acs] as f64 * b[p * brs + j * bcs] as f64).sum();
            }
        }
        c
    }

    /// The tile widths this CPU runs: 16 (AVX2), and 32 where it has AVX-512F.
    fn widths() -> Vec<usize> {
        let mut w = vec![NR_AVX2];
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("avx512f") {
            w.push(NR_AVX512);
        } else {
            eprintln!("no AVX-512F: only the AVX2 tile is checked here");
        }
        w
    }

    /// [`sgemm`] with the tile of `nr` columns.
    ///
    /// # Safety
    /// As [`sgemm`], with `nr` from [`widths`].
    #[allow(clippy::too_many_arguments)]
    unsafe fn sgemm_nr(
        nr: usize,
        mnk: (usize, usize, usize),
        c: *mut f32,
        ldc: usize,
        accumulate: bool,
        a: MatRef,
        b: MatRef,
        threads: usize,
    ) {
        // SAFETY: forwarded.
        unsafe {
            match nr {
                NR_AVX512 => sgemm_with::<NR_AVX512>(mnk, c, ldc, accumulate, a, b, threads),
                _ => sgemm_with::<NR_AVX2>(mnk, c, ldc, accumulate, a, b, threads),
            }
        }
    }

    fn values(len: usize, seed: u32) -> Vec<f32> {
        // A small deterministic generator: values in [-1, 1).
        let mut s = seed.wrapping_mul(2654435761).wrapping_add(1);
        (0..len)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                (s as f32 / u32::MAX as f32) * 2.0 - 1.0
            })
            .collect()
    }

    #[test]
    fn agrees_with_the_triple_loop_on_edges_strides_and_threads() {
        if !available() {
            eprintln!("no AVX2 and FMA: nothing to check here");
            return;
        }
        // Sizes around the tile and block edges (of both tiles), and k across two passes; the last
        // five above the size shared out to threads: rectangles of rows and columns (with rows
        // that do not split into whole blocks), and deep products whose passes over k are shared
        // out.
        for (nr, &(m, n, k)) in widths().into_iter().flat_map(|nr| {
            [
                (1, 1, 1),
                (6, 16, 4),
                (7, 17, 5),
                (6, 32, 129),
                (13, 33, 300),
                (150, 40, 257),
                (5, 4100, 3),
                (64, 20, 0),
                (300, 200, 100),
                (1030, 70, 70),
                (13, 500, 1000),
                (6, 16, 50000),
                (5, 9, 100000),
            ]
            .iter()
            .map(move |s| (nr, s))
        }) {
            for &(ta, tb) in &[(false, false), (true, false), (false, true), (true, true)] {
                for &threads in &[1, 2] {
                    for &accumulate in &[false, true] {
                        let a = values(m * k, 1);
                        let b = values(k * n, 2);
                        let (ars, acs) = if ta { (1, m) } else { (k, 1) };
                        let (brs, bcs) = if tb { (1, k) } else { (n, 1) };
                        let start = values(m * n, 3);
                        let mut c = start.clone();
                        // SAFETY: the buffers have exactly the sizes named, with those strides.
                        unsafe {
                            sgemm_nr(
                                nr,
                                (m, n, k),
                                c.as_mut_ptr(),
                                n,
                                accumulate,
                                MatRef { ptr: a.as_ptr(), rs: ars as isize, cs: acs as isize },
                                MatRef { ptr: b.as_ptr(), rs: brs as isize, cs: bcs as isize },
                                threads,
                            )
                        };
                        let want = reference(m, n, k, &a, ars, acs, &b, brs, bcs);
                        for (idx, (&got, &w)) in c.iter().zip(&want).enumerate() {
                            let w = w + if accumulate { start[idx] as f64 } else { 0.0 };
                            assert!(
                                (got as f64 - w).abs() <= 1e-5 * (k as f64).sqrt().max(1.0) + 1e-6,
                                "{m}x{n}x{k} tile 6x{nr} ta={ta} tb={tb} threads={threads} acc={accumulate}: element {idx} is {got}, want {w}"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn writes_nothing_outside_the_rows_and_columns_named() {
        if !available() {
            return;
        }
        // c is a 9 x 19 window (row stride 40) of a larger buffer: the rest keeps its sentinel.
        let (m, n, k, ldc) = (9, 19, 11, 40);
        let a = values(m * k, 4);
        let b = values(k * n, 5);
        for nr in widths() {
            let mut c = vec![7.0f32; (m + 1) * ldc];
            // SAFETY: the window lies inside the buffer; a and b have the sizes named.
            unsafe {
                sgemm_nr(
                    nr,
                    (m, n, k),
                    c.as_mut_ptr(),
                    ldc,
                    false,
                    MatRef { ptr: a.as_ptr(), rs: k as isize, cs: 1 },
                    MatRef { ptr: b.as_ptr(), rs: n as isize, cs: 1 },
                    2,
                )
            };
            for (idx, &v) in c.iter().enumerate() {
                let (i, j) = (idx / ldc, idx % ldc);
                if i >= m || j >= n {
                    assert_eq!(v, 7.0, "tile 6x{nr}: element ({i}, {j}) outside the window was written");
                }
            }
        }
    }
}
