"""One settings tree: every ``CAREBRIDGE_*`` environment variable, typed, read once at start.

Why one place: an operator (and an auditor, ISO/IEC 27001:2022 A.8.9
configuration management) must be able to list every knob the process reads,
and a setting read deep inside a module is one nobody can find.  The
entry points (``carebridge serve`` and the other commands, see
``gateway.settings.settings_from``) call :meth:`Settings.from_env` once and pass
the tree down; each package takes its own typed group (``settings.crm``,
``settings.privacy``...) as a constructor argument, so ``consent``,
``crm_bridge`` and ``common`` never import ``gateway``.  This module is the only
one outside the tests that reads the process environment (:func:`child_environment`
hands a copy to the subprocesses that need it).

Names are a contract (DESIGN.md §2, README "Configuration"): the variable of
a setting is ``CAREBRIDGE_`` + its *flat name*, in capitals.  A flat name is
either a top-level field (``database_url`` -> ``CAREBRIDGE_DATABASE_URL``) or
``<group>_<field>`` (``hl7_ingest_lanes`` -> ``CAREBRIDGE_HL7_INGEST_LANES``).
pydantic-settings splits the variable once after the group
(``env_nested_delimiter="_"``, ``env_nested_max_split=1``), so field names
keep their own underscores.  Python callers (CLI flags, tests) may pass the
same flat names as keyword arguments of :meth:`Settings.from_env`.

Booleans keep the meaning the README documents: ``1``, ``true``, ``yes``,
``on`` (any case) are true and anything else is false.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, SecretStr
from pydantic_settings import BaseSettings, EnvSettingsSource, PydanticBaseSettingsSource, SettingsConfigDict

from common.keyring import KeySource

ENV_PREFIX = "CAREBRIDGE_"
DEFAULT_DATABASE_URL = "sqlite:///var/carebridge.db"
_TRUE = frozenset({"1", "true", "yes", "on"})


def _flag(value: Any) -> Any:
    if isinstance(value, str):
        return value.strip().lower() in _TRUE
    return value


#: A boolean setting: the strings above are true, every other string is false.
Flag = Annotated[bool, BeforeValidator(_flag)]


class Group(BaseModel):
    """A group of settings: immutable once built; an unknown name is a typo, refused."""

    model_config = ConfigDict(frozen=True, extra="forbid")


def _networks(text: str) -> str:
    """Comma-separated addresses or CIDRs; a malformed one stops the start (a typo must not open or
    close anything silently)."""
    for item in filter(None, (part.strip() for part in text.split(","))):
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            raise ValueError(
                f"{item!r} is not a network (an IP address or CIDR such as 10.1.0.0/16)"
            ) from None
    return text


class HttpSettings(Group):
    port: int = 8080  # FHIR/HTTP API, /healthz, /readyz, /metrics
    workers: int = 1  # extra processes share the HTTP socket (one core each)
    # a TLS-terminating reverse proxy stands in front (production refuses a non-loopback bind without it)
    tls_proxy: Flag = False
    # peers whose X-Forwarded-For/-Proto are believed: "10.0.0.5,10.1.0.0/16"; empty = the socket peer
    trusted_proxies: Annotated[str, AfterValidator(_networks)] = ""

    def trusted_networks(self) -> list[str]:
        return [item.strip() for item in self.trusted_proxies.split(",") if item.strip()]

    # Host names whose Host header may become the base of links when base_url is empty
    # (comma-separated; anything else is a 400, gateway.http.responses.fhir_base).
    allowed_hosts: str = "localhost,127.0.0.1,::1"
    # deepest array/object nesting accepted in a JSON request body (gateway.http.input_guard);
    # capped where the validator still has stack to spare
    max_json_depth: Annotated[int, Field(ge=8, le=100)] = 64


class AuthSettings(Group):
    """OAuth clients (gateway.auth): the scrypt cost, as log2(N), of client secrets registered from now on.

    Each hash records its own parameters, so changing this never breaks existing clients.
    14 (N=2^14, r=8: RFC 7914 §2's interactive figure) is the floor a deployment should
    keep; the test suite registers its throwaway clients at 10.
    """

    secret_log2n: int = Field(default=14, ge=10, le=20)
    # every process re-checks client states and signing keys this often (one indexed read):
    # a disabled, removed, re-keyed or demoted client loses access within it (issue #16: <= 5 s)
    refresh_s: float = Field(default=2.0, ge=0.0, le=5.0)
    # tolerated clock difference for iat/nbf of access tokens and client assertions (RFC 7519 §4.1.5)
    clock_skew_s: int = Field(default=30, ge=0, le=300)
    # token endpoint URL that private_key_jwt assertions must name as aud (RFC 7523 §3);
    # empty = CAREBRIDGE_BASE_URL + /auth/token (or the listen address when that is empty too)
    token_url: str = ""
    # Token endpoint (gateway/auth/throttle.py, OWASP ASVS 4.0 V2.2.1 anti-automation): scrypt
    # runs in at most ``hash_concurrency`` threads per HTTP process, never on the event loop;
    # ``throttle_*_failures`` failed client authentications within ``throttle_window_s`` lock
    # that client id / source address for ``throttle_lock_s``, doubling per repeat up to
    # ``throttle_lock_max_s``.  The state is in the database, shared by every HTTP worker.
    hash_concurrency: int = Field(default=2, ge=1, le=64)
    throttle_window_s: int = Field(default=60, ge=1)
    throttle_client_failures: int = Field(default=5, ge=1)
    throttle_address_failures: int = Field(default=20, ge=1)
    throttle_lock_s: int = Field(default=60, ge=1)
    throttle_lock_max_s: int = Field(default=3600, ge=1)


class MllpSettings(Group):
    port: int = 2575
    max_message_bytes: int = 1024 * 1024
    idle_timeout_s: float = 300.0
    tls_cert: str = ""
    tls_key: str = ""
    tls_client_ca: str = ""  # set to require client certificates (mutual TLS)
    # which MSH-3/MSH-4 each TLS identity may claim (gateway.mllp.tls, gateway.hl7_senders)
    allowed_senders: str = ""
    # accept any sender, registered or not (`carebridge senders`): demos and local trials only
    open: Flag = False
    # open connections, in all and per peer IP address; excess ones are closed at once
    # (gateway.mllp.limits; clamped under the process's open-file limit at start)
    max_connections: int = Field(default=256, ge=1)
    max_connections_per_peer: int = Field(default=32, ge=1)


ReuseAction = Literal["process", "refuse"]


def _sender_map(text: str) -> dict[str, str]:
    """``"APP^FAC=value,OTHER=value"`` as a dict (the per-sender setting style)."""
    mapping: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        sender, _, value = item.partition("=")
        mapping[sender.strip()] = value.strip()
    return mapping


def _reuse_map(text: str) -> str:
    for sender, value in _sender_map(text).items():
        if value not in ("process", "refuse"):
            raise ValueError(f"control id reuse for {sender!r} must be process or refuse, not {value!r}")
    return text


_MESSAGE_TYPE = re.compile(r"[A-Z0-9]{3}(\^[A-Z0-9]{3})?")


def _ignore_map(text: str) -> str:
    for sender, value in _sender_map(text).items():
        for item in value.split("|"):
            if not _MESSAGE_TYPE.fullmatch(item.strip().upper()):
                raise ValueError(f"ignored types for {sender!r}: {item!r} is not TYPE or TYPE^TRIGGER")
    return text


class Hl7Settings(Group):
    default_charset: str = "utf-8"
    sender_charsets: str = ""  # "APP^FAC=latin-1,OTHER=cp1258"
    strict: Flag = False
    validate_resources: Flag = False  # re-validate mapped resources (always on in strict mode)
    ingest_lanes: int = 2  # MLLP writer threads; one patient's messages always use the same lane
    group_max: int = 32  # messages waiting in a lane that share one transaction (group commit)
    # a sender + MSH-10 already journaled with other content: "process" it or "refuse" it (AE)
    control_id_reuse: ReuseAction = "process"
    sender_control_id_reuse: Annotated[str, AfterValidator(_reuse_map)] = ""  # "APP^FAC=refuse,B=process"
    # per sender, message types or triggers answered AA and journaled "ignored" instead of mapped
    # or refused: "HIS^FAC=ADT^A60|SIU^S23,OTHER=ORU"
    sender_ignore: Annotated[str, AfterValidator(_ignore_map)] = ""
    # per message: more segments, or more repetitions of one field, is refused with AR (mappers.hl7_limits)
    max_segments: int = Field(default=1000, ge=1)
    max_repetitions: int = Field(default=100, ge=1)
    # a write failed for an environmental reason (connection, disk full): tries again before the AE
    transient_retries: int = Field(default=2, ge=0, le=10)
    duplicate_audit_interval_s: float = Field(default=60.0, ge=0.0)  # one duplicate event per message per
    backlog_s: float = Field(default=300.0, gt=0.0)  # /readyz: a message waiting (received) longer: not ready

    def control_id_reuse_for(self, application: str, facility: str) -> ReuseAction:
        """The reuse action for one sender: ``APP^FAC``, else ``APP``, else the default."""
        mapping = _sender_map(self.sender_control_id_reuse)
        chosen = mapping.get(f"{application}^{facility}") or mapping.get(application)
        return "refuse" if chosen == "refuse" else "process" if chosen else self.control_id_reuse

    def ignored_for(self, application: str, facility: str, code: str, trigger: str) -> bool:
        """Whether this sender's ``code^trigger`` is on its ignore list (``APP^FAC``, else ``APP``).

        Checked before mapping: an operator may silence a type carebridge refuses
        (AR stays the default) or one it maps but this sender should not feed.
        """
        mapping = _sender_map(self.sender_ignore)
        chosen = mapping.get(f"{application}^{facility}") or mapping.get(application) or ""
        wanted = {item.strip().upper() for item in chosen.split("|") if item.strip()}
        code, trigger = code.strip().upper(), trigger.strip().upper()
        return code in wanted or f"{code}^{trigger}" in wanted

    def charset_map(self) -> dict[str, str]:
        """Per-sender default charset for messages with an empty MSH-18."""
        return _sender_map(self.sender_charsets)


class AuditSettings(Group):
    """audit/: Ed25519 key file (created 0600 on first use), checkpoint rules, batched reads, anchors.

    Every checkpoint also leaves the database (audit.anchors): one JSON line appended to
    ``anchor_file`` (empty: ``audit-anchors.jsonl`` beside the key file) and, when
    ``anchor_url`` is set, POSTed there.
    """

    key_file: str = "var/audit-signing-key.pem"
    checkpoint_every: int = Field(default=1000, ge=1)
    # sign the head at least this often while events are written, and at shutdown; 0 = only every N
    checkpoint_interval_s: float = Field(default=60.0, ge=0.0)
    async_reads: Flag = True
    anchor_file: str = ""
    anchor_url: str = ""
    anchor_timeout_s: float = Field(default=5.0, gt=0.0, le=60.0)
    # a read is answered only once its AuditEvent is committed (group commit); false: buffered,
    # a crash may lose what carebridge_audit_unflushed_access_events shows (audit.hooks)
    durable_reads: Flag = True

    @property
    def anchor_path(self) -> Path:
        """Where checkpoints are appended outside the database."""
        if self.anchor_file:
            return Path(self.anchor_file)
        return Path(self.key_file).with_name("audit-anchors.jsonl")


class StoreSettings(Group):
    """Encryption at rest of the FHIR store (fhir_store.content_cipher): key file or inline JSON."""

    key_file: str = "var/store-keys.json"
    keys: SecretStr = SecretStr("")  # the same JSON as the file, e.g. a container secret; wins
    # /readyz (gateway.readiness): free space a SQLite database volume needs, the write probe's
    # time limit, and how long an environmental write failure without a later commit keeps it red
    min_free_bytes: int = Field(default=64 * 1024 * 1024, ge=0)
    probe_timeout_s: float = Field(default=2.0, gt=0.0, le=30.0)
    write_failure_s: float = Field(default=30.0, ge=0.0)
    # PostgreSQL cancels any statement of a store write transaction (REST, HL7, privacy) that
    # runs longer (0: none); REST answers 503 ``timeout``, HL7 a transient AE (issue #17)
    write_statement_timeout_ms: int = Field(default=5000, ge=0)

    @property
    def key_source(self) -> KeySource:
        return KeySource(self.key_file, self.keys.get_secret_value(), ENV_PREFIX + "STORE_KEYS")


class SearchSettings(Group):
    """Limits on one FHIR search (fhir_store.search_limits), so no request can hold the database.

    A request beyond a limit is a 400 naming it.  ``statement_timeout_ms`` bounds every
    PostgreSQL statement of an HTTP read (read, history, search, ``_include``), answered 503
    ``timeout``; ``pool_size`` connections serve those reads, apart from HL7 ingest and
    ``/readyz`` (issue #17).  Migrations and backups never get the timeout.
    """

    max_parameters: int = Field(default=30, ge=1)  # name=value pairs per request, paging ones included
    max_values: int = Field(default=100, ge=1)  # comma-separated alternatives (OR) of one parameter
    max_includes: int = Field(default=5, ge=0)  # _include + _revinclude (depth is always 1)
    max_query_chars: int = Field(default=8192, ge=64)  # decoded names and values, summed
    statement_timeout_ms: int = Field(default=5000, ge=1)  # PostgreSQL only; SQLite has none
    pool_size: int = Field(default=8, ge=1)
    # searches running at once per HTTP process; more wait without holding a thread, so a storm of
    # costly searches cannot take every worker thread or the interpreter from HL7 and /readyz
    max_concurrent: int = Field(default=2, ge=1)


class BackupSettings(Group):
    key_file: str = "var/backup.key"  # AES-256 key of `carebridge backup|restore`


class CrmSettings(Group):
    """The CRM bridge (crm_bridge/): projection allowlist, pseudonym keys, HIS booking, webhooks."""

    projection_file: str = "config/crm_projection.yaml"
    key_file: str = "var/crm-keys.json"
    keys: SecretStr = SecretStr("")  # the same JSON as the key file, given directly; wins
    # outbound booking (SIU^S12) to the HIS: "host:port"; empty disables the sender
    his_mllp: str = ""
    his_timeout_s: float = 10.0
    sending_app: str = "CAREBRIDGE"
    sending_facility: str = "CRM"
    receiving_app: str = "HIS"
    receiving_facility: str = "HIS"
    # webhook delivery
    webhook_max_attempts: int = 10
    webhook_backoff_base_s: float = 1.0
    webhook_backoff_max_s: float = 300.0
    webhook_timeout_s: float = 5.0
    poll_interval_s: float = 0.05
    worker_stuck_s: float = Field(default=300.0, gt=0.0)  # /readyz: a dispatcher round running longer
    # under a steady stream, a round that sent events waits this long before the next one, so
    # that each takes several events (fewer feed reads per event); an idle feed sends at once
    webhook_batch_window_s: float = 0.01
    # webhook targets (crm_bridge.webhook_policy): plain http, and non-public addresses by CIDR
    allow_http_webhooks: Flag = False
    webhook_allowed_networks: Annotated[str, AfterValidator(_networks)] = ""  # "10.1.0.0/16,fd00::/8"

    @property
    def key_source(self) -> KeySource:
        return KeySource(self.key_file, self.keys.get_secret_value(), ENV_PREFIX + "CRM_KEYS")

    def his_endpoint(self) -> tuple[str, int] | None:
        if not self.his_mllp:
            return None
        host, _, port = self.his_mllp.rpartition(":")
        return host or "127.0.0.1", int(port)


class PrivacySettings(Group):
    """Patients' rights (consent.rights): the tombstone file outside the database, the holiday list."""

    tombstone_file: str = "var/erasure-tombstones.jsonl"
    holidays_file: str = ""  # one ISO date per line; empty = the shipped Vietnamese holidays

    @property
    def tombstone_path(self) -> Path:
        return Path(self.tombstone_file)


class ConsoleSettings(Group):
    """People who sign in to the console (gateway.auth.users; issue #19).

    Passwords are Argon2id hashes (RFC 9106; OWASP's password storage minimum is 19 MiB,
    2 passes): ``password_memory_kib`` and ``password_time_cost`` apply to hashes made from
    now on, each hash records its own.  ``lockout_failures`` wrong passwords or codes in a
    row lock the account for ``lockout_s`` (ISO/IEC 27001:2022 A.8.5; OWASP ASVS V2.2.1).
    """

    password_min_length: int = Field(default=12, ge=8, le=128)
    password_memory_kib: int = Field(default=65536, ge=8)
    password_time_cost: int = Field(default=3, ge=1, le=20)
    lockout_failures: int = Field(default=5, ge=1)
    lockout_s: int = Field(default=900, ge=1)
    # a session ends after this long without a request, and in any case after session_max_s
    idle_timeout_s: int = Field(default=900, ge=30)
    session_max_s: int = Field(default=43200, ge=60)


class Settings(BaseSettings):
    """The whole tree.  ``Settings(...)`` takes values only from its arguments (groups as
    models: ``Settings(hl7=Hl7Settings(strict=True))``); :meth:`from_env` reads the
    environment and takes flat names (``Settings.from_env({}, hl7_strict=True)``)."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="_",
        env_nested_max_split=1,
        frozen=True,
        extra="forbid",
    )

    # "production" refuses to start on a weak configuration (gateway.production)
    env: Literal["development", "production"] = "development"
    database_url: str = DEFAULT_DATABASE_URL
    # PostgreSQL: the owner role that runs migrations (empty = database_url); the service then
    # connects as a role with INSERT/SELECT only on the audit tables (docs/operations.md)
    database_owner_url: str = ""
    host: str = "127.0.0.1"  # listen address of the HTTP API and the MLLP listener
    log_level: str = "INFO"
    base_url: str = ""  # public base of the FHIR API; derived from the request when empty
    max_body_bytes: int = 4 * 1024 * 1024
    db_pool_size: int = 16
    # bearer token Prometheus must present to /metrics in production; empty = loopback scrapes only
    metrics_token: SecretStr = SecretStr("")
    http: HttpSettings = Field(default_factory=HttpSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    mllp: MllpSettings = Field(default_factory=MllpSettings)
    hl7: Hl7Settings = Field(default_factory=Hl7Settings)
    audit: AuditSettings = Field(default_factory=AuditSettings)
    store: StoreSettings = Field(default_factory=StoreSettings)
    search: SearchSettings = Field(default_factory=SearchSettings)
    backup: BackupSettings = Field(default_factory=BackupSettings)
    crm: CrmSettings = Field(default_factory=CrmSettings)
    privacy: PrivacySettings = Field(default_factory=PrivacySettings)
    console: ConsoleSettings = Field(default_factory=ConsoleSettings)

    @property
    def migration_url(self) -> str:
        """Who runs migrations: the owner when ``database_owner_url`` is set, else the service URL."""
        return self.database_owner_url or self.database_url

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)  # the environment is read by from_env only: no hidden reads

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """The tree from ``environ`` (default: this process's environment), then ``overrides``.

        ``overrides`` use flat names (``http_port=0``); ``None`` values are skipped, so
        unset command-line flags leave the environment's value in place.
        """
        values = _MappingEnvSource(cls, os.environ if environ is None else environ)()
        for key, value in overrides.items():
            group, _, name = key.partition("_")
            if value is None:
                continue
            if key not in cls.model_fields and group in _GROUPS:
                values[group] = {**values.get(group, {}), name: value}
            else:
                values[key] = value  # an unknown name is refused by validation
        return cls(**values)


_GROUPS: dict[str, type[Group]] = {
    name: field.annotation
    for name, field in Settings.model_fields.items()
    if isinstance(field.annotation, type) and issubclass(field.annotation, Group)
}


class _MappingEnvSource(EnvSettingsSource):
    """pydantic-settings' own environment parsing, over a given mapping (tests pass their own).

    Variables under a group's prefix that name no field are dropped here, as unknown
    ``CAREBRIDGE_*`` variables always were (a later version's setting in a shared env
    file must not stop this one from starting).
    """

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        self._environ = environ
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return {name if self.case_sensitive else name.lower(): value for name, value in self._environ.items()}

    def __call__(self) -> dict[str, Any]:
        values = super().__call__()
        for name, group in _GROUPS.items():
            if isinstance(values.get(name), dict):
                values[name] = {k: v for k, v in values[name].items() if k in group.model_fields}
        return values


def env_names() -> Iterator[str]:
    """Every environment variable the tree reads (the README table lists exactly these)."""
    for name in Settings.model_fields:
        group = _GROUPS.get(name)
        if group is None:
            yield ENV_PREFIX + name.upper()
        else:
            yield from (f"{ENV_PREFIX}{name.upper()}_{sub.upper()}" for sub in group.model_fields)


def child_environment(**extra: str) -> dict[str, str]:
    """This process's environment for a child process (PATH, locale, PG* variables), plus ``extra``."""
    return {**os.environ, **extra}
