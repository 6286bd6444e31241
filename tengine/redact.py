"""Secrets kept out of what tengine writes down: job logs, `env.json`, run-dir lock files.

    redact("WANDB_API_KEY=abc123 --hf-token xyz")   # 'WANDB_API_KEY=*** --hf-token ***'
    redact_env({"HF_TOKEN": "hf_x", "OMP_NUM_THREADS": "2"})   # {'HF_TOKEN': '***', ...}
    redact_argv(["train", "--hf-token", "xyz"])      # ['train', '--hf-token', '***']

A job's log is read by anyone who can run `tengine jobs logs`, and a run dir is copied around
with its env.json; a training child that echoes its command line or environment (a user model
printing `os.environ`, `--hf-token` on a command line) would leave credentials in both. A value
is hidden when its *name* looks like a secret, in the shapes logs show them: `NAME=value`,
`NAME: value`, `"name": "value"`, `--name value`, and the password of a `scheme://user:pw@host`
URL. A name looks like a secret when one of its parts (split at `_`, `-`, `.`) is SECRET,
PASSWORD, PASSWD, PASSPHRASE, CREDENTIAL(S) or AUTHORIZATION, or its *last* part is KEY or
TOKEN (or APIKEY, ACCESSTOKEN, …: WANDB_API_KEY, HF_TOKEN, AWS_SECRET_ACCESS_KEY, apikey),
so a name that only starts with them (`key_padding_mask`, `token_budget`) or counts them
(`tokens_per_s`, `num_tokens`) is data, not a secret. No torch, no Ray here: the engine, the
control plane and the CLI all use it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

MASK = "***"
ANYWHERE = ("secret", "password", "passwd", "passphrase", "credential", "credentials",
            "authorization")
LAST = ("key", "token", "apikey", "accesskey", "secretkey", "privatekey", "authtoken",
        "accesstoken", "refreshtoken", "sessiontoken")
SPECIAL_TOKENS = ("eos", "bos", "pad", "unk", "sep", "cls", "mask")
_PARTS = re.compile(r"[_.\-]+")

_NAME = r"[A-Za-z_][\w.\-]*"
_VALUE = r"(?:Bearer|Basic|Token)\s+[^\s,;}\]\)]+|\"[^\"]*\"|'[^']*'|[^\s,;}\]\)]+"
# NAME=value, NAME: value, "name": "value" (the name may be quoted, the value quoted or bare)
_ASSIGNED = re.compile(rf"(?<![\w.\-])(?P<q>[\"']?)(?P<name>-{{0,2}}{_NAME})(?P=q)(?P<sep>\s*[:=]\s*)"
                       rf"(?P<value>{_VALUE})")
# --name value (not --name --other)
_FLAG = re.compile(rf"(?<![\w\-])(?P<name>--?{_NAME})(?P<sep>\s+)(?P<value>(?!-)(?:{_VALUE}))")
_URL_PASSWORD = re.compile(r"(?P<head>(?<![\w+.\-])[a-z][a-z0-9+.\-]*://[^\s:/@]+:)(?P<value>[^\s@/]+)(?=@)")


def is_secret_name(name: str) -> bool:
    """Whether `name` (an env var, a flag, a config field or JSON key) names a secret."""
    parts = [p for p in _PARTS.split(name.lower()) if p]
    if not parts:
        return False
    if len(parts) > 1 and parts[-1] == "token" and parts[-2] in SPECIAL_TOKENS:
        return False  # a tokenizer's `eos_token`: data
    return any(p in ANYWHERE for p in parts) or parts[-1] in LAST


def _masked(value: str) -> str:
    return f"{value[0]}{MASK}{value[0]}" if value[:1] in ("'", '"') else MASK


def redact(line: str) -> str:
    """`line` with the value of every secret-looking name replaced by `***`."""

    def assigned(m: re.Match) -> str:
        if not is_secret_name(m["name"]) or m["sep"].strip() == ":" and m["value"].startswith("//"):
            return m[0]  # not a secret (or `http://…`: a URL, handled below)
        return f"{m['q']}{m['name']}{m['q']}{m['sep']}{_masked(m['value'])}"

    def flag(m: re.Match) -> str:
        if not is_secret_name(m["name"]):
            return m[0]
        return f"{m['name']}{m['sep']}{_masked(m['value'])}"

    line = _URL_PASSWORD.sub(lambda m: m["head"] + MASK, line)
    return _FLAG.sub(flag, _ASSIGNED.sub(assigned, line))


def redact_env(mapping: Mapping[str, str]) -> dict[str, str]:
    """A copy of `mapping` (e.g. `os.environ`) with secret-looking variables' values as `***`
    (and a URL's password hidden in any value)."""
    return {k: MASK if is_secret_name(k) else redact(str(v)) for k, v in mapping.items()}


def redact_tree(value: Any, name: str = "") -> Any:
    """A JSON-like tree (a resolved config) with secrets masked: the value of every
    secret-looking key, and secret-looking parts of any string (a URL's password)."""
    if isinstance(value, Mapping):
        return {k: redact_tree(v, str(k)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_tree(v, name) for v in value]
    if name and is_secret_name(name) and value not in (None, "") and not isinstance(value, bool):
        return MASK  # a number under a secret's name too (`api_key: 123456`)
    return redact(value) if isinstance(value, str) else value


def redact_argv(argv: list[str]) -> list[str]:
    """A command line with secrets masked, item by item: `--api-key VALUE` spans two items."""
    out: list[str] = []
    for i, arg in enumerate(argv):
        flag = argv[i - 1] if i else ""
        if (flag.startswith("-") and "=" not in flag and is_secret_name(flag)
                and not arg.startswith("-")):
            out.append(MASK)
        else:
            out.append(redact(arg))
    return out
