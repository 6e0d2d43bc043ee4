//! The Redis listener, with real peers: three `redis-server` shards behind the sinew
//! binary, driven by `redis-cli` and `redis-benchmark`; key placement checked shard by
//! shard against twemproxy (`nutcracker`) in front of the same shards.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use sinew_config::redis::RedisHash;
use sinew_integration::redis_kit::{
    cli, cli_with_input, wait_bounded, wait_pong, RedisServer, Twemproxy,
};
use sinew_integration::{free_port, scratch_dir, start_proxy_file, ChildGuard};

struct Setup {
    shards: Vec<RedisServer>,
    addr: SocketAddr,
    dir: std::path::PathBuf,
    _proxy: ChildGuard,
}

/// Three shards in cluster `cache` (the catch-all) and `redis` options added to the
/// listener's section; `users` is a cluster of the third shard alone.
fn start(label: &str, options: &str) -> Setup {
    let shards: Vec<RedisServer> = (0..3).map(|_| RedisServer::start()).collect();
    let dir = scratch_dir(label);
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let endpoints: String = shards
        .iter()
        .map(|s| format!("{{address: '{}'}}, ", s.addr))
        .collect();
    let config = format!(
        "listeners:
  - name: redis
    address: {addr}
    redis:
      catch_all_cluster: cache
      op_timeout: 500ms
{options}
clusters:
  - name: cache
    connect_timeout: 250ms
    endpoints: [{endpoints}]
  - name: users
    endpoints: [{{address: '{users}'}}]
",
        users = shards[2].addr
    );
    let path = dir.join("sinew.yaml");
    std::fs::write(&path, config).expect("write config");
    let proxy = start_proxy_file(&path);
    wait_pong(addr);
    Setup {
        shards,
        addr,
        dir,
        _proxy: proxy,
    }
}

fn lines(text: &str) -> Vec<&str> {
    text.lines().collect()
}

#[test]
fn redis_cli_through_sinew_sets_gets_and_joins_multi_key_commands_across_shards() {
    let s = start("redis-basic", "      hash: md5");
    assert_eq!(cli(s.addr, &["SET", "a", "1"]), "OK");
    assert_eq!(cli(s.addr, &["GET", "a"]), "1");
    assert_eq!(cli(s.addr, &["INCR", "a"]), "2");
    let mset: Vec<String> = (0..20)
        .flat_map(|i| [format!("k{i}"), format!("v{i}")])
        .collect();
    let mut args = vec!["MSET"];
    args.extend(mset.iter().map(String::as_str));
    assert_eq!(cli(s.addr, &args), "OK");
    // The keys are spread: every shard holds some (20 keys, three shards).
    let held: Vec<usize> = s
        .shards
        .iter()
        .map(|sh| sh.command(&["DBSIZE"]).parse().unwrap())
        .collect();
    assert_eq!(held.iter().sum::<usize>(), 21, "{held:?}");
    assert!(held.iter().filter(|&&n| n > 0).count() >= 2, "{held:?}");
    let mut mget = vec!["MGET", "k3", "missing"];
    let keys: Vec<String> = (0..20).map(|i| format!("k{i}")).collect();
    mget.extend(keys.iter().map(String::as_str));
    let got = cli(s.addr, &mget);
    let mut want = vec!["v3".to_string(), String::new()];
    want.extend((0..20).map(|i| format!("v{i}")));
    assert_eq!(lines(&got), want);
    assert_eq!(cli(s.addr, &["EXISTS", "k1", "k2", "k1", "nope"]), "3");
    assert_eq!(cli(s.addr, &["DEL", "k1", "k2", "k3", "nope"]), "3");
    assert_eq!(cli(s.addr, &["UNLINK", "k4", "k5"]), "2");
    assert_eq!(cli(s.addr, &["TOUCH", "k6", "k7", "k4"]), "2");
    assert_eq!(cli(s.addr, &["MGET", "k1", "k6"]), "\nv6");
    // Local answers.
    assert_eq!(cli(s.addr, &["PING"]), "PONG");
    assert_eq!(cli(s.addr, &["ECHO", "hi there"]), "hi there");
    assert_eq!(cli(s.addr, &["SELECT", "0"]), "OK");
    assert!(cli(s.addr, &["HELLO", "2"]).contains("proto"));
}

