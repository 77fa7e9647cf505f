"""A namespaced super session: one applicant answers two questionnaires (the ordinary sessions
``flora:<id>`` and ``fauna:<id>``); the application also fires each page, with a name qualified
by its origin, into the super session ``applicant:<id>``, whose ``t_compare`` runs after both.
When the super session is finalized, its sessionFinalized webhook makes the application fire
``applicantCompared`` into the parent session ``case:<id>``, whose ``t_decide`` decides.

    python examples/super_session/run.py [--tasks python|node]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "common"))
from example import WebhookReceiver, run_id, task_server, webhook_secret  # noqa: E402
from triggers_client import Client  # noqa: E402

ANSWERS = {
    "flora": (3, {"q1": "yes", "q2": "blue"}),
    "fauna": (6, {"q1": "yes", "q2": "blue"}),
}


def configure(triggers: Client, run: str, tasks: str, receiver: str) -> None:
    hooks = [{"url": receiver, "events": ["sessionFinalized"]}]
    for questionnaire in ANSWERS:
        store = {"after": [], "andEvery": "pageSubmitted", "run": f"{tasks}/store-page"}
        triggers.configure(f"{questionnaire}:{run}", {"tasks": {"t_storePage": store}})
    compare = {"after": ["flora_page3", "fauna_page6"], "unless": ["withdrawn"],
               "run": f"{tasks}/compare"}  # fmt: skip
    triggers.configure(f"applicant:{run}", {"tasks": {"t_compare": compare}, "webhooks": hooks})
    decide = {"after": ["applicantCompared"], "run": f"{tasks}/decide"}
    triggers.configure(f"case:{run}", {"tasks": {"t_decide": decide}, "webhooks": hooks})


def submit(triggers: Client, run: str, questionnaire: str) -> None:
    """What the application does when a page arrives: fire into the questionnaire's own
    session, and into the super session under a name qualified by the origin."""
    page, responses = ANSWERS[questionnaire]
    kwargs: dict[str, Any] = {"page": page, "responses": responses}
    triggers.fire(f"{questionnaire}:{run}", "pageSubmitted", kwargs)
    triggers.fire(f"applicant:{run}", f"{questionnaire}_page{page}", kwargs)
    print(f"{questionnaire}:{run} page {page} submitted")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", choices=["python", "node"], default="python")
    args = parser.parse_args()
    receiver = WebhookReceiver(webhook_secret())
    run = run_id()
    with task_server(HERE, args.tasks) as tasks_url, Client() as triggers:
        configure(triggers, run, tasks_url, receiver.url)
        submit(triggers, run, "flora")
        submit(triggers, run, "fauna")

        event = receiver.next_event()  # the super session's finalization
        assert event.session == f"applicant:{run}", event
        compared = triggers.instance(event.session, "t_compare#0").result
        print(f"webhook sessionFinalized {event.session}: t_compare {compared}")
        triggers.fire(f"case:{run}", "applicantCompared", compared)

        case = triggers.wait_finalized(f"case:{run}", timeout=60)
        print(f"case:{run}: t_decide#0 {case.instances['t_decide#0'].result}")
        event = receiver.next_event()
        print(f"webhook sessionFinalized {event.session}")
    receiver.close()


if __name__ == "__main__":
    main()
