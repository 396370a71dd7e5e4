"""The Hugging Face Hub: saved tasks pushed with their model card, and Hub ids read through the local cache.

``huggingface_hub`` does the work: ``snapshot_download`` (which honours ``HF_HUB_OFFLINE`` and reads
its cache first) for ids, ``create_repo`` + ``upload_folder`` for pushes.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from huggingface_hub import HfApi, snapshot_download
from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError, RepositoryNotFoundError
from torch import nn

from . import saving
from .card import PLACEHOLDER


def resolve(path_or_id: str | os.PathLike, *, revision: str | None = None, token: str | bool | None = None) -> Path:
    """A local folder as it is; otherwise a Hub id, ``user/repo`` or ``user/repo/<task folder>``, downloaded (or
    found in the cache) by ``snapshot_download``."""
    path = Path(path_or_id)
    if path.exists() or isinstance(path_or_id, Path) or not _looks_like_repo_id(str(path_or_id)):
        return path
    parts = str(path_or_id).split("/")
    repo_id, subfolder = "/".join(parts[:2]), "/".join(parts[2:])
    try:
        root = snapshot_download(repo_id, revision=revision, token=token,
                                 allow_patterns=f"{subfolder}/*" if subfolder else None)
    except LocalEntryNotFoundError:
        raise FileNotFoundError(
            f"{path_or_id!r} is neither a local folder nor in the Hugging Face cache, and the Hub cannot be reached "
            f"(HF_HUB_OFFLINE is set, or no network). Download it while online (hf download {repo_id}), or pass "
            "the path of a local folder.") from None
    except (RepositoryNotFoundError, HFValidationError) as error:
        raise FileNotFoundError(f"{path_or_id!r} is neither a local folder nor a Hub repository you can read "
                                f"({type(error).__name__}). Check the id, or log in (hf auth login) for a "
                                "private one.") from None
    return Path(root) / subfolder


def _looks_like_repo_id(text: str) -> bool:
    parts = text.split("/")
    return len(parts) >= 2 and all(parts) and not text.startswith((".", "~")) and "\\" not in text


def push_to_hub(model: nn.Module, repo_id: str, *, private: bool | None = None, token: str | None = None,
                commit_message: str = "Upload compacter task", revision: str | None = None,
                selected_adapters: list[str] | None = None, **ignored: Any) -> str:
    """Save the model's tasks (as ``save_pretrained`` lays them out, with their model cards) and upload them.

    Returns the commit URL. transformers' own ``push_to_hub`` arguments that have no use here are ignored.
    """
    api = HfApi(token=token)
    repo_id = api.create_repo(repo_id, private=private, exist_ok=True).repo_id
    with tempfile.TemporaryDirectory() as folder:
        saving.save_pretrained(model, folder, selected_adapters=selected_adapters)
        for card in Path(folder).rglob(saving.CARD_FILE):  # the usage snippet names where the task now lives
            where = "/".join([repo_id, *card.parent.relative_to(folder).parts])
            card.write_text(card.read_text().replace(PLACEHOLDER, where))
        commit = api.upload_folder(repo_id=repo_id, folder_path=folder, commit_message=commit_message,
                                   revision=revision)
    return str(getattr(commit, "commit_url", commit))
