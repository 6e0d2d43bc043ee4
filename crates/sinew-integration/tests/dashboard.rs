//! The Grafana dashboard (deploy/grafana/sinew.json) only queries metrics Sinew exports:
//! every `sinew_*` name in its expressions (and its template variables) must appear in a
//! real `/metrics` scrape, so a renamed metric breaks this test, not the dashboard.

use std::collections::BTreeSet;

use sinew_integration::{admin_kit, OneRoute, Upstream};

fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(at) = text[i..].find("sinew_") {
        let start = i + at;
        let boundary =
            start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        let end = text[start..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .map_or(text.len(), |e| start + e);
        if boundary {
            names.insert(text[start..end].to_string());
        }
        i = end;
    }
    names
}

#[tokio::test]
async fn every_dashboard_expression_names_metrics_sinew_exports() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/grafana/sinew.json"
    );
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("read the dashboard"))
            .expect("the dashboard is JSON");
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        let targets = panel["targets"].as_array().expect("targets");
        assert!(
            !targets.is_empty(),
            "panel {} queries nothing",
            panel["title"]
        );
        for t in targets {
            queries.push((
                panel["title"].to_string(),
                t["expr"].as_str().expect("expr").to_string(),
            ));
        }
    }
    for v in dashboard["templating"]["list"]
        .as_array()
        .expect("templating")
    {
        queries.push((
            v["name"].to_string(),
            v["query"].as_str().unwrap_or("").to_string(),
        ));
    }

    let up = Upstream::start("up").await;
    let (proxy, _addr) = OneRoute::to(&[up.addr]).start().await;
    let admin = admin_kit::start(&proxy).await;
    let scrape = admin_kit::metrics(admin.address).await;
    let exported: BTreeSet<String> = scrape
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect();
    assert!(exported.len() > 20, "a full scrape: {scrape}");
    for (title, expr) in &queries {
        let names = metric_names(expr);
        assert!(!names.is_empty(), "{title}: `{expr}` names no Sinew metric");
        for name in names {
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(&name);
            assert!(
                exported.contains(&name) || exported.contains(family),
                "{title}: `{expr}` names {name}, which Sinew does not export"
            );
        }
    }
}
