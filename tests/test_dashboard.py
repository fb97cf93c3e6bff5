"""The dashboard the notebooks point to: its pages on 127.0.0.1, its data behind Ray's token.

`ray[default]` is installed so that the dashboard serves its web pages and the state API that
notebook 07 teaches can answer; `describe_cluster` prints the dashboard's address.
"""

from __future__ import annotations

import logging

import pytest
import requests
from helpers import ray_auth_token

from utils.cluster import dashboard_url, describe_cluster


def test_no_dashboard_address_without_ray():
    import ray

    assert not ray.is_initialized()
    assert dashboard_url() is None


@pytest.mark.slow
def test_the_dashboard_serves_its_pages_locally_and_its_data_only_with_the_token(local_ray):
    url = dashboard_url()
    assert url is not None, "no dashboard pages: is ray[default] installed?"
    assert url.startswith("http://127.0.0.1:"), url
    assert f"dashboard at {url}" in describe_cluster()
    assert logging.getLogger("ray").level == logging.ERROR, "dashboard_url reset Ray's logging"

    page = requests.get(f"{url}/", timeout=60)  # public: the page that asks for the token
    assert page.status_code == 200 and "<html" in page.text.lower()
    refused = requests.get(f"{url}/api/v0/actors", timeout=60)
    assert refused.status_code in (401, 403), refused.status_code

    allowed = requests.get(
        f"{url}/api/v0/actors",
        headers={"Authorization": f"Bearer {ray_auth_token()}"},
        timeout=60,
    )
    assert allowed.status_code == 200, allowed.text[:300]
