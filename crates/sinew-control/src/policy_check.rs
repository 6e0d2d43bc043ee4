//! What a service's `authorization` may hold when `sinew control` sends it: the proxy's
//! own checks, then what Envoy RBAC over xDS cannot carry. Kept apart from the RBAC
//! builder ([`crate::authz`]) so the services file can be checked without it.

use sinew_config::authz::{
    parse_condition_key, Authorization, AuthzSource, ConditionKey, ValueList,
};
use sinew_config::ConfigError;

/// Every error in a service's `authorization` (`path` is where it is, e.g.
/// `authorization`): the proxy's own checks, then what Envoy RBAC cannot carry.
pub fn check(path: &str, authz: &Authorization) -> Vec<ConfigError> {
    let mut errors = Vec::new();
    sinew_config::authz::check(path, authz, &mut errors);
    for (i, policy) in authz.policies.iter().enumerate() {
        for (j, rule) in policy.rules.iter().enumerate() {
            let rp = format!("{path}.policies[{i}].rules[{j}]");
            for (k, from) in rule.from.iter().enumerate() {
                check_source(&format!("{rp}.from[{k}].source"), &from.source, &mut errors);
            }
            for (k, cond) in rule.when.iter().enumerate() {
                let cp = format!("{rp}.when[{k}]");
                match parse_condition_key(&cond.key) {
                    Ok(ConditionKey::SourceNamespace) => {
                        errors.push(ConfigError::new(format!("{cp}.key"), NAMESPACES))
                    }
                    Ok(ConditionKey::RequestHeader(name)) if name == "host" => {
                        errors.push(ConfigError::new(
                            format!("{cp}.key"),
                            "the host is matched by `to: [{operation: {hosts: [...]}}]`",
                        ))
                    }
                    Ok(ConditionKey::SourcePrincipal) => {
                        for (field, list) in
                            [("values", &cond.values), ("not_values", &cond.not_values)]
                        {
                            check_principals(&format!("{cp}.{field}"), list, &mut errors);
                        }
                    }
                    _ => {}
                }
            }
        }
    }
    errors
}

pub(crate) const NAMESPACES: &str =
    "namespaces cannot be sent as Envoy RBAC that Sinew maps (it matches \
SPIFFE IDs by exact, prefix or suffix): write principals such as `TRUST_DOMAIN/ns/NAMESPACE/sa/*`";

fn check_source(sp: &str, s: &AuthzSource, errors: &mut Vec<ConfigError>) {
    for (field, list) in [
        ("principals", &s.principals),
        ("not_principals", &s.not_principals),
        ("ip_blocks", &s.ip_blocks),
        ("not_ip_blocks", &s.not_ip_blocks),
        ("remote_ip_blocks", &s.remote_ip_blocks),
        ("not_remote_ip_blocks", &s.not_remote_ip_blocks),
    ] {
        match list {
            ValueList::File(_) => errors.push(ConfigError::new(
                format!("{sp}.{field}.from_file"),
                "a list file is read from the proxy's own disk; sinew control sends values inline",
            )),
            ValueList::Inline(values) if field.ends_with("principals") => {
                check_principals(&format!("{sp}.{field}"), values, errors)
            }
            ValueList::Inline(_) => {}
        }
    }
    for (field, list) in [
        ("namespaces", &s.namespaces),
        ("not_namespaces", &s.not_namespaces),
    ] {
        if !list.is_empty() {
            errors.push(ConfigError::new(format!("{sp}.{field}"), NAMESPACES));
        }
    }
}

fn check_principals(path: &str, values: &[String], errors: &mut Vec<ConfigError>) {
    for (i, v) in values.iter().enumerate() {
        if v.contains("://") {
            errors.push(ConfigError::new(
                format!("{path}[{i}]"),
                format!("{v:?}: a principal is written without its scheme, as Istio does (`cluster.local/ns/shop/sa/web` for spiffe://cluster.local/ns/shop/sa/web)"),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_rbac_cannot_carry_is_refused_at_its_field() {
        let check_one = |yaml: &str| {
            let a: Authorization = serde_yaml_ng::from_str(yaml).unwrap();
            check("authorization", &a)
                .into_iter()
                .map(|e| format!("{}: {}", e.path, e.message))
                .collect::<Vec<_>>()
        };
        let e =
            check_one("policies: [{name: p, rules: [{from: [{source: {namespaces: [shop]}}]}]}]");
        assert!(
            e[0].starts_with(
                "authorization.policies[0].rules[0].from[0].source.namespaces: namespaces cannot"
            ),
            "{e:?}"
        );
        let e = check_one(
            "policies: [{name: p, rules: [{from: [{source: {principals: {from_file: /x}}}]}]}]",
        );
        assert!(
            e[0].contains("source.principals.from_file: a list file"),
            "{e:?}"
        );
        let e = check_one("policies: [{name: p, rules: [{from: [{source: {principals: ['spiffe://td/ns/a/sa/b']}}]}]}]");
        assert!(
            e[0].contains(
                "principals[0]: \"spiffe://td/ns/a/sa/b\": a principal is written without"
            ),
            "{e:?}"
        );
        let e = check_one(
            "policies: [{name: p, rules: [{when: [{key: 'request.headers[host]', values: [a]}]}]}]",
        );
        assert!(e[0].contains("when[0].key: the host"), "{e:?}");
        let e = check_one(
            "policies: [{name: p, rules: [{when: [{key: source.namespace, values: [a]}]}]}]",
        );
        assert!(e[0].contains("when[0].key: namespaces cannot"), "{e:?}");
        // The proxy's own checks come first.
        let e = check_one(
            "policies: [{name: p, rules: [{from: [{source: {ip_blocks: [10.0.0.0/40]}}]}]}]",
        );
        assert!(e[0].contains("ip_blocks[0]"), "{e:?}");
    }
}
