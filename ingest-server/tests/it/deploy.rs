//! The deployment files under `deploy/`: the alert rules pass `promtool`'s checks and their
//! unit tests; the Grafana dashboard's queries are PromQL and, like the alerts', name only
//! metrics a running server (or, for the replicated deployment's, a cluster node) exposes; every
//! metric family the server exposes has a panel; the flags the service files pass exist; and
//! their stop timeouts outlast the server's shutdown.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use hyper::Method;
use serde_json::Value;

use crate::support::{tool, TestServer, ADMIN};

/// Time the tests grant the engine's final flush and sync after the drain, on top of
/// `--shutdown-delay` + `--drain-timeout`, when they check a stop timeout.
const FLUSH_MARGIN: Duration = Duration::from_secs(5);

/// Suffixes a sample's name adds to its family's name (counters, histograms, info metrics).
const SAMPLE_SUFFIXES: [&str; 5] = ["_total", "_bucket", "_sum", "_count", "_info"];

/// The metric families only a node of the replicated deployment (`--nats`) exports, all gauges
/// (`ClusterStatus::metrics_text` in `src/cluster/mod.rs`). The test server runs without NATS,
/// so its scrape lacks them; the dashboard and the alerts may name them all the same, and every
/// one needs a panel. `cluster_families_are_those_the_cluster_module_exports` keeps the list
/// equal to the `ingest_cluster_*` names in `src/cluster/`.
const CLUSTER_FAMILIES: [&str; 6] = [
    "ingest_cluster_role",
    "ingest_cluster_epoch",
    "ingest_cluster_log_position",
    "ingest_cluster_replication_lag_entries",
    "ingest_cluster_snapshot_position",
    "ingest_cluster_applied_at_seconds",
];

fn deploy(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(file)
}

