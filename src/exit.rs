//! Exit codes of the contract: 0 nothing to do, 1 findings that need action, 2 error.

/// How a command ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitStatus {
    /// Ok, or nothing to do.
    Clean = 0,
    /// Findings that need action (`check`, `audit`, `lint`, `journal`).
    Findings = 1,
    /// Usage, configuration or runtime error.
    Error = 2,
}

impl From<ExitStatus> for std::process::ExitCode {
    fn from(status: ExitStatus) -> std::process::ExitCode {
        std::process::ExitCode::from(status as u8)
    }
}
