//! `weir observe`: flows from a node's Observer API or a relay's, one line
//! each, a table, or JSON, with Hubble-like filters.

use std::io::Write;
use std::time::{Duration, SystemTime};

use anyhow::Result;
use weir_observer::proto::observer::{get_flows_response, GetFlowsRequest};
use weir_observer::{ClientTls, Target};

use crate::args::{AgentEventsArgs, ObserveArgs, ObserveCommand, Output, TlsArgs};
use crate::output;
use crate::table::{StreamingTable, Table};

mod filter;
mod render;

pub use render::node_status;

/// How long to wait for the Observer API to accept the connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the flows go: printed as they come, or a table printed at the end.
enum Sink {
    Lines(Output),
    Streaming(StreamingTable),
    Whole(Table),
}

/// The time `seconds` before now, as the Observer API's `since`.
pub fn seconds_ago(seconds: u64) -> weir_observer::proto::Timestamp {
    let t = SystemTime::now() - Duration::from_secs(seconds);
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    weir_observer::proto::Timestamp {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}

fn request(args: &ObserveArgs) -> GetFlowsRequest {
    let since = args.since_seconds.map(seconds_ago);
    GetFlowsRequest {
        number: args.last.unwrap_or(if args.follow { 0 } else { 20 }),
        follow: args.follow,
        whitelist: filter::filters(args),
        since,
        ..Default::default()
    }
}

/// A client of the Observer API `args` name.
pub async fn connect(
    args: &ObserveArgs,
) -> Result<
    weir_observer::proto::observer::observer_client::ObserverClient<tonic::transport::Channel>,
> {
    connect_to(&args.server, &args.tls).await
}

/// A client of the Observer API at `server`, over TLS as `tls` says.
pub async fn connect_to(
    server: &str,
    tls: &TlsArgs,
) -> Result<
    weir_observer::proto::observer::observer_client::ObserverClient<tonic::transport::Channel>,
> {
    let tls = tls
        .tls_ca_cert_files
        .as_deref()
        .map(|ca| {
            ClientTls::load(
                ca,
                tls.tls_client_cert_file.as_deref(),
                tls.tls_client_key_file.as_deref(),
                tls.tls_server_name.clone(),
            )
        })
        .transpose()?;
    let target = Target::parse(server)?.with_tls(tls.as_ref());
    Ok(target.connect(CONNECT_TIMEOUT).await?)
}

/// The Observer API at `server` (plaintext or a unix socket).
pub async fn connect_plain(
    server: &str,
) -> Result<
    weir_observer::proto::observer::observer_client::ObserverClient<tonic::transport::Channel>,
> {
    Ok(Target::parse(server)?.connect(CONNECT_TIMEOUT).await?)
}

/// `weir observe agent-events`: one line (or JSON object) per event.
async fn agent_events(args: &ObserveArgs, events: &AgentEventsArgs, json: bool) -> Result<()> {
    let mut client = connect(args).await?;
    let mut stream = client
        .get_agent_events(crate::agent_events::request(events))
        .await?
        .into_inner();
    let mut stdout = std::io::stdout().lock();
    while let Some(response) = stream.message().await? {
        let line = crate::agent_events::render(&response, json)?;
        if !output::stream_line(&mut stdout, &line) {
            return Ok(());
        }
    }
    Ok(())
}

/// `weir observe debug-events`: one line (or JSON object) per message.
async fn debug_events(args: &ObserveArgs, events: &AgentEventsArgs, json: bool) -> Result<()> {
    let mut client = connect(args).await?;
    let mut stream = client
        .get_debug_events(crate::debug_events::request(events))
        .await?
        .into_inner();
    let mut stdout = std::io::stdout().lock();
    while let Some(response) = stream.message().await? {
        let line = crate::debug_events::render(&response, json)?;
        if !output::stream_line(&mut stdout, &line) {
            return Ok(());
        }
    }
    Ok(())
}

pub async fn run(args: &ObserveArgs, format: Output) -> Result<()> {
    match &args.command {
        Some(ObserveCommand::AgentEvents(events)) => {
            return agent_events(args, events, format == Output::Json).await;
        }
        Some(ObserveCommand::DebugEvents(events)) => {
            return debug_events(args, events, format == Output::Json).await;
        }
        None => {}
    }
    let mut client = connect(args).await?;
    let mut stream = client.get_flows(request(args)).await?.into_inner();
    let mut stdout = std::io::stdout().lock();
    let node = args.print_node_name;
    let headers = render::table_headers(node);
    let mut sink = match format {
        Output::Table if args.follow => {
            let mut table = StreamingTable::new(render::streaming_widths(node));
            if !output::stream_line(&mut stdout, &table.header(&headers)) {
                return Ok(());
            }
            Sink::Streaming(table)
        }
        Output::Table => Sink::Whole(Table::new(&headers)),
        other => Sink::Lines(other),
    };
    while let Some(response) = stream.message().await? {
        match response.response_types {
            Some(get_flows_response::ResponseTypes::Flow(f)) => {
                let line = match &mut sink {
                    Sink::Whole(table) => {
                        table.row(render::table_cells(&f, node));
                        continue;
                    }
                    Sink::Streaming(table) => table.line(&render::table_cells(&f, node)),
                    Sink::Lines(Output::Json) => {
                        serde_json::to_string(&render::FlowJson::from(&f))?
                    }
                    Sink::Lines(_) => render::compact(&f),
                };
                if !output::stream_line(&mut stdout, &line) {
                    return Ok(());
                }
            }
            Some(get_flows_response::ResponseTypes::NodeStatus(event)) => {
                if let Some(text) = node_status(&event) {
                    eprintln!("{text}");
                }
            }
            Some(get_flows_response::ResponseTypes::LostEvents(lost)) => {
                eprintln!("lost {} flows", lost.num_events_lost);
            }
            None => {}
        }
    }
    if let Sink::Whole(table) = sink {
        // Ends quietly in a closed pipe, like the lines above.
        let _ = write!(stdout, "{}", table.render());
    }
    Ok(())
}
