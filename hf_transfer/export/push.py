"""Push a finished run to the Hugging Face Hub: export, check, then upload only what changed.

Order matters, because a push that fails after the weights went up wastes the user's time and
leaves a half-written repository:

1. the card is built and checked locally (`validate_card`) before anything else;
2. the run is exported and reloaded (`export_run`), and the card it wrote is checked again;
3. a token must be present, and no exported file may contain it;
4. only then is the network used: create the repository (and branch), list what it holds, and
   commit the files whose content differs, in one commit.

Every failure after step 2 keeps the export folder and says which command retries the push, so a
trained model never needs retraining to be published.

Files are committed with `HfApi.create_commit`, not `upload_folder`: in huggingface_hub 2.x
`upload_folder` (with hf_xet installed) streams large folders in several commits and skips the
server-side README check that `create_commit` runs before uploading, and a model's weights,
config and card should change together.
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import mmap
import os
import shlex
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from hf_transfer.config import ExportConfig
from hf_transfer.errors import ExportError
from hf_transfer.export.card import build_card, resolve_license
from hf_transfer.export.card_checks import validate_card
from hf_transfer.export.export import (
    ADAPTER_FILES,
    MODEL_CONFIG_FILES,
    PROCESSOR_FILES,
    WEIGHT_FILES,
    export_run,
    merge_setting,
)
from hf_transfer.run_folder import IMAGES, RunFolder

logger = logging.getLogger(__name__)

__all__ = ["PushResult", "check_push_settings", "maybe_push_after_training", "push_run"]

#: Remote files an export may have written: stale ones are deleted on a new push (a repository
#: switched from an unmerged adapter to merged weights must not keep adapter_config.json, or
#: transformers would load the adapter). Anything else in the repository is left alone.
MANAGED_FILES = WEIGHT_FILES + MODEL_CONFIG_FILES + PROCESSOR_FILES + ADAPTER_FILES + IMAGES + ("README.md",)


@dataclass
class PushResult:
    """What a push did.

    Attributes:
        repo_id: The Hub repository.
        revision: Branch pushed to.
        export_dir: The local export that was pushed (kept).
        uploaded: Files whose content was sent (new or changed), in repository paths.
        deleted: Stale files an earlier export had written, removed by this commit.
        unchanged: Files already on the Hub with the same content: not sent again.
        commit_url: The commit, or None when nothing changed.
    """

    repo_id: str
    revision: str
    export_dir: Path
    uploaded: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    commit_url: str | None = None


def _retry_command(run_dir, repo_id, private, revision, merge_adapter, baseline, license, language, export_dir) -> str:
    parts = ["hf-transfer", "push", str(run_dir), "--repo-id", repo_id]
    if private:
        parts.append("--private")
    if revision:
        parts += ["--revision", revision]
    if merge_adapter is not None:
        parts.append("--merge" if merge_adapter else "--no-merge")
    if isinstance(baseline, (str, Path)):
        parts += ["--baseline", str(baseline)]
    if license:
        parts += ["--license", license]
    if language:
        parts += ["--language", *([language] if isinstance(language, str) else language)]
    if export_dir is not None:
        parts += ["--export-dir", str(export_dir)]
    return " ".join(shlex.quote(p) for p in parts)


def _transport_errors() -> tuple[type[BaseException], ...]:
    """Connection-level errors of the HTTP client huggingface_hub uses (httpx2 in 2.x, httpx in 1.x)."""
    errors: list[type[BaseException]] = [ConnectionError, TimeoutError]
    for module in ("httpx2", "httpx"):
        try:
            errors.append(importlib.import_module(module).TransportError)
        except (ImportError, AttributeError):
            continue
    return tuple(errors)


def _chain(e: BaseException):
    """`e` and the exceptions it was raised from (LFS uploads wrap failures in RuntimeError)."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        yield e
        e = e.__cause__ or e.__context__


