#!/usr/bin/env python3
"""Send one signed rollout (an agent's finished task) to an rlclaw bridge.

A single file with nothing beyond Python's standard library, so a phone, a VM or a cron agent can
report its work: copy this file and the bridge's key there and run

    python3 rlclaw_emit.py --bridge 127.0.0.1:8420 --key-file ~/.local/share/rlclaw/key \\
        --worker build-bot@vm --prompt "fix the flaky test" --response "pinned the seed" \\
        --duration-s 45.2 --tokens 3421 --errors 0

or import it and call `emit(bridge, key_hex, rollout)`. Every request is signed as the bridge's
PROTOCOL.md says, every answer's signature is checked (nothing is trusted from a process that is
not the bridge), a bridge on another machine is reached over TLS and trusted only if its
certificate matches the pin `rlclaw tls show` prints (`--bridge https://HOST:PORT --pin
sha256:...`), and a rollout is retried with the same body until the bridge answers, so a
retry after a lost answer is recognised and never stored twice.

Exit status: 0 stored (new or already there), 1 refused by the bridge, 2 bad input,
3 the bridge could not be reached or did not prove itself (a wrong key looks like this too:
the answer to an unknown key cannot be verified with it).
"""

import argparse
import hashlib
import hmac
import http.client
import json
import os
import secrets
import ssl
import sys
import time

VERSION = "0.1.0"
MAX_SKEW_S = 300


# What went wrong, and the exit status the command line gives it.
REFUSED, USAGE, UNREACHABLE = 1, 2, 3


class EmitError(Exception):
    """The rollout was not stored. `kind` is REFUSED (the bridge said no), USAGE (bad input
    here) or UNREACHABLE (no answer, or none that proves it came from the bridge); `retry` says
    whether sending the same rollout again later may help."""

    def __init__(self, message, kind=USAGE, retry=False, status=None, code=None):
        super().__init__(message)
        self.kind = kind
        self.retry = retry
        self.status = status
        self.code = code


def parse_key(key_hex):
    key_hex = key_hex.strip()
    if len(key_hex) != 64:
        raise EmitError("the key must be 64 hex characters (the bridge's key file)")
    try:
        key = bytes.fromhex(key_hex)
    except ValueError:
        raise EmitError("the key must be 64 hex characters (the bridge's key file)") from None
    return key, hashlib.sha256(key).hexdigest()[:16]


def sign_request(key, key_id, method, path, body, now=None, nonce=None):
    """The four X-Rlclaw-* headers for one request (PROTOCOL.md, Authentication)."""
    ts = str(int(time.time() if now is None else now))
    nonce = nonce or secrets.token_hex(16)
    canonical = "\n".join(
        ["rlclaw-v1", ts, nonce, method.upper(), path, hashlib.sha256(body).hexdigest()]
    )
    sig = hmac.new(key, canonical.encode(), hashlib.sha256).hexdigest()
    headers = {
        "X-Rlclaw-Key-Id": key_id,
        "X-Rlclaw-Timestamp": ts,
        "X-Rlclaw-Nonce": nonce,
        "X-Rlclaw-Signature": "v1=" + sig,
    }
    if body:
        headers["Content-Type"] = "application/json"
    return headers, nonce


