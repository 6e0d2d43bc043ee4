"""Tests of bench/harness.py's own logic: reading the load generators' output, the
committed configs being the ones it writes, and the report's ratios. Standard library only;
scripts/test runs them (python3 -m unittest discover -s bench).

The load generators' texts below are real outputs, captured on this project's machine
(one column of wrk's changed, as said there).
"""

import json
import os
import tempfile
import unittest
from unittest import mock

import harness

# wrk 4.1.0 against sinew-bench upstream, with the "+/- Stdev" column changed to 87.99%
# and 70.50%: columns like these once passed for the p99 and p50 lines.
WRK = """Running 1s test @ http://127.0.0.1:19000/
  1 threads and 4 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    37.23us  153.12us   4.12ms   87.99%
    Req/Sec   126.23k     7.08k  136.89k    70.50%
  Latency Distribution
     50%   27.00us
     75%   28.00us
     90%   36.00us
     99%  108.00us
  137467 requests in 1.10s, 18.35MB read
  Non-2xx or 3xx responses: 3
Requests/sec: 124991.70
Transfer/sec:     16.69MB
"""

H2LOAD = """finished in 1.00s, 39700.00 req/s, 3.37MB/s
requests: 39700 total, 39704 started, 39700 done, 39690 succeeded, 10 failed, 0 errored, 0 timeout
status codes: 39690 2xx, 0 3xx, 0 4xx, 10 5xx
traffic: 3.37MB (3533502) total, 271.48KB (277992) headers (space savings 88.13%), 2.42MB (2540800) data
                     min         max         mean         sd        +/- sd
time for request:       20us      1.69ms        84us        30us    91.85%
"""

OHA = {
    "summary": {"requestsPerSec": 4994.2},
    "latencyPercentiles": {"p50": 0.0004, "p99": 0.002, "p99.9": 0.004},
    "statusCodeDistribution": {"200": 4990, "503": 4},
    "errorDistribution": {"aborted due to deadline": 5, "connection reset": 1},
}


class ReadsLoadGenerators(unittest.TestCase):
    def test_wrk_percentiles_come_from_the_distribution_lines(self):
        with mock.patch.object(harness, "run_load", return_value=WRK):
            r = harness.wrk("http://x/", 1, 4)
        self.assertEqual(r["requests"], 137467)
        self.assertAlmostEqual(r["rps"], 124991.70)
        self.assertAlmostEqual(r["p50_ms"], 0.027)
        self.assertAlmostEqual(r["p99_ms"], 0.108)
        self.assertEqual(r["errors"], 3)
        self.assertAlmostEqual(r["mb_per_s"], 16.69 * (1 << 20) / 1e6)

    def test_wrk_latency_units(self):
        cases = {"512.00us": 0.512, "1.50ms": 1.5, "2.00s": 2000.0, "1.00m": 60000.0}
        for text, ms in cases.items():
            self.assertAlmostEqual(harness.wrk_latency_ms(text), ms, msg=text)
        with self.assertRaises(RuntimeError):
            harness.wrk_latency_ms("Req/Sec")

    def test_output_without_a_figure_is_an_error_that_quotes_it(self):
        with mock.patch.object(harness, "run_load", return_value="unable to connect"):
            with self.assertRaisesRegex(RuntimeError, "unable to connect"):
                harness.wrk("http://x/", 1, 4)

    def test_h2load_counts_only_successes_as_good(self):
        with mock.patch.object(harness, "run_load", return_value=H2LOAD):
            r = harness.h2load("http://x/", 1)
        self.assertEqual(r["requests"], 39700)
        self.assertAlmostEqual(r["rps"], 39700.0)
        self.assertEqual(r["errors"], 10)
        self.assertAlmostEqual(r["mean_ms"], 0.084)

    def test_oha_does_not_count_requests_cut_off_at_the_deadline_as_errors(self):
        with mock.patch.object(harness, "run_load", return_value=json.dumps(OHA)), \
                mock.patch.object(harness, "oha_binary", return_value="oha"):
            r = harness.oha("http://x/", 1, 50, 5000)
        self.assertEqual(r["requests"], 4994)
        self.assertAlmostEqual(r["p99_ms"], 2.0)
        self.assertAlmostEqual(r["p99.9_ms"], 4.0)
        # Four 503s and one reset; the five aborted at the deadline are not errors.
        self.assertEqual(r["errors"], 5)


class Configs(unittest.TestCase):
    def test_the_committed_configs_are_the_ones_the_harness_writes(self):
        committed = harness.CONFIGS
        with tempfile.TemporaryDirectory() as fresh:
            with mock.patch.object(harness, "CONFIGS", fresh):
                harness.write_configs()
            written = sorted(os.listdir(fresh))
            self.assertEqual(written, sorted(f for f in os.listdir(committed) if not f.startswith(".")))
            for name in written:
                with open(os.path.join(fresh, name)) as a, open(os.path.join(committed, name)) as b:
                    self.assertEqual(a.read(), b.read(), f"bench/configs/{name} is stale: rerun bench/run")


