"""Failing fast when pretrained weights would need a download the machine cannot make.

Hub clients retry for about 45 s before giving up when there is no network. Before asking a
library to download, :func:`check_download_possible` decides in at most a couple of seconds:

* ``HF_HUB_OFFLINE`` set and the weights on the hub: the library itself only looks in its local
  cache (no retries), so the call goes ahead and the adapter turns a cache miss into
  :class:`OfflineError` with :func:`offline_error`;
* otherwise one TCP connection to the download host, with a short timeout; if it fails, the
  download cannot work and :class:`OfflineError` is raised before the library starts retrying.
"""

from __future__ import annotations

import os
import socket
from urllib.parse import urlparse

from ..errors import OfflineError

_PROBE_TIMEOUT_S = 2.0
_TRUTHY = {"1", "true", "yes", "on"}


def hub_offline() -> bool:
    """Whether the user asked the Hugging Face hub clients to stay offline."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUTHY


def hf_endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co")


def _uses_proxy() -> bool:
    return any(os.environ.get(k) for k in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"))


def host_reachable(url: str) -> bool:
    parsed = urlparse(url)
    host = parsed.hostname
    if not host:
        return False
    port = parsed.port or (80 if parsed.scheme == "http" else 443)
    try:
        with socket.create_connection((host, port), timeout=_PROBE_TIMEOUT_S):
            return True
    except OSError:
        return False


def offline_error(what: str, source: str, hint: str, cause: object = None) -> OfflineError:
    """The one message a user sees when weights cannot be fetched."""
    because = f" ({cause})" if cause else ""
    cache = (
        ""
        if hub_offline()
        else "If they are already in your Hugging Face cache, set "
        "HF_HUB_OFFLINE=1 so the cache is used without a network; "
    )
    return OfflineError(
        f"Could not fetch the pretrained weights for {what} from {source}: this machine cannot "
        f"download them{because}.\n"
        f"Download them on a machine with internet access, copy the file here and point the config "
        f"at it: {hint}\n"
        f'{cache}MODEL.BACKBONE.PRETRAINED "" builds the model with random weights.'
    )


def hf_cached(repo_id: str, filenames, cache_dir: str = "") -> bool:
    """Whether one of ``filenames`` of hub repo ``repo_id`` is in the local hub cache."""
    from huggingface_hub import try_to_load_from_cache

    return any(
        isinstance(try_to_load_from_cache(repo_id, name, cache_dir=cache_dir or None), str) for name in filenames
    )


def check_download_possible(what: str, url: str, hint: str) -> None:
    """Raise :class:`OfflineError` now if downloading from ``url`` cannot work."""
    if _uses_proxy():
        return  # the proxy decides; a direct socket probe would wrongly fail
    if hub_offline() and urlparse(url).hostname == urlparse(hf_endpoint()).hostname:
        return  # offline mode reads the hub cache without retrying
    if not host_reachable(url):
        raise offline_error(what, url, hint, cause=f"no connection to {urlparse(url).hostname}")
