"""Webhook deliveries of a session: every attempt visible, redelivery by hand."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request
from pydantic import BaseModel

from service.api.context import context
from service.api.json_body import StrictJsonRoute
from service.api.params import Uid, mutating_problems, problems
from service.api.problems import ProblemError
from service.webhooks.store import Delivery, DeliveryStore

router = APIRouter(tags=["webhooks"], route_class=StrictJsonRoute)

DeliveryId = Annotated[str, Path(pattern=r"^msg_[0-9a-f]{32}$", examples=["msg_" + "0" * 32])]


class DeliveriesAnswer(BaseModel):
    deliveries: list[Delivery]


class RedeliverAnswer(BaseModel):
    id: str
    state: str


@router.get(
    "/sessions/{uid}/webhooks/deliveries",
    response_model=DeliveriesAnswer,
    responses=problems(404),
    summary="Every webhook delivery of the session, with every attempt",
)
async def deliveries(uid: Uid, request: Request) -> DeliveriesAnswer:
    ctx = context(request)
    await ctx.engine.get_config(uid)  # 404 for an unknown session
    return DeliveriesAnswer(deliveries=await DeliveryStore(ctx.engine).all(uid))


@router.post(
    "/sessions/{uid}/webhooks/deliveries/{delivery_id}/redeliver",
    response_model=RedeliverAnswer,
    status_code=202,
    responses=mutating_problems(404),
    summary="Deliver again (same webhook-id), whatever happened before",
)
async def redeliver(uid: Uid, delivery_id: DeliveryId, request: Request) -> RedeliverAnswer:
    runner = context(request).dispatcher.runners.get("webhooks")
    redeliver_one = getattr(runner, "redeliver", None)
    if redeliver_one is None or not await redeliver_one(uid, delivery_id):
        raise ProblemError("not-found", f"no delivery {delivery_id} in session {uid}")
    return RedeliverAnswer(id=delivery_id, state="pending")
