"""Refreshes a Ferry hub's TUF metadata and downloads one target with
python-tuf's ngclient, an implementation independent of Ferry's.

Usage: tuf_client.py CLIENT_DATA_DIR HUB_URL WORK_DIR TARGET

CLIENT_DATA_DIR is an enrolled Ferry client's data directory: its pinned
root (root.json), the hub CA (ca.pem) and its certificate and key
(client.pem, client.key). Prints the targets metadata version and the
target's SHA-256 as JSON.
"""

import hashlib
import json
import os
import sys

import urllib3
from tuf.api import exceptions
from tuf.ngclient import Updater
from tuf.ngclient.fetcher import FetcherInterface


class MutualTlsFetcher(FetcherInterface):
    """Fetches over HTTPS trusting only the hub CA, with a client certificate."""

    def __init__(self, data_dir):
        self.pool = urllib3.PoolManager(
            ca_certs=os.path.join(data_dir, "ca.pem"),
            cert_file=os.path.join(data_dir, "client.pem"),
            key_file=os.path.join(data_dir, "client.key"),
            cert_reqs="CERT_REQUIRED",
        )

    def _fetch(self, url):
        response = self.pool.request(
            "GET", url, preload_content=False, timeout=urllib3.Timeout(30)
        )
        if response.status >= 400:
            response.close()
            raise exceptions.DownloadHTTPError(
                f"HTTP {response.status} for {url}", response.status
            )
        return response.stream(64 * 1024)


def main():
    data_dir, hub, work, target = sys.argv[1:5]
    metadata_dir = os.path.join(work, "metadata")
    target_dir = os.path.join(work, "targets")
    os.makedirs(metadata_dir, exist_ok=True)
    os.makedirs(target_dir, exist_ok=True)
    with open(os.path.join(data_dir, "root.json"), "rb") as f:
        root = f.read()
    updater = Updater(
        metadata_dir=metadata_dir,
        metadata_base_url=f"{hub}/v1/tuf/",
        target_dir=target_dir,
        target_base_url=f"{hub}/v1/tuf/targets/",
        fetcher=MutualTlsFetcher(data_dir),
        bootstrap=root,
    )
    updater.refresh()
    info = updater.get_targetinfo(target)
    if info is None:
        sys.exit(f"{target} is not in the signed targets")
    path = updater.download_target(info)
    with open(path, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    with open(os.path.join(metadata_dir, "targets.json"), "rb") as f:
        version = json.load(f)["signed"]["version"]
    with open(os.path.join(metadata_dir, "root.json"), "rb") as f:
        root_version = json.load(f)["signed"]["version"]
    print(json.dumps({"targets_version": version, "root_version": root_version, "sha256": digest}))


if __name__ == "__main__":
    main()
