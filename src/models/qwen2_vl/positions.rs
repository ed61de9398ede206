//! M-RoPE's position ids: three streams (temporal, height, width) per prompt token, as
//! transformers 5.24's `Qwen2VLModel.get_rope_index` builds them for images (Qwen2.5-VL's is
//! the same for images; only videos space their frames out).
//!
//! Text tokens take one position on all three streams, counting on from the last. A run of
//! image tokens (the `<|image_pad|>`s of one image, `t · h · w / merge²` of them) is laid out
//! on its merged grid: token `(ti, hi, wi)` (time-major, then rows, then columns) takes
//! `start + ti`, `start + hi`, `start + wi`, where `start` is the position after the text
//! before it; the text after the image continues at `start + max(h, w) / merge`. So an image
//! uses fewer positions than tokens, and the decoded tokens continue from the largest
//! position plus one: the prompt's `delta` (that minus the prompt's length) is added to each
//! later token's index.

use crate::error::{Error, Result};

/// The three position streams of a prompt, and what later tokens add to their index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MropePositions {
    pub temporal: Vec<u32>,
    pub height: Vec<u32>,
    pub width: Vec<u32>,
    /// `max position + 1 - prompt length` (zero or negative): the token at index `i ≥ len`
    /// sits at position `i + delta` on all three streams.
    pub delta: i64,
}

impl MropePositions {
    /// The position of the token at `index` after the prompt, on every stream.
    pub fn after_prompt(&self, index: usize) -> Result<u32> {
        u32::try_from(index as i64 + self.delta)
            .map_err(|_| Error::Prompt(format!("token {index}: no M-RoPE position")))
    }
}

/// The positions of `tokens`, where each maximal run of `image_token` is one image whose
/// grid (`image_grid_thw`, in patches before merging) is the next of `grids`. Refused: a run
/// whose length is not its grid's merged size, more runs than grids or grids left over.
pub fn mrope_positions(
    tokens: &[u32],
    image_token: u32,
    grids: &[[usize; 3]],
    merge_size: usize,
) -> Result<MropePositions> {
    let bad = |m: String| Err(Error::Prompt(m));
    if merge_size == 0 {
        return bad("merge_size is 0".into());
    }
    let n = tokens.len();
    let mut out = MropePositions {
        temporal: Vec::with_capacity(n),
        height: Vec::with_capacity(n),
        width: Vec::with_capacity(n),
        delta: 0,
    };
    let mut next_grid = grids.iter();
    // The next free position; u64 so no prompt overflows it before the check at the end.
    let mut pos: u64 = 0;
    let mut i = 0;
    while i < n {
        let run = tokens[i..]
            .iter()
            .take_while(|&&t| (t == image_token) == (tokens[i] == image_token))
            .count();
        if tokens[i] != image_token {
            for k in 0..run as u64 {
                let p = position(pos + k)?;
                out.temporal.push(p);
                out.height.push(p);
                out.width.push(p);
            }
            pos += run as u64;
        } else {
            let Some(&[t, h, w]) = next_grid.next() else {
                return bad(format!(
                    "the prompt has more images than the {} given",
                    grids.len()
                ));
            };
            if h % merge_size != 0 || w % merge_size != 0 {
                return bad(format!(
                    "image grid {t}x{h}x{w} is not a whole number of {merge_size}x{merge_size} blocks"
                ));
            }
            let (gh, gw) = (h / merge_size, w / merge_size);
            if t.checked_mul(gh * gw) != Some(run) {
                return bad(format!(
                    "an image of grid {t}x{h}x{w} takes {} tokens, the prompt has {run}",
                    t * gh * gw
                ));
            }
            for ti in 0..t as u64 {
                for hi in 0..gh as u64 {
                    for wi in 0..gw as u64 {
                        out.temporal.push(position(pos + ti)?);
                        out.height.push(position(pos + hi)?);
                        out.width.push(position(pos + wi)?);
                    }
                }
            }
            pos += gh.max(gw) as u64;
        }
        i += run;
    }
    if next_grid.next().is_some() {
        return bad(format!(
            "{} image grids given for a prompt with fewer images",
            grids.len()
        ));
    }
    // transformers takes the largest position of all three streams (an image's temporal one
    // can exceed the text's after it when `t` is its longest side).
    let largest = (0..n)
        .map(|k| out.temporal[k].max(out.height[k]).max(out.width[k]))
        .max();
    out.delta = largest.map_or(0, |m| i64::from(m) + 1 - n as i64);
    Ok(out)
}

fn position(p: u64) -> Result<u32> {
    u32::try_from(p).map_err(|_| Error::Prompt(format!("position {p} is out of range")))
}

#[cfg(test)]
mod tests {
    use super::*;

    const IMAGE: u32 = 9;

    #[test]
    fn text_alone_counts_up() {
        let p = mrope_positions(&[1, 2, 3], IMAGE, &[], 2).unwrap();
        assert_eq!(p.temporal, [0, 1, 2]);
        assert_eq!(p.height, p.temporal);
        assert_eq!(p.width, p.temporal);
        assert_eq!(p.delta, 0);
        assert_eq!(p.after_prompt(3).unwrap(), 3);
    }

    #[test]
    fn an_image_is_laid_out_on_its_merged_grid() {
        // Two text tokens, a 1x4x6 grid (2x3 merged: 6 tokens), one text token.
        let tokens = [1, 2, IMAGE, IMAGE, IMAGE, IMAGE, IMAGE, IMAGE, 3];
        let p = mrope_positions(&tokens, IMAGE, &[[1, 4, 6]], 2).unwrap();
        assert_eq!(p.temporal, [0, 1, 2, 2, 2, 2, 2, 2, 5]);
        assert_eq!(p.height, [0, 1, 2, 2, 2, 3, 3, 3, 5]);
        assert_eq!(p.width, [0, 1, 2, 3, 4, 2, 3, 4, 5]);
        // Largest 5, 9 tokens: the next token (index 9) sits at 6.
        assert_eq!(p.delta, -3);
        assert_eq!(p.after_prompt(9).unwrap(), 6);
    }

    #[test]
    fn a_prompt_and_its_grids_must_agree() {
        let tokens = [1, IMAGE, IMAGE, 2];
        for grids in [
            &[][..],
            &[[1, 2, 2], [1, 2, 2]][..],
            &[[1, 4, 4]][..],
            &[[1, 3, 2]][..],
        ] {
            assert!(
                mrope_positions(&tokens, IMAGE, grids, 2).is_err(),
                "{grids:?}"
            );
        }
        assert!(mrope_positions(&tokens, IMAGE, &[[1, 2, 4]], 2).is_ok());
    }
}
