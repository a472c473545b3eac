"""The CRM bridge assembled: keys, decision point, outbox hook, dispatcher, booking sender.

``gateway.crm_wiring.build_crm_bridge`` creates one per :class:`gateway.runtime.Runtime`
(it injects the audit recorder and the MLLP transport, which live in other
packages).  The bridge builds its store hooks (``hook``: CRM outbox, ``intake``:
Consent rules) and hands them over; ``gateway.store_pipeline`` places them in the
store's hook chain.  ``carebridge serve`` calls :meth:`CrmBridge.start` / :meth:`stop`,
tests call them (or the ``run_once`` methods) directly.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import Engine

from common import CrmSettings
from consent import ConsentIntakeHook, DecisionAuditor, KeyStore, PolicyDecisionPoint
from crm_bridge.booking import Booking, HisTransport, SiuBuilder
from crm_bridge.config import ProjectionConfig
from crm_bridge.delivery import Dispatcher
from crm_bridge.outbox_hook import CrmOutboxHook
from crm_bridge.processors import CrmProcessors
from crm_bridge.subscriptions import Subscriptions
from crm_bridge.webhook_policy import WebhookPolicy
from fhir_store import FhirStore


@dataclass
class CrmBridge:
    settings: CrmSettings
    config: ProjectionConfig
    keys: KeyStore
    pdp: PolicyDecisionPoint
    hook: CrmOutboxHook
    intake: ConsentIntakeHook
    dispatcher: Dispatcher
    subscriptions: Subscriptions
    booking: Booking
    webhooks: WebhookPolicy

    @classmethod
    def create(
        cls,
        engine: Engine,
        store: FhirStore,
        settings: CrmSettings,
        *,
        auditor: DecisionAuditor | None,
        transport: HisTransport,
        build_siu: SiuBuilder,
        config: ProjectionConfig | None = None,
        keys: KeyStore | None = None,
        own_ports: Iterable[int] = (),
    ) -> CrmBridge:
        """``own_ports``: the ports carebridge listens on (never a webhook target; more may be
        added once sockets are bound, :meth:`WebhookPolicy.listening_on`)."""
        config = config if config is not None else ProjectionConfig.load(settings.projection_file)
        keys = keys if keys is not None else KeyStore.load_or_create(settings.key_source)
        for crm_id in config.clients:  # fail at startup, not on the first disclosure (environment keys)
            keys.ring_for(crm_id)
        pdp = PolicyDecisionPoint(auditor, cipher=store.cipher)
        webhooks = WebhookPolicy.from_settings(settings, own_ports)
        dispatcher = Dispatcher(engine, keys, settings, webhooks)
        hook = CrmOutboxHook(config, keys, pdp, notify=dispatcher.wake.set)
        intake = ConsentIntakeHook()  # the gateway places both hooks in the store's declared pipeline
        booking = Booking(store, keys, settings, transport=transport, build_siu=build_siu)
        subscriptions = Subscriptions(engine, keys, webhooks)
        return cls(settings, config, keys, pdp, hook, intake, dispatcher, subscriptions, booking, webhooks)

    def processors(self) -> CrmProcessors:
        """This bridge as the processors the patient-rights workflow notifies on erasure."""
        return CrmProcessors(self.keys, self.dispatcher.wake.set, lambda: self.config)

    def start(self) -> None:
        self.dispatcher.start()
        self.booking.start()

    def stop(self) -> None:
        self.booking.stop()
        self.dispatcher.stop()
