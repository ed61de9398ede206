//! Qwen2.5-VL's window attention order: most of its vision blocks attend within windows of
//! `window_size` pixels, so the merge units (2 × 2 patches, kept together) are reordered window
//! by window, and attention is cut at the windows' boundaries. As transformers 5.24's
//! `get_vision_window_index`: per image and frame, windows row-major over the merged grid, the
//! units inside a window row-major, windows cut short at the image's right and bottom edges;
//! the boundaries count patches (units × merge²) and run on across images.

/// The order and the cuts of windowed attention for images of `grids` (patches before
/// merging).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Windows {
    /// For each position in window order, the merge unit it takes (in the processor's order).
    pub unit_order: Vec<usize>,
    /// Where each window starts and the last ends, in patches: 0 first.
    pub boundaries: Vec<usize>,
}

/// `window_size` and `patch_size` in pixels; a window spans `window_size / merge / patch`
/// merge units a side (4 for Qwen2.5-VL: 112 px of 14 px patches merged 2 × 2). `None` when
/// that is zero.
pub fn windows(
    grids: &[[usize; 3]],
    merge: usize,
    window_size: usize,
    patch_size: usize,
) -> Option<Windows> {
    let side = window_size.checked_div(merge)?.checked_div(patch_size)?;
    if side == 0 {
        return None;
    }
    let unit = merge * merge;
    let total: usize = grids
        .iter()
        .map(|[t, h, w]| t * (h / merge) * (w / merge))
        .sum();
    let mut out = Windows {
        unit_order: Vec::with_capacity(total),
        boundaries: vec![0],
    };
    let mut first_unit = 0;
    for &[t, h, w] in grids {
        let (units_h, units_w) = (h / merge, w / merge);
        for frame in 0..t {
            let base = first_unit + frame * units_h * units_w;
            for wy in (0..units_h).step_by(side) {
                for wx in (0..units_w).step_by(side) {
                    for y in wy..(wy + side).min(units_h) {
                        for x in wx..(wx + side).min(units_w) {
                            out.unit_order.push(base + y * units_w + x);
                        }
                    }
                    out.boundaries.push(out.unit_order.len() * unit);
                }
            }
        }
        first_unit += t * units_h * units_w;
    }
    Some(out)
}
