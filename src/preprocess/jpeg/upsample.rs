//! Upsampling (jdsample.c): fancy (triangle-filter) h2v1, h1v2 and h2v2,
//! plain replication for other ratios.

pub(super) struct Plane {
    pub(super) data: Vec<u8>,
    pub(super) stride: usize,
    pub(super) dsw: usize,
    pub(super) dsh: usize,
    /// Upsampling ratios `max_h / h`, `max_v / v`.
    pub(super) hr: usize,
    pub(super) vr: usize,
}

impl Plane {
    #[inline]
    fn row(&self, y: usize) -> &[u8] {
        let y = y.min(self.dsh.saturating_sub(1));
        &self.data[y * self.stride..y * self.stride + self.dsw]
    }

    /// Output row `y` of this component at full resolution (`w` samples;
    /// `out` must hold at least `w + 16`).
    pub(super) fn upsample_row(&self, y: usize, w: usize, out: &mut [u8]) {
        match (self.hr, self.vr) {
            (1, 1) => out[..w].copy_from_slice(&self.row(y)[..w]),
            (2, 1) if self.dsw > 2 => h2v1_fancy(self.row(y), out),
            (1, 2) => {
                // h1v2 fancy: rows above get bias 1, rows below bias 2.
                let (near, far, bias) = self.vertical_pair(y);
                for ((o, &n), &f) in out.iter_mut().zip(near).zip(far) {
                    *o = ((u16::from(n) * 3 + u16::from(f) + bias) >> 2) as u8;
                }
            }
            (2, 2) if self.dsw > 2 => {
                let (near, far, _) = self.vertical_pair(y);
                h2v2_fancy(near, far, out);
            }
            (hr, vr) => {
                // Plain replication (int_upsample, and h2v1 / h2v2 for
                // components at most 2 samples wide).
                let src = self.row(y / vr);
                for (o, &s) in out[..self.dsw * hr].chunks_exact_mut(hr).zip(src) {
                    o.fill(s);
                }
            }
        }
    }

    /// For vertical fancy upsampling: the nearest input row, the next
    /// nearest (above for even output rows, below for odd ones; image edges
    /// replicate) and the rounding bias libjpeg uses for h1v2.
    fn vertical_pair(&self, y: usize) -> (&[u8], &[u8], u16) {
        let inrow = y / 2;
        if y % 2 == 0 {
            (self.row(inrow), self.row(inrow.saturating_sub(1)), 1)
        } else {
            (self.row(inrow), self.row(inrow + 1), 2)
        }
    }
}

/// `h2v1_fancy_upsample` (needs `src.len() > 2`).
fn h2v1_fancy(src: &[u8], out: &mut [u8]) {
    let n = src.len();
    let v = |i: usize| u16::from(src[i]);
    out[0] = src[0];
    out[1] = ((v(0) * 3 + v(1) + 2) >> 2) as u8;
    for i in 1..n - 1 {
        let c = v(i) * 3;
        out[2 * i] = ((c + v(i - 1) + 1) >> 2) as u8;
        out[2 * i + 1] = ((c + v(i + 1) + 2) >> 2) as u8;
    }
    out[2 * n - 2] = ((v(n - 1) * 3 + v(n - 2) + 1) >> 2) as u8;
    out[2 * n - 1] = src[n - 1];
}

/// `h2v2_fancy_upsample` for one output row (needs `near.len() > 2`).
fn h2v2_fancy(near: &[u8], far: &[u8], out: &mut [u8]) {
    let n = near.len();
    let col = |i: usize| u32::from(near[i]) * 3 + u32::from(far[i]);
    let mut this = col(0);
    let mut next = col(1);
    out[0] = ((this * 4 + 8) >> 4) as u8;
    out[1] = ((this * 3 + next + 7) >> 4) as u8;
    for i in 1..n - 1 {
        let last = this;
        this = next;
        next = col(i + 1);
        out[2 * i] = ((this * 3 + last + 8) >> 4) as u8;
        out[2 * i + 1] = ((this * 3 + next + 7) >> 4) as u8;
    }
    let last = this;
    this = next;
    out[2 * n - 2] = ((this * 3 + last + 8) >> 4) as u8;
    out[2 * n - 1] = ((this * 4 + 7) >> 4) as u8;
}
