"""Whether the Hugging Face Hub can be used right now, decided quickly, and the one error the
loaders raise when something the user named cannot be loaded.

The rule the loaders follow: the default model and the default test images fall back (to a
stand-in, announced, with the reason) on any failure to reach or to load from the hub; a model
or dataset the user named explicitly (`COURSE_MODEL`, `COURSE_DATASET`, the job's `--model`)
never does: it raises `SourceUnavailableError`, saying why.
"""

from __future__ import annotations

import http
import urllib.error
import urllib.request

from .config import CourseConfig

# Answers that still show a working hub at the other end: its front page may be moved, or be
# closed to anonymous users, on a mirror. A proxy's 407, a 403 from a firewall, rate limiting
# (429) and server errors (5xx) mean the hub cannot be used from here.
_ANSWERS_FROM_A_WORKING_HUB = {401, 404, 405}


class SourceUnavailableError(RuntimeError):
    """A model or test images could not be loaded from any source; the message says why."""


def offline_reason(config: CourseConfig) -> str | None:
    """Which setting forbids the network (HF_HUB_OFFLINE, TRANSFORMERS_OFFLINE), or None."""
    if config.hub_offline:
        return "HF_HUB_OFFLINE=1 is set"
    if config.transformers_offline:
        return "TRANSFORMERS_OFFLINE=1 is set"
    return None


def hub_unavailable_reason(config: CourseConfig) -> str | None:
    """Return why the hub cannot be used, or None if it answers as a working hub.

    One HEAD request to the hub's front page (`HF_ENDPOINT`) with a short timeout
    (`COURSE_HUB_TIMEOUT`), so a machine without internet falls back in seconds instead of
    waiting on retries. A timeout, a refused connection, a proxy that wants a password (407),
    a firewall's 403, rate limiting (429) and server errors (5xx) all count as "cannot be used".
    """
    reason = offline_reason(config)
    if reason is not None:
        return reason
    from huggingface_hub import constants

    return _probe(
        constants.ENDPOINT,
        config.hub_timeout_s,
        usable=lambda status: status < 400 or status in _ANSWERS_FROM_A_WORKING_HUB,
    )


def hub_file_unavailable_reason(config: CourseConfig, repo_id: str, filename: str) -> str | None:
    """Return why the hub cannot serve `filename` of model `repo_id` right now, or None.

    The same quick HEAD request, for the first file a model load asks for. A hub whose front
    page answers may still fail on files (a 5xx, a proxy's 407); huggingface_hub then retries
    for about 20 s, and this check lets the course fall back in seconds instead. Answers such as
    401 or 404 are left to the real request, which sends the user's token and says what is
    wrong.
    """
    from huggingface_hub import constants, hf_hub_url

    url = hf_hub_url(repo_id, filename, endpoint=constants.ENDPOINT)
    return _probe(
        url, config.hub_timeout_s, usable=lambda status: status not in (407, 429) and status < 500
    )


def _probe(url: str, timeout: float, usable) -> str | None:
    """HEAD `url`; None when it answers with a status `usable` accepts, else why not."""
    request = urllib.request.Request(url, method="HEAD")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status = response.status
    except urllib.error.HTTPError as error:
        status = error.code
        error.close()
    except TimeoutError:
        return f"{url} did not answer within {timeout:g} s"
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        if isinstance(reason, TimeoutError):
            return f"{url} did not answer within {timeout:g} s"
        return f"{url} is unreachable ({reason})"
    if usable(status):
        return None
    return f"{url} answered HTTP {status} {_phrase(status)}".rstrip()


def short_error(error: BaseException, limit: int = 160) -> str:
    """`Type: first line of the message`, cut to `limit` characters, for one-line reports."""
    text = str(error).strip()
    first = text.splitlines()[0] if text else ""
    line = f"{type(error).__name__}: {first}" if first else type(error).__name__
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _phrase(status: int) -> str:
    try:
        return f"({http.HTTPStatus(status).phrase})"
    except ValueError:
        return ""
