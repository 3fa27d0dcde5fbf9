//! Merging the answers of several nodes to one non-follow GetFlows request.
//!
//! Every node answers with up to `number` flows, oldest first. Together they
//! are ordered by flow time and cut to the `number` newest (or, with
//! `first`, the `number` oldest), which is what one node holding all the
//! flows would have answered.

use weir_observer::proto::observer::GetFlowsResponse;

fn time_of(response: &GetFlowsResponse) -> (i64, i32) {
    response.time.map_or((0, 0), |t| (t.seconds, t.nanos))
}

/// The responses of all nodes in time order (ties keep node order, then
/// each node's own order), cut to `number` (0 = all).
pub fn by_time(
    per_node: Vec<Vec<GetFlowsResponse>>,
    number: u64,
    first: bool,
) -> Vec<GetFlowsResponse> {
    let mut all: Vec<GetFlowsResponse> = per_node.into_iter().flatten().collect();
    // Stable: equal times stay in node order.
    all.sort_by_key(time_of);
    let keep = usize::try_from(number).unwrap_or(usize::MAX);
    if number == 0 || all.len() <= keep {
        return all;
    }
    if first {
        all.truncate(keep);
        all
    } else {
        all.split_off(all.len() - keep)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_observer::proto::Timestamp;

    fn at(node: &str, secs: i64) -> GetFlowsResponse {
        GetFlowsResponse {
            node_name: node.into(),
            time: Some(Timestamp {
                seconds: secs,
                nanos: 0,
            }),
            response_types: None,
        }
    }

    fn names(responses: &[GetFlowsResponse]) -> Vec<String> {
        responses
            .iter()
            .map(|r| format!("{}@{}", r.node_name, time_of(r).0))
            .collect()
    }

    fn nodes() -> Vec<Vec<GetFlowsResponse>> {
        vec![
            vec![at("a", 1), at("a", 4), at("a", 5)],
            vec![at("b", 2), at("b", 3), at("b", 6)],
            vec![],
        ]
    }

    #[test]
    fn last_n_across_nodes() {
        assert_eq!(names(&by_time(nodes(), 3, false)), ["a@4", "a@5", "b@6"]);
    }

    #[test]
    fn first_n_across_nodes() {
        assert_eq!(names(&by_time(nodes(), 3, true)), ["a@1", "b@2", "b@3"]);
    }

    #[test]
    fn zero_or_more_than_held_keeps_everything_in_order() {
        let all = ["a@1", "b@2", "b@3", "a@4", "a@5", "b@6"];
        assert_eq!(names(&by_time(nodes(), 0, false)), all);
        assert_eq!(names(&by_time(nodes(), 100, true)), all);
    }

    #[test]
    fn equal_times_keep_node_order() {
        let tied = vec![vec![at("a", 7)], vec![at("b", 7)]];
        assert_eq!(names(&by_time(tied, 0, false)), ["a@7", "b@7"]);
    }
}