#[test]
fn commands_a_proxy_cannot_run_safely_get_resp_errors_naming_them() {
    let s = start("redis-refused", "");
    for (command, why) in [
        (&["MULTI"][..], "transactions"),
        (&["WATCH", "a"], "transactions"),
        (&["BLPOP", "list", "0"], "blocking"),
        (&["SUBSCRIBE", "chan"], "pub/sub"),
        (&["KEYS", "*"], "keyspace"),
        (&["SCAN", "0"], "keyspace"),
        (&["FLUSHALL"], "keyspace"),
        (&["CLIENT", "LIST"], "connection"),
        (&["CONFIG", "GET", "save"], "connection"),
    ] {
        let out = cli(s.addr, command);
        let name = command[0].to_string();
        assert!(
            out.starts_with(&format!("ERR unsupported command '{name}'")) && out.contains(why),
            "{command:?}: {out}"
        );
    }
    assert!(cli(s.addr, &["SELECT", "1"]).starts_with("ERR SELECT is only allowed for database 0"));
    assert_eq!(
        cli(s.addr, &["HELLO", "3"]),
        "NOPROTO sorry, this protocol version is not supported"
    );
    // Keys on one shard may be renamed; across shards it is refused.
    let (a, b) = keys_on_different_shards(&s);
    assert_eq!(cli(s.addr, &["SET", &a, "x"]), "OK");
    let out = cli(s.addr, &["RENAME", &a, &b]);
    assert!(
        out.contains("'RENAME' needs its keys on one shard"),
        "{out}"
    );
    let out = cli(s.addr, &["EVAL", "return 1", "2", &a, &b]);
    assert!(out.contains("'EVAL' needs its keys on one shard"), "{out}");
    assert_eq!(
        cli(
            s.addr,
            &["EVAL", "return redis.call('GET', KEYS[1])", "1", &a]
        ),
        "x"
    );
    // The connection stays usable after every refusal.
    assert_eq!(cli(s.addr, &["GET", &a]), "x");
}

/// Two keys whose shards differ (looked up by asking each shard after a SET).
fn keys_on_different_shards(s: &Setup) -> (String, String) {
    let shard_of = |key: &str| {
        cli(s.addr, &["SET", key, "probe"]);
        let i = s
            .shards
            .iter()
            .position(|sh| sh.command(&["EXISTS", key]) == "1")
            .expect("a shard holds the key");
        cli(s.addr, &["DEL", key]);
        i
    };
    // twemproxy's fnv1a_64 spreads keys by their first bytes more than their last.
    let first = shard_of("0:probe");
    let other = (1..200)
        .map(|i| format!("{i}:probe"))
        .find(|k| shard_of(k) != first)
        .expect("some key on another shard");
    ("0:probe".to_string(), other)
}

#[test]
fn keys_land_where_twemproxy_puts_them_with_its_default_fnv1a_64_hash() {
    same_placement_as_twemproxy("fnv1a_64", RedisHash::Fnv1a64);
}

#[test]
fn keys_land_where_twemproxy_puts_them_with_the_md5_hash() {
    same_placement_as_twemproxy("md5", RedisHash::Md5);
}

/// Keys written through Sinew are on the shard the documented continuum names, and
/// twemproxy in front of the same shards with the same hash finds them; what twemproxy
/// writes, Sinew reads.
fn same_placement_as_twemproxy(name: &str, hash: RedisHash) {
    let s = start(
        &format!("redis-placement-{name}"),
        &format!("      hash: {name}"),
    );
    let addrs: Vec<SocketAddr> = s.shards.iter().map(|sh| sh.addr).collect();
    let twemproxy = Twemproxy::start(&s.dir, &addrs, name);
    // Through Sinew, mass-inserted with `redis-cli --pipe` (raw RESP, all pipelined).
    let mut input = Vec::new();
    let keys: Vec<String> = (0..300).map(|i| format!("user:{i}:{}", i * 7919)).collect();
    for k in &keys {
        input.extend_from_slice(
            format!("*3\r\n$3\r\nSET\r\n${}\r\n{k}\r\n$1\r\n1\r\n", k.len()).as_bytes(),
        );
    }
    let out = cli_with_input(s.addr, &["--pipe"], &input);
    assert!(out.contains("errors: 0, replies: 300"), "{out}");
    let names: Vec<(String, u32)> = addrs.iter().map(|a| (a.to_string(), 1)).collect();
    for k in &keys {
        let holders: Vec<usize> = (0..3)
            .filter(|&i| s.shards[i].command(&["EXISTS", k]) == "1")
            .collect();
        let documented = sinew_proxy::redis::shard_of(&names, hash, k.as_bytes());
        assert_eq!(holders, vec![documented.unwrap()], "key {k}");
        assert_eq!(
            cli(twemproxy.addr, &["GET", k]),
            "1",
            "twemproxy looked elsewhere for {k}"
        );
    }
    for i in 0..100 {
        let k = format!("tw:{i}");
        assert_eq!(cli(twemproxy.addr, &["SET", &k, &i.to_string()]), "OK");
    }
    let tw: Vec<String> = (0..100).map(|i| format!("tw:{i}")).collect();
    let mut mget = vec!["MGET"];
    mget.extend(tw.iter().map(String::as_str));
    let want: Vec<String> = (0..100).map(|i| i.to_string()).collect();
    assert_eq!(lines(&cli(s.addr, &mget)), want);
    if hash == RedisHash::Md5 {
        // MD5 spreads these similar keys over every shard.
        for sh in &s.shards {
            let n: usize = sh.command(&["DBSIZE"]).parse().unwrap();
            assert!(n > 50, "{n} of 400 keys on {}", sh.addr);
        }
    }
}

