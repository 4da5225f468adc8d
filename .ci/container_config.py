"""For .ci/container: the image's config (``podman image inspect``) as bash assignments, as a
container runtime would read it: USERSPEC (uid:gid from the image's /etc/passwd), WORKDIR,
ENVIRONMENT (its ENV, HOME added), ENTRY (ENTRYPOINT + CMD) and HEALTH (the HEALTHCHECK's
command, exec form)."""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path

config = json.loads(os.environ["CONFIG_JSON"])
health = json.loads(os.environ["HEALTHCHECK_JSON"] or "null")
root = Path(os.environ["ROOT"])

user = config.get("User") or "0"
entry = None
for line in (root / "etc" / "passwd").read_text(encoding="utf-8").splitlines():
    fields = line.split(":")
    if user in (fields[0], fields[2]):
        entry = fields
assert entry is not None, f"the image's USER {user} is not in its /etc/passwd"
env = [*config.get("Env", []), f"HOME={entry[5]}"]
command = [*(config.get("Entrypoint") or []), *(config.get("Cmd") or [])]
assert health and health.get("Test"), (
    "the image has no HEALTHCHECK (built without --format docker?)"
)
kind, *check = health["Test"]
assert kind == "CMD", f"the HEALTHCHECK is {kind}, expected the exec form CMD [...]"


def array(name: str, values: list[str]) -> str:
    return f"{name}=({' '.join(shlex.quote(v) for v in values)})"


print(f"USERSPEC={shlex.quote(entry[2] + ':' + entry[3])}")
print(f"WORKDIR={shlex.quote(config.get('WorkingDir') or '/')}")
print(array("ENVIRONMENT", env))
print(array("ENTRY", command))
print(array("HEALTH", check))
