"""Whether the Hugging Face Hub can be used right now, decided quickly."""

from __future__ import annotations

import urllib.error
import urllib.request

from .config import CourseConfig


def hub_unavailable_reason(config: CourseConfig) -> str | None:
    """Return why the hub cannot be used (offline mode, no network), or None if it answers.

    One HEAD request with a short timeout, so a machine without internet falls
    back in seconds instead of hanging on retries.
    """
    if config.hub_offline:
        return "HF_HUB_OFFLINE=1 is set"
    from huggingface_hub import constants

    request = urllib.request.Request(constants.ENDPOINT, method="HEAD")
    try:
        urllib.request.urlopen(request, timeout=config.hub_timeout_s).close()
    except urllib.error.HTTPError:
        return None  # the server answered; a 4xx/5xx on the front page still means it is reachable
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        return f"{constants.ENDPOINT} is unreachable ({reason})"
    return None
