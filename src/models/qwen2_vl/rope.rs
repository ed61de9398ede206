//! Multimodal rotary embedding (M-RoPE): the Qwen2 decoder's rotary pairs are split into three
//! sections, and each section turns by one of the prompt's position streams
//! ([`super::positions`]): with `mrope_section` [16, 24, 24] (a head of 128), pairs 0–15 by the
//! temporal position, 16–39 by the height and 40–63 by the width, each pair's two halves of
//! the head as in [`Rope`]. Where the three streams agree (all text, and every decoded token)
//! this is the plain rotary embedding.

use crate::error::{Error, Result};
use crate::models::nn::{rotary_tables, Rope};
use burn_tensor::{Device, Tensor};

#[derive(Debug, Clone)]
pub struct MRope {
    rope: Rope,
    /// The stream each rotated pair follows: 0 temporal, 1 height, 2 width.
    stream_of_pair: Vec<usize>,
}

impl MRope {
    /// `mrope_section` as `config.json`'s `rope_scaling` / `rope_parameters` give it: pairs
    /// per stream, summing to `head_dim / 2`.
    pub fn new(head_dim: usize, theta: f64, mrope_section: [usize; 3]) -> Result<Self> {
        if head_dim % 2 != 0 || mrope_section.iter().sum::<usize>() != head_dim / 2 {
            return Err(Error::Invalid(format!(
                "mrope_section {mrope_section:?} does not split a head of {head_dim} into its {} rotated pairs",
                head_dim / 2
            )));
        }
        let stream_of_pair = mrope_section
            .iter()
            .enumerate()
            .flat_map(|(stream, &pairs)| std::iter::repeat_n(stream, pairs))
            .collect();
        Ok(Self {
            rope: Rope::new(head_dim, theta),
            stream_of_pair,
        })
    }

    /// `cos` and `sin` for tokens whose temporal, height and width positions are
    /// `streams[0][i]`, `streams[1][i]`, `streams[2][i]`, shaped `[1, 1, len, head_dim]` for
    /// [`Rope::apply`]. The angle is computed as transformers computes it: the position as f32
    /// times the pair's f32 inverse frequency.
    pub fn tables(&self, streams: [&[u32]; 3], device: &Device) -> (Tensor<4>, Tensor<4>) {
        let tokens: Vec<[u32; 3]> = streams[0]
            .iter()
            .zip(streams[1])
            .zip(streams[2])
            .map(|((&t, &h), &w)| [t, h, w])
            .collect();
        let angles = tokens.into_iter().map(|position| {
            self.rope
                .inv_freq()
                .iter()
                .zip(&self.stream_of_pair)
                .map(|(f, &stream)| position[stream] as f32 * f)
                .collect::<Vec<f32>>()
        });
        rotary_tables(angles, device)
    }
}
