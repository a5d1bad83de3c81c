"""A search whose storage is an S3 bucket on an S3-compatible server (moto's) listening on 127.0.0.1:
checkpoints, Tune's state, the trials table and the search space land in the bucket; an
interrupted search resumes from there; the report reads it back."""

import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

REPO = Path(__file__).resolve().parents[1]
BUCKET = "raycl-test"


@pytest.fixture
def s3_env():
    """Environment variables that point S3 clients (pyarrow's, boto3's) at a local server."""
    moto_server = pytest.importorskip("moto.server", reason="moto[server] is not installed (pip install -e '.[dev]')")
    boto3 = pytest.importorskip("boto3")
    # Port 0: the server binds whatever port is free and says which, so no other process can take it
    # between a check and the bind.
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    try:
        server.start()
    except Exception as exc:  # noqa: BLE001 - any reason the server cannot run here is a skip
        pytest.skip(f"the S3-compatible server could not start: {exc}")
    port = server.get_host_and_port()[1]
    env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}
    client = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing")
    client.create_bucket(Bucket=BUCKET)
    yield env, client
    server.stop()


def keys(client, prefix: str) -> dict[str, int]:
    out = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
        out.update({o["Key"]: o["Size"] for o in page.get("Contents", [])})
    return out


def test_search_stores_in_s3_resumes_from_it_and_reports_from_it(s3_env, tmp_path):
    env, client = s3_env
    env = {**os.environ, **env, "RAY_AUTH_MODE": "disabled"}
    samples = 6
    cmd = [sys.executable, str(REPO / "launch" / "tune.py"), "--method", "sgd", "--samples", str(samples),
           "--population", "1", "--max-concurrent", "1", "--storage-path", f"s3://{BUCKET}/searches", "--name", "bucketed",
           "--best-args", str(tmp_path / "best.yaml"), "--protocol", "end-of-training", "--n-epochs", "10",
           "--verbose", "0"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    prefix = "searches/bucketed/"

    def results(trials):
        return {t: client.get_object(Bucket=BUCKET, Key=f"{prefix}{t}/result.json")["Body"].read() for t in trials}

    def finished():  # trials whose results in the bucket end with their last task: what each held then
        folders = {k.split("/")[2] for k in keys(client, prefix) if k.endswith("/result.json")}
        return {t: body for t, body in results(folders).items() if b'"task": 5' in (body.splitlines() or [b""])[-1]}

    deadline = time.time() + 240
    before = {}
    while len(before) < 2 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.5)
        before = finished()
    assert len(before) >= 2 and proc.poll() is None, proc.poll() is None or proc.stdout.read()
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C does
    output = proc.communicate(timeout=120)[0]

    def table():
        body = client.get_object(Bucket=BUCKET, Key=prefix + "trials.parquet")["Body"].read()
        return pq.read_table(io.BytesIO(body)).to_pylist()

    # Interrupted, the search says so and exports nothing: no table, no best-args.
    assert proc.returncode == 130 and "--resume" in output, output[-3000:]
    assert prefix + "trials.parquet" not in keys(client, prefix) and not (tmp_path / "best.yaml").exists()

    resumed = subprocess.run([*cmd, "--resume"], env=env, capture_output=True, text=True, timeout=400)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    stored = keys(client, prefix)
    names = {k[len(prefix):] for k in stored}
    assert {"trials.parquet", "search_space.yaml", "tuner.pkl"} <= names
    assert any(n.startswith("experiment_state-") for n in names)
    assert sum("/checkpoint_" in n and n.endswith("/stream.pt") for n in names) >= samples
    rows = table()
    assert len(rows) == samples and all(r["status"] == "completed" for r in rows)
    assert results(before) == before  # the trials finished before the interruption were not run again
    assert (tmp_path / "best.yaml").is_file()  # the best-args file stays the user's local file
    print(f"{len(stored)} objects, {sum(stored.values()) / 1e6:.1f} MB in s3://{BUCKET}/{prefix}")

    report = subprocess.run([sys.executable, str(REPO / "launch" / "report.py"), f"s3://{BUCKET}/{prefix}",
                             "--out", str(tmp_path / "report")], env=env, capture_output=True, text=True, timeout=300)
    assert report.returncode == 0, report.stderr[-3000:]
    assert (tmp_path / "report" / "index.html").is_file() and (tmp_path / "report" / "matrices.png").is_file()

    # The experiment is in the bucket now: a search of the same name without --resume is refused.
    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 2
    assert f"error: experiment s3://{BUCKET}/searches/bucketed exists already: pass --resume" in again.stderr


def test_a_search_in_full_populations_keeps_its_journal_members_and_jobs_in_s3(s3_env, tmp_path):
    """The promotion form on object storage: the journal in segments (an object store cannot append),
    each promoted configuration's member states and each job's file in the bucket."""
    import json

    env, client = s3_env
    env = {**os.environ, **env, "RAY_AUTH_MODE": "disabled"}
    cmd = [sys.executable, str(REPO / "launch" / "tune.py"), "--method", "sgd", "--samples", "8", "--population", "2",
           "--grace-period", "1", "--reduction-factor", "2", "--storage-path", f"s3://{BUCKET}/searches",
           "--name", "promoted", "--best-args", str(tmp_path / "best.yaml"), "--n-epochs", "2", "--verbose", "0"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    prefix = "searches/promoted/"
    names = {k[len(prefix):] for k in keys(client, prefix)}
    parts = sorted(k for k in keys(client, prefix) if k.startswith(prefix + "rungs.jsonl.part-"))
    journal = "".join(client.get_object(Bucket=BUCKET, Key=k)["Body"].read().decode() for k in parts)
    events = [json.loads(line) for line in journal.splitlines()]
    jobs = [e["id"] for e in events if e["event"] == "job"]
    promoted = {c for e in events if e["event"] == "job" and e["start"] > 0 for c in e["configs"]}
    assert events[-1]["event"] == "end" and promoted
    assert {f"jobs/{job}.json" for job in jobs} <= names
    # Promoted configurations continued from member states kept in the bucket, deleted once read for good.
    assert not [n for n in names if n.startswith("members/") and not n.endswith("/")]
    body = client.get_object(Bucket=BUCKET, Key=prefix + "trials.parquet")["Body"].read()
    rows = pq.read_table(io.BytesIO(body)).to_pylist()
    assert len(rows) == 8 and any(r["status"] == "completed" for r in rows)
