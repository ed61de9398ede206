//! Qwen2-VL and Qwen2.5-VL: a ViT with 2-D rotary positions over variable-size images, a
//! 2 × 2 patch merger, and the Qwen2 decoder with multimodal rotary positions (M-RoPE). The
//! image processor is `preprocess::qwen2_vl`. Built up in steps (issue 21): the prompt's
//! position streams, the rotary tables they make, the decoder and Qwen2-VL's vision tower
//! first.

pub mod positions;
pub mod rope;
pub mod text;
pub mod vision;