#[test]
fn prefix_routes_send_keys_to_their_cluster_and_remove_prefix_cuts_the_prefix() {
    let s = start(
        "redis-prefix",
        "      hash: md5
      prefix_routes: [{prefix: 'user:', cluster: users, remove_prefix: true}, {prefix: 'user:vip:', cluster: cache}]",
    );
    for i in 0..20 {
        assert_eq!(cli(s.addr, &["SET", &format!("user:{i}"), "u"]), "OK");
    }
    // Every user key is on the users cluster's one shard, without its prefix.
    assert_eq!(s.shards[2].command(&["DBSIZE"]), "20");
    assert_eq!(s.shards[2].command(&["GET", "7"]), "u");
    assert_eq!(cli(s.addr, &["GET", "user:7"]), "u");
    assert_eq!(
        lines(&cli(s.addr, &["MGET", "user:99", "user:1", "user:2"])),
        ["", "u", "u"]
    );
    // The longest prefix wins: vip keys go to the catch-all's shards, prefix kept.
    for i in 0..20 {
        cli(s.addr, &["SET", &format!("user:vip:{i}"), "v"]);
    }
    let vip_held: usize = s
        .shards
        .iter()
        .map(|sh| sh.command(&["DBSIZE"]).parse::<usize>().unwrap())
        .sum();
    assert_eq!(vip_held, 40);
    assert!(s.shards[0].command(&["DBSIZE"]) != "0" || s.shards[1].command(&["DBSIZE"]) != "0");
}

