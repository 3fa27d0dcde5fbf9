//! One module per CNI command that needs the agent or the kernel; each takes
//! its validated request and returns the JSON to print (if any).

mod add;
mod check;
mod del;
mod gc;
mod status;

use serde_json::Value;

use crate::error::{CniError, ErrorCode};
use crate::netlink::NetlinkError;
use crate::request::Request;
use crate::version::version_info;

/// Runs a validated request.
pub async fn execute(request: Request) -> Result<Option<Value>, CniError> {
    match request {
        Request::Version => Ok(Some(version_info())),
        Request::Add(add) => add::add(add).await.map(Some),
        Request::Del(del) => del::del(del).await.map(|()| None),
        Request::Check(check) => check::check(check).await.map(|()| None),
        Request::Gc(gc) => gc::gc(gc).await.map(|()| None),
        Request::Status(config) => status::status(&config).await.map(|()| None),
    }
}

/// CNI_NETNS that cannot be used: a bad path is the runtime's error (4), any
/// other failure to open it an I/O failure (5).
fn netns_unusable(error: NetlinkError) -> CniError {
    let code = if error.is_missing_netns() {
        ErrorCode::InvalidEnvironment
    } else {
        ErrorCode::Io
    };
    CniError::new(code, "CNI_NETNS is not a usable network namespace")
        .with_details(error.to_string())
}

/// Appends a secondary failure (e.g. of cleanup) to an error's details.
fn also_failed(mut error: CniError, what: &str, failure: impl std::fmt::Display) -> CniError {
    if !error.details.is_empty() {
        error.details.push_str("; ");
    }
    error
        .details
        .push_str(&format!("{what} also failed: {failure}"));
    error
}