def _explain(e: BaseException, repo_id: str, endpoint: str) -> str | None:
    """One sentence for a Hub failure, or None when it is not one."""
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled, RepositoryNotFoundError

    transport = _transport_errors()
    for err in _chain(e):
        if isinstance(err, OfflineModeIsEnabled):
            return "HF_HUB_OFFLINE=1 is set, so nothing can be pushed. Unset it."
        if isinstance(err, RepositoryNotFoundError):
            return (
                f"The Hub does not let this token see or create '{repo_id}' (not found or not "
                "allowed). Check the repository id and that your token may write to its namespace."
            )
        if isinstance(err, HfHubHTTPError):
            status = err.response.status_code if err.response is not None else None
            server = f" ({err.server_message.strip()})" if err.server_message else ""
            if status == 401:
                return (
                    f"The Hub refused the token (401 Unauthorized){server}: it is invalid or expired. "
                    "Log in again with `hf auth login` or set HF_TOKEN to a valid token."
                )
            if status == 403:
                return (
                    f"Your token may not write to '{repo_id}' (403 Forbidden){server}. Use a token "
                    "with write access to that namespace (https://huggingface.co/settings/tokens)."
                )
            return f"The Hub answered HTTP {status}{server} while pushing '{repo_id}'."
        if isinstance(err, transport):
            return (
                f"Cannot reach the Hub at {endpoint} ({type(err).__name__}). Check your network or "
                "proxy (HTTPS_PROXY) and HF_ENDPOINT."
            )
        if isinstance(err, ValueError):  # create_commit's README check, malformed server answers
            return f"The Hub refused the upload: {err}"
    return None


@contextmanager
def _hub_errors(repo_id: str, endpoint: str, export_dir: Path, retry: str):
    """Turn Hub failures into one clear `ExportError` that keeps the export and says how to retry."""
    try:
        yield
    except Exception as e:
        reason = _explain(e, repo_id, endpoint)
        if reason is None:
            raise
        raise ExportError(f"{reason} The export is kept at '{export_dir}'. Retry with:\n  {retry}") from None


def _hashes(path: Path) -> tuple[str, str]:
    """sha256 (the LFS id) and git blob sha1 (a regular file's id) of a file, in one pass."""
    sha256, sha1 = hashlib.sha256(), hashlib.sha1()
    sha1.update(f"blob {path.stat().st_size}\0".encode())
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            sha256.update(chunk)
            sha1.update(chunk)
    return sha256.hexdigest(), sha1.hexdigest()


def files_containing(folder: Path, secret: str) -> list[Path]:
    """Files under `folder` whose bytes contain `secret` (memory-mapped, so weights scan fast)."""
    needle = secret.encode()
    hits = []
    for p in sorted(folder.rglob("*")):
        if not p.is_file() or p.stat().st_size < len(needle):
            continue
        with p.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
            if m.find(needle) != -1:
                hits.append(p)
    return hits


def _managed(path: str) -> bool:
    import fnmatch

    return "/" not in path and any(fnmatch.fnmatch(path, pat) for pat in MANAGED_FILES)


