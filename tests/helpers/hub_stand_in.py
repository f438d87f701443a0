"""A local stand-in of the Hub API: the real `huggingface_hub` client, with its calls patched where the network would
start, so that every upload lands in a local folder instead.

`install(remote)` patches `HfApi.create_repo` (answers a `RepoUrl`, creates nothing remote) and `HfApi.upload_folder`
(copies what the real client would upload: the folder's files, less `ignore_patterns` and the client's own default
ignores, under `path_in_repo`, into `remote/<repo_id>/`, and appends the commit to `remote/commits.jsonl`). The other
upload calls (`upload_file`, `create_commit`, `upload_large_folder`) record themselves as `unexpected` and fail, so a
code path that uploads some other way is seen.

From a subprocess (the script path): `python tests/helpers/hub_stand_in.py REMOTE MODULE ARGS...` installs the
stand-in, then runs `python -m MODULE ARGS...`.
"""

from __future__ import annotations

import json
import runpy
import shutil
import sys
from pathlib import Path


USER = "stand-in-user"


def install(remote: str | Path, setattr=setattr) -> Path:
    """Patch `huggingface_hub.HfApi` in this process; uploads go to `remote` (created). Returns `remote`.

    In a test, pass `setattr=monkeypatch.setattr` so that the patch ends with the test."""
    from huggingface_hub import CommitInfo, HfApi, RepoUrl
    from huggingface_hub.utils import filter_repo_objects
    from huggingface_hub.utils._paths import DEFAULT_IGNORE_PATTERNS

    remote = Path(remote)
    remote.mkdir(parents=True, exist_ok=True)
    log = remote / "commits.jsonl"

    def record(entry: dict) -> None:
        with log.open("a") as f:
            f.write(json.dumps(entry) + "\n")

    def create_repo(self, repo_id, *, token=None, private=None, repo_type=None, exist_ok=False, **kwargs):
        repo_id = repo_id if "/" in repo_id else f"{USER}/{repo_id}"
        authenticated = bool(token or self.token)
        record({"call": "create_repo", "repo_id": repo_id, "private": private, "authenticated": authenticated})
        return RepoUrl(f"https://huggingface.co/{repo_id}")

    def upload_folder(
        self,
        *,
        repo_id,
        folder_path,
        path_in_repo=None,
        commit_message=None,
        token=None,
        allow_patterns=None,
        ignore_patterns=None,
        run_as_future=False,
        **kwargs,
    ):
        folder = Path(folder_path).expanduser().resolve()
        ignore = [ignore_patterns] if isinstance(ignore_patterns, str) else list(ignore_patterns or [])
        files = {p.relative_to(folder).as_posix(): p for p in sorted(folder.glob("**/*")) if p.is_file()}
        ignore += DEFAULT_IGNORE_PATTERNS
        kept = list(filter_repo_objects(files, allow_patterns=allow_patterns, ignore_patterns=ignore))
        prefix = f"{path_in_repo.strip('/')}/" if path_in_repo and path_in_repo.strip("/.") else ""
        for relative in kept:
            target = remote / repo_id / (prefix + relative)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(files[relative], target)
        record(
            {
                "call": "upload_folder",
                "repo_id": repo_id,
                "files": [prefix + r for r in kept],
                "commit_message": commit_message,
                "authenticated": bool(token or self.token),
            }
        )
        info = CommitInfo(
            commit_url=f"https://huggingface.co/{repo_id}/commit/{'0' * 40}",
            commit_message=commit_message or "",
            commit_description="",
            oid="0" * 40,
        )
        if run_as_future:
            from concurrent.futures import Future

            future = Future()
            future.set_result(info)
            return future
        return info

    def unexpected(name):
        def call(self, *args, **kwargs):
            record({"call": name, "unexpected": True})
            raise AssertionError(f"the stand-in Hub got an unexpected {name} call")

        return call

    setattr(HfApi, "create_repo", create_repo)
    setattr(HfApi, "upload_folder", upload_folder)
    for name in ("upload_file", "create_commit", "upload_large_folder", "create_commits_on_pr"):
        if not hasattr(HfApi, name):
            continue
        setattr(HfApi, name, unexpected(name))
    return remote


def commits(remote: str | Path) -> list[dict]:
    path = Path(remote) / "commits.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def uploaded_files(remote: str | Path, repo_id: str) -> dict[str, bytes]:
    """Every file in the stand-in repository, by its path in the repository."""
    root = Path(remote) / repo_id
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


if __name__ == "__main__":
    install(sys.argv[1])
    module = sys.argv[2]
    sys.argv = [module, *sys.argv[3:]]
    runpy.run_module(module, run_name="__main__", alter_sys=True)
