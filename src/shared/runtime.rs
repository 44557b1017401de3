//! The one way a command runs async code: a current-thread tokio runtime
//! (a node's commands and the operator's do one thing at a time; the AWS
//! SDK needs a runtime, not threads).

/// Runs `work` to completion on a new current-thread runtime.
pub fn block_on<F: std::future::Future>(work: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime starts")
        .block_on(work)
}
