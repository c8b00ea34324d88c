//! Downstream evaluation: the frozen pretrained encoder judged on labelled data, as the paper's
//! Tables 1 and 2 do. One fine-tuning loop ([`finetune`]) parameterised by the task, the
//! encoder's provenance ([`encoder`]) and the tasks: linear probing ([`linear`]); detection and
//! segmentation follow the same shape.
//!
//! Book: "Linear probing". Reference: `mgca/models/ssl_finetuner.py` and the entry scripts in
//! `mgca/models/mgca/` (`mgca_finetuner.py`), at HKU-MedAI/MGCA `680fe4a6ee0c`.
//!
//! **Deviation:** none at this level; each module states its own.

pub mod detection;
pub mod encoder;
pub mod finetune;
pub mod linear;
pub mod segmentation;
