"""The questionnaire: compare an applicant's Flora and Fauna answers once both pages are in,
unless the applicant withdrew first.

    python examples/questionnaire/run.py [--tasks python|node]

Two applicants: one answers both pages (t_compare runs on the task server and its result is
printed), one withdraws after the first page (t_compare is abandoned). Both sessions end
finalized, and the sessionFinalized webhooks are received and verified.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "common"))
from example import WebhookReceiver, run_id, task_server, webhook_secret  # noqa: E402
from triggers_client import Client  # noqa: E402


def config(tasks_url: str, receiver_url: str) -> dict[str, object]:
    return {
        "tasks": {
            "t_compare": {
                "after": ["flora_page3", "fauna_page6"],
                "unless": ["withdrawn"],
                "run": f"{tasks_url}/compare",
            }
        },
        "webhooks": [{"url": receiver_url, "events": ["sessionFinalized"]}],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", choices=["python", "node"], default="python")
    args = parser.parse_args()
    receiver = WebhookReceiver(webhook_secret())
    run = run_id()
    answering, withdrawing = f"applicant-{run}-1", f"applicant-{run}-2"
    with task_server(HERE, args.tasks) as tasks_url, Client() as triggers:
        for uid in (answering, withdrawing):
            triggers.configure(uid, config(tasks_url, receiver.url))

        triggers.fire(answering, "flora_page3", {"responses": {"q1": "yes", "q2": "no"}})
        waiting = triggers.unresolved(answering)[0]
        print(f"{answering}: {waiting.name} waits for {', '.join(waiting.waitingFor)}")
        triggers.fire(answering, "fauna_page6", {"responses": {"q1": "yes", "q2": "yes"}})
        session = triggers.wait_finalized(answering, timeout=60)
        compared = session.instances["t_compare#0"]
        print(f"{answering}: t_compare#0 {compared.status} {compared.result}")

        triggers.fire(withdrawing, "flora_page3", {"responses": {"q1": "no"}})
        triggers.fire(withdrawing, "withdrawn", {"reason": "moved away"})
        session = triggers.wait_finalized(withdrawing, timeout=60)
        print(f"{withdrawing}: t_compare#0 {session.instances['t_compare#0'].status}")

        received = sorted(receiver.next_event().session for _ in range(2))
        for uid in received:
            print(f"webhook sessionFinalized {uid} (signature verified)")
    receiver.close()


if __name__ == "__main__":
    main()