class Report(unittest.TestCase):
    def test_ratios_are_to_sinew_and_sinew_is_to_direct(self):
        runs = {
            "direct": [{"rps": 200.0}],
            "sinew": [{"rps": 100.0, "cpu_us_per_request": 20.0}],
            "nginx": [{"rps": 150.0, "cpu_us_per_request": 10.0}],
            "haproxy": [{"rps": 50.0, "cpu_us_per_request": 40.0}, {"failed": "boom"}],
        }
        text = harness.table("a", {"runs": runs})
        rows = {line.split("|")[1].strip(): line for line in text.splitlines()[2:]}
        self.assertIn("Sinew/direct 0.50× req/s", rows["sinew"])
        self.assertIn("1.50× req/s; 0.50× CPU µs/req", rows["nginx"])
        self.assertIn("0.50× req/s; 2.00× CPU µs/req; 1 run(s) failed: boom", rows["haproxy"])

    def test_targets_section_says_met_or_not(self):
        results = {"a": {"runs": {
            "sinew": [{"rps": 100.0, "cpu_us_per_request": 8.0}],
            "nginx": [{"rps": 90.0, "cpu_us_per_request": 10.0}],
            "haproxy": [{"rps": 95.0, "cpu_us_per_request": 12.0}],
        }}}
        text = harness.targets_section(results)
        self.assertIn("0.80× the better of nginx and HAProxy (10.0 µs); target ≤ 0.80×: met", text)
        self.assertIn("target ≥ both: met", text)

    def test_resilience_cost_is_judged_against_plain_sinew(self):
        def results(resilient_rps):
            return {"a": {"runs": {
                "sinew": [{"rps": 100.0, "cpu_us_per_request": 8.0}],
                "nginx": [{"rps": 90.0, "cpu_us_per_request": 10.0}],
                "haproxy": [{"rps": 95.0, "cpu_us_per_request": 12.0}],
                "sinew-resilience": [{"rps": resilient_rps, "cpu_us_per_request": 8.2}],
            }}}
        self.assertIn("98 req/s = 0.980× plain Sinew's, at 1.025× its CPU per request; "
                      "target ≥ 0.97×: met", harness.targets_section(results(98.0)))
        self.assertIn("target ≥ 0.97×: not met", harness.targets_section(results(96.0)))

    def test_metrics_cost_is_judged_against_sinew_with_metrics_off(self):
        def results(off_rps):
            return {"a": {"runs": {
                "sinew": [{"rps": 100.0, "cpu_us_per_request": 8.0}],
                "nginx": [{"rps": 90.0, "cpu_us_per_request": 10.0}],
                "haproxy": [{"rps": 95.0, "cpu_us_per_request": 12.0}],
                "sinew-nometrics": [{"rps": off_rps, "cpu_us_per_request": 7.9}],
            }}}
        self.assertIn("100 vs 101 req/s = 0.990×, at 1.013× the CPU per request; "
                      "target ≥ 0.98×: met", harness.targets_section(results(101.0)))
        self.assertIn("target ≥ 0.98×: not met", harness.targets_section(results(103.0)))

    def test_the_nometrics_config_turns_metrics_off_and_nothing_else(self):
        on = harness.sinew_config()
        off = harness.sinew_config(metrics=False)
        self.assertNotIn("stats_config", on)
        self.assertIn("stats_config: {stats_matcher: {reject_all: true}}", off)
        ports = harness.PORTS
        same = off.replace(str(ports["sinew-nometrics"]["http"]), str(ports["sinew"]["http"]))
        same = same.replace(str(ports["sinew-nometrics"]["tls"]), str(ports["sinew"]["tls"]))
        same = same.replace(str(ports["sinew-nometrics"]["tcp"]), str(ports["sinew"]["tcp"]))
        same = same.replace("stats_config: {stats_matcher: {reject_all: true}}\n", "")
        self.assertEqual(same.splitlines()[1:], on.splitlines()[1:])

    def test_access_log_cost_is_reported_against_plain_sinew(self):
        results = {"a": {"runs": {
            "sinew": [{"rps": 100.0, "cpu_us_per_request": 8.0}],
            "nginx": [{"rps": 90.0, "cpu_us_per_request": 10.0}],
            "haproxy": [{"rps": 95.0, "cpu_us_per_request": 12.0}],
            "sinew-accesslog": [{"rps": 90.0, "cpu_us_per_request": 8.8}],
        }}}
        self.assertIn("access log to a file (Envoy's default line): 90 req/s = 0.900× plain "
                      "Sinew's, at 1.100× its CPU per request", harness.targets_section(results))

    def test_the_access_log_target_logs_to_the_scratch_dir(self):
        config = harness.sinew_config(access_log=True)
        self.assertIn(f"access_log:\n        - path: {harness.ACCESS_LOG}", config)
        self.assertIn(f"127.0.0.1:{harness.PORTS['sinew-accesslog']['http']}", config)
        self.assertTrue(harness.ACCESS_LOG.startswith("bench/.run/"))
        self.assertIn("sinew-accesslog", harness.TARGETS)


if __name__ == "__main__":
    unittest.main()
