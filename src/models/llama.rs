//! The Llama decoder (SmolLM2): RMSNorm, rotary attention with grouped-query heads and a KV
//! cache, SwiGLU MLP. Weight names follow Hugging Face (`model.layers.N.self_attn.q_proj`, ...)
//! under a prefix (`model.text_model` inside SmolVLM, `model` for a plain Llama checkpoint).

use crate::config::TextConfig;
use crate::models::attention::{attend, CausalMask, Mask};
use crate::models::linear::{Embedding, Linear, Weight};
use crate::models::nn::{RmsNorm, Rope};
use crate::weights::Loader;
use burn_tensor::activation::silu;
use burn_tensor::Tensor;

#[derive(Debug)]
pub struct SelfAttention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    o_proj: Linear,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
}

impl SelfAttention {
    fn load(l: &mut Loader, p: &str, c: &TextConfig) -> Self {
        let (h, q, kv) = (
            c.hidden_size,
            c.num_attention_heads * c.head_dim,
            c.num_key_value_heads * c.head_dim,
        );
        Self {
            q_proj: Linear::load(l, &format!("{p}.q_proj"), h, q, c.qkv_bias),
            k_proj: Linear::load(l, &format!("{p}.k_proj"), h, kv, c.qkv_bias),
            v_proj: Linear::load(l, &format!("{p}.v_proj"), h, kv, c.qkv_bias),
            o_proj: Linear::load(l, &format!("{p}.o_proj"), q, h, false),
            heads: c.num_attention_heads,
            kv_heads: c.num_key_value_heads,
            head_dim: c.head_dim,
        }
    }

    fn forward(
        &self,
        x: Tensor<3>,
        rope: &RopeTables,
        cache: &mut LayerCache,
        mask: Option<&CausalMask>,
    ) -> Tensor<3> {
        let [b, len, _] = x.dims();
        let split =
            |t: Tensor<3>, heads: usize| t.reshape([b, len, heads, self.head_dim]).swap_dims(1, 2);
        let q = split(self.q_proj.forward(x.clone()), self.heads);
        let k = split(self.k_proj.forward(x.clone()), self.kv_heads);
        let v = split(self.v_proj.forward(x), self.kv_heads);
        let q = Rope::apply(q, &rope.cos, &rope.sin);
        let k = Rope::apply(k, &rope.cos, &rope.sin);
        let (k, v) = cache.append(k, v);
        // `mask` is there for a prompt (several new positions) and is causal.
        let out = attend(q, k, v, mask.map_or(Mask::All, Mask::Causal));
        let out = out
            .swap_dims(1, 2)
            .reshape([b, len, self.heads * self.head_dim]);
        self.o_proj.forward(out)
    }
}

#[derive(Debug)]
pub struct Mlp {
    gate_proj: Linear,
    up_proj: Linear,
    down_proj: Linear,
}

impl Mlp {
    fn load(l: &mut Loader, p: &str, c: &TextConfig) -> Self {
        let (h, i) = (c.hidden_size, c.intermediate_size);
        Self {
            gate_proj: Linear::load(l, &format!("{p}.gate_proj"), h, i, false),
            up_proj: Linear::load(l, &format!("{p}.up_proj"), h, i, false),
            down_proj: Linear::load(l, &format!("{p}.down_proj"), i, h, false),
        }
    }

    fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let gate = silu(self.gate_proj.forward(x.clone()));
        self.down_proj.forward(gate * self.up_proj.forward(x))
    }
}

#[derive(Debug)]
pub struct DecoderLayer {
    input_layernorm: RmsNorm,
    self_attn: SelfAttention,
    post_attention_layernorm: RmsNorm,
    mlp: Mlp,
}

impl DecoderLayer {
    fn load(l: &mut Loader, p: &str, c: &TextConfig) -> Self {
        Self {
            input_layernorm: RmsNorm::load(
                l,
                &format!("{p}.input_layernorm"),
                c.hidden_size,
                c.rms_norm_eps,
            ),
            self_attn: SelfAttention::load(l, &format!("{p}.self_attn"), c),
            post_attention_layernorm: RmsNorm::load(
                l,
                &format!("{p}.post_attention_layernorm"),
                c.hidden_size,
                c.rms_norm_eps,
            ),
            mlp: Mlp::load(l, &format!("{p}.mlp"), c),
        }
    }

    fn forward(
        &self,
        x: Tensor<3>,
        rope: &RopeTables,
        cache: &mut LayerCache,
        mask: Option<&CausalMask>,
    ) -> Tensor<3> {
        let h = x.clone()
            + self
                .self_attn
                .forward(self.input_layernorm.forward(x), rope, cache, mask);
        h.clone() + self.mlp.forward(self.post_attention_layernorm.forward(h))
    }
}

/// Keys and values of one layer for every position seen so far: `[batch, kv_heads, len, head_dim]`.
#[derive(Debug, Default, Clone)]
pub struct LayerCache {
    kv: Option<(Tensor<4>, Tensor<4>)>,
}

impl LayerCache {
    fn append(&mut self, k: Tensor<4>, v: Tensor<4>) -> (Tensor<4>, Tensor<4>) {
        let kv = match self.kv.take() {
            Some((pk, pv)) => (Tensor::cat(vec![pk, k], 2), Tensor::cat(vec![pv, v], 2)),
            None => (k, v),
        };
        self.kv = Some(kv.clone());
        kv
    }
}

