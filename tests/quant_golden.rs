//! Captioner's Q8_0 / Q4_0 quantizers write the bytes of llama.cpp's reference quantizers
//! (gguf-py's port, goldens from `tools/make_quant_goldens.py`).

mod common;

use captioner::weights::gguf::write::{quantize_q4_0, quantize_q8_0};
use common::{fixtures, read_json};

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn quantized_blocks_equal_the_reference_byte_for_byte() {
    let golden = read_json(fixtures().join("quant/goldens.json"));
    let values: Vec<f32> = golden["values_f32_bits"]
        .as_array()
        .expect("values")
        .iter()
        .map(|v| f32::from_bits(v.as_u64().expect("bits") as u32))
        .collect();
    assert_eq!(values.len(), 5 * 64);
    assert_eq!(
        hex(&quantize_q8_0(&values)),
        golden["q8_0"].as_str().expect("q8_0")
    );
    assert_eq!(
        hex(&quantize_q4_0(&values)),
        golden["q4_0"].as_str().expect("q4_0")
    );
}
