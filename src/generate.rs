//! Token selection and the KV-cached generation loop.
//!
//! Sampling follows transformers' order of logits processors: temperature, then top-k, then
//! top-p (nucleus), then a draw from the renormalised distribution. Draws come from a ChaCha8
//! stream seeded by the caller, so a seed gives the same tokens on every run and platform.
//! Temperature 0 is greedy: the argmax is taken on the device and only one id is read back.

use crate::error::{Error, Result};
use crate::models::llama::{KvCache, Llama};
use burn_tensor::Tensor;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// How new tokens are chosen. The defaults are DataFlow's caption defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingOptions {
    pub max_new_tokens: usize,
    /// 0 means greedy.
    pub temperature: f32,
    /// Nucleus mass to keep, in (0, 1]; 1 disables it.
    pub top_p: f32,
    /// Keep only the k most likely tokens; 0 disables it.
    pub top_k: usize,
    pub seed: u64,
}

impl Default for SamplingOptions {
    fn default() -> Self {
        Self {
            max_new_tokens: 512,
            temperature: 0.7,
            top_p: 0.9,
            top_k: 0,
            seed: 42,
        }
    }
}

impl SamplingOptions {
    pub fn greedy(max_new_tokens: usize) -> Self {
        Self {
            max_new_tokens,
            temperature: 0.0,
            ..Self::default()
        }
    }

    pub fn validate(&self) -> Result<()> {
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            return Err(Error::Invalid(format!(
                "temperature must be >= 0, got {}",
                self.temperature
            )));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(Error::Invalid(format!(
                "top_p must be in (0, 1], got {}",
                self.top_p
            )));
        }
        Ok(())
    }

    pub fn is_greedy(&self) -> bool {
        self.temperature == 0.0
    }
}

/// Picks tokens from logits with a seeded random stream.
pub struct Sampler {
    options: SamplingOptions,
    rng: ChaCha8Rng,
}

impl Sampler {
    pub fn new(options: SamplingOptions) -> Self {
        let rng = ChaCha8Rng::seed_from_u64(options.seed);
        Self { options, rng }
    }

    /// Chooses one token from a host copy of the logits.
    pub fn pick(&mut self, logits: &[f32]) -> u32 {
        let o = &self.options;
        if o.is_greedy() {
            return argmax(logits);
        }
        let mut order: Vec<usize> = (0..logits.len()).collect();
        order.sort_unstable_by(|&a, &b| logits[b].total_cmp(&logits[a]));
        if o.top_k > 0 {
            order.truncate(o.top_k.max(1));
        }
        let max = logits[order[0]] / o.temperature;
        let mut probs: Vec<f64> = order
            .iter()
            .map(|&i| ((logits[i] / o.temperature - max) as f64).exp())
            .collect();
        let total: f64 = probs.iter().sum();
        probs.iter_mut().for_each(|p| *p /= total);
        if o.top_p < 1.0 {
            // Keep the most likely tokens until their mass reaches top_p (at least one).
            let mut mass = 0.0;
            let keep = probs
                .iter()
                .position(|p| {
                    mass += p;
                    mass >= o.top_p as f64
                })
                .map_or(probs.len(), |i| i + 1);
            probs.truncate(keep);
            order.truncate(keep);
        }
        let total: f64 = probs.iter().sum();
        let mut draw = self.rng.random::<f64>() * total;
        for (p, &i) in probs.iter().zip(&order) {
            draw -= p;
            if draw < 0.0 {
                return i as u32;
            }
        }
        order[order.len() - 1] as u32
    }
}

pub fn argmax(values: &[f32]) -> u32 {
    let mut best = 0;
    for (i, v) in values.iter().enumerate() {
        if *v > values[best] {
            best = i;
        }
    }
    best as u32
}

/// What to do after a token: go on or stop (a cancelled caption keeps what it has).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    Stop,
}

/// Runs the decode loop from the logits of a prefilled prompt. Stops at a token of `stop`
/// (not included), after `max_new_tokens`, or when `on_token` says so.
pub async fn decode_loop(
    text: &Llama,
    first_logits: Tensor<1>,
    cache: &mut KvCache,
    stop: &[u32],
    options: &SamplingOptions,
    on_token: &mut dyn FnMut(u32) -> Flow,
) -> Result<Vec<u32>> {
    options.validate()?;
    let mut sampler = Sampler::new(options.clone());
    let mut logits = first_logits;
    let mut out = Vec::new();
    while out.len() < options.max_new_tokens {
        let id = choose(&mut sampler, logits).await?;
        if stop.contains(&id) {
            break;
        }
        out.push(id);
        if on_token(id) == Flow::Stop || out.len() == options.max_new_tokens {
            break;
        }
        let hidden = text.forward_embeds(text.embed(&[id]), cache);
        logits = text.last_logits(hidden);
    }
    Ok(out)
}

