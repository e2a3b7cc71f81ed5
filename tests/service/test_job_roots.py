"""GET /v1/jobs/roots: the configured job roots, behind the same auth as the rest of /v1/jobs."""

from __future__ import annotations

KEY = "ui-test-key-0123"


def test_job_roots_lists_the_configured_folders(make_client, tmp_path):
    for folder in ("corpora", "more", "shared"):
        (tmp_path / folder).mkdir()
    roots = [tmp_path / "corpora", tmp_path / "more" / ".." / "shared"]
    client = make_client(job_roots=[str(root) for root in roots])
    response = client.get("/v1/jobs/roots")
    assert response.status_code == 200, response.text
    assert response.json() == {"roots": [str(tmp_path / "corpora"), str(tmp_path / "shared")]}
    # not mistaken for a job id, and job ids still resolve as before
    assert client.get("/v1/jobs/no-such-job").status_code == 404


def test_job_roots_need_a_key_when_keys_are_set(make_client):
    client = make_client(api_keys=KEY)
    assert client.get("/v1/jobs/roots").status_code == 401
    response = client.get("/v1/jobs/roots", headers={"X-API-Key": KEY})
    assert response.status_code == 200
    assert response.json() == {"roots": []}