/// The KV cache of a whole decoder: one entry per layer, plus how many positions it holds.
#[derive(Debug, Clone)]
pub struct KvCache {
    layers: Vec<LayerCache>,
    len: usize,
    /// How far a new token's rotary position is from its index: 0 for text, and after a
    /// Qwen2-VL prompt with images its M-RoPE delta (an image takes fewer positions than
    /// tokens, and later tokens, alike on M-RoPE's three streams, are plain RoPE there).
    position_shift: i64,
}

impl KvCache {
    pub fn len(&self) -> usize {
        self.len
    }

    /// The rotary position of the next token.
    pub fn next_position(&self) -> usize {
        usize::try_from(self.len as i64 + self.position_shift).unwrap_or(0)
    }

    /// Places every later token `shift` positions from its index (see `position_shift`).
    pub fn set_position_shift(&mut self, shift: i64) {
        self.position_shift = shift;
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

struct RopeTables {
    cos: Tensor<4>,
    sin: Tensor<4>,
}

/// The text model: embeddings, decoder layers, final norm and the LM head.
#[derive(Debug)]
pub struct Llama {
    embed_tokens: Embedding,
    device: burn_tensor::Device,
    layers: Vec<DecoderLayer>,
    norm: RmsNorm,
    lm_head: Linear,
    rope: Rope,
    config: TextConfig,
}

impl Llama {
    /// `prefix` holds `embed_tokens`, `layers`, `norm`; `lm_head` is the head's name (unless tied).
    pub fn load(l: &mut Loader, prefix: &str, lm_head: &str, c: &TextConfig) -> Self {
        let (embed_tokens, tied_head) = Embedding::load(
            l,
            &format!("{prefix}.embed_tokens.weight"),
            c.vocab_size,
            c.hidden_size,
            c.tie_word_embeddings,
        );
        let head = match tied_head {
            Some(head) => {
                // A tied checkpoint may still carry a copy of the head; the embeddings win, as
                // in transformers.
                l.ignore(&format!("{lm_head}.weight"));
                head
            }
            None => Weight::load(l, &format!("{lm_head}.weight"), c.vocab_size, c.hidden_size),
        };
        Self {
            embed_tokens,
            device: l.device().clone(),
            layers: (0..c.num_hidden_layers)
                .map(|i| DecoderLayer::load(l, &format!("{prefix}.layers.{i}"), c))
                .collect(),
            norm: RmsNorm::load(l, &format!("{prefix}.norm"), c.hidden_size, c.rms_norm_eps),
            lm_head: Linear::new(head, None),
            rope: Rope::new(c.head_dim, c.rope_theta),
            config: c.clone(),
        }
    }

    pub fn config(&self) -> &TextConfig {
        &self.config
    }

    /// Where the weights live (and the activations run).
    pub fn device(&self) -> &burn_tensor::Device {
        &self.device
    }

    pub fn new_cache(&self) -> KvCache {
        KvCache {
            layers: vec![LayerCache::default(); self.layers.len()],
            len: 0,
            position_shift: 0,
        }
    }

    /// Token embeddings `[1, len, hidden]` for `ids`.
    pub fn embed(&self, ids: &[u32]) -> Tensor<3> {
        self.embed_tokens
            .lookup(ids, &self.device)
            .reshape([1, ids.len(), self.config.hidden_size])
    }

    /// Runs `embeds` `[1, len, hidden]` through the decoder after the positions already in
    /// `cache`, appends to the cache, and returns the final hidden states `[1, len, hidden]`.
    pub fn forward_embeds(&self, embeds: Tensor<3>, cache: &mut KvCache) -> Tensor<3> {
        let [_, len, _] = embeds.dims();
        let (cos, sin) = self
            .rope
            .tables(cache.next_position(), len, &embeds.device());
        self.forward_rotated(embeds, cache, cos, sin)
    }

    /// [`Self::forward_embeds`] with the rotary tables given (`[1, 1, len, head_dim]` each):
    /// M-RoPE's, whose positions are not the tokens' indices.
    pub fn forward_rotated(
        &self,
        embeds: Tensor<3>,
        cache: &mut KvCache,
        cos: Tensor<4>,
        sin: Tensor<4>,
    ) -> Tensor<3> {
        let [_, len, _] = embeds.dims();
        let device = embeds.device();
        let start = cache.len;
        let rope = RopeTables { cos, sin };
        // A multi-token step needs the causal mask.
        let mask = (len > 1).then(|| CausalMask::new(start, len, &device));
        let mut h = embeds;
        for (layer, layer_cache) in self.layers.iter().zip(cache.layers.iter_mut()) {
            h = layer.forward(h, &rope, layer_cache, mask.as_ref());
        }
        cache.len += len;
        self.norm.forward(h)
    }

    /// Logits `[vocab]` of the last position of `hidden` `[1, len, hidden]`.
    pub fn last_logits(&self, hidden: Tensor<3>) -> Tensor<1> {
        let [_, len, width] = hidden.dims();
        let last = hidden
            .slice([0..1, len - 1..len, 0..width])
            .reshape([1, width]);
        self.lm_head.forward(last).reshape([self.config.vocab_size])
    }
}
