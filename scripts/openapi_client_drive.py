"""Drives one job through the Python client generated from the api's OpenAPI document:
create, get, list, then a remote worker's claim, heartbeat and complete, and reads the
result back. Run by scripts/openapi-client.sh with the generated package on PYTHONPATH.

    python openapi_client_drive.py BASE_URL [API_KEY]
"""

import sys
import uuid

from jobs_client import AuthenticatedClient, Client
from jobs_client.api.jobs import create_job, get_job, list_jobs
from jobs_client.api.workers import claim, complete, heartbeat
from jobs_client.models import (
    ClaimBody,
    CompleteBody,
    CreateJob,
    Created,
    Ended,
    HeartbeatBody,
    HeartbeatReply,
    JobList,
    JobView,
)
from jobs_client.types import UNSET


def expect(value, kind, what):
    if not isinstance(value, kind):
        sys.exit(f"FAIL: {what}: expected {kind.__name__}, got {value!r}")
    return value


def main():
    base, key = sys.argv[1], (sys.argv[2] if len(sys.argv) > 2 else None)
    client = AuthenticatedClient(base_url=base, token=key) if key else Client(base_url=base)
    queue = f"generated-{uuid.uuid4().hex[:8]}"
    worker = "generated-client"

    created = create_job.sync(
        client=client, body=CreateJob(kind="report", args={"n": 7}, queue=queue)
    )
    created = expect(created, Created, "create")
    job = expect(get_job.sync(str(created.id), client=client), JobView, "get")
    assert job.state == "pending", job.state
    listed = expect(list_jobs.sync(client=client, queue=queue), JobList, "list")
    assert [j.id for j in listed.items] == [created.id], listed.items

    claimed = claim.sync(
        client=client, body=ClaimBody(worker_id=worker, queues=[queue], wait_seconds=5)
    )
    [lease] = claimed.jobs
    assert lease.id == created.id and lease.args == {"n": 7}, lease
    beat = heartbeat.sync(
        str(lease.id),
        client=client,
        body=HeartbeatBody(
            worker_id=worker, lease_token=lease.lease_token, progress=0.5, stage="halfway"
        ),
    )
    expect(beat, HeartbeatReply, "heartbeat")
    ended = complete.sync(
        str(lease.id),
        client=client,
        body=CompleteBody(worker_id=worker, lease_token=lease.lease_token, result={"sum": 7}),
    )
    assert expect(ended, Ended, "complete").state == "completed", ended.state

    done = expect(get_job.sync(str(created.id), client=client), JobView, "get after complete")
    assert done.state == "completed" and done.result == {"sum": 7}, (done.state, done.result)
    assert done.finished_at is not UNSET and done.finished_at is not None
    print(f"ok: job {created.id} created, read, listed, claimed, heartbeat, completed")


if __name__ == "__main__":
    main()
