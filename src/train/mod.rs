//! Generic training machinery, shared by pretraining ([`crate::pretrain`]) and the downstream
//! tasks ([`crate::downstream`]): the optimiser and gradient averaging ([`optim`]), the
//! learning-rate schedule ([`schedule`]), checkpoints that survive a kill at any instant and
//! resume exactly ([`checkpoint`]), early stopping and best-k selection on a monitored
//! quantity ([`stopping`]), the run folder and its saved configuration ([`run`]), CSV logs and
//! the curves plot ([`log`]) and the progress bar ([`progress`]).
//!
//! Nothing here knows MGCA's model or losses: a loop passes its module, its monitored quantity
//! and its log columns.
//!
//! Book: "Pretraining", "Linear probing" and appendix "What happens when things go wrong".
//!
//! **Deviation:** none at this level; each module states its own.

pub mod checkpoint;
pub mod log;
pub mod optim;
pub mod progress;
pub mod run;
pub mod schedule;
pub mod stopping;

use std::path::PathBuf;

use crate::data::DataError;

/// Why a run stopped with an error.
#[derive(Debug)]
pub enum TrainError {
    /// A data problem (names the file and row).
    Data(DataError),
    /// A checkpoint or output file problem.
    Io(String),
    /// The configuration cannot run (a field's value, or the devices for the shards).
    Config(String),
    /// A resume was refused: the configuration differs from the run's saved one.
    Resume(String),
    /// A device or the collective failed.
    Device(String),
    /// A loss was NaN or infinite: the step was not applied and nothing was saved. `losses`
    /// lists the step's losses in words (`loss 3.2 (ita 1.1, …)`).
    NonFinite { step: usize, epoch: usize, losses: String, last_checkpoint: Option<PathBuf> },
}

impl std::fmt::Display for TrainError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TrainError::Data(e) => write!(f, "{e}"),
            TrainError::Io(m) | TrainError::Config(m) | TrainError::Resume(m) | TrainError::Device(m) => f.write_str(m),
            TrainError::NonFinite { step, epoch, losses, last_checkpoint } => {
                write!(f, "non-finite loss at step {step} (epoch {epoch}): {losses}; the step was not applied")?;
                match last_checkpoint {
                    Some(dir) => write!(f, "; the last good checkpoint is {}", dir.display()),
                    None => write!(f, "; no checkpoint was written yet"),
                }
            }
        }
    }
}

impl std::error::Error for TrainError {}

impl TrainError {
    /// Whether the error is the input's (data, configuration, a refused resume: exit status 2
    /// in the binaries) rather than a failure of the run (I/O, a device, a NaN loss: 1).
    pub fn is_bad_input(&self) -> bool {
        matches!(self, TrainError::Data(_) | TrainError::Config(_) | TrainError::Resume(_))
    }
}

impl From<DataError> for TrainError {
    fn from(e: DataError) -> Self {
        TrainError::Data(e)
    }
}

impl From<checkpoint::CheckpointError> for TrainError {
    fn from(e: checkpoint::CheckpointError) -> Self {
        TrainError::Io(e.0)
    }
}