fn read(file: &str) -> String {
    let path = deploy(file);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn promtool(test: &str) -> Option<PathBuf> {
    tool(
        test,
        &["promtool"],
        "PROMTOOL",
        "apt-get install prometheus",
    )
}

/// Runs `program args` and asserts that it succeeds, showing its output if not.
fn run_ok(program: &Path, args: &[&str]) {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{} runs: {e}", program.display()));
    assert!(
        output.status.success(),
        "{} {}: {}\n{}{}",
        program.display(),
        args.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
}

#[test]
fn alert_rules_pass_promtool_checks_and_unit_tests() {
    let Some(promtool) = promtool("alert_rules_pass_promtool_checks_and_unit_tests") else {
        return;
    };
    let rules = deploy("prometheus/alerts.yml");
    let tests = deploy("prometheus/alerts.test.yml");
    let config = deploy("prometheus/prometheus.yml");
    run_ok(&promtool, &["check", "rules", rules.to_str().unwrap()]);
    run_ok(&promtool, &["test", "rules", tests.to_str().unwrap()]);
    run_ok(&promtool, &["check", "config", config.to_str().unwrap()]);
    // Every alert has a unit test: its name appears as an `alertname:` of the tests.
    let tested: BTreeSet<String> = read("prometheus/alerts.test.yml")
        .lines()
        .filter_map(|line| line.trim().strip_prefix("alertname:"))
        .map(|name| name.trim().to_string())
        .collect();
    let alerts = alert_names(&read("prometheus/alerts.yml"));
    let untested: Vec<&String> = alerts.difference(&tested).collect();
    assert!(
        untested.is_empty(),
        "alerts without a unit test: {untested:?}"
    );
}

/// The dashboard's queries, with Grafana's variables replaced by values, as recording rules:
/// `promtool check rules` then parses each as PromQL.
#[test]
fn dashboard_queries_are_promql() {
    let Some(promtool) = promtool("dashboard_queries_are_promql") else {
        return;
    };
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (at, expr) in dashboard_exprs(&dashboard()).iter().enumerate() {
        let expr = expr
            .replace("$__rate_interval", "5m")
            .replace("$__range", "1h")
            .replace("$job", ".*")
            .replace("$instance", ".*");
        assert!(!expr.contains('$'), "a Grafana variable left in {expr}");
        // A JSON string is a YAML double-quoted scalar.
        let quoted = serde_json::to_string(&expr).unwrap();
        rules.push_str(&format!(
            "      - record: dashboard:query_{at}\n        expr: {quoted}\n"
        ));
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dashboard-rules.yml");
    std::fs::write(&file, rules).unwrap();
    run_ok(&promtool, &["check", "rules", file.to_str().unwrap()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_and_alerts_cover_the_metrics_the_server_exposes() {
    let server = TestServer::start(|c| {
        c.webhook_allow_networks = "127.0.0.0/8".parse().unwrap();
    })
    .await;
    // Rows for the labelled families: answers on a few routes, a signature's outcome, a
    // webhook (nothing is delivered to it: no event happens).
    server.register("p", "{}").await;
    assert_eq!(server.sign("p", "ann@example.org").await.status, 201);
    server.petition("p").await;
    let put = server
        .send(
            Method::PUT,
            "/v1/webhooks/receiver",
            &[
                ("authorization", ADMIN),
                ("content-type", "application/json"),
            ],
            r#"{"url":"http://127.0.0.1:9/hook"}"#,
        )
        .await;
    assert_eq!(put.status, 201, "{put:?}");
    let scrape = server.send(Method::GET, "/metrics", &[], "").await;
    assert_eq!(scrape.status, 200, "{scrape:?}");
    let scrape = String::from_utf8(scrape.body.to_vec()).unwrap();
    server.stop().await;

    let mut samples = sample_names(&scrape);
    let mut families = family_names(&scrape);
    assert!(
        families.len() > 20 && samples.len() >= families.len(),
        "not a scrape: {scrape}"
    );
    // A cluster node's families as well: gauges, so each is its only sample's name.
    for family in CLUSTER_FAMILIES {
        assert!(
            !families.contains(family),
            "{family} is exported without --nats: take it off CLUSTER_FAMILIES"
        );
        samples.insert(family.to_string());
        families.insert(family.to_string());
    }

    let dashboard = dashboard();
    let queried: BTreeSet<String> = dashboard_exprs(&dashboard)
        .iter()
        .flat_map(|expr| metric_names(expr))
        .collect();
    let variables = variable_queries(&dashboard);
    assert!(!variables.is_empty(), "the dashboard has variables");
    let mut named = queried.clone();
    for query in &variables {
        named.extend(metric_names(query));
    }
    let unknown: Vec<&String> = named.difference(&samples).collect();
    assert!(
        unknown.is_empty(),
        "the dashboard queries metrics the server does not expose: {unknown:?}"
    );
    let unshown: Vec<&String> = families
        .iter()
        .filter(|family| !queried.iter().any(|name| is_sample_of(name, family)))
        .collect();
    assert!(
        unshown.is_empty(),
        "metric families without a dashboard panel: {unshown:?}"
    );

    let alerts = read("prometheus/alerts.yml");
    let exprs = alert_exprs(&alerts);
    assert_eq!(
        exprs.len(),
        alert_names(&alerts).len(),
        "one expr per alert: {exprs:?}"
    );
    let alerted: BTreeSet<String> = exprs.iter().flat_map(|expr| metric_names(expr)).collect();
    assert!(alerted.contains("ingest_ready"), "{alerted:?}");
    let unknown: Vec<&String> = alerted.difference(&samples).collect();
    assert!(
        unknown.is_empty(),
        "the alerts query metrics the server does not expose: {unknown:?}"
    );
}

/// `CLUSTER_FAMILIES` is what the cluster module exports: no more, no fewer.
#[test]
fn cluster_families_are_those_the_cluster_module_exports() {
    let listed: BTreeSet<String> = CLUSTER_FAMILIES.iter().map(|f| f.to_string()).collect();
    let exported = cluster_module_names();
    assert_eq!(
        listed, exported,
        "CLUSTER_FAMILIES and the ingest_cluster_* names in src/cluster/ differ"
    );
}

/// Every panel queries Prometheus through the `DS_PROMETHEUS` variable and has a query.
#[test]
fn dashboard_panels_query_the_datasource_variable() {
    let dashboard = dashboard();
    assert!(
        dashboard["schemaVersion"].as_u64().unwrap() >= 36,
        "schemaVersion"
    );
    let variables = dashboard["templating"]["list"].as_array().unwrap();
    assert!(
        variables
            .iter()
            .any(|v| v["name"] == "DS_PROMETHEUS" && v["type"] == "datasource"),
        "a datasource variable DS_PROMETHEUS"
    );
    let mut ids = BTreeSet::new();
    for panel in panels(&dashboard) {
        let title = &panel["title"];
        assert!(ids.insert(panel["id"].as_u64().unwrap()), "ids repeat");
        if panel["type"] == "row" {
            continue;
        }
        assert_eq!(panel["datasource"]["uid"], "${DS_PROMETHEUS}", "{title}");
        let targets = panel["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{title} has no query");
        for target in targets {
            assert_eq!(target["datasource"]["uid"], "${DS_PROMETHEUS}", "{title}");
            assert!(!target["expr"].as_str().unwrap().is_empty(), "{title}");
        }
    }
}

/// The flags the service files pass to the server are flags it has.
#[test]
fn service_files_pass_flags_the_server_has() {
    let help = Command::new(env!("CARGO_BIN_EXE_ingest-server"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(help.status.success());
    let help = String::from_utf8(help.stdout).unwrap();
    let systemd = read("systemd/ingest-server.service");
    let kubernetes = read("kubernetes/ingest-server.yaml");
    let docker = read("Dockerfile");
    let docker_cmd: String = docker
        .lines()
        .filter(|line| line.starts_with("CMD") || line.starts_with("ENTRYPOINT"))
        .collect();
    for (file, text) in [
        ("systemd", uncommented(&systemd)),
        ("kubernetes", uncommented(&kubernetes)),
        ("Dockerfile", docker_cmd),
    ] {
        let flags = flags(&text);
        assert!(flags.contains("--listen"), "{file}: {flags:?}");
        for flag in &flags {
            assert!(
                help.contains(&format!("{flag} <")),
                "{file} passes {flag}, which `ingest-server --help` does not list"
            );
        }
    }
}

/// systemd's `TimeoutStopSec` and Kubernetes' `terminationGracePeriodSeconds` outlast the
/// shutdown delay and drain timeout their own files pass, plus the final flush.
#[test]
fn stop_timeouts_outlast_the_shutdown() {
    let systemd = uncommented(&read("systemd/ingest-server.service"));
    let stop = setting(&systemd, "TimeoutStopSec=");
    let stop = humantime::parse_duration(&stop).unwrap();
    let shutdown = shutdown_time(&systemd);
    assert!(
        stop >= shutdown + FLUSH_MARGIN,
        "systemd: TimeoutStopSec {stop:?} < shutdown delay + drain timeout {shutdown:?} + {FLUSH_MARGIN:?}"
    );
    assert_eq!(setting(&systemd, "KillSignal="), "SIGTERM");

    let kubernetes = uncommented(&read("kubernetes/ingest-server.yaml"));
    let grace: u64 = setting(&kubernetes, "terminationGracePeriodSeconds:")
        .parse()
        .unwrap();
    let grace = Duration::from_secs(grace);
    let shutdown = shutdown_time(&kubernetes);
    assert!(
        grace >= shutdown + FLUSH_MARGIN,
        "kubernetes: terminationGracePeriodSeconds {grace:?} < shutdown delay + drain timeout {shutdown:?} + {FLUSH_MARGIN:?}"
    );
    // The pod keeps answering after SIGTERM through --shutdown-delay; a preStop sleep as well
    // would add to it, unaccounted for above.
    assert!(
        !kubernetes.contains("preStop:"),
        "kubernetes: a preStop hook besides --shutdown-delay"
    );
}

#[test]
fn metric_names_are_found_in_queries() {
    fn check(expr: &str, expected: &[&str]) {
        let found: Vec<String> = metric_names(expr).into_iter().collect();
        assert_eq!(found, expected, "{expr}");
    }
    check("ingest_ready", &["ingest_ready"]);
    check("ingest_ready == 0", &["ingest_ready"]);
    check(
        r#"histogram_quantile(0.99, sum by (le) (rate(ingest_ack_latency_seconds_bucket{job=~"$job"}[5m])))"#,
        &["ingest_ack_latency_seconds_bucket"],
    );
    check(
        r#"sum by (route) (rate(ingest_http_requests_total{class="5xx",route!="ingest_x"}[$__rate_interval]))"#,
        &["ingest_http_requests_total"],
    );
    check(
        "ingest_index_bytes / ingest_index_entries",
        &["ingest_index_bytes", "ingest_index_entries"],
    );
    check(
        "time() - process_start_time_seconds{instance=~\"$instance\"}",
        &["process_start_time_seconds"],
    );
    check(
        "max by (ingest_label) (up{job=\"ingest-server\"}) and on (instance) my_ingest_total",
        &[],
    );
    check(
        "label_values(ingest_ready{job=~\"$job\"}, instance)",
        &["ingest_ready"],
    );
}

#[test]
fn families_match_their_samples() {
    assert!(is_sample_of("ingest_signatures_total", "ingest_signatures"));
    assert!(is_sample_of(
        "ingest_batch_lines_bucket",
        "ingest_batch_lines"
    ));
    assert!(is_sample_of("ingest_ready", "ingest_ready"));
    assert!(is_sample_of("ingest_build_info", "ingest_build"));
    assert!(!is_sample_of(
        "ingest_petitions_overdue",
        "ingest_petitions"
    ));
    assert!(!is_sample_of(
        "ingest_petitions",
        "ingest_petitions_overdue"
    ));
}

fn dashboard() -> Value {
    serde_json::from_str(&read("grafana/ingest-server.json")).expect("the dashboard is JSON")
}

/// Every panel, also those inside collapsed rows.
fn panels(dashboard: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        out.push(panel);
        if let Some(inner) = panel["panels"].as_array() {
            out.extend(inner);
        }
    }
    out
}

/// Every query of the dashboard: each panel target's `expr` and each query variable's query.
fn dashboard_exprs(dashboard: &Value) -> Vec<String> {
    let mut exprs = Vec::new();
    for panel in panels(dashboard) {
        for target in panel["targets"].as_array().into_iter().flatten() {
            if let Some(expr) = target["expr"].as_str() {
                exprs.push(expr.to_string());
            }
        }
    }
    assert!(!exprs.is_empty(), "the dashboard has no queries");
    exprs
}

/// The label-value queries of the dashboard's variables (`label_values(metric, label)`): not
/// PromQL, but they name metrics too.
fn variable_queries(dashboard: &Value) -> Vec<String> {
    dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|variable| variable["type"] == "query")
        .filter_map(|variable| {
            variable["query"]["query"]
                .as_str()
                .or(variable["query"].as_str())
        })
        .map(str::to_string)
        .collect()
}

/// Keywords followed by a list of label names in parentheses.
const GROUPINGS: [&str; 6] = [
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// The names of the metrics an expression queries: identifiers that begin with `ingest_` or
/// `process_`, outside string literals, label matchers (`{...}`) and lists of label names
/// (`by (...)`, `on (...)`, ...), so label names and values, function names and keywords are
/// never taken for metrics.
fn metric_names(expr: &str) -> BTreeSet<String> {
    // First the string literals and label matchers go, each replaced by a space.
    let mut bare = Vec::with_capacity(expr.len());
    let mut chars = expr.chars();
    let mut in_matcher = false;
    while let Some(c) = chars.next() {
        match c {
            '"' | '\'' | '`' => {
                let mut escaped = false;
                for d in chars.by_ref() {
                    if escaped {
                        escaped = false;
                    } else if d == '\\' && c != '`' {
                        escaped = true;
                    } else if d == c {
                        break;
                    }
                }
                bare.push(' ');
            }
            '{' => in_matcher = true,
            '}' => {
                in_matcher = false;
                bare.push(' ');
            }
            _ if in_matcher => {}
            c => bare.push(c),
        }
    }
    let word_char = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let mut names = BTreeSet::new();
    let mut at = 0;
    while at < bare.len() {
        let starts_word = (bare[at].is_ascii_alphabetic() || bare[at] == '_' || bare[at] == ':')
            && (at == 0 || !word_char(bare[at - 1]));
        if !starts_word {
            at += 1;
            continue;
        }
        let start = at;
        while at < bare.len() && word_char(bare[at]) {
            at += 1;
        }
        let word: String = bare[start..at].iter().collect();
        if GROUPINGS.contains(&word.as_str()) {
            let mut next = at;
            while next < bare.len() && bare[next].is_whitespace() {
                next += 1;
            }
            if bare.get(next) == Some(&'(') {
                at = bare[next..]
                    .iter()
                    .position(|&c| c == ')')
                    .map_or(bare.len(), |end| next + end + 1);
            }
        } else if word.starts_with("ingest_") || word.starts_with("process_") {
            names.insert(word);
        }
    }
    names
}

/// The names of the samples in a scrape (`name{labels} value` or `name value`).
fn sample_names(scrape: &str) -> BTreeSet<String> {
    scrape
        .lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .map(|line| {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            line[..end].to_string()
        })
        .collect()
}

/// The `ingest_cluster_*` names in the cluster module's sources (`src/cluster/*.rs`).
fn cluster_module_names() -> BTreeSet<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/cluster");
    let word_char = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut names = BTreeSet::new();
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|ext| ext != "rs") {
            continue;
        }
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        for (at, _) in text.match_indices("ingest_cluster_") {
            if text[..at].ends_with(word_char) {
                continue;
            }
            let end = text[at..]
                .find(|c: char| !word_char(c))
                .map_or(text.len(), |len| at + len);
            names.insert(text[at..end].to_string());
        }
    }
    assert!(
        !names.is_empty(),
        "no ingest_cluster_* names in {}",
        dir.display()
    );
    names
}

/// The metric families a scrape declares (`# TYPE name type`).
fn family_names(scrape: &str) -> BTreeSet<String> {
    scrape
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

/// Whether a sample called `name` belongs to `family`.
fn is_sample_of(name: &str, family: &str) -> bool {
    name == family
        || name
            .strip_prefix(family)
            .is_some_and(|suffix| SAMPLE_SUFFIXES.contains(&suffix))
}

/// The names of the alerts in a rules file (`- alert: Name`).
fn alert_names(rules: &str) -> BTreeSet<String> {
    rules
        .lines()
        .filter_map(|line| line.trim().strip_prefix("- alert:"))
        .map(|name| name.trim().to_string())
        .collect()
}

/// The `expr` of every rule in a rules file: on its line (`expr: ...`) or a block under it
/// (`expr: |`, the lines indented deeper).
fn alert_exprs(rules: &str) -> Vec<String> {
    let lines: Vec<&str> = rules.lines().collect();
    let mut exprs = Vec::new();
    for (at, line) in lines.iter().enumerate() {
        let Some(value) = line.trim_start().strip_prefix("expr:") else {
            continue;
        };
        let value = value.trim();
        if value == "|" || value == ">" {
            let indent = line.len() - line.trim_start().len();
            let block: Vec<&str> = lines[at + 1..]
                .iter()
                .take_while(|next| {
                    next.trim().is_empty() || next.len() - next.trim_start().len() > indent
                })
                .map(|next| next.trim())
                .collect();
            exprs.push(block.join(" ").trim().to_string());
        } else {
            exprs.push(value.to_string());
        }
    }
    exprs
}

/// The text without its comment lines (`#` first, after indentation).
fn uncommented(text: &str) -> String {
    text.lines()
        .filter(|line| !line.trim_start().starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The value after `key` (on the first line holding it), up to the end of the line.
fn setting(text: &str, key: &str) -> String {
    let line = text
        .lines()
        .find_map(|line| line.trim().strip_prefix(key))
        .unwrap_or_else(|| panic!("no {key} in {text}"));
    line.trim().trim_matches('"').to_string()
}

/// The `--flag`s in a text (`--flag value`, `--flag=value`, `"--flag"`).
fn flags(text: &str) -> BTreeSet<String> {
    text.split(|c: char| c.is_whitespace() || c == '"' || c == ',' || c == '=' || c == '[')
        .filter(|word| {
            word.strip_prefix("--")
                .is_some_and(|name| name.starts_with(|c: char| c.is_ascii_lowercase()))
        })
        .map(str::to_string)
        .collect()
}

/// The value a text passes to `flag` (`--flag value` or `--flag=value`).
fn flag_value(text: &str, flag: &str) -> Option<String> {
    let words: Vec<&str> = text
        .split(|c: char| c.is_whitespace() || c == '=' || c == '"' || c == '\\')
        .filter(|word| !word.is_empty())
        .collect();
    words.iter().position(|word| *word == flag).map(|at| {
        words
            .get(at + 1)
            .expect("a value after the flag")
            .to_string()
    })
}

/// `--shutdown-delay` + `--drain-timeout` as a text passes them; both must be there, so a
/// change of the server's defaults cannot make a timeout short unnoticed.
fn shutdown_time(text: &str) -> Duration {
    let mut total = Duration::ZERO;
    for flag in ["--shutdown-delay", "--drain-timeout"] {
        let value = flag_value(text, flag).unwrap_or_else(|| panic!("no {flag} in {text}"));
        total +=
            humantime::parse_duration(&value).unwrap_or_else(|e| panic!("{flag} {value}: {e}"));
    }
    total
}