#[test]
fn a_killed_shard_gives_errors_for_its_keys_only_and_serves_them_again_when_back() {
    let mut s = start("redis-kill", "      hash: md5");
    let keys: Vec<String> = (0..90).map(|i| format!("{i}:item")).collect();
    for k in &keys {
        assert_eq!(cli(s.addr, &["SET", k, "v"]), "OK");
    }
    let owner: Vec<usize> = keys
        .iter()
        .map(|k| {
            (0..3)
                .find(|&i| s.shards[i].command(&["EXISTS", k]) == "1")
                .expect("a shard holds the key")
        })
        .collect();
    let held = |i: usize| owner.iter().filter(|&&o| o == i).count();
    let mut by_size: Vec<usize> = (0..3).collect();
    by_size.sort_by_key(|&i| std::cmp::Reverse(held(i)));
    let (victim, paused) = (by_size[0], by_size[1]);
    assert!(held(paused) > 0, "the keys are on one shard only");
    let on_victim: Vec<&String> = keys
        .iter()
        .zip(&owner)
        .filter(|(_, &o)| o == victim)
        .map(|(k, _)| k)
        .collect();
    s.shards[victim].kill();
    let started = Instant::now();
    for k in &keys {
        let out = cli(s.addr, &["GET", k]);
        if on_victim.contains(&k) {
            let shard = format!("ERR upstream shard {}", s.shards[victim].addr);
            assert!(out.starts_with(&shard), "{k}: {out}");
        } else {
            assert_eq!(out, "v", "{k} is not on the killed shard");
        }
    }
    // Refused connections fail at once, never near op_timeout per key.
    assert!(started.elapsed() < Duration::from_secs(20));
    // A paused shard (connection open, no answer) times out within op_timeout.
    s.shards[paused].pause();
    let paused_key = &keys[owner.iter().position(|&o| o == paused).unwrap()];
    let t = Instant::now();
    let out = cli(s.addr, &["GET", paused_key]);
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    assert!(out.contains("did not answer within op_timeout"), "{out}");
    s.shards[paused].resume();
    assert_eq!(cli(s.addr, &["GET", paused_key]), "v");
    s.shards[victim].restart();
    // Back (empty, as the server keeps nothing): writes and reads work again.
    let until = Instant::now() + Duration::from_secs(10);
    let k = on_victim[0];
    while cli(s.addr, &["SET", k, "again"]) != "OK" {
        assert!(Instant::now() < until, "the shard did not come back");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(cli(s.addr, &["GET", k]), "again");
    assert_eq!(s.shards[victim].command(&["GET", k]), "again");
}

#[test]
fn redis_benchmark_pipelined_through_sinew_completes_without_errors() {
    let s = start("redis-bench", "");
    let child = std::process::Command::new("redis-benchmark")
        .args(["-h", "127.0.0.1", "-p", &s.addr.port().to_string()])
        .args([
            "-t", "get,set", "-n", "2000", "-P", "16", "-c", "20", "-r", "1000", "-q", "--csv",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run redis-benchmark (Debian package `redis-tools`)");
    let out = wait_bounded(child, Duration::from_secs(60), "redis-benchmark");
    assert!(out.contains("\"SET\"") && out.contains("\"GET\""), "{out}");
    assert!(!out.to_lowercase().contains("error:"), "{out}");
    // The random keys were spread over the shards.
    let held: Vec<usize> = s
        .shards
        .iter()
        .map(|sh| sh.command(&["DBSIZE"]).parse().unwrap())
        .collect();
    assert!(held.iter().sum::<usize>() > 100, "{held:?}");
}

#[test]
fn pipelined_inline_commands_are_answered_in_order() {
    let s = start("redis-inline", "");
    let mut script = String::new();
    for i in 0..50 {
        script.push_str(&format!("SET \"n {i}\" {i}\nGET \"n {i}\"\nPING\n"));
    }
    let out = cli_with_input(s.addr, &[], script.as_bytes());
    let want: Vec<String> = (0..50)
        .flat_map(|i| ["OK".to_string(), i.to_string(), "PONG".to_string()])
        .collect();
    assert_eq!(lines(&out), want);
}

/// Envoy's Redis proxy filter in a bootstrap, run by the sinew binary: a prefix route
/// with `remove_prefix` to one server and the catch-all route to another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_envoy_redis_proxy_bootstrap_routes_by_prefix_and_catch_all() {
    use sinew_integration::envoy_kit::{bootstrap_of, network_listener, start};
    let (cache, users) = (RedisServer::start(), RedisServer::start());
    let (port, admin) = (free_port(), free_port());
    let listener = network_listener(
        "cache",
        port,
        "envoy.filters.network.redis_proxy",
        "type.googleapis.com/envoy.extensions.filters.network.redis_proxy.v3.RedisProxy",
        r#"          settings: { op_timeout: 1s }
          prefix_routes:
            routes: [{ prefix: "user:", cluster: users, remove_prefix: true }]
            catch_all_route: { cluster: cache }
"#,
    );
    let dir = scratch_dir("envoy-redis");
    let file = dir.join("envoy.yaml");
    std::fs::write(
        &file,
        bootstrap_of(
            &listener,
            &[("cache", cache.addr), ("users", users.addr)],
            admin,
        ),
    )
    .unwrap();
    let _proxy = start(&file, admin).await;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let out = tokio::task::spawn_blocking(move || {
        [
            cli(addr, &["SET", "user:7", "ada"]),
            cli(addr, &["SET", "page", "home"]),
            cli(addr, &["GET", "user:7"]),
        ]
    })
    .await
    .unwrap();
    assert_eq!(out, ["OK", "OK", "ada"]);
    assert_eq!(
        users.command(&["GET", "7"]),
        "ada",
        "prefix removed, on users"
    );
    assert_eq!(cache.command(&["GET", "page"]), "home", "the catch-all");
    assert_eq!(cache.command(&["EXISTS", "user:7"]), "0");
}
