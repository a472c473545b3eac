"""``make demo``: one HIS day through carebridge on loopback, in well under a minute.

What it shows, in order (issue #7 §5):

1. ``carebridge serve`` starts as a subprocess on a throw-away SQLite database,
   free loopback ports and its own key files (nothing in ``var/`` is touched);
2. two OAuth clients are registered with ``carebridge clients add``: the HIS
   integration and the CRM (``crm-main``, allowlisted in
   ``demo/crm_projection.yaml``);
3. a tiny CRM webhook receiver (:mod:`demo.crm_receiver`) subscribes through
   ``POST /crm/v1/subscriptions`` and prints every event it receives;
4. the sample HIS day from ``tests/fixtures/hl7v2`` is replayed with
   ``carebridge hl7 send`` (registrations, consent recorded at the front desk
   through ``POST /fhir/Consent``, an appointment, its reschedule, a no-show,
   a completed visit, a merge, and one malformed message that must be refused),
   printing each ACK line;
5. a FHIR read of the merged patient (with a bearer token), a few ``/metrics``
   lines, then ``carebridge audit verify`` once the server has stopped.

Exit status 0 only if every good message got AA, the bad one did not, the
CRM received events, and the audit chain verifies.  Output is limited to what
the CRM legitimately sees (pseudonyms, display names) plus resource ids: the
record numbers, CCCD and BHYT in the samples are never printed.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from consent import APPOINTMENT_REMINDER, POST_VISIT_CARE, build_consent
from demo.crm_receiver import CrmReceiver, describe
from fhir_store import format_instant, now_us

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "tests" / "fixtures" / "hl7v2"
PROJECTION = Path(__file__).resolve().parent / "crm_projection.yaml"
CRM_ID = "crm-main"
HIS_ID = "demo-his"
MRN = "https://id.carebridge.vn/mrn/"


@dataclass(frozen=True)
class Step:
    title: str
    files: tuple[str, ...]
    good: bool = True


# The day, in the order a HIS would send it.  Consent is recorded after the registrations
# (the CRM hears nothing about a patient before that: Law 91/2025 Art. 9).
REGISTRATIONS = Step(
    "Front desk: two patients registered",
    ("adt_a28_add_person.hl7", "adt_a04_register_outpatient.hl7"),
)
DAY = (
    Step("Appointment booked in the HIS", ("siu_s12_new_appointment.hl7",)),
    Step("Appointment rescheduled", ("siu_s13_reschedule.hl7",)),
    Step("A patient did not show up", ("siu_s26_noshow.hl7",)),
    Step("Visit completed (discharge)", ("adt_a03_discharge_service_completed.hl7",)),
    Step("Duplicate record merged", ("adt_a40_merge_duplicate.hl7",)),
    Step("A malformed message (must be refused, and journaled)", ("bad_invalid_birthdate.hl7",), False),
)
CONSENTED = (("NK_SMILE_Q1", "KH20261118-07"), ("BVDK_HN", "BN000123"))  # (facility, record number)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _carebridge() -> str:
    exe = Path(sys.executable).with_name("carebridge")
    return str(exe) if exe.exists() else "carebridge"


@dataclass
class Demo:
    env: dict[str, str]
    http_port: int
    mllp_port: int
    log_path: Path

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [_carebridge(), *args], env=self.env, cwd=ROOT, capture_output=True, text=True, timeout=60
        )
        if check and result.returncode != 0:
            raise RuntimeError(f"carebridge {args[0]} {args[1] if len(args) > 1 else ''} failed")
        return result

    def token(self, client_id: str, role: str) -> str:
        out = self.cli("clients", "add", "--id", client_id, "--role", role).stdout
        match = re.search(r"^client_secret: (\S+)$", out, re.M)
        if match is None:
            raise RuntimeError("no client secret printed")
        form = {"grant_type": "client_credentials", "client_id": client_id, "client_secret": match[1]}
        response = httpx.post(f"{self.base}/auth/token", data=form, timeout=10)
        response.raise_for_status()
        print(f"  registered OAuth client {client_id} (role {role}) and got a token")
        return str(response.json()["access_token"])


@contextlib.contextmanager
def running_carebridge(workdir: Path) -> Iterator[tuple[Demo, subprocess.Popen[bytes]]]:
    """``carebridge serve`` on free loopback ports; stopped with SIGTERM (graceful) on exit."""
    env = {
        **os.environ,
        "CAREBRIDGE_DATABASE_URL": f"sqlite:///{workdir / 'demo.db'}",
        "CAREBRIDGE_AUDIT_KEY_FILE": str(workdir / "audit-signing-key.pem"),
        "CAREBRIDGE_AUDIT_CHECKPOINT_EVERY": "25",
        "CAREBRIDGE_CRM_KEY_FILE": str(workdir / "crm-keys.json"),
        "CAREBRIDGE_CRM_PROJECTION_FILE": str(PROJECTION),
        "CAREBRIDGE_LOG_LEVEL": "WARNING",
        # the sample HIS is not registered (`carebridge senders add`): a demo accepts any sender
        "CAREBRIDGE_MLLP_OPEN": "true",
        "CAREBRIDGE_ENV": "development",  # loopback, throwaway keys: never production mode
        # the demo's CRM receiver is plain http on loopback: allowed here only (the server warns)
        "CAREBRIDGE_CRM_ALLOW_HTTP_WEBHOOKS": "true",
        "CAREBRIDGE_CRM_WEBHOOK_ALLOWED_NETWORKS": "127.0.0.0/8,::1/128",
    }
    demo = Demo(env, _free_port(), _free_port(), workdir / "carebridge.log")
    with demo.log_path.open("wb") as log:
        proc = subprocess.Popen(
            [
                _carebridge(),
                "serve",
                "--host",
                "127.0.0.1",
                "--http-port",
                str(demo.http_port),
                "--mllp-port",
                str(demo.mllp_port),
            ],
            env=env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            _wait_ready(demo, proc)
            yield demo, proc
        finally:
            stop(proc)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def _wait_ready(demo: Demo, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"carebridge serve exited with {proc.returncode}; see {demo.log_path}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{demo.base}/readyz", timeout=1).status_code == 200:
                with socket.create_connection(("127.0.0.1", demo.mllp_port), timeout=1):
                    return
        time.sleep(0.1)
    raise RuntimeError("carebridge did not become ready in time")


def send(demo: Demo, step: Step) -> bool:
    """``carebridge hl7 send`` the step's files; print the ACK lines; True if the outcome is the expected one."""
    print(f"\n== {step.title}")
    paths = [str(SAMPLES / name) for name in step.files]
    result = demo.cli("hl7", "send", "--port", str(demo.mllp_port), *paths, check=False)
    ok = result.returncode == 0
    for line in result.stdout.splitlines():
        path, _, rest = line.partition(" ")
        code = rest.split(" ", 1)[0]
        # ERR text may quote a field of the message (e.g. a birth date): quoted values are masked.
        masked = re.sub(r"'[^']*'", "'…'", rest)
        print(f"  {Path(path).name} {masked}")
        ok = ok and ((code == "AA") if step.good else (code in ("AE", "AR")))
    if len(result.stdout.splitlines()) != len(paths):
        ok = False
    if not ok:
        print(f"  !! unexpected answer ({'AA expected' if step.good else 'AE/AR expected'})")
    return ok


