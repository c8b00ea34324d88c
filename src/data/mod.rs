//! Data: the reference's splits and subsets, bit for bit (more of the data pipeline arrives
//! with the "Data" issue).
//!
//! Spec: `data.md`.
//! **Deviation:** none at this level; each module states its own.

pub mod resize;
pub mod rle;
pub mod sampling;
