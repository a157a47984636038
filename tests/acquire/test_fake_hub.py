"""The in-process FakeHub (tests/support/fakehub.py) answers as the real
HubClient does, so the manager tests built on it test what production sees."""

from __future__ import annotations

from pathlib import Path

from caxton_models.acquire.hub import HubClient, RepoFile, RepoInfo
from caxton_models.ops.server import ServerThread
from tests.support.fakehub import COMMIT, MINILM_REPO_ID, FakeHub


def test_fake_and_real_client_list_the_same_repo_alike(
    fake_hub: FakeHub, minilm_server: ServerThread, tmp_path: Path
) -> None:
    fake = fake_hub.resolve(MINILM_REPO_ID)
    real = HubClient([minilm_server.url], retries=1).resolve(MINILM_REPO_ID)
    for info in (fake, real):
        assert type(info) is RepoInfo and all(type(f) is RepoFile for f in info.files)
        assert info.commit == COMMIT
    assert sorted((f.path, f.size) for f in fake.files) == sorted(
        (f.path, f.size) for f in real.files
    )
    # Where the fake lists a SHA-256 (a weights file), it is the Hub's.
    real_sha = {f.path: f.sha256 for f in real.files}
    listed = [f for f in fake.files if f.sha256 is not None]
    assert listed and all(real_sha[f.path] == f.sha256 for f in listed)
    # The fake downloads into the targets and returns the SHA-256 of each, as the client does.
    got = fake_hub.download_files(fake, {"config.json": tmp_path / "config.json"})
    assert (tmp_path / "config.json").is_file() and set(got) == {"config.json"}