def patient_id(fhir: httpx.Client, facility: str, mrn: str) -> str:
    bundle = fhir.get("/Patient", params={"identifier": f"{MRN}{facility}|{mrn}"}).json()
    entries = bundle.get("entry") or []
    if not entries:
        raise RuntimeError("a registered patient was not found")
    return str(entries[0]["resource"]["id"])


def record_consents(fhir: httpx.Client) -> None:
    """The front desk records each patient's consent (reminders and post-visit care) for ``crm-main``."""
    print("\n== Front desk: consent to reminders and post-visit care recorded (POST /fhir/Consent)")
    for facility, mrn in CONSENTED:
        pid = patient_id(fhir, facility, mrn)
        for purpose in (APPOINTMENT_REMINDER, POST_VISIT_CARE):
            consent = build_consent(
                pid,
                purpose,
                permit=True,
                date_time=format_instant(now_us()),  # a grant is dated when given (consent.grants)
                channel="counter",
                text_version="v3-2026",
                text_shown="Tôi đồng ý nhận nhắc lịch hẹn và chăm sóc sau khám qua điện thoại/Zalo.",
                recipient=CRM_ID,
            )
            response = fhir.post("/Consent", json=consent)
            if response.status_code != 201:
                raise RuntimeError(f"Consent not stored: HTTP {response.status_code}")
            print(f"  Consent/{response.json()['id']} Patient/{pid} {purpose}: permit")


def show_merged(fhir: httpx.Client) -> None:
    """The surviving patient after A40: id, active, display name and links (no identifiers)."""
    print("\n== FHIR read of the merged patient (GET /fhir/Patient/{id}, bearer token)")
    pid = patient_id(fhir, "BVDK_HN", "BN000123")
    patient: dict[str, Any] = fhir.get(f"/Patient/{pid}").json()
    names = [n.get("text") for n in patient.get("name") or [] if n.get("text")]
    links = [
        f"{link.get('type')} {link.get('other', {}).get('reference')}" for link in patient.get("link") or []
    ]
    print(
        f"  Patient/{pid} version {patient.get('meta', {}).get('versionId')} active={patient.get('active')} "
        f"name={names[0] if names else '-'} links={links or '[]'}"
    )


