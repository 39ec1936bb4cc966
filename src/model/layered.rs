//! The layered model: transformer blocks spread over several devices.
//!
//! A [`LayeredModel`] is a pipeline of [`Stage`]s, each a contiguous range of
//! blocks on one device with its own rope tables. The token embedding lives
//! on the first stage's device and the output head on the last; the hidden
//! state crosses devices exactly once per stage boundary. The model holds no
//! per-request state: each [`Sequence`] owns its KV caches (one per layer, on
//! that layer's device), so any number of sequences can exist at once.
//!
//! Stages on the CPU run their blocks on host vectors with Strata's
//! kernels ([`Block::forward_host`]); the hidden state becomes a tensor
//! again only where it leaves the stage. Other devices run candle ops.

use std::ops::Range;
use std::sync::Arc;

use candle_core::{DType, Device, IndexOp, Module, Result, Tensor};

use super::block::{check_tensor_shape, Block, RmsNorm};
use super::config::ModelConfig;
use super::error::LoadError;
use super::gguf::GgufFile;
use super::kv_cache::{HostKvCache, KvCache, LayerKvCache};
use super::linear::Linear;
use super::rope::RopeTables;

/// Longest run of prompt tokens pushed through the blocks at once; bounds
/// the activation workspace that placement reserves.
pub const PREFILL_CHUNK: usize = 512;

/// Where a contiguous range of layers runs.
#[derive(Debug, Clone)]
pub struct StageSpec {
    pub device: Device,
    /// A name for logs and errors, such as `cuda:0` or `cpu:1`.
    pub label: String,
    pub layers: Range<usize>,
}

impl StageSpec {
    /// Consecutive stages of `counts` layers each, every one a virtual CPU
    /// device labelled `cpu:0`, `cpu:1`, ... (tests and benchmarks).
    pub fn virtual_cpus(counts: &[usize]) -> Vec<StageSpec> {
        let mut start = 0;
        counts
            .iter()
            .enumerate()
            .map(|(i, &n)| {
                start += n;
                StageSpec {
                    device: Device::Cpu,
                    label: format!("cpu:{i}"),
                    layers: start - n..start,
                }
            })
            .collect()
    }
}

struct Stage {
    device: Device,
    label: String,
    layers: Range<usize>,
    blocks: Vec<Block>,
    rope: RopeTables,
}

/// A llama-family model whose blocks are split over devices.
pub struct LayeredModel {
    config: ModelConfig,
    /// Shared with `output` when the embeddings are tied and the first and
    /// last stage are one device.
    embedding: Arc<Linear>,
    stages: Vec<Stage>,
    output_norm: RmsNorm,
    output: Arc<Linear>,
    max_positions: usize,
    /// CPU stages run the host kernels (the default) rather than tensor ops.
    host_blocks: bool,
}

/// One independent token sequence: its KV caches and how far it has got.
pub struct Sequence {
    caches: Vec<KvCache>,
    len: usize,
    transfers: u64,
}

impl Sequence {
    /// Tokens already in the cache.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Positions the cache can hold.
    pub fn capacity(&self) -> usize {
        self.caches.first().map_or(0, KvCache::capacity)
    }

    /// Hidden-state moves between stages so far (one per boundary per
    /// forward call).
    pub fn transfers(&self) -> u64 {
        self.transfers
    }

    /// Forgets all tokens; the cache memory is kept for reuse.
    pub fn reset(&mut self) {
        self.len = 0;
    }
}

