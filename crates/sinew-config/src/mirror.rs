//! Request mirroring (shadowing): a copy of a share of a route's requests goes to another
//! cluster, fire-and-forget, so a new version can see production traffic without
//! answering it.
//!
//! It follows Envoy's `RouteAction.request_mirror_policies`; the percentage is a plain
//! number from 0 to 100 in place of Envoy's `runtime_fraction`, and the two bounds that
//! keep a stalled shadow cluster from costing the main traffic anything
//! (`max_in_flight`, `max_body_bytes`) are Sinew's own.

use serde::Deserialize;

/// `routes[].request_mirror_policies[]`. Envoy: `RouteAction.RequestMirrorPolicy`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestMirrorPolicy {
    /// Where the copies go. Envoy: `cluster`.
    pub cluster: String,
    /// Share of requests copied, 0 to 100. Envoy: `runtime_fraction` (unset there: all).
    #[serde(default = "default_percentage")]
    pub percentage: f64,
    /// Keep the copy's `Host` as it is, instead of appending `-shadow` to its host part.
    /// Envoy: `disable_shadow_host_suffix_append`.
    #[serde(default)]
    pub disable_shadow_host_suffix_append: bool,
    /// Copies of this policy in flight at once; past it, requests are not copied.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: u32,
    /// Requests with a larger body are not copied (the main request is untouched).
    /// Absent: the listener's `request_body_buffer_bytes`.
    #[serde(default)]
    pub max_body_bytes: Option<u32>,
}

fn default_percentage() -> f64 {
    100.0
}
fn default_max_in_flight() -> u32 {
    256
}

#[cfg(test)]
mod tests {
    use crate::load_str;

    /// A config whose first route has `route` (flow YAML fields after the match).
    fn load(route: &str) -> Result<Vec<super::RequestMirrorPolicy>, String> {
        let yaml = format!(
            "{{listeners: [{{name: l, address: '127.0.0.1:0', http: {{virtual_hosts: [
                {{name: v, domains: ['*'], routes: [{{match: {{}}, {route}}}]}}]}}}}],
              clusters: [{{name: c, endpoints: []}}, {{name: shadow, endpoints: []}}]}}"
        );
        let loaded = load_str("t.yaml", &yaml).map_err(|d| d.to_string())?;
        let http = loaded.config.listeners[0].http.clone().unwrap();
        Ok(http.virtual_hosts.unwrap()[0].routes[0]
            .request_mirror_policies
            .clone())
    }

    #[test]
    fn defaults_copy_every_request_with_bounds() {
        let m = load("cluster: c, request_mirror_policies: [{cluster: shadow}]").unwrap();
        assert_eq!(m[0].cluster, "shadow");
        assert_eq!(m[0].percentage, 100.0);
        assert!(!m[0].disable_shadow_host_suffix_append);
        assert_eq!(m[0].max_in_flight, 256);
        assert_eq!(m[0].max_body_bytes, None);
        let m = load("cluster: c, request_mirror_policies: [{cluster: shadow, percentage: 2.5, disable_shadow_host_suffix_append: true, max_in_flight: 4, max_body_bytes: 10}]").unwrap();
        assert_eq!(m[0].percentage, 2.5);
        assert!(m[0].disable_shadow_host_suffix_append);
        assert_eq!((m[0].max_in_flight, m[0].max_body_bytes), (4, Some(10)));
    }

    #[test]
    fn bad_mirrors_are_reported_at_their_fields() {
        let r = "listeners[0].http.virtual_hosts[0].routes[0].request_mirror_policies";
        let e = load("cluster: c, request_mirror_policies: [{cluster: nope, percentage: 101, max_in_flight: 0}]")
            .unwrap_err();
        for want in [
            format!("{r}[0].cluster: no cluster named \"nope\""),
            format!("{r}[0].percentage: 101 is not a percentage from 0 to 100"),
            format!("{r}[0].max_in_flight: must be at least 1"),
        ] {
            assert!(
                e.lines().any(|l| l.ends_with(&want)),
                "want {want}\ngot {e}"
            );
        }
        let e =
            load("direct_response: {status: 200}, request_mirror_policies: [{cluster: shadow}]")
                .unwrap_err();
        assert!(
            e.ends_with(&format!(
                "{r}: mirrors requests sent upstream: needs `cluster` or `weighted_clusters`"
            )),
            "{e}"
        );
    }
}
