#!/usr/bin/env python3
"""Checks the spans scripts/e2e/otlp_receiver.py received from a scenario's registry.

    check_traces.py pipeline SPANS.jsonl   pushes, pulls and pipeline jobs
    check_traces.py canary SPANS.jsonl     rollouts: starts and analyses with their decisions

Prints a one-line summary last; exits non-zero with the reason when a check fails.
"""
import collections
import json
import sys

SERVER = 2  # OTLP SpanKind SPAN_KIND_SERVER
CLIENT = 3
PULL_ROUTES = (
    "GET /v2/{name}/blobs/{digest}",
    "POST /depot/v1/repositories/{name}/blobs/{digest}/chunks",
    "GET /depot/v1/repositories/{name}/blobs/{digest}/recipe",
)


def fail(why):
    print(f"FAIL: {why}")
    sys.exit(1)


def main():
    mode, path = sys.argv[1], sys.argv[2]
    spans = [json.loads(line) for line in open(path)]
    if not spans:
        fail("no spans received")
    by_id = {s["span"]: s for s in spans}
    names = collections.Counter(s["name"] for s in spans)
    print(dict(sorted(names.items())))
    if any(s["service"] != "depot" for s in spans):
        fail("a span without service.name=depot")
    for s in spans:
        if s["end_ns"] < s["start_ns"]:
            fail(f"span {s['name']} ends before it starts")
        parent = by_id.get(s["parent"])
        if parent and parent["trace"] != s["trace"]:
            fail(f"span {s['name']} is in another trace than its parent")

    if mode == "pipeline":
        pushes = [s for s in spans if s["name"] == "PUT /v2/{name}/manifests/{reference}"
                  and s["attributes"].get("http.response.status_code") == 201]
        if not pushes:
            fail("no manifest push span")
        stored = [s for s in spans if s["name"] in ("depot.blob.finish", "depot.recipe.verify")]
        if not stored:
            fail("no blob finish or recipe verify span")
        for s in stored:
            if by_id.get(s["parent"], {}).get("kind") != SERVER:
                fail(f"{s['name']} is not the child of its request's span")
        finished = [s for s in stored if s["name"] == "depot.blob.finish"]
        if finished and not any("depot.push.stage.hash_seconds" in s["attributes"] for s in finished):
            fail("blob finish spans carry no push stage times")
        jobs = [s for s in spans if s["name"] == "depot.job.run" and s["attributes"].get("depot.job.outcome") == "succeeded"]
        if len(jobs) < 3:
            fail(f"{len(jobs)} succeeded job spans, expected the seed pipeline's stages")
        for job in jobs:
            # The job's requests: AsyncHTTPClient's client spans under the job, each with the
            # registry's server span under it.
            requests = {s["span"] for s in spans if s["parent"] == job["span"] and s["kind"] == CLIENT}
            children = [s for s in spans if s["parent"] in requests]
            if not children or any(c["kind"] != SERVER for c in children):
                fail(f"job {job['attributes']}: its requests are not server spans in its trace")
            if not any(c["name"] in PULL_ROUTES for c in children):
                fail(f"job {job['attributes']} pulled nothing in its trace: {sorted({c['name'] for c in children})}")
            if not any(c["name"] == "PUT /v2/{name}/manifests/{reference}" for c in children):
                fail(f"job {job['attributes']} pushed no output in its trace")
        if names["depot.pipeline.schedule"] < 1:
            fail("no scheduling span")
        print(f"{len(spans)} spans: {len(pushes)} manifest pushes, {len(stored)} stored blobs, "
              f"{len(jobs)} job runs each with its pulls and output push as children")
    elif mode == "canary":
        analyses = [s for s in spans if s["name"] == "depot.rollout.analysis"]
        decisions = collections.Counter(str(s["attributes"].get("depot.rollout.decision", "")) for s in analyses)
        if not analyses:
            fail("no rollout analysis span")
        if not all("error-rate=" in str(s["attributes"].get("depot.rollout.checks", "")) for s in analyses
                   if s["attributes"].get("depot.rollout.decision") in ("advance", "promote")):
            fail("an analysis that advanced carries no check outcomes")
        for wanted in ("advance", "promote", "rollback"):
            if decisions[wanted] < 1:
                fail(f"no analysis decided {wanted}: {dict(decisions)}")
        rollouts = [s for s in spans if s["name"] == "POST /depot/v1/repositories/{name}/deployments/{environment}/rollout"]
        if not rollouts:
            fail("no rollout start request span")
        print(f"{len(spans)} spans: {len(rollouts)} rollout starts, {len(analyses)} analyses ({dict(decisions)})")
    else:
        fail(f"unknown mode {mode}")


if __name__ == "__main__":
    main()