async fn choose(sampler: &mut Sampler, logits: Tensor<1>) -> Result<u32> {
    let backend = |e: burn_tensor::ExecutionError| Error::Backend(format!("reading logits: {e:?}"));
    if sampler.options.is_greedy() {
        // Only the chosen id crosses from the device to the host.
        let data = logits.argmax(0).into_data_async().await.map_err(backend)?;
        let ids = data
            .try_into_vec_as::<i64>()
            .map_err(|e| Error::Backend(format!("argmax: {e:?}")))?;
        let id = ids
            .first()
            .ok_or_else(|| Error::Backend("empty argmax".into()))?;
        return Ok(*id as u32);
    }
    let data = logits.into_data_async().await.map_err(backend)?;
    let values = data
        .try_into_vec_as::<f32>()
        .map_err(|e| Error::Backend(format!("logits: {e:?}")))?;
    Ok(sampler.pick(&values))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(temperature: f32, top_p: f32, top_k: usize, seed: u64) -> SamplingOptions {
        SamplingOptions {
            max_new_tokens: 1,
            temperature,
            top_p,
            top_k,
            seed,
        }
    }

    #[test]
    fn greedy_takes_the_argmax() {
        let mut s = Sampler::new(opts(0.0, 1.0, 0, 1));
        assert_eq!(s.pick(&[0.1, 3.0, -1.0, 2.9]), 1);
    }

    #[test]
    fn same_seed_same_draws_other_seed_other_draws() {
        let logits: Vec<f32> = (0..50).map(|i| (i as f32 * 0.37).sin()).collect();
        let run = |seed| {
            let mut s = Sampler::new(opts(1.0, 1.0, 0, seed));
            (0..40).map(|_| s.pick(&logits)).collect::<Vec<_>>()
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
    }

    #[test]
    fn top_k_and_top_p_restrict_the_support() {
        let logits = [5.0, 4.0, 1.0, 0.5, 0.0, -1.0];
        let mut s = Sampler::new(opts(1.0, 1.0, 2, 3));
        assert!((0..200).all(|_| s.pick(&logits) < 2));
        // p(0) ~ 0.70, p(1) ~ 0.26: top_p 0.9 keeps exactly these two.
        let mut s = Sampler::new(opts(1.0, 0.9, 0, 3));
        let picks: Vec<u32> = (0..400).map(|_| s.pick(&logits)).collect();
        assert!(picks.iter().all(|&p| p < 2));
        assert!(picks.contains(&0) && picks.contains(&1));
        // A tiny top_p is greedy.
        let mut s = Sampler::new(opts(1.0, 0.01, 0, 3));
        assert!((0..50).all(|_| s.pick(&logits) == 0));
    }

    #[test]
    fn sampling_follows_the_distribution() {
        // Two tokens with logit gap ln(3): probabilities 0.75 / 0.25 at temperature 1.
        let logits = [3f32.ln(), 0.0];
        let mut s = Sampler::new(opts(1.0, 1.0, 0, 11));
        let n = 20_000;
        let zeros = (0..n).filter(|_| s.pick(&logits) == 0).count() as f64 / n as f64;
        assert!((zeros - 0.75).abs() < 0.02, "{zeros}");
        // Temperature 0.5 sharpens it to 0.9 / 0.1.
        let mut s = Sampler::new(opts(0.5, 1.0, 0, 11));
        let zeros = (0..n).filter(|_| s.pick(&logits) == 0).count() as f64 / n as f64;
        assert!((zeros - 0.9).abs() < 0.02, "{zeros}");
    }

    #[test]
    fn invalid_options_are_refused() {
        assert!(opts(-1.0, 0.9, 0, 0).validate().is_err());
        assert!(opts(0.7, 0.0, 0, 0).validate().is_err());
        assert!(opts(0.7, 1.5, 0, 0).validate().is_err());
        assert!(opts(f32::NAN, 0.9, 0, 0).validate().is_err());
    }
}