def push_run(
    run_dir: str | Path,
    repo_id: str,
    private: bool = False,
    revision: str | None = None,
    commit_message: str | None = None,
    token: str | None = None,
    *,
    export_dir: str | Path | None = None,
    merge_adapter: bool | None = None,
    baseline: str | Path | dict | None = None,
    license: str | None = None,
    language: str | list[str] | None = None,
    endpoint: str | None = None,
) -> PushResult:
    """Export a finished run and push it to a Hub model repository.

    Args:
        run_dir: The run folder.
        repo_id: Target repository, `user/name` (created if missing).
        private: Create the repository as private (an existing one keeps its visibility).
        revision: Branch to push to (created from main if missing); default main.
        commit_message: Commit title.
        token: Hub token; default `huggingface_hub.get_token()` (HF_TOKEN, then the saved login).
            It is sent only in the Authorization header: never logged, printed or written.
        export_dir: Where to export; default `<run_dir>/export`.
        merge_adapter: Push merged weights (True) or the unmerged PEFT adapter (False); None
            follows the run's `strategy.merge` / `export.merge_adapter`.
        baseline: Scratch-baseline metrics for the card (run folder, JSON file or dict).
        license: Licence id for the card.
        language: Language code(s) for the card.
        endpoint: Hub URL; default HF_ENDPOINT or https://huggingface.co.

    Returns:
        A `PushResult`; `uploaded` is empty when the Hub already had every file.

    Raises:
        ExportError: Invalid card (before anything is exported or uploaded), no token, a token
            found in the export, no permission, no network, or a refused commit. The export
            folder is kept and the message gives the command that retries.
    """
    from huggingface_hub import HfApi, get_token
    from huggingface_hub import constants as hub_constants
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    from hf_transfer.utils import __version__

    try:
        validate_repo_id(repo_id)
    except HFValidationError as e:
        raise ExportError(f"--repo-id '{repo_id}' is not a Hub repository id (user/name): {e}") from None
    run = RunFolder.open(run_dir, needs_metrics=True, error=ExportError)
    out = Path(export_dir) if export_dir is not None else run.path / "export"
    retry = _retry_command(run_dir, repo_id, private, revision, merge_adapter, baseline, license, language, export_dir)

    # 1. The card, checked before any time is spent.
    merge_adapter = merge_setting(run, merge_adapter)
    merged = merge_adapter or run.adapter_dir is None
    problems = validate_card(
        build_card(run.path, merged=merged, repo_id=repo_id, baseline=baseline, license=license, language=language)
    )
    if problems:
        listed = "\n".join(f"  - {p}" for p in problems)
        note = ""
        if not license and any(p.startswith(("No license", "license")) for p in problems):
            # The retry must carry the licence the card lacks, or it fails the same way.
            retry = _retry_command(
                run_dir, repo_id, private, revision, merge_adapter, baseline, "apache-2.0", language, export_dir
            )
            note = "\n(apache-2.0 is an example: give the licence the base model and your data allow.)"
        raise ExportError(
            f"The model card would be refused by the Hub, so nothing was exported or uploaded:\n{listed}\n"
            f"Fix it, then run:\n  {retry}{note}"
        )
    # 2. Export and reload check; the written card is checked once more.
    export_run(
        run.path,
        out,
        merge_adapter=merge_adapter,
        baseline=baseline,
        license=license,
        language=language,
        repo_id=repo_id,
    )
    problems = validate_card(out / "README.md")
    if problems:
        raise ExportError("The exported model card is invalid: " + "; ".join(problems) + ". Nothing was uploaded.")
    keep = f"The export is kept at '{out}'. Retry with:\n  {retry}"
    # 3. The token: present, and in no file that would be uploaded.
    token = token or get_token()
    if not token:
        raise ExportError(
            f"No Hugging Face token found. Log in with `hf auth login`, or set HF_TOKEN to a token "
            f"with write access (https://huggingface.co/settings/tokens). {keep}"
        )
    leaks = files_containing(out, token)
    if leaks:
        raise ExportError(
            "Your Hub token appears in exported files, so nothing was uploaded: "
            + ", ".join(str(p.relative_to(out)) for p in leaks)
            + ". Remove it from the run folder, then retry."
        )

    # 4. The network.
    endpoint = (endpoint or os.environ.get("HF_ENDPOINT") or hub_constants.ENDPOINT).rstrip("/")
    api = HfApi(endpoint=endpoint, token=token, library_name="hf-transfer", library_version=__version__)
    branch = revision or hub_constants.DEFAULT_REVISION
    local = {p.name: p for p in sorted(out.iterdir()) if p.is_file()}
    result = PushResult(repo_id=repo_id, revision=branch, export_dir=out)
    with _hub_errors(repo_id, endpoint, out, retry):
        api.create_repo(repo_id, private=private, exist_ok=True)
        if revision and revision != hub_constants.DEFAULT_REVISION:
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        remote = {
            f.path: f for f in api.list_repo_tree(repo_id, revision=branch, recursive=True) if hasattr(f, "blob_id")
        }
        for name, path in local.items():
            sha256, git_sha1 = _hashes(path)
            r = remote.get(name)
            same = r is not None and (
                (r.lfs is not None and r.lfs.sha256 == sha256) or (r.lfs is None and r.blob_id == git_sha1)
            )
            (result.unchanged if same else result.uploaded).append(name)
        result.deleted = sorted(p for p in remote if p not in local and _managed(p))
        if not result.uploaded and not result.deleted:
            logger.info("%s@%s already holds this export: nothing to upload.", repo_id, branch)
            return result
        from huggingface_hub import CommitOperationAdd, CommitOperationDelete

        ops = [CommitOperationAdd(path_in_repo=n, path_or_fileobj=str(local[n])) for n in result.uploaded]
        ops += [CommitOperationDelete(path_in_repo=n) for n in result.deleted]
        message = commit_message or f"Upload {repo_id.split('/')[-1]} ({run.strategy_name} transfer, hf-transfer)"
        logger.info(
            "Uploading %d file(s) to %s@%s: %s", len(result.uploaded), repo_id, branch, ", ".join(result.uploaded)
        )
        info = api.create_commit(repo_id, ops, commit_message=message, revision=revision)
        result.commit_url = str(info.commit_url)
    logger.info("Pushed to %s", result.commit_url)
    return result


