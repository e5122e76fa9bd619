"""The Hugging Face Hub as precompute meets it: what to tell the user when a model or dataset cannot be fetched.

Models and datasets are fetched by `huggingface_hub` itself (timm's `hf-hub:` loader, `snapshot_download`) into
its cache, and read from that cache when HF_HUB_OFFLINE is set (README "An offline cluster").
"""

from __future__ import annotations

from store.errors import first_line, one_line


def fetch_failure(what: str, repo_id: str, repo_type: str, revision: str, exc: BaseException) -> str:
    """One line: offline, where the cache is and the command that fills it; online, the Hub's own reason."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        command = "hf download " + repo_id + (" --repo-type dataset" if repo_type == "dataset" else "")
        command += f" --revision {revision}" if revision else ""
        return (f"{what} is not in the Hub cache ({constants.HF_HUB_CACHE}) and HF_HUB_OFFLINE is set: "
                f"on a machine with a network run `{command}` and copy that cache here")
    if type(exc).__module__.startswith("huggingface_hub"):
        # Its HTTP errors say the status on their first line and what was not found on the next one.
        reason = " ".join([line.strip() for line in str(exc).splitlines() if line.strip()][:2]) or first_line(exc)
    else:
        reason = one_line(exc)
    return f"cannot fetch {what} from {constants.ENDPOINT}: {reason}"
