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
    ///
    /// The candidates are walked from the most likely down, but only as far as the draw needs:
    /// they are put in order a block at a time ([`Ranked`]) instead of sorting the whole
    /// vocabulary for every token, which cost a 49k-entry sort per step (BENCHMARKS.md, "The
    /// loop users run").
    pub fn pick(&mut self, logits: &[f32]) -> u32 {
        let o = &self.options;
        if o.is_greedy() || logits.len() < 2 {
            return argmax(logits);
        }
        let mut ranked = Ranked::new(logits, o.top_k);
        let max = logits[ranked.at(0)] / o.temperature;
        // Each exponential once: the top-p walk, the kept mass and the draw all read them.
        let weights: Vec<f64> = logits
            .iter()
            .map(|&l| ((l / o.temperature - max) as f64).exp())
            .collect();
        let total: f64 = ranked.candidates.iter().map(|&i| weights[i]).sum();
        let prob = |i: usize| weights[i] / total;
        // Top-p keeps the most likely tokens until their mass reaches top_p (at least one).
        let keep = if o.top_p < 1.0 {
            let mut mass = 0.0;
            let mut n = 0;
            while n < ranked.len() {
                mass += prob(ranked.at(n));
                n += 1;
                if mass >= o.top_p as f64 {
                    break;
                }
            }
            n
        } else {
            ranked.len()
        };
        let kept_total: f64 = if keep < ranked.len() {
            (0..keep).map(|n| prob(ranked.at(n))).sum()
        } else {
            // Summing every candidate needs no order.
            ranked.candidates.iter().map(|&i| prob(i)).sum()
        };
        let mut draw = self.rng.random::<f64>() * kept_total;
        for n in 0..keep {
            let i = ranked.at(n);
            draw -= prob(i);
            if draw < 0.0 {
                return i as u32;
            }
        }
        ranked.at(keep - 1) as u32
    }
}

/// Token ids from the most likely down (ties: the lower id first), put in order only as far
/// as they are asked for: a block is selected from the rest (`select_nth_unstable`, linear)
/// and sorted, doubling each time.
struct Ranked<'a> {
    logits: &'a [f32],
    /// The top-k candidates (all ids without top-k); `..sorted` is in order.
    candidates: Vec<usize>,
    sorted: usize,
}

impl<'a> Ranked<'a> {
    fn new(logits: &'a [f32], top_k: usize) -> Self {
        let mut ranked = Self {
            logits,
            candidates: (0..logits.len()).collect(),
            sorted: 0,
        };
        if top_k > 0 && top_k < logits.len() {
            let by_rank = ranked.by_rank();
            ranked.candidates.select_nth_unstable_by(top_k - 1, by_rank);
            ranked.candidates.truncate(top_k);
        }
        ranked
    }

    fn by_rank(&self) -> impl Fn(&usize, &usize) -> std::cmp::Ordering + 'a {
        let logits = self.logits;
        move |&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b))
    }

    fn len(&self) -> usize {
        self.candidates.len()
    }

    /// The `n`-th most likely candidate.
    fn at(&mut self, n: usize) -> usize {
        if n >= self.sorted {
            let want = (n + 1).max(2 * self.sorted).max(64).min(self.len());
            let by_rank = self.by_rank();
            let rest = &mut self.candidates[self.sorted..];
            let k = want - self.sorted;
            if k < rest.len() {
                rest.select_nth_unstable_by(k - 1, &by_rank);
            }
            rest[..k].sort_unstable_by(&by_rank);
            self.sorted = want;
        }
        self.candidates[n]
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

    /// The sampler as a whole-vocabulary sort computes it (what `pick` did before it ranked
    /// lazily): every candidate sorted, normalised over all of them, top-p cut, one draw.
    fn pick_by_full_sort(o: &SamplingOptions, rng: &mut ChaCha8Rng, logits: &[f32]) -> u32 {
        let mut order: Vec<usize> = (0..logits.len()).collect();
        order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
        if o.top_k > 0 {
            order.truncate(o.top_k);
        }
        let max = logits[order[0]] / o.temperature;
        let mut probs: Vec<f64> = order
            .iter()
            .map(|&i| ((logits[i] / o.temperature - max) as f64).exp())
            .collect();
        let total: f64 = probs.iter().sum();
        probs.iter_mut().for_each(|p| *p /= total);
        if o.top_p < 1.0 {
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
        let mut draw = rng.random::<f64>() * total;
        for (p, &i) in probs.iter().zip(&order) {
            draw -= p;
            if draw < 0.0 {
                return i as u32;
            }
        }
        order[order.len() - 1] as u32
    }

    /// Ranking only as far as the draw goes picks the tokens a full sort picks, draw for draw:
    /// a vocabulary's size, peaked and flat logits, ties, top-k below and above the ranking's
    /// first block, top-p from tiny to off.
    #[test]
    fn lazy_ranking_picks_what_a_full_sort_picks() {
        let mut data = ChaCha8Rng::seed_from_u64(5);
        for case in 0..12 {
            let vocab = if case % 4 == 0 { 49_152 } else { 300 };
            let spread = [0.5f32, 4.0, 12.0][case % 3];
            let logits: Vec<f32> = (0..vocab)
                .map(|_| {
                    let x: f32 = data.random::<f32>() * spread;
                    // Coarse values make ties.
                    if case % 4 == 0 {
                        (x * 4.0).round() / 4.0
                    } else {
                        x
                    }
                })
                .collect();
            for (temperature, top_p, top_k) in [
                (0.7, 0.9, 0),
                (1.0, 1.0, 0),
                (0.3, 0.01, 0),
                (1.5, 0.99, 0),
                (0.7, 0.9, 40),
                (1.0, 1.0, 200),
            ] {
                let o = opts(temperature, top_p, top_k, case as u64);
                let mut sampler = Sampler::new(o.clone());
                let mut reference = ChaCha8Rng::seed_from_u64(o.seed);
                for draw in 0..10 {
                    assert_eq!(
                        sampler.pick(&logits),
                        pick_by_full_sort(&o, &mut reference, &logits),
                        "case {case}, {o:?}, draw {draw}"
                    );
                }
            }
        }
    }

    #[test]
    fn invalid_options_are_refused() {
        assert!(opts(-1.0, 0.9, 0, 0).validate().is_err());
        assert!(opts(0.7, 0.0, 0, 0).validate().is_err());
        assert!(opts(0.7, 1.5, 0, 0).validate().is_err());
        assert!(opts(f32::NAN, 0.9, 0, 0).validate().is_err());
    }
}