def verify_response(key, nonce, status, headers, body, now=None):
    """Raises unless the answer is signed by the bridge for this request."""
    ts = headers.get("x-rlclaw-timestamp", "")
    sig = headers.get("x-rlclaw-signature", "")
    if not ts.isdigit() or len(ts) > 12 or not sig.startswith("v1=") or len(sig) != 67:
        raise EmitError(
            "the answer is not signed: another program may be listening on the bridge's port",
            kind=UNREACHABLE,
        )
    canonical = "\n".join(
        ["rlclaw-v1-response", ts, nonce, str(status), hashlib.sha256(body).hexdigest()]
    )
    want = hmac.new(key, canonical.encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(want, sig[3:]):
        raise EmitError(
            "the answer's signature does not verify: the key is not this bridge's key, "
            "or another program is listening on its port",
            kind=UNREACHABLE,
        )
    skew = abs(int(ts) - int(time.time() if now is None else now))
    if skew > MAX_SKEW_S:
        raise EmitError(f"the bridge's clock is {skew} s away from ours", kind=UNREACHABLE)


def split_host(bridge):
    """(scheme, host, port) from HOST:PORT, http://HOST:PORT or https://HOST:PORT."""
    bridge = bridge.strip().rstrip("/")
    scheme = "http"
    for prefix in ("http://", "https://"):
        if bridge.startswith(prefix):
            scheme = prefix[:-3]
            bridge = bridge[len(prefix):]
    host, sep, port = bridge.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise EmitError(f"the bridge address must be [https://]HOST:PORT, not {bridge!r}")
    return scheme, host.strip("[]"), int(port)


def parse_pin(pin):
    pin = (pin or "").strip().lower()
    if pin.startswith("sha256:"):
        pin = pin[len("sha256:"):]
    pin = pin.replace(":", "")
    if len(pin) != 64 or any(c not in "0123456789abcdef" for c in pin):
        raise EmitError("the pin must be sha256: and 64 hex characters (`rlclaw tls show`)")
    return pin


def connect(scheme, host, port, pin, timeout):
    """An open connection; over TLS only to the certificate whose SHA-256 is `pin`."""
    if scheme == "http":
        if pin:
            raise EmitError("--pin is for https:// bridges; this one is plain http://")
        return http.client.HTTPConnection(host, port, timeout=timeout)
    if not pin:
        raise EmitError(
            "an https:// bridge needs --pin (its certificate's SHA-256, from `rlclaw tls show`)"
        )
    want = parse_pin(pin)
    # The certificate is self-signed: it is trusted by its pin, not by an authority or a name.
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    conn = http.client.HTTPSConnection(host, port, timeout=timeout, context=ctx)
    try:
        conn.connect()
    except (OSError, http.client.HTTPException) as e:
        conn.close()
        raise EmitError(
            f"cannot reach the bridge at {host}:{port}: {e}", kind=UNREACHABLE, retry=True
        ) from None
    der = conn.sock.getpeercert(binary_form=True) or b""
    got = hashlib.sha256(der).hexdigest()
    if not hmac.compare_digest(got, want):
        conn.close()
        raise EmitError(
            f"the bridge's certificate (sha256:{got}) is not the pinned one; nothing was sent",
            kind=UNREACHABLE,
        )
    return conn


def send(bridge, key_hex, method, path, payload, timeout=10.0, pin=None):
    """One signed request; returns (status, answer as a dict). Raises EmitError."""
    key, key_id = parse_key(key_hex)
    scheme, host, port = split_host(bridge)
    body = b"" if payload is None else json.dumps(payload, ensure_ascii=False).encode()
    headers, nonce = sign_request(key, key_id, method, path, body)
    conn = connect(scheme, host, port, pin, timeout)
    try:
        conn.request(method, path, body=body or None, headers=headers)
        resp = conn.getresponse()
        raw = resp.read()
        got = {k.lower(): v for k, v in resp.getheaders()}
    except (OSError, http.client.HTTPException) as e:
        raise EmitError(
            f"cannot reach the bridge at {host}:{port}: {e}", kind=UNREACHABLE, retry=True
        ) from None
    finally:
        conn.close()
    verify_response(key, nonce, resp.status, got, raw)
    try:
        answer = json.loads(raw.decode() or "{}")
    except ValueError:
        raise EmitError(
            "the bridge answered with a body that is not JSON", kind=UNREACHABLE
        ) from None
    return resp.status, answer


def emit(bridge, key_hex, rollout, attempts=5, backoff_s=0.5, timeout=10.0, pin=None):
    """Stores one rollout; returns the bridge's answer (with "stored": "new" or "already").

    The same body is resent on failures that may pass (unreachable, 5xx, 429), so the bridge
    sees a retry as the same rollout. A refusal (4xx) raises at once with the bridge's reason.
    """
    # No "at" unless the caller gives one: the bridge stamps it, and sending the same rollout
    # again (from this loop or a rerun of the command) is then the same body.
    rollout = dict(rollout)
    last = None
    for attempt in range(max(1, attempts)):
        if attempt:
            time.sleep(backoff_s * (2 ** (attempt - 1)))
        try:
            status, answer = send(bridge, key_hex, "POST", "/v1/rollouts", rollout, timeout, pin)
        except EmitError as e:
            if not e.retry:
                raise
            last = e
            continue
        if status in (200, 201):
            answer["stored"] = "new" if status == 201 else "already"
            return answer
        err = answer.get("error", {}) if isinstance(answer, dict) else {}
        code = err.get("code") or "error"
        message = err.get("message") or "no message"
        e = EmitError(
            f"the bridge refused the rollout ({status} {code}): {message}",
            kind=REFUSED,
            status=status,
            code=code,
        )
        if status >= 500 or status == 429:
            e.retry = True
            last = e
            continue
        raise e
    raise last


def read_key(args):
    if args.key_file:
        try:
            with open(os.path.expanduser(args.key_file), encoding="utf-8") as f:
                return f.read().strip()
        except OSError as e:
            raise EmitError(f"cannot read the key file {args.key_file}: {e.strerror}") from None
    key = os.environ.get("RLCLAW_KEY", "")
    if not key:
        raise EmitError("give the bridge's key with --key-file PATH or the RLCLAW_KEY variable")
    return key


def text_arg(value):
    """`@path` reads the text from a file, `-` from standard input."""
    if value == "-":
        return sys.stdin.read()
    if value.startswith("@"):
        with open(os.path.expanduser(value[1:]), encoding="utf-8") as f:
            return f.read()
    return value


def non_negative(kind):
    def parse(s):
        try:
            v = kind(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{s!r} is not a number") from None
        if v < 0:
            raise argparse.ArgumentTypeError(f"{s} is negative")
        return v

    return parse


def main(argv=None):
    p = argparse.ArgumentParser(
        description="Send one signed rollout (an agent's finished task) to an rlclaw bridge.",
        epilog="Texts may be given as @FILE or - (standard input).",
    )
    p.add_argument("--bridge", default=os.environ.get("RLCLAW_BRIDGE", "127.0.0.1:8420"),
                   help="[https://]HOST:PORT of the bridge (default: $RLCLAW_BRIDGE or "
                        "127.0.0.1:8420); https:// with --pin from another machine")
    p.add_argument("--key-file", help="the bridge's key file (or set RLCLAW_KEY)")
    p.add_argument("--pin", default=os.environ.get("RLCLAW_PIN"),
                   help="for an https:// bridge: its certificate's sha256 (`rlclaw tls show`)")
    p.add_argument("--worker", required=True, help="which agent or machine did the task")
    p.add_argument("--prompt", required=True, help="the task as given")
    p.add_argument("--response", required=True, help="what the agent answered or did")
    p.add_argument("--rollout-id", help="unique id (default: a fresh random one)")
    p.add_argument("--duration-s", type=non_negative(float), help="how long the task took")
    p.add_argument("--tokens", type=non_negative(int), help="tokens the agent used")
    p.add_argument("--errors", type=non_negative(int), help="errors the agent hit")
    p.add_argument("--context", help="earlier messages as a JSON list of {role, content}")
    p.add_argument("--channel", help="where the reply was shown, so reactions can rate it")
    p.add_argument("--chat", help="the chat it was shown in")
    p.add_argument("--message-id", action="append", default=[], dest="message_ids",
                   help="a channel message id of the reply (repeat for chunks)")
    p.add_argument("--sender", help="the person the task was done for")
    p.add_argument("--model", help="which model did it")
    p.add_argument("--attempts", type=int, default=5,
                   help="tries while the bridge is unreachable or busy, with backoff (default 5)")
    p.add_argument("--json", action="store_true", help="print the bridge's answer as JSON")
    p.add_argument("--version", action="version", version=f"rlclaw_emit {VERSION}")
    args = p.parse_args(argv)
    try:
        rollout = {
            "rollout_id": args.rollout_id or "ro-" + secrets.token_hex(12),
            "worker": args.worker,
            "prompt": text_arg(args.prompt),
            "response": text_arg(args.response),
        }
        if args.context:
            try:
                rollout["context"] = json.loads(text_arg(args.context))
            except ValueError as e:
                raise EmitError(f"--context is not JSON: {e}") from None
        for name in ("duration_s", "tokens", "errors", "channel", "chat", "sender", "model"):
            value = getattr(args, name)
            if value is not None:
                rollout[name] = value
        if args.message_ids:
            rollout["message_ids"] = args.message_ids
        answer = emit(args.bridge, read_key(args), rollout, attempts=args.attempts, pin=args.pin)
    except OSError as e:
        print(f"rlclaw_emit: {e}", file=sys.stderr)
        return 2
    except EmitError as e:
        print(f"rlclaw_emit: {e}", file=sys.stderr)
        return e.kind
    if args.json:
        print(json.dumps(answer, ensure_ascii=False))
    else:
        what = "stored" if answer["stored"] == "new" else "already stored"
        print(f"rollout {rollout['rollout_id']} {what} as turn {answer.get('turn_id', '?')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
