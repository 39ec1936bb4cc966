//! What a model needs, in bytes, for the planner: per layer and fixed.

use serde::Serialize;

/// Byte counts of a model at a given context length.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Footprint {
    pub layer_weight_bytes: Vec<u64>,
    pub layer_kv_bytes: Vec<u64>,
    /// The token embedding, on the first device.
    pub embedding_bytes: u64,
    /// Output norm, output matrix (zero when tied) and logits, on the last device.
    pub head_bytes: u64,
    /// The head reuses the embedding; a separate last device needs a copy.
    pub tied_embeddings: bool,
    /// Activations of one prefill chunk, on every device that runs layers.
    pub workspace_bytes: u64,
}

impl Footprint {
    pub fn n_layer(&self) -> usize {
        self.layer_weight_bytes.len()
    }

    pub fn layer_bytes(&self, layer: usize) -> u64 {
        self.layer_weight_bytes[layer] + self.layer_kv_bytes[layer]
    }

    /// What the last device pays for the head; `separate` is whether it
    /// differs from the device that holds the embedding.
    pub fn head_cost(&self, separate: bool) -> u64 {
        self.head_bytes
            + if self.tied_embeddings && separate {
                self.embedding_bytes
            } else {
                0
            }
    }

    pub fn total_weight_bytes(&self) -> u64 {
        self.layer_weight_bytes.iter().sum::<u64>() + self.embedding_bytes + self.head_bytes
    }
}
