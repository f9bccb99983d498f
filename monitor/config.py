"""Configuration: one pydantic model, loaded from YAML, overridden by CLI flags.

Every field has a default, so ``infersight run`` works with no file at all.
Errors are reported as ``section.field: message`` lines a human can act on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator


class _Section(BaseModel):
    # A typo in a key must be an error, not a silently ignored setting.
    model_config = ConfigDict(extra="forbid")


class KafkaSettings(_Section):
    bootstrap_servers: str = "localhost:9092"
    topic: str = "inference-logs"
    group_id: str = "infersight"
    group_instance_id: str | None = Field(
        None, description="static group membership (e.g. the pod name): a restarted daemon resumes at once"
    )
    dead_letter_topic: str | None = Field(None, description="default: <topic>.dlq")
    alerts_topic: str | None = Field(None, description="default: <topic>.alerts")
    state_topic: str | None = Field(None, description="compacted checkpoint topic; default: <topic>.state")
    checkpoint_interval_seconds: float = Field(
        10.0, gt=0, description="how often model state is checkpointed and offsets committed"
    )
    labels_topic: str | None = Field(
        None, description="delayed ground truth to join by request_id; unset = no performance tracking"
    )
    auto_offset_reset: Literal["earliest", "latest"] = "earliest"
    max_poll_records: int = Field(5000, gt=0, le=100_000)
    poll_timeout_ms: int = Field(500, gt=0, le=60_000)
    session_timeout_ms: int = Field(
        45_000, ge=6000, le=300_000, description="how long a dead daemon keeps its partitions before others take them"
    )
    lag_interval_seconds: float = Field(5.0, gt=0, description="how often consumer lag is measured")
    input_format: Literal["infersight", "kserve"] = Field(
        "infersight", description="infersight = wire schema v1; kserve = KServe logger CloudEvents (see kserve:)"
    )

    @model_validator(mode="after")
    def _derived_topics(self) -> KafkaSettings:
        # resolved once, so every reader (and `check-config --show`) sees the topic in use
        self.dead_letter_topic = self.dead_letter_topic or f"{self.topic}.dlq"
        self.alerts_topic = self.alerts_topic or f"{self.topic}.alerts"
        self.state_topic = self.state_topic or f"{self.topic}.state"
        return self


class MetricsSettings(_Section):
    host: str = "0.0.0.0"
    port: int = Field(9108, ge=0, le=65535)
    max_exported_features: int = Field(
        32, ge=0, description="features per model exported one by one; the rest are summarised"
    )
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    basic_auth_users: dict[str, str] | None = Field(
        None, description="user -> password hash (see docs/alerting.md)"
    )

    @model_validator(mode="after")
    def _tls_pair(self) -> MetricsSettings:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("tls_cert_file and tls_key_file must be set together")
        return self


class PolicySettings(_Section):
    """Which detectors run on what, and how often they may false-alarm."""

    reference_size: int = Field(5000, ge=50, description="first records of each model that form its reference")
    reference_files: dict[str, Path] = Field(
        {}, description="model_id -> JSONL of approved records to use as its reference instead of its first records"
    )
    window_size: int = Field(1000, ge=20, description="records per tested window")
    sliding_windows: bool = Field(
        False, description="test the last window every window_size/4 records (faster detection, 4x the tests)"
    )
    expected_run_length: float = Field(
        1e8, gt=0, description="target records between false alarms per model, across all its tests"
    )
    numeric_detectors: list[str] = ["ks"]
    categorical_detectors: list[str] = ["chi2"]
    multivariate_detectors: list[str] = Field(
        [], description="on the matrix of numeric features: pca_reconstruction, mmd"
    )
    output_detectors: bool = True
    anomaly_detector: bool = Field(True, description="Half-Space Trees anomaly ratio on the numeric features")
    anomaly_target_rate: float = Field(0.01, gt=0, lt=0.5, description="share of normal records scored anomalous")
    latency_detector: bool = Field(True, description="CUSUM change detector on log latency_ms")
    max_matrix_features: int = Field(32, ge=1, description="numeric features used by multivariate and anomaly detectors")

    @field_validator("numeric_detectors", "categorical_detectors", "multivariate_detectors")
    @classmethod
    def _known(cls, names: list[str], info) -> list[str]:
        from detectors.registry import CATEGORICAL_DETECTORS, MULTIVARIATE_DETECTORS, NUMERIC_DETECTORS

        known = {
            "numeric_detectors": NUMERIC_DETECTORS,
            "categorical_detectors": CATEGORICAL_DETECTORS,
            "multivariate_detectors": MULTIVARIATE_DETECTORS,
        }[info.field_name]
        unknown = [n for n in names if n not in known]
        if unknown:
            raise ValueError(f"unknown detector(s) {unknown}; choose from {sorted(known)}")
        return names

    @model_validator(mode="after")
    def _windows(self) -> PolicySettings:
        if self.window_size > self.reference_size:
            raise ValueError("window_size must not exceed reference_size")
        missing = {m: str(p) for m, p in self.reference_files.items() if not p.is_file()}
        if missing:
            raise ValueError(f"reference_files not found: {missing}")
        return self


class AlertSettings(_Section):
    fire_after_windows: int = Field(2, ge=1, description="consecutive detections before an alert fires")
    resolve_after_windows: int = Field(2, ge=1, description="consecutive clean windows before it resolves")
    example_request_ids: int = Field(5, ge=0, le=50)


class IntegritySettings(_Section):
    """Which model artifacts may serve (docs/threats.md)."""

    approved: dict[str, list[str]] | None = Field(
        None, description="model_id -> approved sha256 digests; a model not listed trusts its first digest"
    )
    registry_topic: str | None = Field(
        None, description='compacted topic a registry publishes approvals to: key model_id, value {"digests": [...]}'
    )
    tofu_severity: Literal["critical", "warning"] = "critical"
    max_digests_per_model: int = Field(8, ge=1, description="bound of infersight_model_artifact_info series")
    trusted_keys: list[Path] = Field(
        default_factory=list,
        description="PEM public keys (ECDSA, model-signing's key method) whose signed approvals count",
    )
    require_signed_approvals: bool = Field(
        False,
        description="refuse unsigned registry approvals and trust no first digest: the setting for production",
    )

    @field_validator("approved")
    @classmethod
    def _digests(cls, approved):
        import re

        for model, digests in (approved or {}).items():
            bad = [d for d in digests if not re.fullmatch(r"sha256:[0-9a-f]{64}", d)]
            if bad:
                raise ValueError(f"{model}: not sha256:<64 lowercase hex>: {bad[:3]}")
        return approved

    @field_validator("trusted_keys")
    @classmethod
    def _keys_load(cls, paths):
        from monitor.engine.approvals import TrustedKeys

        TrustedKeys.load(paths)  # a missing or unsupported key fails at start, naming the file
        return paths

    @model_validator(mode="after")
    def _signed_needs_keys(self):
        if self.require_signed_approvals and not self.trusted_keys:
            raise ValueError("require_signed_approvals needs trusted_keys: no approval could ever count")
        return self


class CanarySettings(_Section):
    enabled: bool = True
    expectations_file: Path | None = Field(None, description="JSON {probe_id: {label, score, tolerance}}; unset = learn")
    learn_first: int = Field(3, ge=1, description="replays of a probe that set its expectation")
    score_tolerance: float = Field(0.05, ge=0)
    max_probes: int = Field(256, ge=1)


class TriggerSettings(_Section):
    enabled: bool = True
    features: list[str] | None = Field(None, description="restrict the search; unset = all features")
    n_reference: int = Field(2000, ge=100)
    tail: float = Field(0.02, gt=0, lt=0.5)
    min_support: int = Field(20, ge=1)
    min_share: float = Field(0.6, gt=0, le=1)
    min_lift: float = Field(3.0, ge=1)
    min_rise: float = Field(0.3, ge=0, le=1)
    max_entropy_bits: float = Field(1.5, ge=0)
    max_conditions: int = Field(1024, ge=1)


class SegmentSettings(_Section):
    enabled: bool = True
    segment_features: list[str] | None = Field(None, description="unset = every categorical feature")
    classes: list[str] | None = Field(None, description="classes whose suppression matters, e.g. [malicious]")
    n_reference: int = Field(3000, ge=100)
    min_support: int = Field(30, ge=1)
    min_expected: float = Field(10.0, gt=0)
    min_relative_drop: float = Field(0.5, gt=0, le=1)


class OutputShapeSettings(_Section):
    detectors: list[Literal["class_concentration", "confidence_bimodality", "entropy_collapse"]] = [
        "class_concentration",
        "confidence_bimodality",
        "entropy_collapse",
    ]
    n_reference: int = Field(2000, ge=100)
    window: int = Field(500, ge=50)


class TamperSettings(_Section):
    canary: CanarySettings = CanarySettings()
    trigger: TriggerSettings = TriggerSettings()
    segment_suppression: SegmentSettings = SegmentSettings()
    output_shape: OutputShapeSettings = OutputShapeSettings()


class KServeSettings(_Section):
    """Joining KServe logger requests and responses (kafka.input_format: kserve, and `infersight ingest`)."""

    join_window_seconds: float = Field(60.0, gt=0, description="how long one half waits for the other (event time)")
    max_pending: int = Field(10_000, ge=1, description="halves waiting per side; the oldest beyond are unmatched")


class LimitSettings(_Section):
    max_models: int = Field(1000, ge=1)
    max_features_per_model: int = Field(256, ge=1)
    max_features_per_record: int = Field(256, ge=1)
    max_record_bytes: int = Field(65536, ge=256)
    max_classes: int = Field(50, ge=2)
    max_pending_labels: int = Field(20_000, ge=0, description="predictions per model kept awaiting a label")


class Settings(_Section):
    kafka: KafkaSettings = KafkaSettings()
    metrics: MetricsSettings = MetricsSettings()
    policy: PolicySettings = PolicySettings()
    alerts: AlertSettings = AlertSettings()
    integrity: IntegritySettings = IntegritySettings()
    tamper: TamperSettings = TamperSettings()
    kserve: KServeSettings = KServeSettings()
    limits: LimitSettings = LimitSettings()
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


class ConfigError(Exception):
    """A configuration problem, already phrased for a human."""


def _format(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            message = "unknown setting (check the spelling against the README's config reference)"
        lines.append(f"{where}: {message}")
    return "\n".join(lines)


def load_settings(path: str | Path | None = None, overrides: dict[str, dict[str, Any]] | None = None) -> Settings:
    """Read YAML (if given), apply ``{section: {field: value}}`` overrides, validate."""
    data: dict[str, Any] = {}
    if path is not None:
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path} is not valid YAML: {exc}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of sections")
    for section, values in (overrides or {}).items():
        present = {k: v for k, v in values.items() if v is not None}
        if present:
            existing = data.get(section) or {}
            if not isinstance(existing, dict):
                raise ConfigError(f"{section}: must be a mapping")
            data[section] = {**existing, **present}
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        origin = f"{path}: " if path else ""
        raise ConfigError(f"{origin}invalid configuration\n{_format(exc)}") from None
