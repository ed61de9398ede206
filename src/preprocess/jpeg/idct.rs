//! IDCT (jidctint.c, "slow but accurate" integer).

const CONST_BITS: u32 = 13;
const PASS1_BITS: u32 = 2;
const FIX_0_298631336: i32 = 2446;
const FIX_0_390180644: i32 = 3196;
const FIX_0_541196100: i32 = 4433;
const FIX_0_765366865: i32 = 6270;
const FIX_0_899976223: i32 = 7373;
const FIX_1_175875602: i32 = 9633;
const FIX_1_501321110: i32 = 12299;
const FIX_1_847759065: i32 = 15137;
const FIX_1_961570560: i32 = 16069;
const FIX_2_053119869: i32 = 16819;
const FIX_2_562915447: i32 = 20995;
const FIX_3_072711026: i32 = 25172;

#[inline]
fn descale(x: i32, n: u32) -> i32 {
    x.wrapping_add(1 << (n - 1)) >> n
}

/// The 8 outputs of one 1-D pass, before descaling: inputs in natural
/// order `[x0..x7]`, outputs `[o0..o7]` as sums to descale.
#[inline]
fn idct_1d(x: [i32; 8]) -> [i32; 8] {
    // Even part.
    let (z2, z3) = (x[2], x[6]);
    let z1 = z2.wrapping_add(z3).wrapping_mul(FIX_0_541196100);
    let tmp2 = z1.wrapping_add(z3.wrapping_mul(-FIX_1_847759065));
    let tmp3 = z1.wrapping_add(z2.wrapping_mul(FIX_0_765366865));
    let tmp0 = x[0].wrapping_add(x[4]).wrapping_shl(CONST_BITS);
    let tmp1 = x[0].wrapping_sub(x[4]).wrapping_shl(CONST_BITS);
    let tmp10 = tmp0.wrapping_add(tmp3);
    let tmp13 = tmp0.wrapping_sub(tmp3);
    let tmp11 = tmp1.wrapping_add(tmp2);
    let tmp12 = tmp1.wrapping_sub(tmp2);
    // Odd part.
    let (mut t0, mut t1, mut t2, mut t3) = (x[7], x[5], x[3], x[1]);
    let z1 = t0.wrapping_add(t3);
    let z2 = t1.wrapping_add(t2);
    let z3 = t0.wrapping_add(t2);
    let z4 = t1.wrapping_add(t3);
    let z5 = z3.wrapping_add(z4).wrapping_mul(FIX_1_175875602);
    t0 = t0.wrapping_mul(FIX_0_298631336);
    t1 = t1.wrapping_mul(FIX_2_053119869);
    t2 = t2.wrapping_mul(FIX_3_072711026);
    t3 = t3.wrapping_mul(FIX_1_501321110);
    let z1 = z1.wrapping_mul(-FIX_0_899976223);
    let z2 = z2.wrapping_mul(-FIX_2_562915447);
    let z3 = z3.wrapping_mul(-FIX_1_961570560).wrapping_add(z5);
    let z4 = z4.wrapping_mul(-FIX_0_390180644).wrapping_add(z5);
    t0 = t0.wrapping_add(z1).wrapping_add(z3);
    t1 = t1.wrapping_add(z2).wrapping_add(z4);
    t2 = t2.wrapping_add(z2).wrapping_add(z3);
    t3 = t3.wrapping_add(z1).wrapping_add(z4);
    [
        tmp10.wrapping_add(t3),
        tmp11.wrapping_add(t2),
        tmp12.wrapping_add(t1),
        tmp13.wrapping_add(t0),
        tmp13.wrapping_sub(t0),
        tmp12.wrapping_sub(t1),
        tmp11.wrapping_sub(t2),
        tmp10.wrapping_sub(t3),
    ]
}

/// Post-IDCT range limit: value + 128 clamped to 0..=255 (libjpeg-turbo's
/// SIMD IDCT saturates; its C table agrees for every value a valid stream
/// can produce).
#[inline]
fn range_limit(x: i32) -> u8 {
    x.wrapping_add(128).clamp(0, 255) as u8
}

/// `jpeg_idct_islow`: dequantises `coef` (natural order) with `quant` and
/// writes the 8x8 samples to `out` (row stride `stride`).
pub(super) fn idct_islow(coef: &[i16; 64], quant: &[u16; 64], out: &mut [u8], stride: usize) {
    let mut ws = [0i32; 64];
    // Pass 1: columns.
    for col in 0..8 {
        let deq = |row: usize| {
            i32::from(coef[row * 8 + col]).wrapping_mul(i32::from(quant[row * 8 + col]))
        };
        if (1..8).all(|row| coef[row * 8 + col] == 0) {
            let dc = deq(0).wrapping_shl(PASS1_BITS);
            for row in 0..8 {
                ws[row * 8 + col] = dc;
            }
            continue;
        }
        let o = idct_1d([
            deq(0),
            deq(1),
            deq(2),
            deq(3),
            deq(4),
            deq(5),
            deq(6),
            deq(7),
        ]);
        for row in 0..8 {
            ws[row * 8 + col] = descale(o[row], CONST_BITS - PASS1_BITS);
        }
    }
    // Pass 2: rows.
    for row in 0..8 {
        let w: [i32; 8] = ws[row * 8..row * 8 + 8].try_into().unwrap_or([0; 8]);
        let Some(dst) = out.get_mut(row * stride..row * stride + 8) else {
            return;
        };
        if w[1..].iter().all(|&v| v == 0) {
            let v = range_limit(descale(w[0], PASS1_BITS + 3));
            dst.fill(v);
            continue;
        }
        let o = idct_1d(w);
        for (d, v) in dst.iter_mut().zip(o) {
            *d = range_limit(descale(v, CONST_BITS + PASS1_BITS + 3));
        }
    }
}