def wait_for_crm(
    receiver: CrmReceiver, minimum: int = 0, quiet_s: float = 0.4, timeout: float = 10.0
) -> None:
    """Until at least ``minimum`` events arrived and none for ``quiet_s`` (the dispatcher polls every 50 ms)."""
    deadline = time.monotonic() + timeout
    seen, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        count = len(receiver.events)
        if count != seen:
            seen, since = count, time.monotonic()
        elif count >= minimum and time.monotonic() - since >= quiet_s:
            return
        time.sleep(0.05)


class CrmView:
    """Prints, after each step, the webhook events the CRM received because of it."""

    def __init__(self, receiver: CrmReceiver) -> None:
        self.receiver = receiver
        self.printed = 0

    def show(self, minimum: int = 0) -> None:
        wait_for_crm(self.receiver, self.printed + minimum)
        for event in self.receiver.events[self.printed :]:
            print(f"  CRM <- {describe(event)}")
        self.printed = len(self.receiver.events)


def show_metrics(demo: Demo) -> None:
    print("\n== /metrics (excerpt)")
    text = httpx.get(f"{demo.base}/metrics", timeout=10).text
    wanted = (
        "carebridge_hl7_messages_acked_total",
        "carebridge_hl7_messages_nacked_total",
        "carebridge_hl7_journal_messages",
        "carebridge_audit_chain_length",
        "carebridge_audit_last_checkpoint_seq",
        "carebridge_crm_webhook_backlog",
        "carebridge_crm_dead_letters",
    )
    for line in text.splitlines():
        if line.startswith(wanted):
            print(f"  {line}")


def run(workdir: Path) -> int:
    failures: list[str] = []
    started = time.monotonic()
    print("== Starting carebridge (loopback, temporary SQLite database)")
    with running_carebridge(workdir) as (demo, proc):
        print(f"  HTTP {demo.base}  MLLP 127.0.0.1:{demo.mllp_port}")
        print("  webhooks: plain http to loopback allowed for this demo only (the server log warns)")
        his_token = demo.token(HIS_ID, "his_integration")
        crm_token = demo.token(CRM_ID, "crm")
        receiver = CrmReceiver()
        receiver.start()
        try:
            crm = httpx.Client(
                base_url=f"{demo.base}/crm/v1", headers={"Authorization": f"Bearer {crm_token}"}, timeout=10
            )
            response = crm.post("/subscriptions", json={"url": receiver.url})
            if response.status_code != 201:
                raise RuntimeError(f"subscription refused: HTTP {response.status_code}")
            receiver.secret = str(response.json()["secret"]).encode()
            print(f"  CRM webhook receiver {receiver.url} subscribed ({response.json()['id']})")
            fhir = httpx.Client(
                base_url=f"{demo.base}/fhir",
                headers={"Authorization": f"Bearer {his_token}", "Content-Type": "application/fhir+json"},
                timeout=10,
            )
            view = CrmView(receiver)
            if not send(demo, REGISTRATIONS):
                failures.append(REGISTRATIONS.title)
            view.show()  # nothing yet: no consent, so the CRM must not even learn the patients exist
            record_consents(fhir)
            view.show(minimum=1)
            for step in DAY:
                if not send(demo, step):
                    failures.append(step.title)
                view.show()
            show_merged(fhir)
            print("\n== CRM summary (webhooks, signature verified)")
            wait_for_crm(receiver, minimum=6)
            view.show()
            if not receiver.events:
                failures.append("the CRM received no event")
            print(f"  {len(receiver.events)} events received, {receiver.rejected} refused (bad signature)")
            show_metrics(demo)
        finally:
            receiver.stop()
        stop(proc)  # flush asynchronous audit writes before verifying the chain
        if proc.returncode not in (0, -signal.SIGTERM):
            failures.append(f"carebridge exited with {proc.returncode}")
        print("\n== carebridge audit verify")
        verify = demo.cli("audit", "verify", check=False)
        line = (verify.stdout.strip() or verify.stderr.strip()).splitlines()
        print(f"  {line[-1] if line else '(no output)'}")
        if verify.returncode != 0:
            failures.append("audit verify")
    elapsed = time.monotonic() - started
    if failures:
        print(f"\nDEMO FAILED after {elapsed:.1f} s: {'; '.join(failures)} (server log: {demo.log_path})")
        return 1
    print(f"\nDemo completed in {elapsed:.1f} s")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (database, log)")
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="carebridge-demo-"))
    try:
        return run(workdir)
    except Exception as exc:  # a readable line, not a traceback, for the person watching
        print(f"\nDEMO FAILED: {exc}")
        return 1
    finally:
        if args.keep:
            print(f"(kept {workdir})")
        else:
            import shutil

            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
