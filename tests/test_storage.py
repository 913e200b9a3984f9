"""The workflow on a corpus in object storage, with its results there too: a local S3-compatible
server (moto) that the test starts and stops itself, the corpus given as s3:// globs, Snakemake's
S3 storage plugin as the default storage provider (README, "Corpora in object storage")."""

import importlib.util

import pandas as pd
import pytest
from conftest import smk, tiny_config, write_config

MISSING = [
    name
    for name in ("moto", "snakemake_storage_plugin_s3", "boto3")
    if importlib.util.find_spec(name) is None
]
pytestmark = pytest.mark.skipif(
    bool(MISSING),
    reason=f"needs {', '.join(MISSING)} (the `test` extra: pip install -e '.[test]')",
)
BUCKET = "tlm-test"
CREDENTIALS = {  # moto accepts any; the plugin and boto3 read them from the environment
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "SNAKEMAKE_STORAGE_S3_ACCESS_KEY": "testing",
    "SNAKEMAKE_STORAGE_S3_SECRET_KEY": "testing",
}


@pytest.fixture
def s3(monkeypatch):
    """A local S3 server on a free port with an empty bucket; its endpoint URL."""
    import boto3
    from moto.server import ThreadedMotoServer

    for key, value in CREDENTIALS.items():
        monkeypatch.setenv(key, value)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    client = boto3.client("s3", endpoint_url=url)
    client.create_bucket(Bucket=BUCKET)
    yield url, client
    server.stop()


def test_corpus_and_results_in_object_storage(tmp_path, s3):
    url, client = s3
    cfg = tiny_config(tmp_path)  # the corpus files go to the bucket; the task files stay local
    for path in sorted((tmp_path / "corpus").iterdir()):
        client.upload_file(str(path), BUCKET, f"corpus/{path.name}")
        path.unlink()
    client.put_object(Bucket=BUCKET, Key="corpus/sub/not-matched.parquet", Body=b"x")
    cfg["corpus"]["paths"] = [f"s3://{BUCKET}/corpus/*.parquet", f"s3://{BUCKET}/corpus/b.jsonl.gz"]
    cfg["runs"] = {"tlm": cfg["runs"]["tlm"]}
    del cfg["tasks"]["demo"]["predict"]
    write_config(tmp_path, cfg)
    storage = [
        "--default-storage-provider",
        "s3",
        "--default-storage-prefix",
        f"s3://{BUCKET}/exp",
        "--storage-s3-endpoint-url",
        url,
    ]
    smk(tmp_path, "results/retrieval/demo/external.parquet", *storage)

    keys = {o["Key"] for o in client.list_objects_v2(Bucket=BUCKET)["Contents"]}
    assert {f"exp/results/corpus/shard-0000{i}.parquet" for i in range(3)} <= keys
    assert "exp/results/corpus/manifest.json" in keys
    assert any(k.startswith("exp/results/index/shard-00002/") for k in keys)
    assert not (tmp_path / "results").exists(), "nothing written to the local results/"
    client.download_file(
        BUCKET, "exp/results/retrieval/demo/external.parquet", str(tmp_path / "s.parquet")
    )
    external = pd.read_parquet(tmp_path / "s.parquet")
    assert len(external) > 0 and external.doc_id.is_unique
    # rerun: nothing to do (the objects' times and the job records agree)
    assert (
        "Nothing to be done"
        in smk(tmp_path, "results/retrieval/demo/external.parquet", "-n", *storage).stdout
    )
