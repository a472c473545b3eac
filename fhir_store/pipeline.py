"""The store's hook chain as one declared value: named stages, each with its phase, in order.

Why: the hooks decide what a write means beyond its rows -- scope policy,
consent rules, the audit record, the legal-hold label, the CRM change feed --
and their order matters (a hook may refuse the write before another records
it; one may rewrite what the next sees).  The store runs exactly the stages of
its :class:`HookPipeline`, in declaration order; the gateway declares the whole
chain in one function (``gateway.store_pipeline.declare_pipeline``), so reading
that function tells the order.  Other packages build hooks, they never insert
them into a store.

Phases (where the store calls a stage's hook):

* ``access`` -- :class:`~fhir_store.model.AccessHook.on_access` after a read,
  vread, history or search, in the read's transaction;
* ``pre-commit`` -- :class:`~fhir_store.model.StoreHook.on_changes` inside the
  write transaction after the rows are written, before COMMIT; in a group commit
  (``FhirStore.transact_group``) once per unit;
* ``group`` -- as ``pre-commit`` for one request, but in a group commit called
  once for every unit together (:class:`~fhir_store.model.GroupStoreHook`).

``pre-commit`` and ``group`` stages form one ordered chain.  A hook that
changes what later stages see (the change's ``resource``) says so with a class
attribute ``rewrites_resource = True``; the pipeline reports which stages do.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal, TypeVar, cast

from sqlalchemy import Connection

from fhir_store.model import (
    AccessHook,
    GroupStoreHook,
    RequestContext,
    ResourceChange,
    StoredResource,
    StoreHook,
)

Phase = Literal["access", "pre-commit", "group"]
CHANGE_PHASES: tuple[Phase, ...] = ("pre-commit", "group")

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Stage:
    """One hook at one place of the chain (a hook serving two phases appears as two stages)."""

    name: str
    phase: Phase
    hook: StoreHook | AccessHook

    @property
    def rewrites_resource(self) -> bool:
        """Whether the hook changes ``ResourceChange.resource`` for the stages after it."""
        return bool(getattr(self.hook, "rewrites_resource", False))

    def check(self) -> None:
        if self.phase == "access":
            if not callable(getattr(self.hook, "on_access", None)):
                raise TypeError(f"stage {self.name!r}: an access stage needs on_access")
        elif self.phase == "group":
            if not isinstance(self.hook, GroupStoreHook):
                raise TypeError(f"stage {self.name!r}: a group stage needs on_group_changes")
        elif self.phase == "pre-commit":
            if not callable(getattr(self.hook, "on_changes", None)):
                raise TypeError(f"stage {self.name!r}: a pre-commit stage needs on_changes")
        else:
            raise ValueError(f"stage {self.name!r}: unknown phase {self.phase!r}")


@dataclass(frozen=True)
class HookPipeline:
    """The ordered stages the store runs; immutable, so the order cannot drift after start."""

    stages: tuple[Stage, ...] = ()
    _change: tuple[Stage, ...] = field(init=False, repr=False, compare=False)
    _access: tuple[AccessHook, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        seen: set[tuple[str, Phase]] = set()
        for stage in self.stages:
            stage.check()
            key = (stage.name, stage.phase)
            if key in seen:
                raise ValueError(f"stage {stage.name!r} is declared twice in phase {stage.phase!r}")
            seen.add(key)
        object.__setattr__(self, "_change", tuple(s for s in self.stages if s.phase in CHANGE_PHASES))
        object.__setattr__(
            self, "_access", tuple(cast(AccessHook, s.hook) for s in self.stages if s.phase == "access")
        )

    @classmethod
    def of(cls, *stages: tuple[str, Phase, StoreHook | AccessHook]) -> HookPipeline:
        """Shorthand: ``HookPipeline.of(("audit", "group", hook), ("audit", "access", hook))``."""
        return cls(tuple(Stage(name, phase, hook) for name, phase, hook in stages))

    def __iter__(self) -> Iterator[Stage]:
        return iter(self.stages)

    def names(self) -> list[tuple[str, Phase]]:
        """(name, phase) of every stage, in the order the store runs them."""
        return [(s.name, s.phase) for s in self.stages]

    def rewriters(self) -> list[str]:
        """Names of the change stages whose hook rewrites what later stages see."""
        return [s.name for s in self._change if s.rewrites_resource]

    def find(self, kind: type[T]) -> T | None:
        """The first stage hook that is a ``kind`` (e.g. the audit hook, for events outside the store)."""
        for stage in self.stages:
            if isinstance(stage.hook, kind):
                return stage.hook
        return None

    def without(self, name: str) -> HookPipeline:
        """The same chain minus every stage called ``name`` (benchmarks measure a hook's cost)."""
        return HookPipeline(tuple(s for s in self.stages if s.name != name))

    # -- run by the store --------------------------------------------------------------

    def on_changes(
        self, conn: Connection, changes: Sequence[ResourceChange], context: RequestContext
    ) -> None:
        """One request's changes through every pre-commit and group stage, in order."""
        for stage in self._change:
            cast(StoreHook, stage.hook).on_changes(conn, changes, context)

    def on_group_changes(
        self, conn: Connection, batches: Sequence[tuple[Sequence[ResourceChange], RequestContext]]
    ) -> None:
        """A group commit: a group stage sees every unit at once, a pre-commit stage unit by unit."""
        for stage in self._change:
            if stage.phase == "group":
                cast(GroupStoreHook, stage.hook).on_group_changes(conn, batches)
            else:
                hook = cast(StoreHook, stage.hook)
                for unit_changes, unit_context in batches:
                    hook.on_changes(conn, unit_changes, unit_context)

    def on_access(
        self,
        conn: Connection,
        action: Literal["read", "vread", "search", "history"],
        resources: Sequence[StoredResource],
        context: RequestContext,
        query: str | None,
    ) -> None:
        for hook in self._access:
            hook.on_access(conn, action, resources, context, query)
