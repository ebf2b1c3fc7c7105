"""s3:// checkpoints through moto's S3 server on 127.0.0.1 (real HTTP, boto3 as users run it)."""

import json

import pytest
import torch
from conftest import TINY, make_hf_checkpoint, models, repo_module, require

boto3 = require("boto3")
require("moto")
from moto.server import ThreadedMotoServer  # noqa: E402

download = repo_module("download")
BUCKET = "gpt-hub-checkpoints"


@pytest.fixture
def s3(monkeypatch, tmp_path):
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    _, port = server.get_host_and_port()
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    client = boto3.client("s3")
    client.create_bucket(Bucket=BUCKET)
    yield client
    server.stop()


def no_credentials(monkeypatch):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")


def test_a_checkpoint_folder_on_s3(s3, tmp_path):
    checkpoint = make_hf_checkpoint(tmp_path / "ckpt")
    for name in ("config.json", "model.safetensors"):
        s3.upload_file(str(checkpoint / name), BUCKET, f"tiny/{name}")
    model = models.GPT2LMHeadModel.from_pretrained(f"s3://{BUCKET}/tiny/")
    reference = models.GPT2LMHeadModel.from_pretrained(checkpoint)
    x = torch.tensor([[1, 2, 3]])
    assert torch.equal(model(x).logits, reference(x).logits) and model.config.vocab_size == TINY["vocab_size"]
    path = download.resolve_file(f"s3://{BUCKET}/tiny/config.json", ["config.json"])
    assert download.resolve_file(f"s3://{BUCKET}/tiny/config.json", ["config.json"]) == path  # from the cache


def test_missing_key_and_missing_bucket(s3):
    with pytest.raises(download.CheckpointNotFoundError, match=f"the bucket '{BUCKET}' has no key 'nothing/config.json'"):
        download.resolve_file(f"s3://{BUCKET}/nothing/", ["config.json"])
    with pytest.raises(download.CheckpointNotFoundError, match="the bucket 'no-such-bucket' does not exist"):
        download.resolve_file("s3://no-such-bucket/x/config.json", ["config.json"])


def test_access_denied_with_and_without_credentials(s3, monkeypatch):
    s3.put_object(Bucket=BUCKET, Key="secret/config.json", Body=b"{}")
    s3.put_bucket_policy(Bucket=BUCKET, Policy=json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Deny", "Principal": "*", "Action": "s3:GetObject", "Resource": f"arn:aws:s3:::{BUCKET}/secret/*"}]}))
    with pytest.raises(download.DownloadError, match="access denied .check the AWS credentials"):
        download.resolve_file(f"s3://{BUCKET}/secret/config.json", ["config.json"])
    no_credentials(monkeypatch)
    with pytest.raises(download.DownloadError, match="no AWS credentials were found, so the request was anonymous"):
        download.resolve_file(f"s3://{BUCKET}/secret/config.json", ["config.json"])


def test_public_bucket_without_credentials(s3, monkeypatch):
    s3.put_object(Bucket=BUCKET, Key="public/config.json", Body=b'{"n_layer": 2}', ACL="public-read")
    no_credentials(monkeypatch)
    path = download.resolve_file(f"s3://{BUCKET}/public/", ["config.json"])
    assert open(path, "rb").read() == b'{"n_layer": 2}'


def test_multipart_upload(s3):
    part = b"p" * (5 * 1024 * 1024)
    upload = s3.create_multipart_upload(Bucket=BUCKET, Key="big/model.safetensors")
    parts = []
    for number, data in enumerate((part, b"tail"), 1):
        etag = s3.upload_part(Bucket=BUCKET, Key="big/model.safetensors", PartNumber=number,
                              UploadId=upload["UploadId"], Body=data)["ETag"]
        parts.append({"PartNumber": number, "ETag": etag})
    s3.complete_multipart_upload(Bucket=BUCKET, Key="big/model.safetensors", UploadId=upload["UploadId"],
                                 MultipartUpload={"Parts": parts})
    assert "-2" in s3.head_object(Bucket=BUCKET, Key="big/model.safetensors")["ETag"]  # not an MD5
    path = download.resolve_file(f"s3://{BUCKET}/big/model.safetensors", ["model.safetensors"])
    assert open(path, "rb").read() == part + b"tail"


def test_offline_serves_s3_from_the_cache(s3, monkeypatch):
    s3.put_object(Bucket=BUCKET, Key="c/config.json", Body=b"{}")
    path = download.resolve_file(f"s3://{BUCKET}/c/", ["config.json"])
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    assert download.resolve_file(f"s3://{BUCKET}/c/", ["config.json"]) == path
    with pytest.raises(download.CheckpointNotFoundError, match="not in the cache"):
        download.resolve_file(f"s3://{BUCKET}/other/", ["config.json"])


def test_an_s3_download_shows_its_progress(s3, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(repo_module("download.transfer"), "PROGRESS_FROM", 1)
    s3.put_object(Bucket=BUCKET, Key="bar/model.safetensors", Body=b"x" * 4096)
    path = download.resolve_file(f"s3://{BUCKET}/bar/model.safetensors", ["model.safetensors"], progress=True)
    assert open(path, "rb").read() == b"x" * 4096
    err = capsys.readouterr().err
    assert "model.safetensors" in err and "4.00k" in err  # tqdm's bar, counted to the object's size
    s3.put_object(Bucket=BUCKET, Key="quiet/model.safetensors", Body=b"y" * 4096)
    download.resolve_file(f"s3://{BUCKET}/quiet/model.safetensors", ["model.safetensors"], progress=False)
    assert capsys.readouterr().err == ""
