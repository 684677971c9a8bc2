//! Placeholder until the generators land.
use serde::Deserialize;

use crate::topology::Topology;

#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Generate {
    Internet { nodes: usize },
}

impl Generate {
    pub fn validate(&self) -> Result<(), (String, String)> {
        Ok(())
    }

    pub fn build(&self, base: &Topology, _seed: u64) -> Topology {
        base.clone()
    }
}