impl LayeredModel {
    /// Loads the model from `gguf` with its blocks placed as `stages` say.
    /// The stages must cover every layer exactly once, in order.
    /// `max_positions` bounds the context of every sequence.
    pub fn load(
        gguf: &mut GgufFile,
        stages: &[StageSpec],
        max_positions: usize,
    ) -> std::result::Result<Self, LoadError> {
        let config = ModelConfig::from_gguf(gguf)?;
        validate_stages(stages, config.n_layer)?;
        if max_positions == 0 || max_positions > config.context_length {
            return Err(LoadError::Invalid(format!(
                "the context size must be between 1 and the model's context length {}, got {max_positions}",
                config.context_length
            )));
        }
        let first = &stages[0].device;
        let last = &stages[stages.len() - 1].device;

        let embd = gguf.tensor("token_embd.weight", first)?;
        check_tensor_shape(
            "token_embd.weight",
            embd.shape().dims(),
            &[config.vocab_size, config.dim],
        )?;
        let embedding = Arc::new(Linear::from_qtensor(embd)?);
        let output = if config.tied_embeddings {
            if first.same_device(last) {
                // Shares the storage (quantized or dequantized) with the embedding.
                Arc::clone(&embedding)
            } else {
                Arc::new(Linear::from_qtensor(
                    gguf.tensor("token_embd.weight", last)?,
                )?)
            }
        } else {
            let out = gguf.tensor("output.weight", last)?;
            check_tensor_shape(
                "output.weight",
                out.shape().dims(),
                &[config.vocab_size, config.dim],
            )?;
            Arc::new(Linear::from_qtensor(out)?)
        };
        let norm = gguf.tensor("output_norm.weight", last)?;
        check_tensor_shape("output_norm.weight", norm.shape().dims(), &[config.dim])?;
        let output_norm = RmsNorm::new(norm.dequantize(last)?, config.rms_eps);

        let freq_factors = if gguf.has_tensor("rope_freqs.weight") {
            let t = gguf.tensor("rope_freqs.weight", &Device::Cpu)?;
            Some(t.dequantize(&Device::Cpu)?.to_vec1::<f32>()?)
        } else {
            None
        };

        let mut built = Vec::with_capacity(stages.len());
        for spec in stages {
            let rope = RopeTables::new(
                &config.rope,
                freq_factors.as_deref(),
                max_positions,
                &spec.device,
            )?;
            let blocks = spec
                .layers
                .clone()
                .map(|l| Block::load(gguf, &config, l, &spec.device))
                .collect::<std::result::Result<Vec<_>, _>>()?;
            tracing::debug!(stage = %spec.label, layers = ?spec.layers, "stage loaded");
            built.push(Stage {
                device: spec.device.clone(),
                label: spec.label.clone(),
                layers: spec.layers.clone(),
                blocks,
                rope,
            });
        }
        Ok(Self {
            config,
            embedding,
            stages: built,
            output_norm,
            output,
            max_positions,
            host_blocks: true,
        })
    }

    /// Makes CPU stages run candle tensor ops, as other devices do, instead
    /// of the host kernels: the reference the host path is checked
    /// against. Applies to sequences created afterwards.
    pub fn use_tensor_ops_on_cpu(&mut self) {
        self.host_blocks = false;
    }