# ---------------------------------------------------------------------------------------------
# `export.push_to_hub: true`


def check_push_settings(cfg) -> None:
    """Fail before training, not after it, when `export.push_to_hub` cannot succeed.

    Checks the repository id, that a token is present, that the Hub is not switched off
    (HF_HUB_OFFLINE) and that the card will have a licence.

    Raises:
        ExportError: Naming the setting to fix.
    """
    if not cfg.export.push_to_hub:
        return
    from huggingface_hub import constants as hub_constants
    from huggingface_hub import get_token
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    repo_id = cfg.export.repo_id
    if not repo_id:
        raise ExportError("export.push_to_hub is true but export.repo_id is empty: set it to user/name.")
    try:
        validate_repo_id(repo_id)
    except HFValidationError as e:
        raise ExportError(f"export.repo_id '{repo_id}' is not a Hub repository id: {e}") from None
    if hub_constants.is_offline_mode():
        raise ExportError("export.push_to_hub is true but HF_HUB_OFFLINE=1 is set: unset it, or push later.")
    if not get_token():
        raise ExportError(
            "export.push_to_hub is true but no Hugging Face token is set: log in with "
            "`hf auth login` or set HF_TOKEN before training."
        )
    run = RunFolder(cfg.output_dir, config=cfg, error=ExportError)
    if not resolve_license(run)[0]:
        raise ExportError(
            "export.push_to_hub is true but the base model's licence is unknown: set export.license "
            "(a Hub licence id such as apache-2.0) before training."
        )


def maybe_push_after_training(e: ExportConfig, run_dir: str | Path) -> PushResult | None:
    """Push the finished run when `e.push_to_hub` is true (call on the main process only).

    Args:
        e: The run's `export` settings (`push_to_hub`, `repo_id`, `private`, `revision`, `license`).
        run_dir: The finished run folder.

    A failed push raises `ExportError` whose message gives the `hf-transfer push` command that
    retries it; the run folder is complete either way.
    """
    if not e.push_to_hub:
        return None
    if not e.repo_id:
        raise ExportError("export.push_to_hub is true but export.repo_id is empty: set it to user/name.")
    # merge_adapter=None: export.merge_adapter and the PEFT strategies' strategy.merge both count.
    return push_run(run_dir, e.repo_id, private=e.private, revision=e.revision, license=e.license)
