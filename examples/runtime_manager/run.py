"""A runtime-selected manager: the same application against a service started with
``TRIGGERS_MANAGER=finalizing`` (the default) or ``TRIGGERS_MANAGER=default``.

    python examples/runtime_manager/run.py [--tasks python|node]

``t_report`` runs after ``sessionFinalized``. The ``finalizing`` manager fires it once nothing
else is left (atomically, in the script that finished ``t_compare``): the report runs and the
webhook arrives. The ``default`` manager (the original framework's semantics) never does: the
session stays open and ``t_report`` keeps waiting. Managers are looked up by key in the
``triggers.managers`` entry point group, so a plug-in adds one without touching the service.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "common"))
from example import WebhookReceiver, run_id, task_server, webhook_secret  # noqa: E402
from triggers_client import Client, Instance  # noqa: E402


def wait_resolved(triggers: Client, uid: str, name: str, timeout: float = 60) -> Instance:
    deadline = time.monotonic() + timeout
    while True:
        instance = triggers.instance(uid, name)
        if instance.resolved or instance.status == "failed":
            return instance
        if time.monotonic() > deadline:
            raise TimeoutError(f"{name} still {instance.status} after {timeout} s")
        time.sleep(0.2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", choices=["python", "node"], default="python")
    args = parser.parse_args()
    receiver = WebhookReceiver(webhook_secret())
    uid = f"applicant-{run_id()}"
    with task_server(HERE, args.tasks) as tasks, Client() as triggers:
        triggers.configure(uid, {
            "tasks": {
                "t_compare": {"after": ["flora_page3", "fauna_page6"], "run": f"{tasks}/compare"},
                "t_report": {"after": ["sessionFinalized"], "run": f"{tasks}/report"},
            },
            "webhooks": [{"url": receiver.url, "events": ["sessionFinalized"]}],
        })  # fmt: skip
        triggers.fire(uid, "flora_page3", {"q1": "yes"})
        triggers.fire(uid, "fauna_page6", {"q1": "yes"})
        compared = wait_resolved(triggers, uid, "t_compare#0")
        print(f"{uid}: t_compare#0 {compared.status} {compared.result}")
        if triggers.session(uid).finalized:
            report = wait_resolved(triggers, uid, "t_report#0")
            print(f"{uid}: finalized; t_report#0 {report.status} {report.result}")
            print(f"webhook sessionFinalized {receiver.next_event().session}")
        else:
            waiting = {task.name: task.waitingFor for task in triggers.unresolved(uid)}
            print(f"{uid}: not finalized (this manager does not finalize); waiting: {waiting}")
    receiver.close()


if __name__ == "__main__":
    main()