    /// The stage's host rope tables when its blocks run on the host.
    fn host_rope<'a>(&self, stage: &'a Stage) -> Option<&'a super::host_ops::HostRope> {
        stage.rope.host().filter(|_| self.host_blocks)
    }

    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    pub fn max_positions(&self) -> usize {
        self.max_positions
    }

    /// `(label, layers)` of each stage, in pipeline order.
    pub fn stage_layout(&self) -> Vec<(String, Range<usize>)> {
        self.stages
            .iter()
            .map(|s| (s.label.clone(), s.layers.clone()))
            .collect()
    }

    /// A new empty sequence whose caches hold `capacity` positions.
    pub fn new_sequence(&self, capacity: usize) -> Result<Sequence> {
        if capacity == 0 || capacity > self.max_positions {
            candle_core::bail!(
                "sequence capacity must be between 1 and {}, got {capacity}",
                self.max_positions
            )
        }
        let mut caches = Vec::with_capacity(self.config.n_layer);
        let (n_kv_head, head_dim) = (self.config.n_kv_head, self.config.head_dim);
        for stage in &self.stages {
            for _ in stage.layers.clone() {
                caches.push(match self.host_rope(stage) {
                    Some(_) => KvCache::Host(HostKvCache::new(n_kv_head, head_dim, capacity)),
                    None => KvCache::Tensors(LayerKvCache::new(
                        n_kv_head,
                        head_dim,
                        capacity,
                        &stage.device,
                    )?),
                });
            }
        }
        Ok(Sequence {
            caches,
            len: 0,
            transfers: 0,
        })
    }

    /// Appends `tokens` to `seq` and returns the logits (f32, shape
    /// `(vocab,)`) that predict the token after the last one. Long inputs run
    /// in chunks of [`PREFILL_CHUNK`].
    pub fn forward(&self, seq: &mut Sequence, tokens: &[u32]) -> Result<Tensor> {
        if tokens.is_empty() {
            candle_core::bail!("forward needs at least one token")
        }
        if seq.len + tokens.len() > seq.capacity() {
            candle_core::bail!(
                "sequence would hold {} tokens, its capacity is {}",
                seq.len + tokens.len(),
                seq.capacity()
            )
        }
        if let Some(&bad) = tokens
            .iter()
            .find(|&&t| t as usize >= self.config.vocab_size)
        {
            candle_core::bail!(
                "token id {bad} is outside the vocabulary of {} tokens",
                self.config.vocab_size
            )
        }
        let mut last = None;
        for chunk in tokens.chunks(PREFILL_CHUNK) {
            last = Some(self.forward_chunk(seq, chunk)?);
        }
        last.expect("tokens is not empty")
            .to_device(&Device::Cpu)?
            .to_dtype(DType::F32)
    }

    fn forward_chunk(&self, seq: &mut Sequence, tokens: &[u32]) -> Result<Tensor> {
        let pos = seq.len;
        let n = tokens.len();
        let first = &self.stages[0];
        let ids = Tensor::new(tokens, &first.device)?.unsqueeze(0)?;
        let mut x = self.embedding.embedding(&ids)?;
        // Host stages mask by position themselves; the additive mask is
        // built once, for the first tensor stage that needs it.
        let mut mask: Option<Tensor> = None;
        let dim = self.config.dim;

        for (i, stage) in self.stages.iter().enumerate() {
            if i > 0 {
                x = x.to_device(&stage.device)?;
                seq.transfers += 1;
            }
            let layers = stage.blocks.iter().zip(stage.layers.clone());
            if let Some(rope) = self.host_rope(stage) {
                let mut h = x.flatten_all()?.to_vec1::<f32>()?;
                for (block, layer) in layers {
                    let KvCache::Host(cache) = &mut seq.caches[layer] else {
                        candle_core::bail!("layer {layer}: the sequence's cache is not on the host")
                    };
                    block.forward_host(&mut h, rope, cache, pos)?;
                }
                x = Tensor::from_vec(h, (1, n, dim), &stage.device)?;
            } else {
                if n > 1 && mask.is_none() {
                    mask = Some(causal_mask(n, pos)?);
                }
                let mask = mask
                    .as_ref()
                    .map(|m| m.to_device(&stage.device))
                    .transpose()?;
                for (block, layer) in layers {
                    let KvCache::Tensors(cache) = &seq.caches[layer] else {
                        candle_core::bail!("layer {layer}: the sequence's cache is a host cache")
                    };
                    x = block.forward(&x, &stage.rope, mask.as_ref(), cache, pos)?;
                }
            }
        }
        seq.len += n;
        let x = self.output_norm.forward(&x.i((.., n - 1..n, ..))?)?;
        self.output.forward(&x)?.flatten_all()
    }
}

/// Additive causal mask of shape `(seq, pos + seq)`: row `i` (position
/// `pos + i`) sees every column up to `pos + i`.
fn causal_mask(seq: usize, pos: usize) -> Result<Tensor> {
    let kv = pos + seq;
    let data: Vec<f32> = (0..seq)
        .flat_map(|i| (0..kv).map(move |j| if j > pos + i { f32::NEG_INFINITY } else { 0.0 }))
        .collect();
    Tensor::from_vec(data, (seq, kv), &Device::Cpu)
}

fn validate_stages(stages: &[StageSpec], n_layer: usize) -> std::result::Result<(), LoadError> {
    let invalid = |reason: String| LoadError::Invalid(format!("invalid stages: {reason}"));
    if stages.is_empty() {
        return Err(invalid("at least one stage is needed".into()));
    }
    let mut next = 0;
    for s in stages {
        if s.layers.start != next || s.layers.end <= s.layers.start {
            return Err(invalid(format!(
                "stage `{}` has layers {:?}, expected a non-empty range starting at {next}",
                s.label, s.layers
            )));
        }
        next = s.layers.end;
    }
    if next != n_layer {
        return Err(invalid(format!(
            "stages cover {next} layers, the model has {n_layer}"
        )));
    }
    Ok(())
}
