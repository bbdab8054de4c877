"""alerts: Prometheus alert rules from params.yaml `monitor:`, their promtool unit tests and the
service's scrape config, into docker/prometheus/ (a change of a threshold re-runs only this)."""
from __future__ import annotations

from stages.common import params_from_argv, run_stage


def main() -> int:
    from skillpack import paths
    from skillpack.deploy.monitoring import write_alerts

    params = params_from_argv()
    written = write_alerts(params.monitor, paths.PROMETHEUS, target=f"127.0.0.1:{params.serve.port}")
    for expected in (paths.ALERT_RULES, paths.ALERT_TESTS, paths.SCRAPE_CONFIG):
        assert expected in written, expected
    print(f"[alerts] {', '.join(str(p) for p in written)}")
    return 0


if __name__ == "__main__":
    run_stage(main)
