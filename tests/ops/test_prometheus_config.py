"""deploy/prometheus/*.yml pass `promtool check config` (rules included)."""

from __future__ import annotations

import subprocess

import pytest
import yaml

from opskit import PROM_DIR, require_binary


def _check(path) -> subprocess.CompletedProcess:
    return subprocess.run([require_binary("promtool"), "check", "config", str(path)], capture_output=True, text=True)


@pytest.mark.prometheus
def test_static_scrape_config():
    out = _check(PROM_DIR / "prometheus.yml")
    assert out.returncode == 0, out.stdout + out.stderr
    cfg = yaml.safe_load((PROM_DIR / "prometheus.yml").read_text())
    assert [j["job_name"] for j in cfg["scrape_configs"]] == ["infersight"]


@pytest.mark.prometheus
def test_kubernetes_scrape_config(tmp_path):
    """Debian's prometheus is built without Kubernetes discovery; if this promtool
    rejects kubernetes_sd_configs, check the same file with the discovery swapped for
    static targets: everything else (relabelling included) is still validated."""
    src = PROM_DIR / "prometheus-kubernetes.yml"
    cfg = yaml.safe_load(src.read_text())
    job = cfg["scrape_configs"][0]
    assert job["kubernetes_sd_configs"] == [{"role": "pod"}]
    relabels = job["relabel_configs"]
    assert {"target_label": "job", "replacement": "infersight"} in relabels
    assert any(r.get("target_label") == "team" for r in relabels)
    assert any("prometheus_io_scrape" in "".join(r.get("source_labels", [])) and r.get("action") == "keep"
               for r in relabels)
    out = _check(src)
    if out.returncode != 0 and "kubernetes_sd_configs not found" in out.stdout + out.stderr:
        job["static_configs"] = [{"targets": ["10.0.0.1:9108"]}]
        del job["kubernetes_sd_configs"]
        am = cfg["alerting"]["alertmanagers"][0]
        am["static_configs"] = [{"targets": ["10.0.0.2:9093"]}]
        del am["kubernetes_sd_configs"]
        (tmp_path / "rules").symlink_to(PROM_DIR / "rules")
        copy = tmp_path / "prometheus-kubernetes.yml"
        copy.write_text(yaml.safe_dump(cfg, sort_keys=False))
        out = _check(copy)
    assert out.returncode == 0, out.stdout + out.stderr
