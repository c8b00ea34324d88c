//! Detection (Table 2): the frozen ResNet-50's C3/C4/C5, the YOLOv3 neck and heads
//! ([`crate::model::yolo`]), the YOLO loss ([`crate::loss::yolo`]) and mean average precision
//! ([`crate::metrics::map`]). This module holds the evaluation loop's rules; the training loop,
//! runs and report arrive with the rest of the detection issue.
//!
//! Book: "Detection". Reference: `mgca/models/ssl_detector.py`, `SSLDetector`, at
//! HKU-MedAI/MGCA `680fe4a6ee0c`.
//!
//! **Deviation:** none at this level; [`eval`] states its quirk.

pub mod eval;
