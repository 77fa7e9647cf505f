"""Managers: what happens around transitions (DESIGN.md section 4, SEMANTICS.md J and L1).

``default`` follows SEMANTICS.md as it is; ``finalizing`` (the service's default) adds the
session-finalization recipe, which the engine's scripts run atomically after every change. Hooks
are called by whoever performs a transition, after it committed, in the original's order
(post-fire for each fire a transition made, then post-replay or post-skip).
"""

from __future__ import annotations

from service.engine.models import Instance, Outcome


class Manager:
    """Base manager: no finalization, hooks that do nothing (override them in a plug-in)."""

    key = "default"
    finalize = False

    async def after_fire(self, uid: str, trigger: str, scheduled: list[str]) -> None:
        """J1: after every fire, with the instances it dispatched (also when there are none)."""

    async def after_replay(self, uid: str, parent: Instance) -> None:
        """J2: after a replay or retry, with the replayed parent (as the original does)."""

    async def after_skip(self, uid: str, instance: Instance, cascaded: bool) -> None:
        """J3: after an operator skip, after its cascade's post-fire."""

    async def after_transition(self, uid: str, outcome: Outcome) -> None:
        """Calls post-fire for every fire the transition made, in order."""
        for fire in outcome.fires:
            await self.after_fire(uid, fire.trigger, fire.scheduled)


class DefaultManager(Manager):
    """SEMANTICS.md as it is: no finalization."""


class FinalizingManager(Manager):
    """Fires ``sessionFinalized`` once when every unresolved task waits for it (L1), checked
    atomically by the engine after every change."""

    key = "finalizing"
    finalize = True
